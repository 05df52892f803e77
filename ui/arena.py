"""Arena tab: who wins (Bradley-Terry leaderboard, win rates), how good the votes are, and the preference data."""

from __future__ import annotations

from functools import partial

import gradio as gr
import pandas as pd
import plotly.graph_objects as go

from lab import arena as votes
from lab.data import DataFileError
from lab.preferences import export_preferences, import_preferences, preference_rows, preview_preferences
from ui.context import AppContext


def build_arena(ctx: AppContext, tab: gr.Tab) -> None:
    refresh = gr.Button("Refresh", size="sm")
    summary = gr.Markdown(elem_id="arena-summary")
    with gr.Row():
        board = gr.Dataframe(
            label="Leaderboard (Bradley-Terry, 95% bootstrap interval)", interactive=False, elem_id="leaderboard"
        )
        chart = gr.Plot(label="Scores")
    rates = gr.Dataframe(
        label="Win rate of the row model against the column model (ties count half)", interactive=False
    )
    gr.Markdown("### Rater quality")
    quality = gr.Markdown(elem_id="rater-quality")
    raters = gr.Dataframe(
        label="Annotators (flagged: far below the others' agreement with the majority)",
        interactive=False,
        elem_id="annotators",
    )
    gr.Markdown("### Preference data")
    with gr.Row():
        exclude = gr.Dropdown(
            [], multiselect=True, label="Leave these annotators out of the export", elem_id="exclude-annotators"
        )
        export = gr.DownloadButton("Export preference pairs (TRL JSONL)", elem_id="export-preferences")
        negatives = gr.DownloadButton("Export both-bad answers (unpaired negatives)")
    export_note = gr.Markdown(elem_id="export-note")
    with gr.Row():
        upload = gr.File(
            label="Import preferences: prompt/chosen/rejected, chosen/rejected transcripts, "
            "or prompt with scored responses",
            file_types=[".jsonl", ".json", ".csv", ".parquet"],
        )
        with gr.Column():
            preview_text = gr.Markdown()
            do_import = gr.Button("Import", interactive=False)

    views = [summary, board, chart, rates, quality, raters, exclude]
    files = [export_note, export, negatives]  # download buttons hold the current files, ready to click
    gr.on([refresh.click, tab.select], partial(show_arena, ctx), outputs=views).then(
        partial(prepare_exports, ctx), exclude, files
    )
    exclude.input(partial(prepare_exports, ctx), exclude, files)
    upload.change(preview_file, upload, [preview_text, do_import])
    do_import.click(partial(import_file, ctx), upload, [preview_text, do_import]).then(
        partial(show_arena, ctx), outputs=views
    )


def show_arena(ctx: AppContext):
    comparisons = ctx.store.list_comparisons()
    frame = votes.battles(comparisons)
    board = votes.leaderboard(frame)
    stats = votes.agreement(comparisons)
    bias = votes.position_bias(comparisons)
    report = votes.annotator_report(comparisons)
    counts = pd.Series([c.verdict for c in comparisons]).value_counts().to_dict()
    pairs = len(preference_rows(comparisons))
    summary = (
        f"**{len(comparisons)} votes** ({', '.join(f'{n} {v}' for v, n in counts.items()) or 'none yet'}) "
        f"→ **{pairs} preference pairs**; {len(frame)} battles between different models."
    )
    quality = _quality_text(stats, bias)
    flagged = report.loc[report["flagged"], "annotator"].tolist()
    return (
        summary,
        board,
        _chart(board),
        votes.win_rates(frame) if len(frame) else None,
        quality,
        report,
        gr.update(choices=report["annotator"].tolist(), value=flagged),
    )


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
            f"decisive votes ({bias['rate']:.0%}; no bias is {bias['chance']:.0%})."
        )
    return "  \n".join(lines)


def _chart(board: pd.DataFrame) -> go.Figure | None:
    if board.empty:
        return None
    fig = go.Figure(
        go.Scatter(
            x=board["score"],
            y=board["model"],
            mode="markers",
            error_x={
                "type": "data",
                "symmetric": False,
                "array": board["high"] - board["score"],
                "arrayminus": board["score"] - board["low"],
            },
            marker={"size": 10, "color": "#ea580c"},
        )
    )
    fig.update_layout(
        height=80 + 40 * len(board),
        margin={"l": 10, "r": 10, "t": 10, "b": 30},
        yaxis={"autorange": "reversed"},
        xaxis_title="score (Elo scale)",
    )
    return fig


def prepare_exports(ctx: AppContext, excluded: list[str]):
    """Write both export files (without the excluded annotators) so the download buttons serve them."""
    excluded = tuple(excluded or ())
    kept = ctx.store.list_comparisons(excluded)
    folder = ctx.exports
    files = []
    for negatives, name in ((False, "preferences.jsonl"), (True, "negatives.jsonl")):
        try:
            export_preferences(ctx.store, folder / name, excluded, negatives=negatives)
            files.append(gr.update(value=str(folder / name), interactive=True))
        except DataFileError:
            files.append(gr.update(value=None, interactive=False))
    left_out = f" (leaving out {', '.join(excluded)})" if excluded else ""
    note = f"The export holds {len(preference_rows(kept))} preference pairs from {len(kept)} votes{left_out}."
    return note, *files


def preview_file(path: str | None):
    if not path:
        return "", gr.update(interactive=False)
    try:
        result = preview_preferences(path)
    except DataFileError as err:
        return f"**Cannot import:** {err}", gr.update(interactive=False)
    return f"**Preview:** {result.summary()}", gr.update(interactive=True)


def import_file(ctx: AppContext, path: str | None):
    if not path:
        raise gr.Error("Choose a file first.")
    try:
        result = import_preferences(ctx.store, path)
    except DataFileError as err:
        raise gr.Error(str(err)) from err
    return result.summary(), gr.update(interactive=False)
