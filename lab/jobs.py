"""Training jobs: each run is a child process (`python -m lab run RUN_ID`), so a crash, an
out-of-memory error or a kill never takes the app down.

The run's row in the workspace is the truth every browser tab and every process
sees: queued → running → (stopping →) done / stopped / failed. A run is claimed
(a compare-and-set in the database that also checks no other run is active)
before its process starts, so two app processes, or the app and the CLI, never
train the same run or two runs at once; the training process also holds the
workspace's training lock. The child writes its own final status; the app only
notices a child that died without writing one and marks it failed with the
tail of its log.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import traceback
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lab.refs import normalise_base
from lab.store import Run, Store, now
from lab.store.rows import check_name
from lab.train import get_method
from lab.train.runs import StopSignal, latest_checkpoint, log_tail, stop_signals, write_config

ACTIVE = ("running", "stopping")
FINISHED = ("done", "stopped", "failed")
NEVER_STARTED_S = 120  # a claimed run whose process has not appeared by then was lost with its launcher
_children: dict[str, subprocess.Popen] = {}  # runs this process started, to reap them and read exit codes
_lock = threading.Lock()


class JobError(ValueError):
    """A job request that cannot be honoured; the message is one sentence for the user."""


def run_dir(store: Store, run_id: str) -> Path:
    return store.runs_dir / run_id


def new_run_id(method: str) -> str:
    return f"{method}-{datetime.now():%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def prepare(store: Store, method: str, config: Any, name: str = "", data_file: str = "", **data_options) -> Run:
    """Freeze the data into a new run folder, write config.yaml, record provenance, and queue the run's row.

    The data is `data_file` when given, else the workspace's data of the kind the method trains on
    (`origins=[...]` filters demonstrations; `exclude_annotators=[...]`, `exclude_flagged=True` and
    `scenario=NAME` select the votes of preferences, see lab.train.snapshot.preference_votes). Nothing is left
    behind when the data is refused.
    """
    from lab.train.snapshot import snapshot

    spec = get_method(method)
    check_name(name, "the run's name")
    run_id = new_run_id(method)
    folder = run_dir(store, run_id)
    try:
        source = snapshot(store, folder, spec.data, data_file, **data_options)
        config = config.replace(data=str(folder / "data.jsonl"), model=normalise_base(config.model))
        write_config(folder, config)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    provenance = {
        "base_model": config.model,
        "parent_adapter": _parent(store, config.init_adapter),
        "data": dataclasses.asdict(source),
        "reward_model": None,
    }
    run = Run(run_id, method, config.to_dict(), name=name, device=config.device, provenance=provenance)
    store.add_run(run)
    return run


def _parent(store: Store, adapter: str) -> dict | None:
    if not adapter:
        return None
    path = Path(adapter).resolve()
    inside = path.parent.parent == store.runs_dir.resolve()
    return {"run": path.parent.name if inside else None, "path": str(path)}


def submit(store: Store, run: Run) -> Run:
    """Queue the run and start the oldest queued one if nothing is training; returns the run as it is now."""
    start_next(store)
    return store.get_run(run.id)


def start_next(store: Store) -> Run | None:
    """Start the oldest queued run if no run is active anywhere; returns the run started (or failed to start).

    The claim comes first: a process that loses it starts nothing. A Stop pressed between the claim and the
    start ends the run without starting it.
    """
    with _lock:
        refresh(store)
        queued = store.list_runs(("queued",))[::-1]  # oldest first, in the order they were queued
        if not queued or not store.claim_run(queued[0].id):
            return None
        run = queued[0]
        if store.update_run(run.id, expect=("stopping",), status="stopped", finished_at=now()):
            return store.get_run(run.id)
        try:
            child = _spawn(store, run.id)
        except OSError as err:
            store.update_run(
                run.id, expect=ACTIVE, status="failed", finished_at=now(), error=f"Could not start training: {err}."
            )
            return store.get_run(run.id)
        _children[run.id] = child
        store.update_run(run.id, expect=ACTIVE, pid=child.pid)
        return store.get_run(run.id)


def _spawn(store: Store, run_id: str) -> subprocess.Popen:
    folder = run_dir(store, run_id)
    with (folder / "log.txt").open("a", encoding="utf-8") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "lab", "run", run_id, "--workspace", str(store.root)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=Path(__file__).resolve().parent.parent,
            start_new_session=True,  # Ctrl-C in the app's terminal is not a Stop for the run
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )


def watch(store: Store, every: float = 2.0, stop: threading.Event | None = None) -> threading.Thread:
    """Keep the queue moving and reap finished children while the app runs, whether or not a page is open.

    Setting `stop` ends the watcher within one tick (an app closed in a notebook; the desktop app's runs till exit).
    """
    stop = stop or threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                start_next(store)
            except Exception:  # a locked database or a vanished folder: report it and try again
                traceback.print_exc()
            stop.wait(every)

    thread = threading.Thread(target=loop, name="job-watcher", daemon=True)
    thread.start()
    return thread


def active_run(store: Store) -> Run | None:
    """The run training now, if any (after repairing runs whose process died)."""
    refresh(store)
    runs = store.list_runs(ACTIVE)
    return runs[0] if runs else None


def execute(store: Store, run_id: str, stop: StopSignal | None = None) -> int:
    """Train one prepared run in this process (the child, the CLI, or a notebook's thread); returns the exit code.

    A queued run is claimed first (JobError if another run is active). The final status is written here:
    done, stopped (the adapter so far is saved) or failed.
    """
    run = store.get_run(run_id)
    if not main_process():
        return _train_beside(store, run, stop)
    if run.status == "queued" and not store.claim_run(run_id):
        busy = active_run(store)
        raise JobError(f"Run {busy.id if busy else 'another'} is training in this workspace; wait for it or stop it.")
    folder = run_dir(store, run_id)
    (folder / "process").write_text(_identity(os.getpid()), encoding="utf-8")
    store.update_run(run_id, expect=ACTIVE, pid=os.getpid())
    if store.update_run(run_id, expect=("stopping",), status="stopped", finished_at=now()):
        return 0  # stopped before it started: nothing to train, nothing lost
    if store.get_run(run_id).status not in ACTIVE:
        raise JobError(f"Run {run_id} is {store.get_run(run_id).status}; only a claimed run trains.")
    stop = stop or StopSignal(store, run_id)
    try:
        with training_lock(store), stop_signals(stop):
            adapter = _train(store, run, folder, stop)
    except BaseException as err:  # every failure is recorded on the run, then the caller exits non-zero
        traceback.print_exc()
        store.update_run(run_id, expect=ACTIVE, status="failed", exit_code=1, error=explain(err), finished_at=now())
        return 1
    status = "stopped" if stop.is_set() else "done"
    store.update_run(run_id, expect=ACTIVE, status=status, exit_code=0, finished_at=now())
    made = "Adapter" if get_method(run.method).adapter_kind else "Report"
    print(f"{made} saved in {adapter}", flush=True)
    return 0


def main_process() -> bool:
    """False in the other processes of a run launched several times (`accelerate launch`, torchrun set RANK)."""
    return int(os.environ.get("RANK", "0")) == 0


def _train_beside(store: Store, run: Run, stop: StopSignal | None) -> int:
    """Train as one of the other processes of a data-parallel run: the first process claims the run, holds the
    training lock and writes its status, metrics and adapter; a failure here ends the launch, which it reports."""
    stop = stop or StopSignal(store, run.id)
    with stop_signals(stop):
        _train(store, run, run_dir(store, run.id), stop)
    return 0


def _train(store: Store, run: Run, folder: Path, stop: StopSignal) -> Path:
    from lab.export import model_card
    from lab.train.common import fit

    method = get_method(run.method)
    config = method.config.from_dict(run.config, where=f"{run.id}/config.yaml")
    if method.adapter_kind is None:  # a report (an evaluation): it runs itself, checking the stop between batches
        return method.build(config, folder).run(stop)
    trainer = method.build(config, folder)
    return fit(trainer, folder, stop, resume=latest_checkpoint(folder) is not None, card=model_card(run))


@contextlib.contextmanager
def training_lock(store: Store) -> Iterator[None]:
    """Held while a process trains, across processes: a second training process in the workspace is refused."""
    try:
        import fcntl
    except ImportError:  # Windows: the claim in the database still keeps runs one at a time
        yield
        return
    with (store.root / "training.lock").open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as err:
            raise JobError("Another process is training in this workspace.") from err
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def explain(err: BaseException) -> str:
    """One sentence for a training failure a user can act on."""
    if "out of memory" in str(err).lower() or type(err).__name__ == "OutOfMemoryError":
        return "Out of memory: lower the batch size or max length, or train on a 4-bit base."
    if isinstance(err, KeyboardInterrupt):
        return "Interrupted."
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def stop(store: Store, run_id: str) -> None:
    """Ask a run to stop: a queued one never starts; a running one ends its step and saves its adapter.

    The request is the run's status ('stopping'), which the training process reads at every step, whichever
    process it runs in; a child of this process also gets SIGTERM so that it stops even mid-load.
    """
    if store.update_run(run_id, expect=("queued",), status="stopped", finished_at=now()):
        return
    run = store.get_run(run_id)
    if run.status == "running":
        store.update_run(run_id, expect=("running",), status="stopping")
        child = _children.get(run_id)
        if child is not None and child.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signal.SIGTERM)
        refresh(store)
    elif run.status != "stopping":
        raise JobError(f"Run {run_id} is {run.status}; there is nothing to stop.")


def resume(store: Store, run_id: str) -> Run:
    """Queue a stopped or failed run again; it continues from its last checkpoint."""
    run = store.get_run(run_id)
    if run.status not in ("stopped", "failed"):
        raise JobError(f"Run {run_id} is {run.status}; only a stopped or failed run can be resumed.")
    if latest_checkpoint(run_dir(store, run_id)) is None:
        raise JobError(f"Run {run_id} has no checkpoint to resume from; start a new run instead.")
    requeued = store.update_run(
        run_id, expect=("stopped", "failed"), status="queued", finished_at=None, exit_code=None, error=""
    )
    if not requeued:  # resumed or restarted by someone else in the meantime
        raise JobError(f"Run {run_id} is {store.get_run(run_id).status} now; it was resumed elsewhere.")
    return submit(store, store.get_run(run_id))


def refresh(store: Store) -> None:
    """Mark runs whose process died without a final status as failed, with the tail of their log.

    Called on every poll and at app start, so a run never shows as running forever.
    """
    for run in store.list_runs(ACTIVE):
        child = _children.get(run.id)
        code = child.poll() if child else None
        if child is not None and code is None:
            continue
        if child is None and (_alive(run.pid, run_dir(store, run.id)) or _starting(run)):
            continue
        latest = store.get_run(run.id)
        if latest.status == "stopping" and code == -signal.SIGTERM:  # stopped before its handler was in place
            store.update_run(run.id, expect=ACTIVE, status="stopped", exit_code=code, finished_at=now())
        elif latest.status in ACTIVE:  # the process did not write a final status
            store.update_run(
                run.id,
                expect=ACTIVE,
                status="failed",
                exit_code=code,
                finished_at=now(),
                error=_death(store, run, code),
            )
        _children.pop(run.id, None)


def _death(store: Store, run: Run, code: int | None) -> str:
    if run.pid is None:
        return "The training process never started (the app that launched it stopped first)."
    if code is None:
        reason = "its exit status is unknown: it was started by another process"
    else:
        reason = f"signal {-code}" if code < 0 else f"exit code {code}"
    killed = " It was killed (SIGKILL): the system does this when memory runs out." if code == -signal.SIGKILL else ""
    return (
        f"The training process died ({reason}).{killed} Last lines of its log:\n{log_tail(run_dir(store, run.id), 8)}"
    )


def _starting(run: Run) -> bool:
    """Claimed moments ago and its process not recorded yet (the launcher is between claim and spawn)."""
    if run.pid is not None or not run.started_at:
        return False
    age = datetime.now(timezone.utc) - datetime.fromisoformat(run.started_at)
    return age.total_seconds() < NEVER_STARTED_S


def _identity(pid: int) -> str:
    """The pid with the process's start time (Linux), so a reused pid is not mistaken for the run."""
    try:
        started = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        started = ""
    return f"{pid} {started}"


def _alive(pid: int | None, folder: Path) -> bool:
    """Is `pid` still the process training this run (the child the app started, or a CLI `train`)?"""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    recorded = folder / "process"
    if recorded.is_file():
        return recorded.read_text(encoding="utf-8").strip() == _identity(pid).strip()
    return True  # started moments ago: its identity is not written yet
