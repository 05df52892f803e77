"""Where a pipeline is: each step's status and progress, the time its runs have spent, and what is left."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from lab import jobs
from lab.curves import duration
from lab.pipeline.record import STEPS, TITLES, Options, Record
from lab.pipeline.steps import STEP_SETTINGS, advance, settings
from lab.store import Store
from lab.train.runs import log_tail, read_metrics

if TYPE_CHECKING:
    from lab.session import Lab

# Each step's share of the recipe in seconds with STEP_SETTINGS (lab.pipeline.steps), measured on the run
# described there (RLOO's is an estimate). Only their ratios matter: what is left is scaled by the pace at which this
# machine ran the steps already done.
STEP_SECONDS = {"sft": 42.0, "reward": 104.0, "dpo": 123.0, "rloo": 180.0, "eval": 50.0}


@dataclass(frozen=True)
class StepView:
    """One step as the progress view shows it."""

    number: int
    step: str
    title: str
    run: str | None
    status: str  # 'waiting' before its run is queued, else its run's status
    progress: str  # "step 12 / 30", an evaluation's last log line, or ""
    fraction: float  # of this step done, 0 to 1


@dataclass(frozen=True)
class Progress:
    """Where a pipeline is: its state, each step, the time spent training and an estimate of what is left."""

    id: str
    scenario: str
    method: str
    state: str  # running, stopping (stopped but its run has not saved yet), stopped, failed, done
    error: str
    steps: tuple[StepView, ...]
    current: int  # index of the step running, stopped or failed (len(steps) when done)
    elapsed_s: float
    left_s: float | None

    @property
    def fraction(self) -> float:
        return sum(s.fraction for s in self.steps) / len(self.steps)

    def text(self) -> str:
        """One line: "Step 2 of 4 (reward model): step 12 / 30 · 1 min 5 s elapsed · about 6 min left"."""
        if self.state == "done":
            return f"Done in {duration(self.elapsed_s)}."
        step = self.steps[self.current]
        where = f"step {step.number} of {len(self.steps)} ({step.title})"
        if self.state == "failed":
            return f"Failed at {where}: {self.error}"
        if self.state == "stopped":
            return f"Stopped at {where}; Resume continues from there."
        if self.state == "stopping":
            return f"Stopping at {where}: the run saves what it learned…"
        line = f"{where[0].upper()}{where[1:]}: {step.progress or step.status}"
        line += f" · {duration(self.elapsed_s)} elapsed"
        return line + (f" · about {duration(self.left_s)} left" if self.left_s is not None else "")

    def rows(self) -> list[list[str]]:
        """One row per step for a table: number, step, run, status, progress."""
        return [[str(s.number), s.title, s.run or "", s.status, s.progress] for s in self.steps]


def progress(lab: Lab, pipeline_id: str) -> Progress:
    """Where the pipeline is now (after moving it on): each step's status and progress, the time its runs have
    spent, and an estimate of what is left while it runs."""
    record = advance(lab, pipeline_id)
    runs = {step: lab.store.get_run(run_id) if run_id else None for step, run_id in record.runs.items()}
    views = tuple(_view(lab.store, number, step, record, runs[step]) for number, step in enumerate(STEPS, 1))
    current = next((i for i, view in enumerate(views) if view.status != "done"), len(views))
    state = record.state
    if state == "stopped" and any(run and run.status in jobs.ACTIVE for run in runs.values()):
        state = "stopping"
    spent = {step: _spent(run) for step, run in runs.items()}
    elapsed = sum(spent.values()) + sum(_spent(lab.store.get_run(r)) for r in record.replaced)
    left = _left(record, views, spent) if state == "running" else None
    return Progress(record.id, record.scenario, record.method, state, record.error, views, current, elapsed, left)


def _view(store: Store, number: int, step: str, record: Record, run) -> StepView:
    title = TITLES[record.method_of(step)]
    if run is None:
        return StepView(number, step, title, None, "waiting", "", 0.0)
    done = 1.0 if run.status == "done" else 0.0
    if step == "eval":  # no optimizer steps: the last line of its log says which stage it is at
        text = log_tail(jobs.run_dir(store, run.id), 1)[:100] if run.status in jobs.ACTIVE else ""
        return StepView(number, step, title, run.id, run.status, text, done)
    rows = read_metrics(jobs.run_dir(store, run.id))
    if not rows or not rows[-1].get("max_steps"):
        return StepView(number, step, title, run.id, run.status, "", done)
    at, total = int(rows[-1]["step"]), int(rows[-1]["max_steps"])
    return StepView(number, step, title, run.id, run.status, f"step {at} / {total}", done or min(at / total, 1.0))


def _spent(run) -> float:
    """Seconds a run has run (until now while it runs); 0 before it starts."""
    if run is None or not run.started_at:
        return 0.0
    end = datetime.fromisoformat(run.finished_at) if run.finished_at else datetime.now(timezone.utc)
    return max(0.0, (end - datetime.fromisoformat(run.started_at)).total_seconds())


def _expected(record: Record, step: str) -> float:
    """STEP_SECONDS for the step, in proportion to its optimizer steps where they differ from STEP_SETTINGS'."""
    method = record.method_of(step)
    seconds = STEP_SECONDS[method]
    if step == "eval":
        return seconds
    steps = settings(step, record.method, Options(**record.options)).get("max_steps", -1)
    return seconds * steps / STEP_SETTINGS[method]["max_steps"] if steps > 0 else seconds


def _left(record: Record, views: tuple[StepView, ...], spent: dict[str, float]) -> float:
    """What is left: the current step at its own pace (seconds per step) where it has logged one, the steps
    after it at STEP_SECONDS, each scaled by how this machine ran the steps done against the same figures."""
    done = [v.step for v in views if v.status == "done"]
    expected_done = sum(_expected(record, step) for step in done)
    pace = sum(spent[step] for step in done) / expected_done if done and expected_done else 1.0
    left = 0.0
    for view in views:
        if view.status == "done":
            continue
        expected = _expected(record, view.step) * pace
        if view.status == "waiting":
            left += expected
        elif view.fraction > 0 and spent[view.step] > 0:
            left += spent[view.step] * (1 - view.fraction) / view.fraction
        else:
            left += max(expected - spent[view.step], 0.0)
    return left
