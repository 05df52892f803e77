"""Workshop tab: pick a scenario, load its starter data into the workspace, and run the whole recipe on it (SFT →
reward model → DPO or RLOO → before/after evaluation) with its progress, Stop and Resume, and the final table.

The pipeline lives in the workspace (lab.pipeline), so a reload, a second browser or the CLI shows the same one.
"""

from __future__ import annotations

from functools import partial

import gradio as gr
import pandas as pd

from lab import Lab
from lab.pipeline import POLICY_METHODS, latest, load_scenario
from lab.scenarios import find, scenario_names, seeded
from ui.room import SAVES

NO_PIPELINE = "Nothing has run yet: load a scenario, then press **Run the whole recipe**."
NO_TABLE = "The before/after table appears here once the evaluation step is done."
STEP_COLUMNS = ["#", "step", "run", "status", "progress"]


def build_workshop(ctx: Lab) -> None:
    with gr.Row():
        with gr.Column(scale=2):
            gr.Markdown("### Scenario")
            first = next(iter(seeded(ctx.store)), scenario_names()[0])  # the workspace's own scenario first
            scenario = gr.Dropdown(scenario_names(), value=first, label="Scenario", elem_id="workshop-scenario")
            about = gr.Markdown(describe_scenario(first), elem_id="workshop-about")
            truthfulqa = gr.File(
                label="TruthfulQA CSV (this scenario is built from your copy)",
                file_types=[".csv"],
                visible=needs_csv(first),
            )
            mix = gr.Checkbox(False, label="Mix with existing work", info="Add the scenario to what is already here")
            load = gr.Button("Load scenario", elem_id="workshop-load")
            loaded = gr.Markdown(elem_id="workshop-loaded")
        with gr.Column(scale=3):
            gr.Markdown("### Run the whole recipe")
            with gr.Row():
                method = gr.Radio(
                    list(POLICY_METHODS),
                    value="dpo",
                    label="After SFT",
                    info="DPO learns from the votes directly; RLOO samples answers and is scored by the reward model",
                )
                steps = gr.Number(
                    0, label="Steps per training run", info="0 = the tuned defaults", precision=0, minimum=0
                )
            with gr.Row():
                run = gr.Button("Run the whole recipe", variant="primary", elem_id="workshop-run")
                stop = gr.Button("Stop", variant="stop", elem_id="workshop-stop")
                resume = gr.Button("Resume", elem_id="workshop-resume")
            message = gr.Markdown(elem_id="workshop-message")
            status = gr.Markdown(NO_PIPELINE, elem_id="workshop-status")
            progress = gr.Dataframe(headers=STEP_COLUMNS, interactive=False, elem_id="workshop-steps")
    gr.Markdown("### Before and after")
    table = gr.Dataframe(interactive=False, wrap=True, elem_id="workshop-table")
    verdicts = gr.Markdown(NO_TABLE, elem_id="workshop-verdicts")

    scenario.change(describe_scenario, scenario, about)
    scenario.change(lambda name: gr.update(visible=needs_csv(name)), scenario, truthfulqa)
    # Quick writes, like votes: they never wait behind a generation. The progress polls of every browser share
    # their own group, so a room full of open pages never holds up anything else.
    load.click(partial(load_into_workspace, ctx), [scenario, truthfulqa, mix], loaded, **SAVES)
    run.click(partial(run_recipe, ctx), [scenario, method, steps], message, **SAVES)
    stop.click(partial(act_on_recipe, ctx, "stop"), outputs=message, **SAVES)
    resume.click(partial(act_on_recipe, ctx, "resume"), outputs=message, **SAVES)
    gr.Timer(2.0).tick(
        partial(show_progress, ctx),
        outputs=[status, progress, table, verdicts],
        show_progress="hidden",
        concurrency_id="workshop-progress",
    )


def describe_scenario(name: str) -> str:
    preset = find(name)[1]
    return f"**{preset.description}**\n\n#### Guidelines for annotators\n\n{preset.guidelines}"


def needs_csv(name: str) -> bool:
    return find(name)[1].truthfulqa


def load_into_workspace(ctx: Lab, name: str, csv: str | None, mix: bool) -> str:
    """Seed this workspace with the scenario; a refusal is one sentence beside the button."""
    try:
        return load_scenario(ctx, name, csv or None, mix)
    except ValueError as err:
        return f"**{err}**"


def run_recipe(ctx: Lab, name: str, method: str, steps: float | None) -> str:
    """Start the pipeline on the loaded base (else the preset's); everything is checked before the first step."""
    loaded = ctx.models.loaded
    try:
        pipeline = ctx.pipeline(name, method, model=loaded.base if loaded else "", steps=int(steps or 0))
    except ValueError as err:
        return f"**{err}**"
    return f"Started **{pipeline.id}**: the progress shows below."


ACTED = {
    "stop": "Stopping: the current step saves what it learned; no later step starts.",
    "resume": "Resumed from the step it ended at.",
}


def act_on_recipe(ctx: Lab, action: str) -> str:
    """Stop or resume the workspace's latest pipeline; a refusal is one sentence beside the buttons."""
    pipeline = latest(ctx)
    if pipeline is None:
        return f"**Nothing to {action}: no recipe has run in this workspace.**"
    try:
        getattr(pipeline, action)()
    except ValueError as err:
        return f"**{err}**"
    return ACTED[action]


def show_progress(ctx: Lab):
    """The workspace's latest pipeline: one line, its steps, and when done the table and the verdicts."""
    pipeline = latest(ctx)
    if pipeline is None:
        return NO_PIPELINE, pd.DataFrame(columns=STEP_COLUMNS), pd.DataFrame(), NO_TABLE
    now = pipeline.progress()
    line = f"**{now.scenario}**, {now.method.upper()}: {now.text()}"
    steps = pd.DataFrame(now.rows(), columns=STEP_COLUMNS)
    table = pipeline.table() if now.state == "done" else None
    if table is None:
        return line, steps, pd.DataFrame(), NO_TABLE
    return line, steps, table, "\n\n".join(pipeline.verdicts()) or "Each metric with its 95% interval."
