"""Training tab: pick a method, start a run on its data, watch it live, stop, resume, compare runs.

The form, the data picker and the curve panels are generated from the method registry (lab.train.training_methods):
a new method shows up here without a change to this file.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import partial

import gradio as gr
import pandas as pd

from lab import Lab, jobs
from lab.curves import curves, kl_note, progress
from lab.fields import describe_range
from lab.store import ORIGINS
from lab.train import get_method, training_methods
from lab.train.config import form_fields, group_of
from lab.train.runs import MetricsTail, log_tail, read_samples
from ui.errors import UserError
from ui.export import build_export
from ui.votes import VotePicker, build_vote_picker, pair_count

RUN_COLUMNS = ["id", "name", "method", "status", "steps", "final loss", "created"]
SAMPLE_COLUMNS = ["step", "prompt", "completion", "reward"]  # reward: RL runs write the reward of each rollout
NEW_ADAPTER = "(new adapter)"
PROMPT_POOL = "the workspace's prompt pool"
NO_RUNS = (
    "**No runs yet:** pick a method on the left and press **Start training**. **sft** trains on the accepted "
    "demonstrations (Demonstrations tab); **reward** and **dpo** on the votes (Ranking tab); the RL methods on "
    "prompts, scored by a reward. The Workshop tab runs the whole recipe in one go."
)
PICK_RUN = "Pick a run to see its progress and curves."
MEMORY_FIELDS = {  # the form fields the memory estimate reads
    *("batch_size", "grad_accum", "max_length", "lora_r", "lora_dropout", "target_modules", "mixed_precision"),
    *("pairing", "num_generations", "max_completion_length", "kl_coef"),
}


def build_training(ctx: Lab, tab: gr.Tab | None = None) -> NewRunForm:
    tails = gr.State({})  # run id → MetricsTail: this browser reads only what each run appended since its last poll
    first_preset = "cpu-default" if "cpu-default" in ctx.model_presets else next(iter(ctx.model_presets))
    first_method = next(iter(training_methods()))
    forms: dict[str, dict[str, gr.components.Component]] = {}
    groups: dict[str, gr.Group] = {}
    with gr.Row():
        with gr.Column(scale=2):
            gr.Markdown("### New run")
            with gr.Row():
                method = gr.Dropdown(
                    [(f"{m.name}: {m.summary}", m.name) for m in training_methods().values()],
                    value=first_method,
                    label="Method",
                    elem_id="train-method",
                )
                preset = gr.Dropdown(
                    list(ctx.model_presets),
                    value=first_preset,
                    label="Model preset",
                    info="Model, precision (4bit = QLoRA), LoRA defaults and lengths for your hardware",
                )
            with gr.Row():
                name = gr.Textbox(label="Run name", placeholder="optional")
                start_from = gr.Dropdown(
                    [NEW_ADAPTER],
                    value=NEW_ADAPTER,
                    label="Start from",
                    info="A new LoRA adapter, or continue one of this method's trained on the preset's base",
                )
            origins = gr.CheckboxGroup(
                list(ORIGINS),
                value=list(ORIGINS),
                label="Train on demonstrations written by",
                info="Compare human-only, teacher-only or both",
                visible=get_method(first_method).data == "demonstrations",
            )
            votes = build_vote_picker(ctx, visible=get_method(first_method).data == "preferences", elem_prefix="train")
            prompts = gr.Dropdown(
                [PROMPT_POOL, *ctx.scenarios],
                value=PROMPT_POOL,
                label="Sample prompts from",
                info="The prompts the policy answers during RL: the workspace's prompt pool or a scenario's questions",
                visible=get_method(first_method).data == "prompts",
            )
            data_file = gr.File(
                label="…or train on a file instead (JSONL, JSON, CSV or Parquet)",
                file_types=[".jsonl", ".json", ".csv", ".parquet"],
            )
        with gr.Column(scale=3):
            gr.Markdown("### Runs")
            table = gr.Dataframe(
                pd.DataFrame(columns=RUN_COLUMNS),
                interactive=False,
                max_height=260,
                elem_id="runs-table",
                column_widths=["26%", "12%", "10%", "10%", "9%", "13%", "20%"],
            )
            with gr.Row():
                selected = gr.Dropdown([], label="Run", scale=3, elem_id="run-picker")
                compare = gr.Dropdown([], label="Compare with", scale=3)
            with gr.Row():
                stop = gr.Button("Stop (keeps the adapter)", variant="stop", size="sm")
                resume = gr.Button("Resume", size="sm")
            status = gr.Markdown(partial(no_run_picked, ctx), elem_id="run-status")
            build_export(ctx, selected)
    with gr.Accordion("Hyperparameters", open=False):
        for spec in training_methods().values():
            values = _preset_config(ctx, spec.name, first_preset)
            with gr.Group(visible=spec.name == first_method) as groups[spec.name]:
                forms[spec.name] = _form(spec.config, values)
                if "reward" in forms[spec.name]:
                    shown = gr.Markdown(reward_formula(values.reward), elem_id=f"{spec.name}-formula")
                    forms[spec.name]["reward"].change(reward_formula, forms[spec.name]["reward"], shown)
    with gr.Row():
        start = gr.Button("Start training", variant="primary", elem_id="start-run", scale=1)
        start_message = gr.Markdown(elem_id="start-message")
    memory = gr.Markdown(elem_id="memory-estimate")
    plot = gr.Plot(label="Curves", visible=False)  # shown with a run
    samples = gr.Dataframe(
        pd.DataFrame(columns=SAMPLE_COLUMNS),
        label="What the model answers as it trains (samples.jsonl)",
        interactive=False,
        wrap=True,
        max_height=300,
    )
    with gr.Accordion("Config and log", open=False):
        config_view = gr.Code(language="yaml", label="config.yaml")
        log = gr.Textbox(label="Last lines of log.txt", lines=10, max_lines=20)

    controls = [c for form in forms.values() for c in form.values()]
    view = RunView(table, status, plot, samples, config_view, log, tails)

    def pick_method(chosen: str):
        spec = get_method(chosen)
        shown = {groups[m]: gr.update(visible=m == chosen) for m in groups}
        return {
            **shown,
            origins: gr.update(visible=spec.data == "demonstrations"),
            votes.box: gr.update(visible=spec.data == "preferences"),
            prompts: gr.update(visible=spec.data == "prompts"),
            start_from: gr.update(choices=[NEW_ADAPTER], value=NEW_ADAPTER),  # the other method's kind no longer fits
        }

    def fill_form(chosen_preset: str):
        try:
            configs = {m: _preset_config(ctx, m, chosen_preset) for m in forms}
        except ValueError as err:
            gr.Warning(str(err))
            return {}
        return {forms[m][f]: getattr(configs[m], f) for m in forms for f in forms[m]}

    form = NewRunForm(method, preset, name, start_from, origins, votes, prompts, data_file, forms)

    def start_run(values: dict):
        message, run_id = queue_run(ctx, form, values)
        return {start_message: message, selected: gr.update(choices=_run_choices(ctx), value=run_id)}

    method.change(pick_method, method, [*groups.values(), origins, votes.box, prompts, start_from])
    preset.change(fill_form, preset, controls)
    gr.Timer(2.0).tick(partial(poll, ctx, view), [selected, compare, tails], view.outputs, show_progress="hidden")
    selected.focus(lambda: gr.update(choices=_run_choices(ctx)), outputs=selected)
    compare.focus(lambda: gr.update(choices=_run_choices(ctx)), outputs=compare)
    start_from.focus(partial(list_starts, ctx), [preset, method], start_from)
    count_inputs = {
        method,
        data_file,
        *votes.inputs,
        *(fields["eval_fraction"] for fields in forms.values() if "eval_fraction" in fields),
    }
    for trigger in count_inputs:
        trigger.change(partial(count_votes, ctx, form), count_inputs, votes.count, show_progress="hidden")
    memory_inputs = {method, preset, *(forms[m][f] for m in forms for f in forms[m] if f in MEMORY_FIELDS)}
    for trigger in memory_inputs:
        trigger.change(partial(estimate_line, ctx, form), memory_inputs, memory, show_progress="hidden")
    if tab is not None:  # on opening the tab, not at start-up: the first estimate reads the model's shapes
        tab.select(partial(estimate_line, ctx, form), memory_inputs, memory, show_progress="hidden")
        tab.select(partial(count_votes, ctx, form), count_inputs, votes.count, show_progress="hidden")
    for control in (selected, compare):
        control.change(partial(show_run, ctx, view), [selected, compare, tails], view.outputs[1:])
    start.click(
        start_run,
        {method, preset, name, start_from, origins, *votes.inputs, prompts, data_file, *controls},
        [start_message, selected],
    )
    stop.click(partial(stop_run, ctx), selected, status)
    resume.click(partial(resume_run, ctx), selected, status)
    return form


def reward_formula(spec: str) -> str:
    """The RL reward as a formula, or why the spec cannot be read (one sentence)."""
    from lab.rewards import RewardSpecError, formula, parse_reward

    try:
        return f"Reward: `{formula(parse_reward(spec or ''))}`"
    except RewardSpecError as err:
        return f"⚠ {err}"


def _form(config_cls: type, values) -> dict[str, gr.components.Component]:
    """One control per form field of a method's config, grouped as the config groups them (four to a row),
    with the field's help and range as its tooltip."""
    groups: dict[str, list[dataclasses.Field]] = {}
    for spec in form_fields(config_cls):
        groups.setdefault(group_of(config_cls, spec.name), []).append(spec)
    controls = {}
    for group, specs in groups.items():
        gr.Markdown(f"**{group}**")
        for first in range(0, len(specs), 4):
            with gr.Row():
                for spec in specs[first : first + 4]:
                    controls[spec.name] = _component(spec, getattr(values, spec.name))
    return controls


def _component(spec: dataclasses.Field, value):
    bounds = describe_range(spec)
    help_text = spec.metadata.get("help", "") + (f" ({bounds})" if bounds else "")
    if spec.metadata.get("choices"):
        return gr.Dropdown(list(spec.metadata["choices"]), value=value, label=spec.name, info=spec.metadata["help"])
    if isinstance(spec.default, bool):
        return gr.Checkbox(value=value, label=spec.name, info=help_text)
    if isinstance(spec.default, int | float):
        precision = 0 if isinstance(spec.default, int) else None
        return gr.Number(value=value, label=spec.name, info=help_text, precision=precision)
    return gr.Textbox(value=value, label=spec.name, info=help_text)


def _preset_config(ctx: Lab, method: str, preset: str):
    return get_method(method).config_for(ctx.model_presets[preset], where=f"preset {preset}")


def _run_choices(ctx: Lab) -> list[tuple[str, str]]:
    # No status in the label: a choice is not refreshed while a run moves on; the status line says it live.
    return [(f"{r.name} · {r.id}" if r.name else r.id, r.id) for r in ctx.store.list_runs()]


def count_votes(ctx: Lab, form: NewRunForm, values: dict) -> str:
    """The pair count line, for a method that trains on preferences."""
    spec = get_method(values[form.method])
    if spec.data != "preferences":
        return ""
    eval_fraction = values[form.fields[spec.name]["eval_fraction"]]
    return pair_count(ctx, form.votes, values, values[form.data_file], eval_fraction)


def estimate_line(ctx: Lab, form: NewRunForm, values: dict) -> str:
    """The estimated peak memory of the run the form describes, with advice when it will not fit."""
    from lab.models import ModelError
    from lab.train.memory import estimate_memory

    spec = get_method(values[form.method])
    overrides = {f: values[c] for f, c in form.fields[spec.name].items() if f in MEMORY_FIELDS}
    if any(value is None or value == "" for value in overrides.values()):
        return ""
    try:
        config = spec.config_for(ctx.model_presets[values[form.preset]], overrides, where="Hyperparameters")
        return estimate_memory(spec.name, config).summary()
    except (ModelError, OSError, ValueError, KeyError) as err:  # an estimate never blocks the form: say why not
        return f"No memory estimate: {err}"


def list_starts(ctx: Lab, preset: str, method: str):
    """A new adapter, or one of the kind this method makes trained on the preset's base (a reward model does not
    continue a chat adapter, and another base's adapter cannot continue at all)."""
    adapters = ctx.adapters(kind=get_method(method).adapter_kind, base=ctx.model_presets[preset].model)
    return gr.update(choices=[NEW_ADAPTER, *((a.label, a.run_id) for a in adapters.values())])


@dataclass
class NewRunForm:
    """The components of the new-run form, so the start handler reads the values it was given by component."""

    method: gr.Dropdown
    preset: gr.Dropdown
    name: gr.Textbox
    start_from: gr.Dropdown
    origins: gr.CheckboxGroup
    votes: VotePicker
    prompts: gr.Dropdown
    data_file: gr.File
    fields: dict[str, dict[str, gr.components.Component]]  # method → config field → control


def queue_run(ctx: Lab, form: NewRunForm, values: dict) -> tuple[str, str]:
    """Check the form into a config (one sentence if wrong), then queue the run; it starts when the device is free.
    Returns the message and the run's id."""
    spec = get_method(values[form.method])
    overrides = {field: values[control] for field, control in form.fields[spec.name].items()}
    empty = [key for key, value in overrides.items() if value is None or value == ""]
    if empty:
        raise UserError(f"Fill in {empty[0]} (Hyperparameters).")
    chosen_start = values[form.start_from]
    if chosen_start and chosen_start != NEW_ADAPTER:
        overrides["init_adapter"] = str(ctx.adapters(kind=spec.adapter_kind)[chosen_start].path)
    data_file, options = values[form.data_file] or "", {}
    if spec.data == "demonstrations":
        if not values[form.origins] and not data_file:
            raise UserError("Tick at least one origin of demonstrations to train on, or upload a data file.")
        options["origins"] = values[form.origins]
    elif spec.data == "preferences":
        options = form.votes.options(values)
    elif spec.data == "prompts" and values[form.prompts] != PROMPT_POOL:
        options["scenario"] = values[form.prompts]
    try:
        config = spec.config_for(ctx.model_presets[values[form.preset]], overrides, where="Hyperparameters")
        run = jobs.prepare(
            ctx.store, spec.name, config, name=(values[form.name] or "").strip(), data_file=data_file, **options
        )
        run = jobs.submit(ctx.store, run)
    except (ValueError, KeyError) as err:
        raise UserError(str(err).strip("'\"")) from err
    where = "started" if run.status == "running" else "queued: it starts when the current run ends"
    return f"Run **{run.id}** {where}.", run.id


def runs_table(ctx: Lab, tails: dict[str, MetricsTail]) -> pd.DataFrame:
    rows = []
    for run in ctx.store.list_runs():
        metrics = _tail(ctx, tails, run.id).read()
        losses = [r["loss"] for r in metrics if "loss" in r]
        rows.append(
            {
                "id": run.id,
                "name": run.name,
                "method": run.method,
                "status": run.status,
                "steps": metrics[-1]["step"] if metrics else 0,
                "final loss": round(losses[-1], 4) if losses else None,
                "created": run.created_at[:19].replace("T", " "),
            }
        )
    return pd.DataFrame(rows, columns=RUN_COLUMNS)


def _tail(ctx: Lab, tails: dict[str, MetricsTail], run_id: str) -> MetricsTail:
    if run_id not in tails:
        tails[run_id] = MetricsTail(jobs.run_dir(ctx.store, run_id))
    return tails[run_id]


@dataclass
class RunView:
    """What the runs side of the tab shows; handlers return updates keyed by these components."""

    table: gr.Dataframe
    status: gr.Markdown
    plot: gr.Plot
    samples: gr.Dataframe
    config: gr.Code
    log: gr.Textbox
    tails: gr.State

    @property
    def outputs(self) -> list:
        return [self.table, self.status, self.plot, self.samples, self.config, self.log, self.tails]


def poll(ctx: Lab, view: RunView, run_id: str | None, other: str | None, tails: dict) -> dict:
    """Every two seconds: repair dead runs and refresh what is on screen from what the runs appended."""
    jobs.refresh(ctx.store)
    return {view.table: runs_table(ctx, tails), **show_run(ctx, view, run_id, other, tails)}


def no_run_picked(ctx: Lab) -> str:
    """What the runs side says with no run picked: how to start one, or to pick one."""
    return PICK_RUN if ctx.store.list_runs() else NO_RUNS


def show_run(ctx: Lab, view: RunView, run_id: str | None, other: str | None, tails: dict) -> dict:
    if not run_id:
        no_samples = pd.DataFrame(columns=SAMPLE_COLUMNS)
        no_plot = gr.update(value=None, visible=False)
        empty = {view.plot: no_plot, view.samples: no_samples, view.config: "", view.log: "", view.tails: tails}
        return {view.status: no_run_picked(ctx), **empty}
    run = ctx.store.get_run(run_id)
    spec = get_method(run.method)
    folder = jobs.run_dir(ctx.store, run_id)
    rows = _tail(ctx, tails, run_id).read()
    fraction, text = progress(rows, run.status)
    bar = f"<progress value='{fraction:.3f}' max='1' style='width:100%'></progress>"
    lines = [f"**{run.name or run.id}** · {run.method} · {run.status} · {text}", bar, provenance_text(run)]
    if run.status in ("done", "stopped") and (folder / "adapter").is_dir():
        where = "the Chat tab's adapter picker" if spec.adapter_kind == "chat" else "the reward model pickers"
        lines.append(f"Adapter: `{folder / 'adapter'}`; pick **{run.id}** in {where}.")
    if run.status == "done" and spec.adapter_kind is None:
        lines.append("An evaluation: its table and charts are in the Evaluation tab.")
    if run.error:
        lines.append(f"**Error:** {run.error}")
    series = {run.name or run.id: rows}
    if other and other != run_id:
        second = ctx.store.get_run(other)
        series[second.name or other] = _tail(ctx, tails, other).read()
        note = kl_note((run.name or run.id, second.name or other), (run.config, second.config))
        lines += [note] if note else []
    config = (folder / "config.yaml").read_text(encoding="utf-8") if (folder / "config.yaml").is_file() else ""
    sampled = read_samples(folder)[::-1]
    columns = SAMPLE_COLUMNS if any("reward" in row for row in sampled) else SAMPLE_COLUMNS[:-1]
    answers = pd.DataFrame(sampled, columns=columns)
    return {
        view.status: "\n\n".join(lines),
        view.plot: gr.update(value=curves(series, spec.panels), visible=True),
        view.samples: answers,
        view.config: config,
        view.log: log_tail(folder, 20),
        view.tails: tails,
    }


def provenance_text(run) -> str:
    """Where a run came from, in one line: base, parent adapter, data (rows and hash), reward model."""
    p = run.provenance or {}
    data = p.get("data") or {}
    parent = p.get("parent_adapter") or {}
    parts = [f"base `{p.get('base_model') or run.config.get('model', '')}`"]
    parts.append(f"from run `{parent['run']}`" if parent.get("run") else "new adapter")
    if data:
        parts.append(f"data: {data['source']}, {data['rows']} rows (sha256 {data['sha256'][:12]})")
    if p.get("reward_model"):
        parts.append(f"reward model `{p['reward_model']}`")
    return "Provenance: " + " · ".join(parts)


def stop_run(ctx: Lab, run_id: str | None) -> str:
    if not run_id:
        raise UserError("Pick a run first.")
    try:
        jobs.stop(ctx.store, run_id)
    except jobs.JobError as err:
        raise UserError(str(err)) from err
    return "Stopping: the current step finishes, then the adapter is saved."


def resume_run(ctx: Lab, run_id: str | None) -> str:
    if not run_id:
        raise UserError("Pick a run first.")
    try:
        run = jobs.resume(ctx.store, run_id)
    except jobs.JobError as err:
        raise UserError(str(err)) from err
    return f"Run {run.id} {run.status} from its last checkpoint."
