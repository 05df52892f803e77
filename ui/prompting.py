"""Prompting tab: prompt variants × questions → a grid of responses, rated cell by cell."""

from __future__ import annotations

from functools import partial

import gradio as gr
import pandas as pd

from lab import experiments, jobs
from lab.models import BASE_VIEW, ModelError
from lab.presets import load_question_set, question_sets
from lab.store import Experiment
from ui.chat import list_views
from ui.context import AppContext

VARIANT_COLUMNS = ["name", "system", "template"]
SUMMARY_COLUMNS = ["variant", "answered", "good", "bad", "mean_seconds", "mean_tokens"]
STARTER = "starter: "


def list_experiments(ctx: AppContext) -> list[tuple[str, str]]:
    """Saved experiments first (newest on top), then the starters from presets/."""
    saved = [(f"#{e.id} {e.name}", f"saved:{e.id}") for e in ctx.store.list_experiments()]
    starters = [(f"{STARTER}{name}", f"preset:{name}") for name in ctx.experiment_presets]
    return saved + starters


def build_prompting(ctx: AppContext) -> None:
    experiment_id = gr.State(None)
    selected_cell = gr.State(None)  # (variant, question) picked in the grid
    with gr.Row():
        picker = gr.Dropdown(
            list_experiments(ctx), label="Open an experiment", scale=4, value=None, elem_id="experiment-picker"
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
        view = gr.Dropdown(list_views(ctx), value=BASE_VIEW, label="Adapter")
    with gr.Row():
        save_button = gr.Button("Save")
        run = gr.Button("Run", variant="primary", elem_id="run-experiment")
        stop = gr.Button("Stop")
        export = gr.DownloadButton("Export CSV", elem_id="export-csv", interactive=False)
    status = gr.Markdown(elem_id="experiment-status")
    summary = gr.Dataframe(
        label="Per variant (mark cells good or bad to see which wins)", interactive=False, elem_id="variant-summary"
    )
    grid = gr.Dataframe(
        label="Responses: click a cell, then mark it",
        interactive=False,
        wrap=True,
        elem_id="results-grid",
        max_height=700,
    )
    with gr.Row():
        cell = gr.Markdown("No cell selected.")
        good = gr.Button("Mark good", size="sm", elem_id="mark-good")
        bad = gr.Button("Mark bad", size="sm", elem_id="mark-bad")
        unmark = gr.Button("Clear mark", size="sm")

    editor = [name, variants, questions, temperature, max_new, seed]
    results = [status, summary, grid, export]  # the download button always holds the current CSV
    picker.focus(lambda: gr.update(choices=list_experiments(ctx)), outputs=picker)
    picker.select(partial(open_experiment, ctx), picker, [experiment_id, description, *editor, *results])
    new.click(partial(blank_form, ctx), outputs=[experiment_id, description, *editor, *results])
    add_set.click(add_question_set, [questions, question_set], questions)
    add_variant.click(append_variant, variants, variants)
    saved = [experiment_id, picker, *results]
    save_button.click(partial(save_experiment, ctx), [experiment_id, *editor], saved)
    run_event = run.click(partial(save_experiment, ctx), [experiment_id, *editor], saved).success(
        partial(run_experiment, ctx), [experiment_id, view], results
    )
    stop.click(
        lambda eid: show_results(ctx, eid, "Stopped; the answers so far are saved."),
        experiment_id,
        results,
        cancels=[run_event],
    )

    def on_select(eid: int | None, evt: gr.SelectData):  # Gradio injects evt by this annotation
        return select_cell(ctx, eid, evt)

    grid.select(on_select, experiment_id, [selected_cell, cell])
    for button, rating in ((good, 1), (bad, -1), (unmark, None)):
        button.click(partial(rate, ctx, rating=rating), [experiment_id, selected_cell], results)
    view.focus(lambda: gr.update(choices=list_views(ctx)), outputs=view)


def blank_variants() -> pd.DataFrame:
    return pd.DataFrame([{"name": "plain", "system": "", "template": "{question}"}], columns=VARIANT_COLUMNS)


def append_variant(variants: pd.DataFrame) -> pd.DataFrame:
    rows = variants.fillna("").to_dict("records") if variants is not None else []
    return pd.DataFrame(
        [*rows, {"name": f"variant {len(rows) + 1}", "system": "", "template": "{question}"}], columns=VARIANT_COLUMNS
    )


def blank_form(ctx: AppContext):
    """An empty editor: no experiment, one plain variant, greedy settings."""
    return None, "", "", blank_variants(), "", 0.0, 96, 0, *show_results(ctx, None)


def _variants_frame(exp: Experiment) -> pd.DataFrame:
    return pd.DataFrame(exp.variants, columns=VARIANT_COLUMNS)


def open_experiment(ctx: AppContext, key: str | None):
    """Fill the editor from a saved experiment or a starter preset (a starter is saved only when run or saved)."""
    if not key:
        raise gr.Error("Pick an experiment to open.")
    kind, _, ref = key.partition(":")
    if kind == "preset":
        preset = ctx.experiment_presets[ref]
        exp, eid = experiments.from_preset(preset), None
        note = f"**{preset.description}**  \nLook for: {preset.look_for}"
    else:
        exp = ctx.store.get_experiment(int(ref))
        eid, note = exp.id, exp.description
    s = exp.settings
    return (
        eid,
        note,
        exp.name,
        _variants_frame(exp),
        "\n".join(exp.questions),
        s.get("temperature", 0.0),
        s.get("max_new_tokens", 96),
        s.get("seed") or 0,
        *show_results(ctx, eid),
    )


def add_question_set(questions: str, name: str | None) -> str:
    if not name:
        raise gr.Error("Pick a question set to add.")
    lines = [q for q in questions.splitlines() if q.strip()]
    new = [p.text for p in load_question_set(name) if p.text not in lines]
    return "\n".join(lines + new)


def save_experiment(
    ctx: AppContext,
    experiment_id: int | None,
    name: str,
    variants: pd.DataFrame,
    questions: str,
    temperature: float,
    max_new: float,
    seed: float | None,
):
    """Validate the editor and write it to the workspace; one sentence if something is wrong."""
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
    except ValueError as err:
        raise gr.Error(_one_sentence(err, rows)) from err
    same = [
        e
        for e in ctx.store.list_experiments()
        if (e.name, e.variants, e.questions, e.settings) == (exp.name, exp.variants, exp.questions, exp.settings)
    ]
    note = ""
    if experiment_id is not None:
        old = ctx.store.get_experiment(experiment_id)
        if (old.variants, old.questions, old.settings) != (exp.variants, exp.questions, exp.settings):
            experiment_id = None  # changed prompts make a new experiment, so old results keep their meaning
            note = " as a new experiment, since the prompts or settings changed"
        exp.description = old.description
    if experiment_id is None and same:
        experiment_id, note = same[0].id, " (the same experiment was already saved; it is reopened)"
    exp.id = experiment_id
    eid = ctx.store.save_experiment(exp)
    picker = gr.update(choices=list_experiments(ctx), value=f"saved:{eid}")
    return eid, picker, *show_results(ctx, eid, f"Saved experiment #{eid}{note}.")


def _one_sentence(err: Exception, rows: list[dict]) -> str:
    if hasattr(err, "errors"):  # pydantic: say which variant and field, in plain words
        first = err.errors()[0]
        field = ".".join(map(str, first["loc"]))
        names = [r.get("name") or "(unnamed)" for r in rows]
        which = next(
            (
                n
                for n, r in zip(names, rows, strict=True)
                if field == "template" and "{question}" not in str(r.get("template", ""))
            ),
            names[0] if names else "",
        )
        return f"Variant '{which}': its {field} {first['msg'].removeprefix('Value error, ')}."
    return str(err).splitlines()[0]


def run_experiment(ctx: AppContext, experiment_id: int | None, view: str, progress=gr.Progress()):
    """Fill every missing cell, updating the grid as each answer lands in the workspace."""
    if experiment_id is None:
        raise gr.Error("Save the experiment first.")
    progress((0, None), desc=ctx.models.status)
    ctx.wait_for_model()
    try:
        jobs.attach_adapter(ctx.store, ctx.models, view)
        for step in experiments.run_experiment(ctx.store, ctx.models, experiment_id, view=view):
            progress((step.done, step.total), desc=f"{step.variant}: {step.question[:50]}")
            yield show_results(ctx, experiment_id, f"Running… {step.done} of {step.total} cells done.")
    except (ModelError, ValueError) as err:
        raise gr.Error(str(err)) from err
    yield show_results(ctx, experiment_id, "Done: every cell has a response.")


def show_results(ctx: AppContext, experiment_id: int | None, message: str = ""):
    if experiment_id is None:
        empty = pd.DataFrame(columns=["question", "responses"])
        return message, pd.DataFrame(columns=SUMMARY_COLUMNS), empty, gr.update(value=None, interactive=False)
    exp = ctx.store.get_experiment(experiment_id)
    results = ctx.store.list_results(experiment_id)
    cells = len(exp.questions) * len(exp.variants)
    header = message or f"{len(results)} of {cells} cells answered" + (f" by {exp.model}." if exp.model else ".")
    csv = gr.update(value=export_csv(ctx, experiment_id), interactive=bool(results))
    return header, experiments.variant_summary(exp, results), experiments.results_grid(exp, results), csv


def select_cell(ctx: AppContext, experiment_id: int | None, evt: gr.SelectData):
    if experiment_id is None or evt.index[1] == 0:
        return None, "Click a response cell (not the question) to mark it."
    exp = ctx.store.get_experiment(experiment_id)
    question, variant = evt.index[0], evt.index[1] - 1
    return (variant, question), f"Selected: **{exp.variants[variant]['name']}** on “{exp.questions[question]}”"


def rate(ctx: AppContext, experiment_id: int | None, cell: tuple[int, int] | None, rating: int | None):
    """Mark the selected cell; a missing selection is a warning that leaves the results on screen."""
    try:
        if experiment_id is None or cell is None:
            raise KeyError("Click a response cell first (not the question column).")
        ctx.store.rate_result(experiment_id, cell[0], cell[1], rating)
    except KeyError as err:
        gr.Warning(err.args[0])
        return (gr.skip(),) * 4
    return show_results(ctx, experiment_id)


def export_csv(ctx: AppContext, experiment_id: int) -> str:
    """Write the experiment's CSV where the download button can serve it (the app's private export folder)."""
    return str(experiments.export_csv(ctx.store, experiment_id, ctx.exports / f"experiment-{experiment_id}.csv"))
