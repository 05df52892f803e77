"""Starting, advancing, stopping and resuming a pipeline: each step is a run on the job engine, queued once the
step before it is done by whoever looks at the pipeline (`advance`, called by every poll)."""

from __future__ import annotations

import contextlib
import secrets
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lab import jobs
from lab.pipeline.record import (
    POLICY_METHODS,
    STEPS,
    TITLES,
    Options,
    PipelineError,
    Record,
    list_pipelines,
    load,
    locked,
    method_of,
    save,
)
from lab.store import Store
from lab.train.runs import latest_checkpoint

if TYPE_CHECKING:
    from lab.session import Lab

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


def start(lab: Lab, scenario: str, method: str = "dpo", **options: Any) -> Record:
    """Check everything a pipeline needs (scenario, method, every step's config, the data), record it and queue
    its first step. PipelineError (or a config's ValueError naming the key) before anything is queued."""
    opts = Options.of(options)
    scenario = check(lab, scenario, method, opts)
    record = Record(f"pipeline-{datetime.now():%Y%m%d-%H%M%S}-{secrets.token_hex(2)}", scenario, method, vars(opts))
    with locked(lab.store):
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
    with locked(lab.store):
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
    with locked(lab.store):
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
    with locked(lab.store):
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


def step_overrides(values: dict[str, Any]) -> dict[str, dict]:
    """`{"sft.max_steps": 5, "eval.max_prompts": 4}` (the command line's --set) as the options sft=…, eval=…."""
    options: dict[str, dict] = {}
    for key, value in values.items():
        step, dot, name = key.partition(".")
        if not dot or step not in STEPS or not name:
            raise PipelineError(f"--set {key}: write STEP.KEY=VALUE, with STEP one of {', '.join(STEPS)}.")
        options.setdefault(step, {})[name] = value
    return options
