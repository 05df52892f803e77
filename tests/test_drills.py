"""Failure drills: what a workshop survives. The app is killed mid-vote-storm and restarted: every vote it
acknowledged is there and the database is whole. A training process is killed: its run fails with the reason and
the next run starts. The disk of the workspace fills up: a save is refused in one sentence and the database stays
whole."""

from __future__ import annotations

import json
import os
import resource
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import wait_for

from bench.load import App, Storm, missing_votes, prepare_pool, write_logins
from lab import Lab, jobs
from lab.store import Comparison, Run, Store, WorkspaceFullError
from lab.train.runs import read_metrics
from lab.train.sft import SFTRunConfig

ROOT = Path(__file__).resolve().parent.parent


def vote(n: int, annotator: str = "ann") -> Comparison:
    """A vote between two answers of one model on question `n`, long enough that a few hundred fill a small disk."""
    answers = [{"text": f"Answer {side} to question {n}. " * 20, "model": "base"} for side in "AB"]
    return Comparison([{"role": "user", "content": f"Question {n}?"}], answers, [0, 1], [1, 2], "ranked", annotator)


def integrity(path: Path) -> str:
    with sqlite3.connect(path) as db:
        return db.execute("PRAGMA integrity_check").fetchone()[0]


def demonstrations_file(folder: Path) -> Path:
    """400 demonstrations, about 400 kB: more than a full disk has room for."""
    rows = [
        {"messages": [{"role": "user", "content": f"Question {n}?"}, {"role": "assistant", "content": "Yes. " * 200}]}
        for n in range(400)
    ]
    path = folder / "demonstrations.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def file_size_limit(limit: int) -> Callable[[], None]:
    """For Popen's preexec_fn: no file the child writes may grow past `limit` bytes, as under a full disk or a quota.
    An unprivileged process can set it; Python already ignores SIGXFSZ, so the write fails with EFBIG."""
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def test_a_killed_app_keeps_every_vote_it_acknowledged_and_takes_votes_after_a_restart(tmp_path, tiny_model_dir):
    workspace, model = tmp_path / "workspace", str(tiny_model_dir)
    logins = write_logins(tmp_path / "logins", 6)
    queue = prepare_pool(workspace, 150, model)
    app = App(workspace, model, tmp_path / "logins").start()
    storm = Storm(app.url, logins, queue, generate=False)
    voting = threading.Thread(target=storm.run, args=(120,))
    voting.start()
    try:
        wait_for(lambda: len(storm.acknowledged) >= 12, timeout=90, what="a dozen acknowledged votes")
    finally:
        app.kill()  # SIGKILL mid-storm: requests in flight, perhaps a transaction open
        storm.stop()
        voting.join(60)
    acknowledged = dict(storm.acknowledged)
    assert integrity(workspace / "lab.sqlite") == "ok"
    assert missing_votes(workspace, acknowledged) == []

    restarted = App(workspace, model, tmp_path / "logins").start()
    try:
        after = Storm(restarted.url, dict(list(logins.items())[:2]), queue, generate=False).run(seconds=2)
    finally:
        restarted.stop()
    assert after.errors == [] and after.acknowledged
    assert missing_votes(workspace, {**acknowledged, **after.acknowledged}) == []


def test_a_killed_training_process_fails_its_run_with_the_reason_and_the_next_run_starts(tmp_path, tiny_model_dir):
    store = Store(tmp_path / "workspace")
    config = SFTRunConfig(
        model=str(tiny_model_dir), device="cpu", max_steps=5000, batch_size=8, save_steps=10_000, sample_every=0
    )
    data = str(ROOT / "assets" / "demonstrations" / "signoff.jsonl")
    first, second = (jobs.prepare(store, "sft", config, data_file=data) for _ in range(2))
    quit_watching = threading.Event()
    watcher = jobs.watch(store, every=0.5, stop=quit_watching)  # the app's job loop, as `python -m ui` runs it
    try:

        def stepped() -> bool:
            return bool(read_metrics(jobs.run_dir(store, first.id))) or store.get_run(first.id).status in jobs.FINISHED

        wait_for(stepped, timeout=180, what="the first training step")
        assert store.get_run(first.id).status == "running", store.get_run(first.id).error
        os.kill(store.get_run(first.id).pid, signal.SIGKILL)  # the out-of-memory killer, or kill -9
        wait_for(lambda: store.get_run(first.id).status == "failed", timeout=30, what="the run marked failed")
        failed = store.get_run(first.id)
        assert failed.exit_code == -signal.SIGKILL and "killed" in failed.error and "SIGKILL" in failed.error
        wait_for(lambda: store.get_run(second.id).pid is not None, timeout=30, what="the next run to start")
        assert watcher.is_alive()
        jobs.stop(store, second.id)
        wait_for(lambda: store.get_run(second.id).status in jobs.FINISHED, timeout=120, what="the next run to stop")
    finally:
        quit_watching.set()
        watcher.join(10)
        for run in store.list_runs(jobs.ACTIVE):  # a failed wait leaves no training process behind
            jobs.stop(store, run.id)


def test_runs_queued_in_the_same_second_start_in_the_order_they_were_queued(tmp_path, monkeypatch):
    store = Store(tmp_path / "workspace")
    for run_id in ("sft-b", "sft-a", "sft-c"):  # as a pipeline queues its steps: one second, ids in no order
        store.add_run(Run(run_id, "sft", {}, created_at="2026-01-01T00:00:00+00:00"))
    started = []

    class Child:  # stands in for the training process: which run starts is what is tested here
        pid = os.getpid()

        def poll(self) -> None:
            return None

    monkeypatch.setattr(jobs, "_spawn", lambda store, run_id: started.append(run_id) or Child())
    monkeypatch.setattr(jobs, "_children", {})
    jobs.start_next(store)
    assert started == ["sft-b"]


def test_an_import_onto_a_full_disk_is_refused_in_one_sentence_and_keeps_the_database(tmp_path):
    store = Store(tmp_path / "workspace")
    store.add_comparisons([vote(n) for n in range(20)])
    data = demonstrations_file(tmp_path)
    quota = max(f.stat().st_size for f in store.root.iterdir() if f.is_file()) + 64_000  # room for a few rows only
    done = subprocess.run(
        [sys.executable, "-m", "lab", "import", str(data), "--workspace", str(store.root)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        preexec_fn=file_size_limit(quota),
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    said = done.stderr.strip().splitlines()
    assert len(said) == 1 and "disk" in said[0] and "nothing was saved" in said[0], done.stderr
    assert integrity(store.path) == "ok"
    assert len(store.list_comparisons()) == 20 and store.list_demonstrations() == []  # all or nothing


def test_votes_onto_a_full_disk_are_refused_in_one_sentence_and_the_app_stays_up(tmp_path, tiny_model_dir):
    workspace, model = tmp_path / "workspace", str(tiny_model_dir)
    logins = write_logins(tmp_path / "logins", 2)
    queue = prepare_pool(workspace, 40, model)
    quota = max(f.stat().st_size for f in workspace.iterdir() if f.is_file()) + 16_000  # a few dozen votes
    app = App(workspace, model, tmp_path / "logins").start(preexec_fn=file_size_limit(quota))
    try:
        storm = Storm(app.url, logins, queue, generate=False).run(seconds=90)  # each votes until refused
        assert storm.errors == []  # no failed request: the app answered every one
        assert len(storm.unserved) == 2 and all("nothing was saved" in said for said in storm.unserved)
        assert app.process.poll() is None
    finally:
        app.stop()
    assert storm.acknowledged and integrity(workspace / "lab.sqlite") == "ok"
    assert missing_votes(workspace, storm.acknowledged) == []


def test_a_vote_and_an_import_onto_a_full_disk_are_refused_and_the_votes_before_them_stay(tmp_path):
    """A real full disk (SQLITE_FULL), where a small tmpfs can be mounted (root); the quota above runs anywhere."""
    from ui.demonstrations import import_file
    from ui.errors import UserError

    disk = tmp_path / "disk"
    disk.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(disk)]
    if os.geteuid() != 0 or subprocess.run(mount).returncode != 0:
        pytest.skip("mounting a small tmpfs needs root; the file-size quota drills cover the unprivileged case")
    try:
        store = Store(disk / "workspace")
        saved = []
        with pytest.raises(WorkspaceFullError, match="The workspace's disk is full: nothing was saved"):
            for n in range(10_000):
                saved.append(store.add_comparison(vote(n)))
        with pytest.raises(UserError, match="The workspace's disk is full: nothing was saved"):
            import_file(Lab(store), None, str(demonstrations_file(tmp_path)))  # the Demonstrations tab's Import
        assert integrity(store.path) == "ok"
        assert [c.id for c in store.list_comparisons()] == saved and store.list_demonstrations() == []
    finally:
        subprocess.run(["umount", str(disk)], check=True)
