"""An error a person caused (a bad value, a missing choice): one sentence in the UI, one line in the log.

Gradio prints a full traceback for every gr.Error by default; that is for real faults, which still get one.
"""

from __future__ import annotations

import logging

import gradio as gr

log = logging.getLogger("alignment_lab.ui")


class UserError(gr.Error):
    """Raise instead of gr.Error for a refusal the user can fix: shown beside the form, logged in one line."""

    def __init__(self, message: str) -> None:
        super().__init__(message, print_exception=False)
        log.info("refused: %s", message)
