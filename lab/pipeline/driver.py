"""Keeping a pipeline moving without a page open, and following it from a terminal or a notebook."""

from __future__ import annotations

import contextlib
import threading
import time
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING

from lab import jobs
from lab.pipeline.record import PipelineError, list_pipelines
from lab.pipeline.steps import advance, stop
from lab.pipeline.tracking import progress

if TYPE_CHECKING:
    from lab.session import Lab


_drivers: dict[tuple[str, str], threading.Thread] = {}  # (workspace, pipeline) → the thread moving it
_drivers_lock = threading.Lock()


def drive(lab: Lab, pipeline_id: str, every: float = 2.0) -> None:
    """Keep a running pipeline moving from this process, in a thread that ends with it: the next step starts
    though no page and no terminal is watching. Calling it again while that thread runs does nothing."""
    key = (str(lab.store.root), pipeline_id)
    with _drivers_lock:
        if key in _drivers and _drivers[key].is_alive():
            return

        def loop() -> None:
            while True:
                try:
                    jobs.start_next(lab.store)
                    if advance(lab, pipeline_id).state != "running":
                        return
                except KeyError:  # the workspace or the pipeline is gone
                    return
                except Exception:  # a locked database, a vanished folder: report it and try again
                    traceback.print_exc()
                time.sleep(every)

        _drivers[key] = threading.Thread(target=loop, name=f"driver-{pipeline_id}", daemon=True)
        _drivers[key].start()


def drive_running(lab: Lab) -> list[str]:
    """Keep every pipeline still running in this workspace moving (an app started again after a stop or a crash
    picks up where the last one was); returns their ids."""
    running = [r.id for r in list_pipelines(lab.store) if r.state == "running"]
    for pipeline_id in running:
        drive(lab, pipeline_id)
    return running


def follow(lab: Lab, pipeline_id: str, echo: Callable[[str], None], timeout: float | None, poll_s: float) -> str:
    """Wait for the pipeline to end, echoing a progress line when the step or state changes (and every 10 s
    meanwhile); returns its final state. An interrupt stops it at the current step, waits until that run has
    saved what it learned, then raises KeyboardInterrupt again."""
    deadline = None if timeout is None else time.monotonic() + timeout
    said, said_at = None, 0.0
    try:
        while True:
            jobs.start_next(lab.store)
            now_at = progress(lab, pipeline_id)
            if (now_at.state, now_at.current) != said or time.monotonic() - said_at >= 10:
                echo(now_at.text())
                said, said_at = (now_at.state, now_at.current), time.monotonic()
            if now_at.state in ("done", "stopped", "failed"):
                return now_at.state
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"Pipeline {pipeline_id} is still {now_at.state} after {timeout} s.")
            time.sleep(poll_s)
    except KeyboardInterrupt:
        with contextlib.suppress(PipelineError):
            stop(lab, pipeline_id)
        while progress(lab, pipeline_id).state == "stopping":
            time.sleep(poll_s)
        echo(progress(lab, pipeline_id).text())
        raise
