"""A run's folder and its stop signal; no torch here, so the app reads runs without the trainer stack.

workspace/runs/<run_id>/ holds config.yaml (the exact resolved config, written
before step 0), data.jsonl (the frozen training data), metrics.jsonl (one JSON
object per log step), samples.jsonl, log.txt, checkpoints/ (for resume),
final_metrics.json and adapter/ (PEFT safetensors with a model card).
"""

from __future__ import annotations

import contextlib
import json
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def write_config(run_dir: Path, config: Any) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(config.to_yaml(), encoding="utf-8")


def read_jsonl_since(path: Path, offset: int = 0) -> tuple[list[dict], int]:
    """Complete rows appended to a JSONL file since byte `offset`, and the offset to read from next time.

    A live run appends to the file: a last line without its newline is left for the next read.
    """
    if not path.is_file():
        return [], 0
    with path.open("rb") as f:
        f.seek(offset)
        chunk = f.read()
    end = chunk.rfind(b"\n") + 1
    rows = []
    for line in chunk[:end].splitlines():
        with contextlib.suppress(json.JSONDecodeError, UnicodeDecodeError):
            rows.append(json.loads(line))
    return rows, offset + end


def read_metrics(run_dir: Path) -> list[dict]:
    """The metrics rows written so far."""
    return read_jsonl_since(run_dir / "metrics.jsonl")[0]


def read_samples(run_dir: Path) -> list[dict]:
    """The completions sampled during training so far (samples.jsonl), oldest first."""
    return read_jsonl_since(run_dir / "samples.jsonl")[0]


class MetricsTail:
    """The metrics of one run, reading only what was appended since the last call (the UI polls every 2 s)."""

    def __init__(self, run_dir: Path) -> None:
        self.path, self.offset, self.rows = run_dir / "metrics.jsonl", 0, []

    def read(self) -> list[dict]:
        new, self.offset = read_jsonl_since(self.path, self.offset)
        self.rows.extend(new)
        return self.rows


def latest_checkpoint(run_dir: Path) -> str | None:
    checkpoints = sorted((run_dir / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    return str(checkpoints[-1]) if checkpoints else None


def log_tail(run_dir: Path, lines: int = 20) -> str:
    path = run_dir / "log.txt"
    if not path.is_file():
        return ""
    text = path.read_text(encoding="utf-8", errors="replace").replace("\r", "\n")
    return "\n".join([line for line in text.splitlines() if line.strip()][-lines:])


class StopSignal:
    """Whether one run was asked to stop: by Ctrl-C or the app's SIGTERM, by `set()` from any thread, or by
    its row in the workspace turning 'stopping' (a Stop pressed in another process). Belongs to one run, so a
    stop never leaks into the next run of the same process."""

    def __init__(self, store=None, run_id: str | None = None, poll_s: float = 1.0) -> None:
        self._event = threading.Event()
        self._store, self._run_id, self._poll_s = store, run_id, poll_s
        self._checked = 0.0

    def set(self) -> None:
        self._event.set()

    def is_set(self) -> bool:
        if not self._event.is_set() and self._store is not None and time.monotonic() - self._checked >= self._poll_s:
            self._checked = time.monotonic()
            if self._store.get_run(self._run_id).status == "stopping":
                self._event.set()
        return self._event.is_set()


@contextlib.contextmanager
def stop_signals(stop: StopSignal) -> Iterator[None]:
    """While training: SIGTERM (the app's Stop) and SIGINT (Ctrl-C) finish the current step instead of killing
    the run; a second Ctrl-C stops at once. Python only lets the main thread install handlers, so a run driven
    from another thread (a notebook, a test) relies on `stop.set()` and the workspace instead."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def request_stop(signum, frame):
        if stop._event.is_set():
            raise KeyboardInterrupt
        stop.set()  # only set a flag here: writing to stderr mid-write of tqdm could raise

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
