"""Model references: which base, which adapter, and the names every layer shares. No torch here.

A reference is a base model (the embedded default, a local Hugging Face folder
or a hub id) plus an optional adapter (a trained run's id, or "base" for the
model with every adapter disabled). The base is normalised, so "./m", "m/" and
"/abs/m" are one model: runs, adapters and the loaded model compare equal.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DEFAULT_MODEL = "smollm2-135m-instruct"
PRECISIONS = ("fp32", "bf16", "fp16", "8bit", "4bit")

TRAINABLE_PRECISIONS = ("fp32", "bf16", "fp16", "4bit")  # LoRA on an 8-bit base is not supported here
DEVICES = ("auto", "cpu", "cuda", "mps")
BASE_VIEW = "base"  # the adapter-disabled view of the loaded model


def normalise_base(base: str) -> str:
    """One spelling per base: the default's name, an absolute folder path, or the hub id as typed."""
    base = (base or "").strip()
    if not base or base == DEFAULT_MODEL:
        return base
    path = Path(base).expanduser()
    if path.exists() or base.startswith((".", "/", "~")):
        return str(path.resolve())
    return base


@dataclass(frozen=True)
class ModelRef:
    """A base model with an optional adapter; `str(ref)` is what the grids show and experiment cells record."""

    base: str
    adapter: str = BASE_VIEW

    def __post_init__(self) -> None:
        object.__setattr__(self, "base", normalise_base(self.base))
        object.__setattr__(self, "adapter", self.adapter or BASE_VIEW)

    def __str__(self) -> str:
        """'smollm2-135m-instruct · base', 'my-model · sft-2026…': a local folder by its name, then the view."""
        name = Path(self.base).name if Path(self.base).is_absolute() else self.base
        return f"{name} · {self.adapter}"
