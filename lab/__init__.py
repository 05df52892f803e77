"""Alignment Lab: the alignment recipe for language models on one machine, usable without the UI.

`from lab import Lab` is the public Python API (see lab/session.py); the app and the CLI drive the same object.
"""

from lab.session import Lab, TrainingRun

__all__ = ["Lab", "TrainingRun"]
