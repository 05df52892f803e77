"""The whole recipe on a scenario in one go: SFT on its demonstrations → a reward model on its comparisons → DPO
on the SFT adapter (or RLOO rewarded by the reward model) → an evaluation of before against after.

Each step is a run on the job engine (lab.jobs), started when the step before it is done. The pipeline itself is
a small JSON file in the workspace (pipelines/<id>.json) naming its scenario, its options and each step's runs,
so the app, the CLI and a notebook see the same state, and it outlives the process that started it: whoever
looks at it (`advance`, called by every poll) starts the next step. A stop ends the current run with what it
learned saved and starts nothing after it; a resume continues that run from its checkpoint (or runs the step
again where there is none, as for an evaluation) and never redoes a finished step.

    from lab import Lab

    lab = Lab("workspace")
    pipeline = lab.pipeline("Truthfulness")     # checked, then its first step is queued
    pipeline.wait()                             # progress lines; Ctrl-C stops it at the current step
    pipeline.table()                            # before/after: win rate, reward, rule check, KL, length
    pipeline.resume()                           # after a stop or a failure: from the step it ended at

The parts: `record` (the JSON file), `workspace` (where a pipeline runs), `steps` (start, advance, stop,
resume), `tracking` (progress and time left), `driver` (moving it on without a page open), `results` (the
before/after table); `Pipeline` below is what a notebook, the CLI and the app hold.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lab.pipeline.driver import drive, drive_running, follow
from lab.pipeline.record import POLICY_METHODS, STEPS, TITLES, PipelineError, Record, list_pipelines, load
from lab.pipeline.results import report, table, verdicts
from lab.pipeline.steps import STEP_SETTINGS, advance, resume, start, step_overrides, stop
from lab.pipeline.tracking import STEP_SECONDS, Progress, progress
from lab.pipeline.workspace import load_scenario, open_workspace

if TYPE_CHECKING:
    import pandas as pd

    from lab.session import Lab

__all__ = [
    "POLICY_METHODS",
    "STEPS",
    "STEP_SECONDS",
    "STEP_SETTINGS",
    "TITLES",
    "Pipeline",
    "PipelineError",
    "Progress",
    "advance",
    "begin",
    "drive",
    "drive_running",
    "latest",
    "load_scenario",
    "open_workspace",
    "progress",
    "resume",
    "start",
    "step_overrides",
    "stop",
]


@dataclass
class Pipeline:
    """A pipeline as `Lab.pipeline` returns it: its progress, wait, stop, resume and the before/after table."""

    lab: Lab
    id: str

    def __repr__(self) -> str:
        return f"Pipeline({self.id!r}, status={self.status!r})"

    @property
    def record(self) -> Record:
        return load(self.lab.store, self.id)

    @property
    def status(self) -> str:
        """running, stopping, stopped, failed or done."""
        return self.progress().state

    def progress(self) -> Progress:
        """Each step's status and progress, elapsed and left; `.text()` says it in one line. While the pipeline
        runs, this process keeps it moving (after a restart of the app, the first look picks it up again)."""
        now_at = progress(self.lab, self.id)
        if now_at.state == "running":
            drive(self.lab, self.id)
        return now_at

    def wait(self, timeout: float | None = None, poll_s: float = 2.0, echo: Callable[[str], None] = print) -> str:
        """Block until the pipeline ends, echoing progress lines; returns its final state (done, stopped, failed).
        Ctrl-C (or the notebook's stop button) stops it at the current step, then raises KeyboardInterrupt."""
        return follow(self.lab, self.id, echo, timeout, poll_s)

    def stop(self) -> Pipeline:
        """Stop at the current step; what it learned is saved and no later step starts."""
        stop(self.lab, self.id)
        return self

    def resume(self) -> Pipeline:
        """Continue from the step it stopped or failed at; finished steps are not run again."""
        resume(self.lab, self.id)
        drive(self.lab, self.id)
        return self

    def report(self) -> dict | None:
        return report(self.lab, self.id)

    def table(self) -> pd.DataFrame | None:
        return table(self.lab, self.id)

    def verdicts(self) -> list[str]:
        return verdicts(self.lab, self.id)


def begin(lab: Lab, scenario: str, method: str = "dpo", **options: Any) -> Pipeline:
    """Start a pipeline (see `start`) and keep it moving from this process; returns it."""
    pipeline = Pipeline(lab, start(lab, scenario, method, **options).id)
    drive(lab, pipeline.id)
    return pipeline


def latest(lab: Lab, scenario: str | None = None) -> Pipeline | None:
    """The newest pipeline of the workspace (of a scenario, by its display or file name), if any."""
    from lab.scenarios import find

    name = find(scenario)[1].name if scenario else None
    found = [r for r in list_pipelines(lab.store) if name is None or r.scenario == name]
    return Pipeline(lab, found[0].id) if found else None
