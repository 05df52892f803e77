"""Arena tab: who wins (Bradley-Terry leaderboard, win rates), how good the votes are, and the preference data."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import gradio as gr
import pandas as pd

from lab import Lab
from lab.arena import ANNOTATOR_COLUMNS, LEADERBOARD_COLUMNS, arena_report, counted_votes, leaderboard_figure
from lab.data import DataFileError
from lab.preferences import (
    export_preferences,
    import_preferences,
    preference_rows,
    preview_preferences,
    unpaired_export_rows,
)
from ui.downloads import DOWNLOAD_JS, session_folder
from ui.room import build_room_view

EXPORTS = {False: "preferences.jsonl", True: "unpaired.jsonl"}  # unpaired rows (KTO) instead of pairs → file name


@dataclass
class ArenaView:
    """The Arena's components, so handlers return {component: value} instead of positional tuples."""

    summary: gr.Markdown
    board_note: gr.Markdown  # instead of the leaderboard and win rates, until two different models have met
    board: gr.Dataframe
    chart: gr.Plot
    rates: gr.Dataframe
    quality: gr.Markdown
    raters: gr.Dataframe
    exclude: gr.Dropdown
    export_note: gr.Markdown
    downloads: dict[bool, gr.DownloadButton]  # by `negatives`, as EXPORTS: each holds the file its Export wrote
    preview: gr.Markdown
    do_import: gr.Button

    @property
    def report(self) -> list:
        return [
            self.summary,
            self.board_note,
            self.board,
            self.chart,
            self.rates,
            self.quality,
            self.raters,
            self.exclude,
        ]

    @property
    def export(self) -> list:
        return [self.export_note, *self.downloads.values()]

    @property
    def everything(self) -> list:
        """The report and the export note: refreshed together, so their counts always agree."""
        return [*self.report, *self.export]


def build_arena(ctx: Lab, tab: gr.Tab) -> None:
    refresh = gr.Button("Refresh", size="sm")
    summary = gr.Markdown(elem_id="arena-summary")
    build_room_view(ctx)
    board_note = gr.Markdown(elem_id="arena-board-note")
    with gr.Row():
        # Every table starts with its column names, so an empty one never shows Gradio's "1 2 3" placeholder.
        board = gr.Dataframe(
            pd.DataFrame(columns=LEADERBOARD_COLUMNS),
            label="Leaderboard (Bradley-Terry, 95% bootstrap interval)",
            interactive=False,
            elem_id="leaderboard",
        )
        chart = gr.Plot(label="Scores")
    rates = gr.Dataframe(
        pd.DataFrame(columns=["model"]),
        label="Win rate of the row model against the column model (ties count half)",
        interactive=False,
        elem_id="win-rates",
    )
    gr.Markdown("### Rater quality")
    quality = gr.Markdown(elem_id="rater-quality")
    raters = gr.Dataframe(
        pd.DataFrame(columns=ANNOTATOR_COLUMNS),
        label="Annotators: votes cast here (flagged: far below the others' agreement with the majority)",
        interactive=False,
        elem_id="annotators",
    )
    gr.Markdown("### Preference data")
    with gr.Row():
        exclude = gr.Dropdown(
            [], multiselect=True, label="Leave these annotators out of the export", elem_id="exclude-annotators"
        )
        exports = {
            False: gr.Button("Export preference pairs (TRL JSONL)", variant="primary", elem_id="export-preferences"),
            True: gr.Button("Export unpaired ratings and both-bad answers (KTO)", elem_id="export-unpaired"),
        }
    export_note = gr.Markdown(elem_id="export-note")
    with gr.Row():
        # Each holds the file its Export wrote; shown too, in case the browser blocks the automatic download.
        downloads = {
            False: gr.DownloadButton("Download preferences.jsonl", visible=False),
            True: gr.DownloadButton("Download unpaired.jsonl", visible=False),
        }
    with gr.Row():
        upload = gr.File(
            label="Import preferences: TRL pairs (explicit or implicit prompt), HH-RLHF, UltraFeedback, "
            "LLaMA-Factory preference or KTO, TRL unpaired (prompt/completion/label), scored responses",
            file_types=[".jsonl", ".json", ".csv", ".parquet"],
        )
        with gr.Column():
            preview = gr.Markdown()
            do_import = gr.Button("Import", interactive=False, elem_id="import-preferences")

    view = ArenaView(
        summary, board_note, board, chart, rates, quality, raters, exclude, export_note, downloads, preview, do_import
    )
    gr.on([refresh.click, tab.select], partial(refresh_arena, ctx, view), exclude, view.everything)
    exclude.input(partial(describe_export, ctx, view), exclude, view.export)
    for negatives, button in exports.items():  # one click writes the file and downloads it
        button.click(_exporter(ctx, view, negatives), exclude, view.export).success(
            None, downloads[negatives], js=DOWNLOAD_JS
        )
    upload.change(partial(preview_file, view), upload, [preview, do_import])
    do_import.click(partial(import_file, ctx, view), [upload, exclude], [preview, do_import, *view.everything])


def show_arena(ctx: Lab, view: ArenaView) -> dict:
    """The leaderboard, win rates and rater quality; refitted only when the votes changed."""
    report = arena_report(ctx.store)
    met = len(report.battles) > 0
    return {
        view.summary: report.summary(),
        view.board_note: "" if met else _no_battles_text(report.votes),
        view.board: gr.update(value=report.leaderboard, visible=met),
        view.chart: gr.update(value=leaderboard_figure(report.leaderboard) if met else None, visible=met),
        view.rates: gr.update(value=report.win_rates, visible=met),
        view.quality: _quality_text(report.agreement, report.position_bias),
        view.raters: report.annotators,
        view.exclude: gr.update(choices=report.annotators["annotator"].tolist(), value=report.flagged),
    }


def _no_battles_text(votes: int) -> str:
    """Why there is no leaderboard yet, and what to do for one."""
    if not votes:
        return (
            "**No votes yet.** Vote in the Ranking tab; the leaderboard ranks models once votes compare answers "
            "of two different models (or of one model with two system prompts)."
        )
    return (
        f"**No leaderboard yet:** the {votes} votes so far compare samples of one model, so no model has met "
        "another. They still make preference pairs (below) for a reward model or DPO. To rank models, choose "
        "**two model references** in the Ranking tab (say the base against a tuned adapter, or the base with a "
        "system prompt)."
    )


def refresh_arena(ctx: Lab, view: ArenaView, excluded: list[str] | None) -> dict:
    """The report and what an export would hold now, from the same votes."""
    return {**show_arena(ctx, view), **describe_export(ctx, view, excluded)}


def _quality_text(stats: dict, bias: dict) -> str:
    lines = []
    if stats["items"]:
        fleiss = f"{stats['fleiss']:.2f}" if stats["fleiss"] is not None else "n/a"
        lines.append(
            f"{stats['items']} items voted by two or more people: agreement {stats['percent']:.0%}, Fleiss' κ {fleiss}."
        )
        cohen = ", ".join(f"{a}–{b} {k:.2f}" for (a, b), k in stats["cohen"].items())
        if cohen:
            lines.append(f"Cohen's κ per pair of raters: {cohen}.")
    else:
        lines.append("No item has votes from two people yet: agreement needs overlap (share a queue).")
    if bias["decisive"]:
        lines.append(
            f"Position bias: the answer shown first won {bias['first_wins']} of {bias['decisive']} "
            f"decisive votes cast here ({bias['rate']:.0%}; no bias is {bias['chance']:.0%}); imported ones are "
            "left out, since their display order is not known."
        )
    return "  \n".join(lines)


def _export_note(ctx: Lab, excluded: tuple[str, ...]) -> str:
    kept = ctx.store.list_comparisons(excluded)
    left_out = f" (leaving out {', '.join(excluded)})" if excluded else ""
    votes = len(counted_votes(kept))  # counted as the summary counts them: skips are not votes
    note = f"The export holds {len(preference_rows(kept))} preference pairs from {votes} votes{left_out}."
    unpaired = unpaired_export_rows(ctx.store, excluded)
    if unpaired:
        good = sum(row["label"] for row in unpaired)
        note += f" The unpaired export holds {len(unpaired)} rows ({good} good, {len(unpaired) - good} bad)."
    return note


def describe_export(ctx: Lab, view: ArenaView, excluded: list[str] | None) -> dict:
    """What an export would hold now; writes nothing, and hides downloads that no longer match."""
    note = _export_note(ctx, tuple(excluded or ()))
    hidden = {button: gr.update(value=None, visible=False) for button in view.downloads.values()}
    return {view.export_note: note, **hidden}


def export_file(ctx: Lab, view: ArenaView, excluded: list[str] | None, request: gr.Request, negatives: bool) -> dict:
    """Write the preference pairs (or the both-bad answers), without the excluded annotators, into this browser
    session's own folder, and put the file in its download button."""
    excluded = tuple(excluded or ())
    path = session_folder(ctx, request) / EXPORTS[negatives]
    try:
        export_preferences(ctx.store, path, excluded, negatives=negatives)
    except DataFileError as err:  # said beside the buttons; the emptied DownloadButton downloads nothing
        return {
            view.export_note: f"**Nothing to export:** {err}",
            view.downloads[negatives]: gr.update(value=None, visible=False),
        }
    return {
        view.export_note: _export_note(ctx, excluded),
        view.downloads[negatives]: gr.update(value=str(path), visible=True),
    }


def _exporter(ctx: Lab, view: ArenaView, negatives: bool) -> Callable[..., dict]:
    def export(excluded: list[str] | None, request: gr.Request) -> dict:
        return export_file(
            ctx, view, excluded, request, negatives
        )  # not a partial: Gradio finds gr.Request by its hint

    return export


def preview_file(view: ArenaView, path: str | None) -> dict:
    """Check an uploaded preference file and say what importing it would add; writes nothing."""
    if not path:
        return {view.preview: "", view.do_import: gr.update(interactive=False)}
    try:
        result = preview_preferences(path)
    except DataFileError as err:
        return {view.preview: f"**Cannot import:** {err}", view.do_import: gr.update(interactive=False)}
    return {view.preview: f"**Preview:** {result.summary()}", view.do_import: gr.update(interactive=True)}


def import_file(ctx: Lab, view: ArenaView, path: str | None, excluded: list[str] | None) -> dict:
    """Import every row of the uploaded file, or none of them; then the report and the export note, from the
    same votes, and no download of an export written before the import."""
    if not path:
        return {view.preview: "**Choose a file first.**"}
    try:
        result = import_preferences(ctx.store, path)
    except DataFileError as err:
        return {view.preview: f"**Cannot import:** {err}", view.do_import: gr.update(interactive=False)}
    imported = {view.preview: result.summary(), view.do_import: gr.update(interactive=False)}
    return {**imported, **refresh_arena(ctx, view, excluded)}
