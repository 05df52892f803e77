"""The Training tab's Export row: the picked run as an adapter, a merged model or a GGUF file, downloaded as a zip.

The export is written on click into this browser session's own folder (ui.downloads), zipped, and offered in a
DownloadButton; nothing else from the workspace is served.
"""

from __future__ import annotations

import shutil

import gradio as gr

from lab import Lab
from lab.export import KINDS
from lab.models import ModelError
from ui.downloads import DOWNLOAD_JS, session_folder
from ui.errors import UserError

KIND_LABELS = {
    "adapter": "adapter (PEFT, with its model card)",
    "merged": "merged model (plain transformers)",
    "gguf": "GGUF f16 (llama.cpp, Ollama)",
}


def build_export(ctx: Lab, selected: gr.Dropdown) -> None:
    """Under the run picker: what to export, the button, and the zip to download."""
    with gr.Row():
        kind = gr.Dropdown([(KIND_LABELS[k], k) for k in KINDS], value=KINDS[0], label="Export as", scale=3)
        button = gr.Button("Export", size="sm", scale=1, elem_id="export-run")
    note = gr.Markdown(elem_id="export-run-note")
    download = gr.DownloadButton("Download the export", visible=False)

    def on_export(run_id: str | None, chosen: str, request: gr.Request) -> tuple[str, dict]:
        return export_zip(ctx, run_id, chosen, request)  # not a partial: Gradio finds gr.Request by its hint

    button.click(on_export, [selected, kind], [note, download]).success(None, download, js=DOWNLOAD_JS)


def export_zip(ctx: Lab, run_id: str | None, kind: str, request: gr.Request) -> tuple[str, dict]:
    """Export the run into this session's folder and zip it for the download button."""
    if not run_id:
        raise UserError("Pick a run first.")
    folder = session_folder(ctx, request) / f"{run_id}-{kind}"
    try:
        ctx.export(run_id, kind, folder, overwrite=True)  # the session's own folder: an export there is the last one
    except (ModelError, ValueError) as err:
        raise UserError(str(err)) from err
    archive = shutil.make_archive(str(folder), "zip", root_dir=folder)
    shutil.rmtree(folder)
    return f"Exported run {run_id} as {KIND_LABELS[kind]}.", gr.update(value=archive, visible=True)
