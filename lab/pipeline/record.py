"""A pipeline as the workspace holds it: a small JSON file (pipelines/<id>.json) naming its scenario, its
method and options and each step's runs, written whole or not at all, and changed by one thread and one process
at a time."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from lab.store import Store, now

STEPS = ("sft", "reward", "policy", "eval")
POLICY_METHODS = ("dpo", "rloo")
TITLES = {"sft": "SFT", "reward": "reward model", "dpo": "DPO", "rloo": "RLOO", "eval": "evaluation"}


class PipelineError(ValueError):
    """A pipeline request that cannot be honoured; the message is one sentence for the user."""


@dataclass
class Options:
    """What a pipeline runs with, besides its scenario and method: stored with it, so a resume runs the same."""

    preset: str = "cpu-default"  # the model preset whose recipes each step starts from
    model: str = ""  # the base model; empty = the preset's
    steps: int = 0  # optimizer steps of every training step; 0 = STEP_SETTINGS'
    system: str = ""  # a system prompt: the evaluation also asks the base with it ("prompt or fine-tune?")
    sft: dict = field(default_factory=dict)  # config overrides of each step, by field
    reward: dict = field(default_factory=dict)
    policy: dict = field(default_factory=dict)
    eval: dict = field(default_factory=dict)

    @classmethod
    def of(cls, options: dict) -> Options:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise PipelineError(f"Unknown pipeline option '{unknown[0]}': use one of {', '.join(sorted(known))}.")
        return cls(**options)


@dataclass
class Record:
    """A pipeline as its JSON file holds it: each step's current run, and the runs replaced by running a step
    again (one stopped or failed without a checkpoint to resume from)."""

    id: str
    scenario: str
    method: str
    options: dict
    state: str = "running"
    error: str = ""
    runs: dict = field(default_factory=lambda: dict.fromkeys(STEPS))  # step → run id, None before it is queued
    replaced: list = field(default_factory=list)
    created_at: str = field(default_factory=now)

    def method_of(self, step: str) -> str:
        return method_of(step, self.method)


def method_of(step: str, method: str) -> str:
    """The run method of a step: the policy step's is the pipeline's method (dpo or rloo)."""
    return method if step == "policy" else step


def folder(store: Store) -> Path:
    return store.root / "pipelines"


def load(store: Store, pipeline_id: str) -> Record:
    """A pipeline's record; KeyError naming it if the workspace has none of that id."""
    path = folder(store) / f"{pipeline_id}.json"
    if not path.is_file():
        raise KeyError(f"No pipeline '{pipeline_id}' in this workspace.")
    return Record(**json.loads(path.read_text(encoding="utf-8")))


def save(store: Store, record: Record) -> None:
    """Write the record whole or not at all (a new file, then a rename), so a crash never leaves half a file."""
    folder(store).mkdir(exist_ok=True)
    path = folder(store) / f"{record.id}.json"
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    partial.write_text(json.dumps(dataclasses.asdict(record), indent=1), encoding="utf-8")
    os.replace(partial, path)


def list_pipelines(store: Store) -> list[Record]:
    """Every pipeline of the workspace, newest first."""
    paths = folder(store).glob("pipeline-*.json") if folder(store).is_dir() else []
    return sorted((load(store, p.stem) for p in paths), key=lambda r: (r.created_at, r.id), reverse=True)


_lock = threading.Lock()


@contextlib.contextmanager
def locked(store: Store) -> Iterator[None]:
    """One change of a pipeline at a time, across threads and processes (the app's timer, a driver, the CLI)."""
    with _lock:
        try:
            import fcntl
        except ImportError:  # Windows: the threads of one process are still serialised
            yield
            return
        folder(store).mkdir(exist_ok=True)
        with (folder(store) / ".lock").open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
