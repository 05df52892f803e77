"""Prompting tab: prompt variants × questions → a grid of responses, rated cell by cell."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial

import gradio as gr
import pandas as pd

from lab import Lab, experiments
from lab.adapters import attach_adapter
from lab.models import BASE_VIEW, ModelError
from lab.presets import load_question_set, question_sets
from ui.downloads import DOWNLOAD_JS, session_folder
from ui.errors import UserError

VARIANT_COLUMNS = ["name", "system", "template"]
STARTER = "starter: "
CELL_CHARS = 280  # a cell shows this much of its answer; clicking it shows the whole text below the grid
STARTER_READY = "A starter, not run yet: press **Run** to answer every question with every variant."
GRID_COLUMNS = ["question", "responses"]  # the grid's headers before anything is answered
NO_EXPERIMENT = (
    "**No experiment open:** pick a starter under **Open an experiment** (e.g. *starter: Truthfulness prompt vs "
    "plain*), or write prompt variants and questions above and press **Run**; the answers fill the grid below."
)


def list_experiments(ctx: Lab) -> list[tuple[str, str]]:
    """Saved experiments first (newest on top), then the starters from presets/."""
    saved = [(f"#{e.id} {e.name}", f"saved:{e.id}") for e in ctx.store.list_experiments()]
    starters = [(f"{STARTER}{name}", f"preset:{name}") for name in ctx.experiment_presets]
    return saved + starters


@dataclass
class PromptingView:
    """The components handlers fill, so a handler returns {component: value} instead of a positional tuple."""

    experiment_id: gr.State
    selected_cell: gr.State  # (variant, question, model) picked in the grid
    picker: gr.Dropdown
    note: gr.Markdown  # beside Save and Run: what is wrong with the editor, in one sentence
    description: gr.Markdown
    name: gr.Textbox
    variants: gr.Dataframe
    questions: gr.Textbox
    temperature: gr.Slider
    max_new: gr.Slider
    seed: gr.Number
    status: gr.Markdown
    summary: gr.Dataframe
    grid: gr.Dataframe
    export: gr.Button
    download: gr.DownloadButton
    cell: gr.Markdown

    @property
    def editor(self) -> list:
        return [self.name, self.variants, self.questions, self.temperature, self.max_new, self.seed]

    @property
    def results(self) -> list:
        return [self.status, self.summary, self.grid, self.export, self.download]

    @property
    def form(self) -> list:
        return [self.experiment_id, self.note, self.description, *self.editor, *self.results]

    @property
    def saved(self) -> list:
        """What saving (and running) updates."""
        return [self.experiment_id, self.picker, self.note, *self.results]


def build_prompting(ctx: Lab) -> PromptingView:
    """Lay out the tab and wire its events; returns its components."""
    with gr.Row():
        picker = gr.Dropdown(
            list_experiments(ctx),
            label="Open an experiment",
            info="A starter experiment, or one saved in this workspace",
            scale=4,
            value=None,
            elem_id="experiment-picker",
        )
        new = gr.Button("New experiment", scale=1)
    with gr.Row():
        with gr.Column(scale=3):
            name = gr.Textbox(label="Name", elem_id="experiment-name")
            description = gr.Markdown()
            variants = gr.Dataframe(
                blank_variants(),
                headers=VARIANT_COLUMNS,
                label="Prompt variants (system prompt and/or a template with {question})",
                interactive=True,
                wrap=True,
                column_widths=["15%", "35%", "50%"],
                column_limits=(3, 3),
                elem_id="variants",
            )
            add_variant = gr.Button("Add a variant", size="sm")
        with gr.Column(scale=2):
            questions = gr.Textbox(label="Questions, one per line", lines=8, elem_id="questions")
            with gr.Row():
                question_set = gr.Dropdown(question_sets(), label="Add a bundled question set", value=None, scale=3)
                add_set = gr.Button("Add", scale=1)
    with gr.Row():
        temperature = gr.Slider(0, 2, value=0.0, step=0.05, label="Temperature", info="0 = greedy, reproducible")
        max_new = gr.Slider(8, 512, value=96, step=8, label="Max new tokens")
        seed = gr.Number(value=0, precision=0, label="Seed")
        view = gr.Dropdown(ctx.views(), value=BASE_VIEW, label="Adapter")
    with gr.Row(equal_height=True):
        save_button = gr.Button("Save")
        run = gr.Button("Run", variant="primary", elem_id="run-experiment")
        stop = gr.Button("Stop")
        export = gr.Button("Export CSV", elem_id="export-csv", interactive=False)
        # Holds the file Export wrote; shown too, in case the browser blocks the automatic download.
        download = gr.DownloadButton("Download CSV", visible=False, elem_id="download-csv")
        note = gr.Markdown(elem_id="editor-note")
    status = gr.Markdown(NO_EXPERIMENT, elem_id="experiment-status")
    summary = gr.Dataframe(
        pd.DataFrame(columns=experiments.SUMMARY_COLUMNS),
        label="Per variant and model (mark cells good or bad to see which wins)",
        interactive=False,
        elem_id="variant-summary",
    )
    # Columns share the width (wrapping, each answer cut at CELL_CHARS), so every variant is on screen side by side;
    # without widths the table sizes columns to their longest answer and runs thousands of pixels wide.
    grid = gr.Dataframe(
        pd.DataFrame(columns=GRID_COLUMNS),
        label="Responses: click a cell to read it whole, then mark it",
        interactive=False,
        wrap=True,
        max_chars=CELL_CHARS,
        elem_id="results-grid",
        max_height=700,
    )
    with gr.Row():
        cell = gr.Markdown("No cell selected.", elem_id="selected-cell")
        good = gr.Button("Mark good", size="sm", elem_id="mark-good")
        bad = gr.Button("Mark bad", size="sm", elem_id="mark-bad")
        unmark = gr.Button("Clear mark", size="sm")

    ui = PromptingView(
        experiment_id=gr.State(None),
        selected_cell=gr.State(None),
        picker=picker,
        note=note,
        description=description,
        name=name,
        variants=variants,
        questions=questions,
        temperature=temperature,
        max_new=max_new,
        seed=seed,
        status=status,
        summary=summary,
        grid=grid,
        export=export,
        download=download,
        cell=cell,
    )
    picker.focus(lambda: gr.update(choices=list_experiments(ctx)), outputs=picker)
    picker.select(partial(open_experiment, ctx, ui), picker, ui.form)
    new.click(partial(blank_form, ctx, ui), outputs=ui.form)
    add_set.click(add_question_set, [questions, question_set], questions)
    add_variant.click(append_variant, variants, variants)
    save_button.click(partial(save_experiment, ctx, ui), [ui.experiment_id, *ui.editor], ui.saved)
    # The results stay readable while a run fills them: no overlay, the status line says how far it is.
    run_event = run.click(
        partial(save_and_run, ctx, ui), [ui.experiment_id, *ui.editor, view], ui.saved, show_progress="hidden"
    )
    stop.click(
        lambda eid: show_results(ctx, ui, eid, "Stopped; the answers so far are saved."),
        ui.experiment_id,
        ui.results,
        cancels=[run_event],
    )

    def on_select(eid: int | None, evt: gr.SelectData) -> dict:  # Gradio injects evt by this annotation
        return select_cell(ctx, ui, eid, evt)

    def on_export(eid: int | None, request: gr.Request) -> dict:  # and the session's request by this one
        return export_results(ctx, ui, eid, request)

    grid.select(on_select, ui.experiment_id, [ui.selected_cell, cell])
    for button, rating in ((good, 1), (bad, -1), (unmark, None)):
        button.click(partial(rate, ctx, ui, rating=rating), [ui.experiment_id, ui.selected_cell], ui.results)
    export.click(on_export, ui.experiment_id, download).success(None, download, js=DOWNLOAD_JS)
    view.focus(lambda: gr.update(choices=ctx.views()), outputs=view)
    return ui


def blank_variants() -> pd.DataFrame:
    return pd.DataFrame([{"name": "plain", "system": "", "template": "{question}"}], columns=VARIANT_COLUMNS)


def append_variant(variants: pd.DataFrame) -> pd.DataFrame:
    rows = variants.fillna("").to_dict("records") if variants is not None else []
    return pd.DataFrame(
        [*rows, {"name": f"variant {len(rows) + 1}", "system": "", "template": "{question}"}], columns=VARIANT_COLUMNS
    )


def blank_form(ctx: Lab, ui: PromptingView) -> dict:
    """An empty editor: no experiment, one plain variant, greedy settings."""
    return {
        ui.experiment_id: None,
        ui.note: "",
        ui.description: "",
        ui.name: "",
        ui.variants: blank_variants(),
        ui.questions: "",
        ui.temperature: 0.0,
        ui.max_new: 96,
        ui.seed: 0,
        **show_results(ctx, ui, None),
    }


def open_experiment(ctx: Lab, ui: PromptingView, key: str | None) -> dict:
    """Fill the editor from a saved experiment or a starter preset (a starter is saved only when run or saved)."""
    if not key:
        return {ui.note: "Pick an experiment to open."}
    kind, _, ref = key.partition(":")
    if kind == "preset":
        preset = ctx.experiment_presets[ref]
        exp, eid = experiments.from_preset(preset), None
        note = f"**{preset.description}**  \nLook for: {preset.look_for}"
    else:
        exp = ctx.store.get_experiment(int(ref))
        eid, note = exp.id, exp.description
    s = exp.settings
    return {
        ui.experiment_id: eid,
        ui.note: "",
        ui.description: note,
        ui.name: exp.name,
        ui.variants: pd.DataFrame(exp.variants, columns=VARIANT_COLUMNS),
        ui.questions: "\n".join(exp.questions),
        ui.temperature: s.get("temperature", 0.0),
        ui.max_new: s.get("max_new_tokens", 96),
        ui.seed: s.get("seed") or 0,
        **show_results(ctx, ui, eid, "" if eid else STARTER_READY),
    }


def add_question_set(questions: str, name: str | None) -> str:
    if not name:
        gr.Warning("Pick a question set to add.")
        return gr.skip()
    lines = [q for q in questions.splitlines() if q.strip()]
    new = [p.text for p in load_question_set(name) if p.text not in lines]
    return "\n".join(lines + new)


def save_experiment(
    ctx: Lab,
    ui: PromptingView,
    experiment_id: int | None,
    name: str,
    variants: pd.DataFrame,
    questions: str,
    temperature: float,
    max_new: float,
    seed: float | None,
) -> dict:
    """Validate the editor and write it to the workspace; what is wrong goes beside the buttons, in one sentence,
    and the results on screen stay as they are."""
    rows = variants.fillna("").astype(str).to_dict("records") if variants is not None else []
    rows = [r for r in rows if any(str(v).strip() for v in r.values())]
    for row in rows:
        row["template"] = row.get("template") or "{question}"
    settings = {
        "temperature": float(temperature),
        "top_p": 1.0,
        "max_new_tokens": int(max_new),
        "seed": None if seed is None else int(seed),
    }
    try:
        exp = experiments.new_experiment(name, rows, questions.splitlines(), settings)
        eid, message = experiments.save_experiment(ctx.store, exp, experiment_id)
    except ValueError as err:  # a bad row or setting, or the workspace's disk is full: nothing saved
        return {ui.note: f"**{str(err).splitlines()[0]}**"}
    return {
        ui.experiment_id: eid,
        ui.picker: gr.update(choices=list_experiments(ctx), value=f"saved:{eid}"),
        ui.note: "",
        **show_results(ctx, ui, eid, message),
    }


def save_and_run(ctx: Lab, ui: PromptingView, experiment_id: int | None, *editor_and_view) -> Iterator[dict]:
    """Save the editor (stopping at a problem, said beside the buttons), then run it."""
    *editor, view = editor_and_view
    saved = save_experiment(ctx, ui, experiment_id, *editor)
    yield saved
    if ui.experiment_id in saved:
        yield from run_experiment(ctx, ui, saved[ui.experiment_id], view)


def run_experiment(ctx: Lab, ui: PromptingView, experiment_id: int, view: str) -> Iterator[dict]:
    """Fill every cell this model and view have not answered; each answer shows as it lands, and the status line
    says how far the run is and what it waits for."""
    exp = ctx.store.get_experiment(experiment_id)
    total = len(exp.questions) * len(exp.variants)
    try:
        while ctx.models.loading:
            yield {ui.status: experiments.progress_text(0, total, waiting=ctx.models.waiting())}
            time.sleep(1.0)
        attach_adapter(ctx.store, ctx.models, view)
        done = total - len(experiments.missing_cells(ctx.store, ctx.models, experiment_id, view))
        runner = experiments.run_experiment(ctx.store, ctx.models, experiment_id, view=view)
        while True:
            while (why := ctx.models.waiting()) is not None:
                yield {ui.status: experiments.progress_text(done, total, waiting=why)}
                time.sleep(0.5)
            if next(runner, None) is None:  # generates one cell
                break
            done += 1
            yield show_results(ctx, ui, experiment_id, experiments.progress_text(done, total))
    except (ModelError, ValueError) as err:
        yield {ui.status: f"**Cannot run:** {err}"}
        return
    yield show_results(ctx, ui, experiment_id, "Done: every cell has a response.")


def show_results(ctx: Lab, ui: PromptingView, experiment_id: int | None, message: str = "") -> dict:
    """The status line, the summary and the grid; the last export's download goes away, since it may be stale."""
    hidden = gr.update(value=None, visible=False)
    if experiment_id is None:
        return {
            ui.status: message or NO_EXPERIMENT,
            ui.summary: pd.DataFrame(columns=experiments.SUMMARY_COLUMNS),
            ui.grid: pd.DataFrame(columns=GRID_COLUMNS),
            ui.export: gr.update(interactive=False),
            ui.download: hidden,
        }
    exp = ctx.store.get_experiment(experiment_id)
    results = ctx.store.list_results(experiment_id)
    models = experiments.answering_models(results)
    cells = len(exp.questions) * len(exp.variants) * max(len(models), 1)
    by = f" by {exp.model}" if exp.model and len(models) <= 1 else f" by {len(models)} models" if models else ""
    return {
        ui.status: message or f"{len(results)} of {cells} cells answered{by}.",
        ui.summary: experiments.variant_summary(exp, results),
        ui.grid: _grid(experiments.results_grid(exp, results)),
        ui.export: gr.update(interactive=bool(results)),
        ui.download: hidden,
    }


def _grid(table: pd.DataFrame) -> dict:
    """The grid with its columns sharing the table's width: the question a fifth, the answers the rest equally."""
    answers = len(table.columns) - 1
    widths = ["20%"] + [f"{80 / answers:.2f}%"] * answers if answers else None
    return gr.update(value=table, column_widths=widths)


def select_cell(ctx: Lab, ui: PromptingView, experiment_id: int | None, evt: gr.SelectData) -> dict:
    """Remember the clicked response cell (its variant, question and the model that answered it)."""
    if experiment_id is None or evt.index[1] == 0:
        return {ui.selected_cell: None, ui.cell: "Click a response cell (not the question) to mark it."}
    exp = ctx.store.get_experiment(experiment_id)
    results = ctx.store.list_results(experiment_id)
    columns = experiments.grid_columns(exp, results)
    question, (variant, model, label) = evt.index[0], columns[evt.index[1] - 1]
    answer = next((r.response for r in results if (r.variant, r.question, r.model) == (variant, question, model)), "")
    quoted = "\n".join(f"> {line}" for line in answer.splitlines()) or "> (not answered yet)"
    return {
        ui.selected_cell: (variant, question, model),
        ui.cell: f"Selected: **{label}** on “{exp.questions[question]}”\n\n{quoted}",
    }


def rate(ctx: Lab, ui: PromptingView, experiment_id: int | None, cell: tuple | None, rating: int | None) -> dict:
    """Mark the selected cell; a missing selection is a warning that leaves the results on screen."""
    try:
        if experiment_id is None or cell is None:
            raise KeyError("Click a response cell first (not the question column).")
        variant, question, model = cell
        ctx.store.rate_result(experiment_id, variant, question, rating, model=model)
    except (KeyError, ValueError) as err:  # no cell picked, or the workspace's disk is full
        gr.Warning(err.args[0])
        return gr.skip()
    return show_results(ctx, ui, experiment_id)


def export_results(ctx: Lab, ui: PromptingView, experiment_id: int | None, request: gr.Request | None) -> dict:
    """Write the experiment's CSV into this browser session's own folder, for its download button."""
    if experiment_id is None:
        raise UserError("Save and run the experiment first.")
    path = session_folder(ctx, request) / f"experiment-{experiment_id}.csv"
    experiments.export_csv(ctx.store, experiment_id, path)
    return {ui.download: gr.update(value=str(path), visible=True)}
