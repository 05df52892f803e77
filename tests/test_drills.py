"""Failure drills: what a workshop survives. The disk of the workspace fills up: a save is refused in one sentence
and the database stays whole."""

from __future__ import annotations

import json
import os
import resource
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from lab.store import Comparison, Store, WorkspaceFullError

ROOT = Path(__file__).resolve().parent.parent


def vote(n: int, annotator: str = "ann") -> Comparison:
    """A vote between two answers of one model on question `n`, long enough that a few hundred fill a small disk."""
    answers = [{"text": f"Answer {side} to question {n}. " * 20, "model": "base"} for side in "AB"]
    return Comparison([{"role": "user", "content": f"Question {n}?"}], answers, [0, 1], [1, 2], "ranked", annotator)


def integrity(path: Path) -> str:
    with sqlite3.connect(path) as db:
        return db.execute("PRAGMA integrity_check").fetchone()[0]


def file_size_limit(limit: int):
    """For Popen's preexec_fn: no file the child writes may grow past `limit` bytes, as under a full disk or a quota.
    An unprivileged process can set it; Python already ignores SIGXFSZ, so the write fails with EFBIG."""
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def test_an_import_onto_a_full_disk_is_refused_in_one_sentence_and_keeps_the_database(tmp_path):
    store = Store(tmp_path / "workspace")
    store.add_comparisons([vote(n) for n in range(20)])
    rows = [
        {"messages": [{"role": "user", "content": f"Question {n}?"}, {"role": "assistant", "content": "Yes. " * 200}]}
        for n in range(400)
    ]
    data = tmp_path / "big.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
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


def test_a_vote_on_a_full_disk_is_refused_and_the_votes_before_it_stay(tmp_path):
    """A real full disk (SQLITE_FULL), where a small tmpfs can be mounted (root); the quota above runs anywhere."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = (
        os.geteuid() == 0
        and subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(disk)]).returncode == 0
    )
    if not mounted:
        pytest.skip("mounting a small tmpfs needs root; the file-size quota drill covers the unprivileged case")
    try:
        store = Store(disk / "workspace")
        saved = []
        with pytest.raises(WorkspaceFullError, match="The workspace's disk is full: nothing was saved"):
            for n in range(10_000):
                saved.append(store.add_comparison(vote(n)))
        assert integrity(store.path) == "ok"
        assert [c.id for c in store.list_comparisons()] == saved
    finally:
        subprocess.run(["umount", str(disk)], check=True)
