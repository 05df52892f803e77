"""Training jobs: each run is a child process (`python -m lab run RUN_ID`), so a crash, an
out-of-memory error or a kill never takes the app down.

The run's row in the workspace is the truth every browser tab sees: queued →
running → (stopping →) done / stopped / failed. The child writes its own final
status; the app only notices a child that died without writing one (a kill, a
segfault, a machine restart) and marks it failed with the tail of its log.
One run trains at a time; later ones wait in the queue.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import signal
import subprocess
import sys
import threading
import traceback
from datetime import datetime
from pathlib import Path
from typing import Any

from lab.models import BASE_VIEW, ModelManager
from lab.store import Run, Store, now
from lab.train import METHODS
from lab.train.common import STOP_REQUESTED, install_stop_signals, latest_checkpoint, write_config

ACTIVE = ("running", "stopping")
FINISHED = ("done", "stopped", "failed")
_children: dict[str, subprocess.Popen] = {}  # runs this process started, to reap them and read exit codes
_lock = threading.Lock()


class JobError(ValueError):
    """A job request that cannot be honoured; the message is one sentence for the user."""


def run_dir(store: Store, run_id: str) -> Path:
    return store.runs_dir / run_id


def new_run_id(method: str) -> str:
    return f"{method}-{datetime.now():%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def prepare(
    store: Store, method: str, config: Any, name: str = "", data_file: str = "", origins: list[str] | None = None
) -> Run:
    """Freeze the data into a new run folder, write config.yaml, and queue the run's row.

    The data is `data_file` when given, else the workspace's accepted data (of the given origins).
    """
    if method not in METHODS:
        raise JobError(f"Unknown training method '{method}': choose one of {', '.join(METHODS)}.")
    run_id = new_run_id(method)
    folder = run_dir(store, run_id)
    config = dataclasses.replace(config, data=str(METHODS[method].snapshot(store, folder, data_file, origins)))
    write_config(folder, config)
    run = Run(run_id, method, dataclasses.asdict(config), name=name, device=config.device)
    store.add_run(run)
    return run


def submit(store: Store, run: Run) -> Run:
    """Queue the run and start the oldest queued one if nothing is training; returns the run as it is now."""
    start_next(store)
    return store.get_run(run.id)


def start_next(store: Store) -> Run | None:
    """Start the oldest queued run if no run is active; returns the run started."""
    with _lock:
        refresh(store)
        if store.list_runs(ACTIVE):
            return None
        queued = sorted(store.list_runs(("queued",)), key=lambda r: r.created_at)
        if not queued:
            return None
        run = queued[0]
        folder = run_dir(store, run.id)
        with (folder / "log.txt").open("a", encoding="utf-8") as log:
            child = subprocess.Popen(
                [sys.executable, "-m", "lab", "run", run.id, "--workspace", str(store.root)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=Path(__file__).resolve().parent.parent,
                start_new_session=True,  # Ctrl-C in the app's terminal is not a Stop for the run
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        _children[run.id] = child
        store.update_run(
            run.id, expect=("queued",), status="running", pid=child.pid, started_at=now(), error="", exit_code=None
        )
        return store.get_run(run.id)


def watch(store: Store, every: float = 2.0) -> threading.Thread:
    """Keep the queue moving and reap finished children while the app runs, whether or not a page is open."""

    def loop() -> None:
        while True:
            try:
                start_next(store)
            except Exception:  # a locked database or a vanished folder: report it and try again
                traceback.print_exc()
            threading.Event().wait(every)

    thread = threading.Thread(target=loop, name="job-watcher", daemon=True)
    thread.start()
    return thread


def active_run(store: Store) -> Run | None:
    """The run training now, if any (after repairing runs whose process died)."""
    refresh(store)
    runs = store.list_runs(ACTIVE)
    return runs[0] if runs else None


def execute(store: Store, run_id: str) -> int:
    """Train one prepared run in this process (the child, or the CLI); returns the exit code.

    The final status is written here: done, stopped (the adapter so far is saved) or failed.
    """
    run = store.get_run(run_id)
    method = METHODS[run.method]
    folder = run_dir(store, run_id)
    install_stop_signals()
    (folder / "process").write_text(_identity(os.getpid()), encoding="utf-8")
    started = store.update_run(
        run_id, expect=("queued", "running"), status="running", pid=os.getpid(), started_at=now()
    )
    if not started and store.get_run(run_id).status == "stopping":
        STOP_REQUESTED.set()  # asked to stop before it started: end at the first step, keep what exists
    try:
        config = method.config(**run.config)
        adapter = method.run(config, folder, resume=latest_checkpoint(folder) is not None)
    except BaseException as err:  # every failure is recorded on the run, then the process exits non-zero
        traceback.print_exc()
        store.update_run(run_id, expect=ACTIVE, status="failed", exit_code=1, error=explain(err), finished_at=now())
        return 1
    status = "stopped" if STOP_REQUESTED.is_set() else "done"
    store.update_run(run_id, expect=ACTIVE, status=status, exit_code=0, finished_at=now())
    print(f"Adapter saved in {adapter}", flush=True)
    return 0


def explain(err: BaseException) -> str:
    """One sentence for a training failure a user can act on."""
    import torch

    if isinstance(err, torch.cuda.OutOfMemoryError) or "out of memory" in str(err).lower():
        return "Out of memory: lower the batch size or max length, or train on a 4-bit base."
    if isinstance(err, KeyboardInterrupt):
        return "Interrupted."
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def stop(store: Store, run_id: str) -> None:
    """Ask a run to stop: a queued one never starts; a running one ends its step and saves its adapter."""
    run = store.get_run(run_id)
    if run.status == "queued" and store.update_run(run_id, expect=("queued",), status="stopped", finished_at=now()):
        return
    run = store.get_run(run_id)
    if run.status == "running" and run.pid:
        if not _alive(run.pid, run_id, run_dir(store, run_id)):
            refresh(store)
            return
        store.update_run(run_id, expect=("running",), status="stopping")
        try:
            os.kill(run.pid, signal.SIGTERM)
        except ProcessLookupError:
            refresh(store)
    elif run.status not in ("stopping",):
        raise JobError(f"Run {run_id} is {run.status}; there is nothing to stop.")


def resume(store: Store, run_id: str) -> Run:
    """Queue a stopped or failed run again; it continues from its last checkpoint."""
    run = store.get_run(run_id)
    if run.status not in ("stopped", "failed"):
        raise JobError(f"Run {run_id} is {run.status}; only a stopped or failed run can be resumed.")
    if latest_checkpoint(run_dir(store, run_id)) is None:
        raise JobError(f"Run {run_id} has no checkpoint to resume from; start a new run instead.")
    store.update_run(run_id, status="queued", finished_at=None, exit_code=None, error="")
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
        if child is None and _alive(run.pid, run.id, run_dir(store, run.id)):
            continue
        latest = store.get_run(run.id)
        code = code if code is not None else -1
        if latest.status == "stopping" and code == -signal.SIGTERM:  # stopped before its handler was in place
            store.update_run(run.id, expect=ACTIVE, status="stopped", exit_code=code, finished_at=now())
        elif latest.status in ACTIVE:  # the child did not write a final status
            reason = f"signal {-code}" if code < 0 else f"exit code {code}"
            tail = log_tail(run_dir(store, run.id), 8)
            store.update_run(
                run.id,
                expect=ACTIVE,
                status="failed",
                exit_code=code,
                finished_at=now(),
                error=f"The training process died ({reason}). Last lines of its log:\n{tail}",
            )
        _children.pop(run.id, None)


def _identity(pid: int) -> str:
    """The pid with the process's start time (Linux), so a reused pid is not mistaken for the run."""
    try:
        started = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        started = ""
    return f"{pid} {started}"


def _alive(pid: int | None, run_id: str, folder: Path) -> bool:
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


def log_tail(folder: Path, lines: int = 20) -> str:
    path = folder / "log.txt"
    if not path.is_file():
        return ""
    text = path.read_text(encoding="utf-8", errors="replace").replace("\r", "\n")
    return "\n".join([line for line in text.splitlines() if line.strip()][-lines:])


def list_adapters(store: Store) -> dict[str, Path]:
    """Trained adapters in the workspace by run id (finished or stopped runs that saved one)."""
    adapters = {}
    for run in store.list_runs(("done", "stopped")):
        folder = run_dir(store, run.id) / "adapter"
        if (folder / "adapter_config.json").is_file():
            adapters[run.id] = folder
    return adapters


def adapters_for(store: Store, base: str) -> dict[str, Path]:
    """The workspace's trained adapters that fit this base model."""
    return {rid: path for rid, path in list_adapters(store).items() if store.get_run(rid).config.get("model") == base}


def attach_adapter(store: Store, models: ModelManager, run_id: str) -> None:
    """Attach a run's adapter to the loaded model under the run's id (once; later calls do nothing)."""
    loaded = models.require()
    if run_id == BASE_VIEW or run_id in loaded.adapters:
        return
    adapters = list_adapters(store)
    if run_id not in adapters:
        raise JobError(f"Run {run_id} has no trained adapter.")
    base = store.get_run(run_id).config.get("model")
    if base != loaded.base:
        raise JobError(f"The adapter of {run_id} was trained on {base}; load that base model first.")
    models.add_adapter(run_id, adapters[run_id])
