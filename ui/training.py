"""Training tab: start an SFT run from the demonstrations, watch it live, stop, resume, compare runs."""

from __future__ import annotations

import dataclasses
from functools import partial

import gradio as gr
import pandas as pd

from lab import jobs
from lab.curves import curves, progress
from lab.store import ORIGINS
from lab.train import METHODS
from lab.train.common import config_for, read_metrics, read_samples
from ui.context import AppContext

RUN_COLUMNS = ["id", "name", "status", "steps", "final loss", "created"]
FORM_FIELDS = [  # the fields of SFTRunConfig shown in the form; the rest come from the model preset
    "learning_rate",
    "epochs",
    "max_steps",
    "batch_size",
    "grad_accum",
    "max_length",
    "eval_fraction",
    "lora_r",
    "lora_alpha",
    "lora_dropout",
    "target_modules",
    "seed",
    "save_steps",
]


def runs_table(ctx: AppContext) -> pd.DataFrame:
    rows = []
    for run in ctx.store.list_runs():
        metrics = read_metrics(jobs.run_dir(ctx.store, run.id))
        losses = [r["loss"] for r in metrics if "loss" in r]
        rows.append(
            {
                "id": run.id,
                "name": run.name,
                "method": run.method,
                "status": run.status,
                "model": run.config.get("model", ""),
                "steps": metrics[-1]["step"] if metrics else 0,
                "final loss": round(losses[-1], 4) if losses else None,
                "created": run.created_at[:19].replace("T", " "),
            }
        )
    return pd.DataFrame(rows, columns=RUN_COLUMNS)


def _component(spec: dataclasses.Field, value):
    """A form control for one config field, with the field's help text as its tooltip."""
    help_text = spec.metadata.get("help", "")
    if isinstance(spec.default, bool):
        return gr.Checkbox(value=value, label=spec.name, info=help_text)
    if isinstance(spec.default, int | float):
        precision = 0 if isinstance(spec.default, int) else None
        return gr.Number(value=value, label=spec.name, info=help_text, precision=precision)
    return gr.Textbox(value=value, label=spec.name, info=help_text)


def build_training(ctx: AppContext) -> None:
    fields = {f.name: f for f in dataclasses.fields(METHODS["sft"].config)}
    first_preset = "cpu-default" if "cpu-default" in ctx.model_presets else next(iter(ctx.model_presets))
    defaults = dict(zip(FORM_FIELDS, preset_values(ctx, first_preset), strict=True))
    with gr.Row():
        with gr.Column(scale=2):
            gr.Markdown("### New SFT run")
            with gr.Row():
                preset = gr.Dropdown(
                    list(ctx.model_presets),
                    value="cpu-default",
                    label="Model preset",
                    info="Model, precision (4bit = QLoRA), LoRA defaults and lengths for your hardware",
                )
                name = gr.Textbox(label="Run name", placeholder="optional")
            start_from = gr.Dropdown(
                ["(new adapter)"],
                value="(new adapter)",
                label="Start from",
                info="A new LoRA adapter on the base, or continue training a trained one",
            )
            origins = gr.CheckboxGroup(
                list(ORIGINS),
                value=list(ORIGINS),
                label="Train on demonstrations written by",
                info="Compare human-only, teacher-only or both",
            )
            data_file = gr.File(
                label="…or train on a file instead (JSONL, JSON, CSV or Parquet)",
                file_types=[".jsonl", ".json", ".csv", ".parquet"],
            )
            with gr.Accordion("Hyperparameters", open=False):
                controls = []
                for first in range(0, len(FORM_FIELDS), 3):
                    with gr.Row():
                        controls += [_component(fields[n], defaults[n]) for n in FORM_FIELDS[first : first + 3]]
            preset.change(partial(preset_values, ctx), preset, controls)
            start = gr.Button("Start training", variant="primary", elem_id="start-run")
            start_message = gr.Markdown(elem_id="start-message")
        with gr.Column(scale=3):
            gr.Markdown("### Runs")
            table = gr.Dataframe(
                runs_table(ctx),
                interactive=False,
                max_height=260,
                elem_id="runs-table",
                column_widths=["34%", "16%", "12%", "10%", "12%", "16%"],
            )
            with gr.Row():
                selected = gr.Dropdown([], label="Run", scale=3, elem_id="run-picker")
                compare = gr.Dropdown([], label="Compare with", scale=3)
            with gr.Row():
                stop = gr.Button("Stop (keeps the adapter)", variant="stop", size="sm")
                resume = gr.Button("Resume", size="sm")
            status = gr.Markdown(elem_id="run-status")
    plot = gr.Plot(label="Curves")
    samples = gr.Dataframe(
        label="What the model answers as it trains (samples.jsonl)", interactive=False, wrap=True, max_height=300
    )
    with gr.Accordion("Config and log", open=False):
        config_view = gr.Code(language="yaml", label="config.yaml")
        log = gr.Textbox(label="Last lines of log.txt", lines=10, max_lines=20)

    watch = [selected, compare]
    details = [status, plot, samples, config_view, log]
    timer = gr.Timer(2.0)
    timer.tick(partial(poll, ctx), watch, [table, *details], show_progress="hidden")
    selected.focus(partial(list_runs, ctx), outputs=selected)
    compare.focus(partial(list_runs, ctx), outputs=compare)
    start_from.focus(partial(list_starts, ctx), outputs=start_from)
    for control in watch:
        control.change(partial(show_run, ctx), watch, details)
    start.click(
        partial(start_run, ctx), [preset, name, start_from, origins, data_file, *controls], [start_message, selected]
    )
    stop.click(partial(stop_run, ctx), selected, status)
    resume.click(partial(resume_run, ctx), selected, status)


def preset_values(ctx: AppContext, preset: str) -> list:
    """The form's values for a model preset: its LoRA settings and lengths, the method's defaults elsewhere."""
    config = config_for(METHODS["sft"].config, ctx.model_presets[preset])
    return [getattr(config, name) for name in FORM_FIELDS]


def list_runs(ctx: AppContext):
    return gr.update(choices=[(f"{r.name or r.id} · {r.status}", r.id) for r in ctx.store.list_runs()])


def list_starts(ctx: AppContext):
    return gr.update(choices=["(new adapter)", *jobs.list_adapters(ctx.store)])


def start_run(
    ctx: AppContext, preset: str, name: str, start_from: str, origins: list[str], data_file: str | None, *values
):
    """Check the form into a config (one sentence if wrong), then queue the run; it starts when the device is free."""
    overrides = dict(zip(FORM_FIELDS, values, strict=True))
    empty = [key for key, value in overrides.items() if value is None or value == ""]
    if empty:
        raise gr.Error(f"Fill in {empty[0]} (Hyperparameters).")
    if not origins and not data_file:
        raise gr.Error("Tick at least one origin of demonstrations to train on, or upload a data file.")
    if start_from and start_from != "(new adapter)":
        overrides["init_adapter"] = str(jobs.list_adapters(ctx.store)[start_from])
    try:
        config = config_for(METHODS["sft"].config, ctx.model_presets[preset], overrides, where="form")
        run = jobs.prepare(ctx.store, "sft", config, name=name.strip(), data_file=data_file or "", origins=origins)
        run = jobs.submit(ctx.store, run)
    except (ValueError, KeyError) as err:
        raise gr.Error(str(err).strip("'\"")) from err
    where = "started" if run.status == "running" else "queued: it starts when the current run ends"
    return f"Run **{run.id}** {where}.", gr.update(choices=[run.id], value=run.id)


def poll(ctx: AppContext, run_id: str | None, other: str | None):
    """Every two seconds: repair dead runs, start the next queued one, and refresh what is on screen."""
    jobs.start_next(ctx.store)
    return runs_table(ctx), *show_run(ctx, run_id, other)


def show_run(ctx: AppContext, run_id: str | None, other: str | None):
    if not run_id:
        return "Pick a run to see its progress and curves.", None, None, "", ""
    run = ctx.store.get_run(run_id)
    folder = jobs.run_dir(ctx.store, run_id)
    rows = read_metrics(folder)
    fraction, text = progress(rows, run.status)
    bar = f"<progress value='{fraction:.3f}' max='1' style='width:100%'></progress>"
    lines = [f"**{run.name or run.id}** · {run.status} · {text}", bar]
    if run.status in ("done", "stopped") and (folder / "adapter").is_dir():
        lines.append(f"Adapter: `{folder / 'adapter'}`; pick **{run.id}** as the adapter in the Chat tab.")
    if run.error:
        lines.append(f"**Error:** {run.error}")
    series = {run.name or run.id: rows}
    if other and other != run_id:
        series[ctx.store.get_run(other).name or other] = read_metrics(jobs.run_dir(ctx.store, other))
    config = (folder / "config.yaml").read_text(encoding="utf-8") if (folder / "config.yaml").is_file() else ""
    answers = pd.DataFrame(read_samples(folder)[::-1], columns=["step", "prompt", "completion"])
    return "\n\n".join(lines), curves(series), answers, config, jobs.log_tail(folder, 20)


def stop_run(ctx: AppContext, run_id: str | None) -> str:
    if not run_id:
        raise gr.Error("Pick a run first.")
    try:
        jobs.stop(ctx.store, run_id)
    except jobs.JobError as err:
        raise gr.Error(str(err)) from err
    return "Stopping: the current step finishes, then the adapter is saved."


def resume_run(ctx: AppContext, run_id: str | None) -> str:
    if not run_id:
        raise gr.Error("Pick a run first.")
    try:
        run = jobs.resume(ctx.store, run_id)
    except jobs.JobError as err:
        raise gr.Error(str(err)) from err
    return f"Run {run.id} {run.status} from its last checkpoint."
