"""Exports a person asks for: written on click, into a folder private to their browser session."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import gradio as gr

from lab import Lab

# A DownloadButton downloads the file it already holds when clicked, before any handler runs; so Export writes the
# file into a DownloadButton, then this saves it, keeping the download to one click.
DOWNLOAD_JS = """(file) => {
    if (!file || !file.url) return;
    const link = document.createElement("a");
    link.href = file.url;
    link.download = file.orig_name || "";
    document.body.appendChild(link);
    link.click();
    link.remove();
}"""


def session_folder(ctx: Lab, request: gr.Request | None) -> Path:
    """This browser session's own export folder, so that two people exporting at once never get each other's file.

    Named by a hash of the session id, since the browser sends that id and it must never become a path.
    """
    folder = _folder(ctx, request)
    folder.mkdir(mode=0o700, exist_ok=True)
    return folder


def forget_session(ctx: Lab, request: gr.Request) -> None:
    """When a browser session ends (its tab closed), its exports go with it."""
    shutil.rmtree(_folder(ctx, request), ignore_errors=True)


def _folder(ctx: Lab, request: gr.Request | None) -> Path:
    session = getattr(request, "session_hash", None) or "no-session"
    return ctx.exports / hashlib.sha256(session.encode()).hexdigest()[:24]
