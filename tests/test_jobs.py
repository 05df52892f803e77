"""The job engine under races, with real processes: a run is claimed before it starts, one trains at a time
across processes, stop belongs to a run, a failed spawn or an unknown exit is reported as what it is."""

import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from conftest import wait_for

from lab import jobs
from lab.store import Run, Store
from lab.train.runs import StopSignal, read_metrics
from lab.train.sft import SFTRunConfig

ROOT = Path(__file__).resolve().parent.parent
SIGNOFF = ROOT / "assets" / "demonstrations" / "signoff.jsonl"


@pytest.fixture
def store(tmp_path):
    return Store(tmp_path / "workspace")


def prepared(store, tiny_model_dir, **overrides) -> Run:
    values = {"model": str(tiny_model_dir), "device": "cpu", "max_steps": 3, "batch_size": 8, "save_steps": 100}
    config = SFTRunConfig(**{**values, "sample_every": 0, **overrides})
    return jobs.prepare(store, "sft", config, data_file=str(SIGNOFF))


RACER = textwrap.dedent(
    """
    import os, sys, time
    from lab import jobs
    from lab.store import Store

    class Child:  # stands in for the training process: the claim is what is raced here
        pid = os.getppid()  # a live process (the test's), so the other racers see the run as alive
        def poll(self):
            return None

    jobs._spawn = lambda store, run_id: Child()
    go = float(sys.argv[2])
    time.sleep(max(0.0, go - time.time()))
    started = jobs.start_next(Store(sys.argv[1]))
    print(started.id if started else "none")
    """
)


def test_two_app_processes_never_start_two_runs(store, tiny_model_dir):
    first, second = prepared(store, tiny_model_dir), prepared(store, tiny_model_dir)
    go = time.time() + 3
    racers = [
        subprocess.Popen([sys.executable, "-c", RACER, str(store.root), str(go)], cwd=ROOT, stdout=subprocess.PIPE)
        for _ in range(4)
    ]
    said = [racer.communicate(timeout=60)[0].decode().strip() for racer in racers]
    started = [line for line in said if line != "none"]
    assert len(started) == 1 and started[0] in (first.id, second.id), said  # one run, started once
    statuses = sorted(run.status for run in store.list_runs())
    assert statuses == ["queued", "running"]


def test_a_stop_between_claim_and_start_ends_the_run_untrained(store, tiny_model_dir):
    run = prepared(store, tiny_model_dir)
    assert store.claim_run(run.id)  # another process claimed it and is about to start it
    jobs.stop(store, run.id)
    assert store.get_run(run.id).status == "stopping"
    assert jobs.execute(store, run.id) == 0
    assert store.get_run(run.id).status == "stopped"
    assert read_metrics(jobs.run_dir(store, run.id)) == []  # it never trained


def test_a_second_training_process_in_the_workspace_is_refused(store, tiny_model_dir):
    run = prepared(store, tiny_model_dir)
    with jobs.training_lock(store):  # another process training in this workspace holds the lock
        assert jobs.execute(store, run.id) == 1
    failed = store.get_run(run.id)
    assert failed.status == "failed" and "Another process is training" in failed.error


def test_execute_refuses_while_another_run_is_active(store, tiny_model_dir):
    busy, waiting = prepared(store, tiny_model_dir), prepared(store, tiny_model_dir)
    assert store.claim_run(busy.id)
    with pytest.raises(jobs.JobError, match=f"Run {busy.id} is training"):
        jobs.execute(store, waiting.id)
    assert store.get_run(waiting.id).status == "queued"


def test_a_stop_belongs_to_its_run_not_to_the_process(store, tiny_model_dir):
    stopped = prepared(store, tiny_model_dir, max_steps=50)
    early = StopSignal()
    early.set()
    assert jobs.execute(store, stopped.id, stop=early) == 0
    assert store.get_run(stopped.id).status == "stopped"
    assert read_metrics(jobs.run_dir(store, stopped.id))[-1]["step"] == 1

    later = prepared(store, tiny_model_dir, max_steps=4)
    assert jobs.execute(store, later.id) == 0
    assert store.get_run(later.id).status == "done"
    assert read_metrics(jobs.run_dir(store, later.id))[-1]["step"] == 4


def test_training_runs_from_a_thread_and_stops_from_the_workspace(store, tiny_model_dir):
    run = prepared(store, tiny_model_dir, max_steps=400)
    codes = []
    worker = threading.Thread(target=lambda: codes.append(jobs.execute(store, run.id)))
    worker.start()  # signal handlers cannot be installed off the main thread: this must not fail
    wait_for(lambda: read_metrics(jobs.run_dir(store, run.id)), what="the first step")
    jobs.stop(store, run.id)  # as the app or another process does: through the run's row
    worker.join(60)
    assert codes == [0] and store.get_run(run.id).status == "stopped"
    assert read_metrics(jobs.run_dir(store, run.id))[-1]["step"] < 400


def test_a_failed_spawn_fails_the_run_once_with_its_reason(store, tiny_model_dir, monkeypatch):
    run = prepared(store, tiny_model_dir)

    def broken(store, run_id):
        raise FileNotFoundError(2, "No such file or directory", "python")

    monkeypatch.setattr(jobs, "_spawn", broken)
    jobs.start_next(store)
    failed = store.get_run(run.id)
    assert failed.status == "failed" and "Could not start training" in failed.error
    assert jobs.start_next(store) is None  # not retried forever
    assert store.get_run(run.id).status == "failed"


def test_an_unknown_exit_is_reported_as_unknown(store, tiny_model_dir):
    run = prepared(store, tiny_model_dir)
    assert store.claim_run(run.id)
    gone = subprocess.Popen(["true"])
    gone.wait()
    store.update_run(run.id, pid=gone.pid)  # a training process another app started, now gone
    jobs._children.pop(run.id, None)
    jobs.refresh(store)
    failed = store.get_run(run.id)
    assert failed.status == "failed" and "exit status is unknown" in failed.error
    assert "signal 1" not in failed.error and failed.exit_code is None


def test_resume_checks_the_status_first(store, tiny_model_dir):
    run = prepared(store, tiny_model_dir)
    assert store.claim_run(run.id)
    with pytest.raises(jobs.JobError, match="only a stopped or failed run"):
        jobs.resume(store, run.id)


def test_a_refused_data_file_leaves_no_run_behind(store, tiny_model_dir, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n')
    with pytest.raises(ValueError, match="line 1"):
        jobs.prepare(store, "sft", SFTRunConfig(model=str(tiny_model_dir)), data_file=str(bad))
    assert store.list_runs() == [] and not any(store.runs_dir.glob("*"))
