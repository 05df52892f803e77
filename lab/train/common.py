"""What every training method shares: the run folder, LoRA settings, config checks and the stop signal.

A run folder (workspace/runs/<run_id>/) holds config.yaml (the exact resolved
config, written before step 0), metrics.jsonl (one JSON object per log step),
log.txt, checkpoints/ (for resume) and adapter/ (the PEFT safetensors).
"""

from __future__ import annotations

import dataclasses
import json
import resource
import signal
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

STOP_REQUESTED = threading.Event()  # set by SIGTERM/SIGINT in a training process; honoured at a step boundary


def help_field(default: Any, help: str, **kw: Any) -> Any:
    """A dataclass field with help text, shown as a tooltip in the UI and in `--help`."""
    if isinstance(default, list | dict):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help}, **kw)
    return field(default=default, metadata={"help": help}, **kw)


@dataclass
class LoraSettings:
    lora_r: int = help_field(16, "LoRA rank: the width of the low-rank update.")
    lora_alpha: int = help_field(32, "LoRA scaling numerator; the update is scaled by alpha / r.")
    lora_dropout: float = help_field(0.05, "Dropout on the LoRA input during training.")
    target_modules: str = help_field("all-linear", "Modules that get adapters: 'all-linear' or comma-separated names.")

    def lora_config(self):
        from peft import LoraConfig

        targets = self.target_modules if self.target_modules == "all-linear" else self.target_modules.split(",")
        return LoraConfig(
            r=self.lora_r,
            lora_alpha=self.lora_alpha,
            lora_dropout=self.lora_dropout,
            target_modules=targets,
            task_type="CAUSAL_LM",
        )


def config_from_dict(cls: type, values: dict, where: str = "config") -> Any:
    """Build a config dataclass; an unknown key or a wrong type is an error naming the key."""
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ValueError(f"{where}: unknown key '{unknown[0]}' (known: {', '.join(sorted(names))})")
    checked = {}
    for key, value in values.items():
        default = names[key].default if names[key].default is not dataclasses.MISSING else None
        if default is not None and value is not None and not _fits(value, type(default)):
            raise ValueError(f"{where}: key '{key}' should be {type(default).__name__}, got {value!r}")
        checked[key] = float(value) if isinstance(default, float) and isinstance(value, int) else value
    return cls(**checked)


def _fits(value: Any, kind: type) -> bool:
    if kind is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def parse_overrides(pairs: list[str]) -> dict:
    """`key=value` pairs from the command line, the value read as YAML (so 3 is an int, 2e-4 a float)."""
    values = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep:
            raise ValueError(f"--set {pair}: use key=value")
        values[key.strip()] = yaml.safe_load(raw)
    return values


def write_config(run_dir: Path, config: Any) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(dataclasses.asdict(config), sort_keys=False)
    (run_dir / "config.yaml").write_text(text, encoding="utf-8")


def _read_jsonl(path: Path) -> list[dict]:
    """Rows of a JSONL file a live run appends to (a half-written last line is skipped)."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def read_metrics(run_dir: Path) -> list[dict]:
    """The metrics rows written so far."""
    return _read_jsonl(run_dir / "metrics.jsonl")


def read_samples(run_dir: Path) -> list[dict]:
    """The completions sampled during training so far (samples.jsonl), oldest first."""
    return _read_jsonl(run_dir / "samples.jsonl")


def peak_memory_mb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / (2**20 if sys.platform == "darwin" else 2**10)


def install_stop_signals() -> None:
    """SIGTERM (the app's Stop) and SIGINT (Ctrl-C) finish the current step instead of killing the run."""

    def request_stop(signum, frame):
        if STOP_REQUESTED.is_set():
            raise KeyboardInterrupt  # a second Ctrl-C stops at once
        STOP_REQUESTED.set()  # only set a flag here: writing to stderr mid-write of tqdm could raise

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)


def latest_checkpoint(run_dir: Path) -> str | None:
    checkpoints = sorted((run_dir / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    return str(checkpoints[-1]) if checkpoints else None


def config_for(cls: type, preset: Any, overrides: dict | None = None, where: str = "--set") -> Any:
    """A method's config from a model preset (model, precision, device, LoRA, max length), then the overrides."""
    values = {
        "model": preset.model,
        "precision": "4bit" if preset.precision == "8bit" else preset.precision,
        "device": preset.device,
        "lora_r": preset.lora.r,
        "lora_alpha": preset.lora.alpha,
        "lora_dropout": preset.lora.dropout,
        "target_modules": ",".join(preset.lora.target_modules)
        if isinstance(preset.lora.target_modules, list)
        else preset.lora.target_modules,
        "max_length": preset.max_length,
    }
    return config_from_dict(cls, {**values, **(overrides or {})}, where)
