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
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import secrets
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lab import jobs
from lab.curves import duration
from lab.store import Store, now
from lab.train.runs import latest_checkpoint, log_tail, read_metrics

if TYPE_CHECKING:
    import pandas as pd

    from lab.session import Lab

STEPS = ("sft", "reward", "policy", "eval")
POLICY_METHODS = ("dpo", "rloo")
TITLES = {"sft": "SFT", "reward": "reward model", "dpo": "DPO", "rloo": "RLOO", "eval": "evaluation"}

# Each step's settings over the preset's recipe: on the default model on an idle 2-core CPU (AMD EPYC, avx512_bf16)
# the whole recipe on Truthfulness took 5 min 21 s from `python -m lab pipeline` to its table (SFT 42 s, reward model
# 104 s, DPO 123 s, evaluation 50 s, process starts and loading included), and on its 12 held-out questions the rule
# check went 0.667 (base) → 0.917 (SFT) → 1.0 (DPO), the win rate against the base by the new reward model 33% (8%
# to 67%) after SFT and 92% (58% to 100%) after DPO, the mean reward −0.04 → −0.22 → 0.84. Options override these.
STEP_SETTINGS: dict[str, dict[str, Any]] = {
    "sft": {"max_steps": 20, "batch_size": 4, "learning_rate": 1e-3, "sample_every": 0},
    "reward": {"max_steps": 30},
    "dpo": {"max_steps": 30, "batch_size": 4, "max_length": 256},
    "rloo": {"max_steps": 15, "batch_size": 4, "num_generations": 4, "max_completion_length": 48, "sample_every": 5},
    "eval": {"max_prompts": 12, "max_new_tokens": 64},
}
# Each step's share of the recipe in seconds with those settings: measured in that run (RLOO's is an estimate). Only
# their ratios matter: what is left is scaled by the pace at which this machine ran the steps already done.
STEP_SECONDS = {"sft": 42.0, "reward": 104.0, "dpo": 123.0, "rloo": 180.0, "eval": 50.0}


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


# the record in the workspace


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


_thread_lock = threading.Lock()


@contextlib.contextmanager
def _locked(store: Store) -> Iterator[None]:
    """One change of a pipeline at a time, across threads and processes (the app's timer, a driver, the CLI)."""
    with _thread_lock:
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


# the workspace a pipeline runs in


def open_workspace(scenario: str, workspace: str | Path | None = None, truthfulqa: str | Path | None = None) -> Lab:
    """The lab a headless pipeline runs in: a fresh workspace seeded with the scenario (no `workspace`), or
    `workspace`, seeded when it holds no work yet, as it is when the scenario was loaded into it before (its
    votes since then are what the recipe trains on). A workspace holding other work is refused, never mixed."""
    from lab import Lab
    from lab.scenarios import find, holds_work

    if workspace is not None and holds_work(Path(workspace)):
        store = Store(workspace)
        if not loaded(store, scenario):
            raise PipelineError(
                f"Workspace {store.root} holds other work: leave --workspace out for a fresh one, or mix the scenario "
                f"into it first with: python -m lab scenario {find(scenario)[0]} --workspace {store.root} --mix"
            )
        return Lab(store)
    return Lab.from_scenario(scenario, workspace, truthfulqa)


def loaded(store: Store, scenario: str) -> bool:
    """Was the scenario seeded into this workspace (lab.scenarios writes its folder there)?"""
    from lab.scenarios import scenario_folder

    return (scenario_folder(store, scenario) / "scenario.json").is_file()


def load_scenario(lab: Lab, scenario: str, truthfulqa: str | Path | None = None, mix: bool = False) -> str:
    """Seed the lab's own workspace with a scenario (the Workshop tab's Load): only when nobody has worked in it
    yet (the bundled prompt pool the app starts with is no one's work), when the scenario is there already, or
    when `mix` asks to add it to the work there. Returns what was added, in one sentence."""
    from lab.scenarios import describe, seed

    if not (mix or loaded(lab.store, scenario) or not holds_own_work(lab.store)):
        raise PipelineError(
            "This workspace already holds work: tick 'mix with existing work', or start the app on a fresh "
            f"workspace of the scenario with: python -m ui --scenario {scenario!r}"
        )
    return describe(scenario, seed(lab.store, scenario, truthfulqa))


def holds_own_work(store: Store) -> bool:
    """Has anyone worked in this workspace: demonstrations, votes, experiments, runs, or prompts beyond the
    bundled question sets?"""
    return bool(
        store.list_demonstrations(status=None)
        or store.list_comparisons()
        or store.list_experiments()
        or store.list_runs()
        or any(not p.source.startswith("bundled:") for p in store.list_prompts())
    )


# starting, advancing, stopping, resuming


def start(lab: Lab, scenario: str, method: str = "dpo", **options: Any) -> Record:
    """Check everything a pipeline needs (scenario, method, every step's config, the data), record it and queue
    its first step. PipelineError (or a config's ValueError naming the key) before anything is queued."""
    opts = Options.of(options)
    scenario = check(lab, scenario, method, opts)
    record = Record(f"pipeline-{datetime.now():%Y%m%d-%H%M%S}-{secrets.token_hex(2)}", scenario, method, vars(opts))
    with _locked(lab.store):
        busy = [r for r in list_pipelines(lab.store) if r.state == "running"]
        if busy:
            raise PipelineError(f"Pipeline {busy[0].id} is running in this workspace: stop it or wait for it first.")
        save(lab.store, record)
    return advance(lab, record.id)


def check(lab: Lab, scenario: str, method: str, opts: Options) -> str:
    """Refuse, in one sentence, a pipeline that would fail at a later step: every config is built now, and the
    data is counted. Returns the scenario's display name (`scenario` may be its file's name)."""
    from lab.scenarios import find
    from lab.train.snapshot import EMPTY, count_pairs, preference_votes

    scenario = find(scenario)[1].name
    if method not in POLICY_METHODS:
        raise PipelineError(f"Method '{method}': the pipeline tunes the policy with {' or '.join(POLICY_METHODS)}.")
    if opts.preset not in lab.model_presets:
        raise PipelineError(f"Preset '{opts.preset}': choose one of {', '.join(lab.model_presets)}.")
    for step in STEPS:
        lab.config(method_of(step, method), opts.preset, **settings(step, method, opts))
    if not lab.store.list_demonstrations(status="accepted"):
        raise PipelineError(EMPTY["demonstrations"])
    if count_pairs(preference_votes(lab.store)[0]).pairs == 0:
        raise PipelineError(EMPTY["preferences"])
    return scenario


def settings(step: str, method: str, opts: Options) -> dict:
    """A step's config overrides: its STEP_SETTINGS, the options' steps and model, then its own overrides."""
    values = dict(STEP_SETTINGS[method_of(step, method)])
    if opts.steps and step != "eval":
        values["max_steps"] = opts.steps
    if opts.model:
        values["model"] = opts.model
    return {**values, **getattr(opts, step)}


def advance(lab: Lab, pipeline_id: str) -> Record:
    """Move a running pipeline on: queue the next step once the current one is done; a stopped run stops the
    pipeline, a failed one fails it with the run's reason. Safe to call from anywhere, any time (every poll does)."""
    jobs.refresh(lab.store)  # a run whose process died is failed before it is read
    with _locked(lab.store):
        record = load(lab.store, pipeline_id)
        if record.state != "running":
            return record
        step = _current(lab.store, record)
        if step is None:
            record.state = "done"
        elif record.runs[step] is None:
            try:
                record.runs[step] = _launch(lab, record, step)
            except (ValueError, KeyError, OSError) as err:  # the data or a run it builds on went missing
                record.state, record.error = "failed", _reason(err)
        else:
            run = lab.store.get_run(record.runs[step])
            if run.status not in ("stopped", "failed"):
                return record
            record.state, record.error = run.status, first_sentence(run.error)
        save(lab.store, record)
    return record


def first_sentence(error: str) -> str:
    """The reason a run failed, in one sentence: its error's first (the rest, such as a log's tail, is in the run)."""
    line = error.strip().splitlines()[0] if error.strip() else ""
    return line.split(". ", 1)[0].rstrip(".") + "." if ". " in line else line


def _reason(err: Exception) -> str:
    if isinstance(err, KeyError):
        return str(err.args[0])
    return jobs.explain(err) if isinstance(err, OSError) else str(err)


def _current(store: Store, record: Record) -> str | None:
    """The first step whose run is not done (None when all are)."""
    for step in STEPS:
        run_id = record.runs[step]
        if run_id is None or store.get_run(run_id).status != "done":
            return step
    return None


def _launch(lab: Lab, record: Record, step: str) -> str:
    """Prepare and queue the step's run on the runs before it; returns its id."""
    opts = Options(**record.options)
    values = settings(step, record.method, opts)
    name = f"{record.scenario} · {TITLES[record.method_of(step)]}"
    if step in ("sft", "reward"):
        return lab.train(step, preset=opts.preset, name=name, **values).id
    sft, reward, preset = record.runs["sft"], record.runs["reward"], lab.scenarios[record.scenario]
    if step == "policy":
        adapter = lab.run(sft).adapter
        if adapter is None:
            raise PipelineError(f"The SFT run {sft} has no adapter to continue.")
        if record.method == "rloo":  # the scenario's questions, or the pool where they come from the user's CSV
            where = {"scenario": record.scenario} if preset.questions else {}
            values = {"reward": f"model:{reward}", **where, **values}
        return lab.train(record.method, preset=opts.preset, name=name, init_adapter=str(adapter), **values).id
    models = ["base", *(["base+prompt"] if opts.system else []), sft, record.runs["policy"]]
    checks = f"scenario:{record.scenario}" if preset.check else ""
    files = evaluation_files(lab.store, record.scenario)
    where = {} if "prompts" in files else {"scenario": record.scenario}
    return lab.evaluate(
        models,
        preset=opts.preset,
        name=name,
        judge=reward,
        system=opts.system,
        checks=checks,
        **where,
        **files,
        **values,
    ).id


def evaluation_files(store: Store, scenario: str) -> dict[str, Path]:
    """What the before/after evaluation asks, from the scenario as loaded into the workspace (lab.scenarios): its
    held-out questions ("prompts") and, for TruthfulQA, its held-out MC questions ("truthfulqa"). A scenario that
    holds none out is evaluated on its own questions."""
    from lab.scenarios import scenario_folder

    folder = scenario_folder(store, scenario)
    files = {"prompts": folder / "held-out.jsonl", "truthfulqa": folder / "held-out.csv"}
    return {key: path for key, path in files.items() if path.is_file()}


def stop(lab: Lab, pipeline_id: str) -> Record:
    """Stop at the current step: its run ends its step and saves what it learned; no later step starts."""
    with _locked(lab.store):
        record = load(lab.store, pipeline_id)
        if record.state != "running":
            raise PipelineError(f"Pipeline {pipeline_id} is {record.state}; there is nothing to stop.")
        record.state = "stopped"
        step = _current(lab.store, record)
        run_id = record.runs[step] if step else None
        if run_id is not None and lab.store.get_run(run_id).status in ("queued", *jobs.ACTIVE):
            with contextlib.suppress(jobs.JobError):  # it finished meanwhile: the next step simply never starts
                jobs.stop(lab.store, run_id)
        save(lab.store, record)
    return record


def resume(lab: Lab, pipeline_id: str) -> Record:
    """Continue a stopped or failed pipeline from the step it ended at: that step's run resumes from its
    checkpoint, or the step runs again where there is none; finished steps are kept."""
    with _locked(lab.store):
        record = load(lab.store, pipeline_id)
        if record.state not in ("stopped", "failed"):
            raise PipelineError(f"Pipeline {pipeline_id} is {record.state}; only a stopped or failed one resumes.")
        step = _current(lab.store, record)
        run_id = record.runs[step] if step else None
        if run_id is not None:
            run = lab.store.get_run(run_id)
            if run.status in jobs.ACTIVE:
                raise PipelineError(f"Run {run_id} is still {run.status}: resume once it has saved what it learned.")
            if latest_checkpoint(jobs.run_dir(lab.store, run_id)) is not None:
                jobs.resume(lab.store, run_id)
            else:  # nothing to continue from: advance queues the step again as a new run
                record.replaced.append(run_id)
                record.runs[step] = None
        record.state, record.error = "running", ""
        save(lab.store, record)
    return advance(lab, pipeline_id)


# progress


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


# driving it


_drivers: dict[tuple[str, str], threading.Thread] = {}


def drive(lab: Lab, pipeline_id: str, every: float = 2.0) -> None:
    """Keep a running pipeline moving from this process, in a thread that ends with it: the next step starts
    though no page and no terminal is watching. Calling it again while that thread runs does nothing."""
    key = (str(lab.store.root), pipeline_id)
    with _thread_lock:
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


# the results


def report(lab: Lab, pipeline_id: str) -> dict | None:
    """The evaluation's report, once the pipeline is done (lab.train.evaluation)."""
    from lab.train.evaluation import read_report

    run_id = load(lab.store, pipeline_id).runs["eval"]
    return read_report(jobs.run_dir(lab.store, run_id)) if run_id else None


def table(lab: Lab, pipeline_id: str) -> pd.DataFrame | None:
    """Before against after, one row per model: the base, the base with the scenario's prompt, after SFT and
    after DPO (or RLOO), each metric with its 95% interval (lab.evaluate.summary_table); None until done."""
    from lab.evaluate import report_table, summary_table

    record, found = load(lab.store, pipeline_id), report(lab, pipeline_id)
    if found is None:
        return None
    stages = {
        "base": "before",
        "base+prompt": "before, with the prompt",
        record.runs["sft"]: "after SFT",
        record.runs["policy"]: f"after {TITLES[record.method]}",
    }
    summary = summary_table(report_table({record.runs["eval"]: found}))
    summary.insert(0, "stage", [stages.get(model, model) for model in summary["model"]])
    return summary


def verdicts(lab: Lab, pipeline_id: str) -> list[str]:
    """The evaluation's one-sentence verdicts ("prompt or fine-tune?"), once done."""
    found = report(lab, pipeline_id)
    return [v["sentence"] for v in found.get("verdicts", [])] if found else []


# the object a notebook, the CLI and the app hold


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


def step_overrides(values: dict[str, Any]) -> dict[str, dict]:
    """`{"sft.max_steps": 5, "eval.max_prompts": 4}` (the command line's --set) as the options sft=…, eval=…."""
    options: dict[str, dict] = {}
    for key, value in values.items():
        step, dot, name = key.partition(".")
        if not dot or step not in STEPS or not name:
            raise PipelineError(f"--set {key}: write STEP.KEY=VALUE, with STEP one of {', '.join(STEPS)}.")
        options.setdefault(step, {})[name] = value
    return options
