"""Names the whole lab shares, kept free of heavy imports so the app's page and the presets load without torch."""

from __future__ import annotations

DEFAULT_MODEL = "smollm2-135m-instruct"
PRECISIONS = ("fp32", "bf16", "fp16", "8bit", "4bit")
DEVICES = ("auto", "cpu", "cuda", "mps")
