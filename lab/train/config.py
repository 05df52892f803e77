"""Run configs: dataclasses whose fields carry their help text and range, checked the same way everywhere.

Every method's config is a `RunConfig` built from shared groups (model, LoRA,
optimisation, data) plus its own fields. One check serves a dataclass built in
Python, a dict, a YAML file (a run's config.yaml) and `--set key=value` from the
CLI: an unknown key, a wrong type or a value outside its range is an error that
names the key. The Training tab's form and the CLI's flags are generated from
the same fields, so the help text has one source.

No torch here: the app's page imports this to build the form.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lab.refs import DEFAULT_MODEL, DEVICES, TRAINABLE_PRECISIONS


def help_field(
    default: Any,
    help: str,
    *,
    low: float | None = None,
    high: float | None = None,
    high_open: bool = False,
    choices: tuple | None = None,
    form: bool = True,
) -> Any:
    """A config field with help text (tooltip in the UI, `--help` in the CLI) and the values it accepts.

    `low`/`high` bound a number (inclusive; `high_open` excludes `high`); `choices` lists the allowed values;
    `form=False` keeps a field out of the Training tab's form (it comes from the preset or the data picker).
    """
    meta = {"help": help, "low": low, "high": high, "high_open": high_open, "choices": choices, "form": form}
    if isinstance(default, list | dict):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def describe_range(spec: dataclasses.Field) -> str:
    """'one of a, b', '[0, 1)', 'at least 1' … for help texts and error messages ('' when unbounded)."""
    meta = spec.metadata
    if meta.get("choices"):
        return "one of " + ", ".join(map(str, meta["choices"]))
    low, high = meta.get("low"), meta.get("high")
    if low is not None and high is not None:
        return f"[{_number(low)}, {_number(high)}{')' if meta.get('high_open') else ']'}"
    if low is not None:
        return f"at least {_number(low)}"
    if high is not None:
        return f"at most {_number(high)}"
    return ""


def _number(value: float) -> str:
    """4294967295 and 1000000 as written, 1e-08 as a small number is."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


class RunConfig:
    """Base of every method's config: checks each field's type and range after construction."""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for spec in dataclasses.fields(self):
            value = getattr(self, spec.name)
            setattr(self, spec.name, _check_value(spec, hints[spec.name], value))
        self.check()

    def check(self) -> None:
        """Rules across fields; a method's config overrides it (calling super) to add its own."""

    @classmethod
    def from_dict(cls, values: dict, where: str = "config") -> RunConfig:
        """Build from a dict; an unknown key, a wrong type or an out-of-range value names the key."""
        if not isinstance(values, dict):
            raise ValueError(f"{where}: a config is a mapping of keys to values, got {type(values).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"{where}: unknown key '{unknown[0]}' (known: {', '.join(sorted(names))})")
        try:
            return cls(**values)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{where}: {err}") from err

    @classmethod
    def from_file(cls, path: str | Path) -> RunConfig:
        """A YAML config (a run's config.yaml), checked like any other."""
        path = Path(path)
        try:
            values = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as err:
            raise ValueError(f"{path.name}: not valid YAML ({getattr(err, 'problem', None) or err})") from err
        return cls.from_dict(values or {}, where=path.name)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)

    def replace(self, **changes: Any) -> RunConfig:
        """A copy with some fields changed, checked again."""
        return self.from_dict({**self.to_dict(), **changes})


def _check_value(spec: dataclasses.Field, hint: Any, value: Any) -> Any:
    """The value, converted where lossless (an int for a float field), or ValueError naming the key."""
    key, kinds = spec.name, _kinds(hint)
    if value is None:
        if type(None) in kinds:
            return None
        raise ValueError(f"key '{key}' needs a value")
    if float in kinds and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not any(_fits(value, kind) for kind in kinds if kind is not type(None)):
        names = " or ".join(k.__name__ for k in kinds if k is not type(None))
        raise ValueError(f"key '{key}' should be {names}, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"key '{key}' must be a finite number, got {value}")
    meta = spec.metadata
    if meta.get("choices") and value not in meta["choices"]:
        raise ValueError(f"key '{key}' is {value!r}; use {describe_range(spec)}")
    if isinstance(value, int | float) and not isinstance(value, bool):
        low, high = meta.get("low"), meta.get("high")
        too_high = high is not None and (value >= high if meta.get("high_open") else value > high)
        if (low is not None and value < low) or too_high:
            raise ValueError(f"key '{key}' is {_number(value)}; it must be in {describe_range(spec)}")
    return value


def _kinds(hint: Any) -> tuple:
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return typing.get_args(hint)
    return (hint,)


def _fits(value: Any, kind: type) -> bool:
    if kind is float:
        return isinstance(value, float)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, typing.get_origin(kind) or kind)


def parse_overrides(pairs: list[str]) -> dict:
    """`key=value` pairs from the command line, the value read as YAML (so 3 is an int, 2e-4 a float)."""
    values = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep:
            raise ValueError(f"--set {pair}: use key=value")
        values[key.strip()] = yaml_scalar(raw)
    return values


def yaml_scalar(raw: str) -> Any:
    """A command-line value as YAML reads it, except that YAML 1.1's '2e-4' (no dot) is a float too."""
    value = yaml.safe_load(raw) if raw.strip() else ""
    if isinstance(value, str):
        try:
            return float(value) if any(c in value.lower() for c in ".e") and value.strip() else value
        except ValueError:
            return value
    return value


# The shared groups. A method's config inherits the ones it needs, then adds its own fields.


@dataclass
class ModelSettings:
    model: str = help_field(DEFAULT_MODEL, "Base model: the embedded default, a local folder, or a hub id.", form=False)
    precision: str = help_field(
        "fp32",
        "fp32 / bf16 / fp16, or 4bit for QLoRA (NF4 base, LoRA in full precision). 8-bit bases do not train.",
        choices=TRAINABLE_PRECISIONS,
        form=False,
    )
    device: str = help_field("auto", "Where to train: auto, cpu, cuda or mps.", choices=DEVICES, form=False)
    mixed_precision: bool = help_field(
        True,
        "Compute in bf16 where the hardware does it natively (recent GPUs; CPUs with AVX512-BF16 or AMX), "
        "keeping the weights in their precision: faster and lighter, as TRL does by default.",
    )
    init_adapter: str = help_field(
        "", "Continue training this adapter folder instead of starting a new one.", form=False
    )


@dataclass
class LoraSettings:
    lora_r: int = help_field(16, "LoRA rank: the width of the low-rank update.", low=1, high=1024)
    lora_alpha: int = help_field(32, "LoRA scaling numerator; the update is scaled by alpha / r.", low=1, high=4096)
    lora_dropout: float = help_field(0.05, "Dropout on the LoRA input during training.", low=0, high=1, high_open=True)
    target_modules: str = help_field("all-linear", "Modules that get adapters: 'all-linear' or comma-separated names.")

    def lora_config(self, task_type: str = "CAUSAL_LM"):
        """PEFT's LoraConfig; `task_type` is CAUSAL_LM for chat adapters, SEQ_CLS for reward models."""
        from peft import LoraConfig

        targets = self.target_modules if self.target_modules == "all-linear" else self.target_modules.split(",")
        return LoraConfig(
            r=self.lora_r,
            lora_alpha=self.lora_alpha,
            lora_dropout=self.lora_dropout,
            target_modules=targets,
            task_type=task_type,
        )


@dataclass
class OptimSettings:
    learning_rate: float = help_field(
        2e-4, "Peak learning rate (LoRA tolerates higher rates than full tuning).", low=1e-8, high=1.0
    )
    epochs: float = help_field(3.0, "Passes over the data (ignored when max_steps > 0).", low=0, high=1000)
    max_steps: int = help_field(
        -1, "Stop after this many optimizer steps; -1 = run the epochs.", low=-1, high=1_000_000
    )
    batch_size: int = help_field(4, "Examples per step on the device.", low=1, high=4096)
    grad_accum: int = help_field(1, "Steps whose gradients add up before one optimizer update.", low=1, high=1024)
    warmup_ratio: float = help_field(
        0.0, "Share of the steps spent ramping the learning rate up.", low=0, high=1, high_open=True
    )
    seed: int = help_field(
        42, "Random seed for the split, the adapter's initialisation and shuffling.", low=0, high=2**32 - 1
    )
    logging_steps: int = help_field(1, "Write a metrics row every this many steps.", low=1, high=100_000)
    save_steps: int = help_field(25, "Write a checkpoint (for resume) every this many steps.", low=1, high=1_000_000)


@dataclass
class DataSettings:
    data: str = help_field(
        "", "The run's training data (JSONL in TRL's format), frozen into the run folder.", form=False
    )
    eval_fraction: float = help_field(
        0.1, "Share of the examples held out for the validation metrics.", low=0, high=0.5, high_open=True
    )
    max_length: int = help_field(
        512, "Longest training sequence in tokens; longer ones are truncated.", low=8, high=131072
    )


@dataclass
class TrainConfig(DataSettings, OptimSettings, LoraSettings, ModelSettings, RunConfig):
    """The groups every LoRA-training method shares (model first in config.yaml); a method adds its own fields."""

    def check(self) -> None:
        if self.max_steps == 0 or (self.max_steps < 0 and self.epochs <= 0):
            raise ValueError("key 'max_steps': set max_steps > 0, or max_steps -1 with epochs > 0")


def config_from_preset(cls: type, preset: Any, overrides: dict | None = None, where: str = "--set") -> Any:
    """A method's config from a model preset (model, precision, device, LoRA, max length), then the overrides."""
    overrides = dict(overrides or {})
    if preset.precision == "8bit" and "precision" not in overrides:
        raise ValueError(
            f"preset '{preset.name}' loads its model in 8-bit, which does not train here: LoRA trains on an "
            "fp32/bf16/fp16 base or a 4-bit one (QLoRA); set precision=4bit or pick another preset"
        )
    targets = preset.lora.target_modules
    values = {
        "model": preset.model,
        "precision": preset.precision,
        "device": preset.device,
        "lora_r": preset.lora.r,
        "lora_alpha": preset.lora.alpha,
        "lora_dropout": preset.lora.dropout,
        "target_modules": ",".join(targets) if isinstance(targets, list) else targets,
        "max_length": preset.max_length,
    }
    names = {f.name for f in dataclasses.fields(cls)}
    return cls.from_dict({**{k: v for k, v in values.items() if k in names}, **overrides}, where)


def form_fields(cls: type) -> list[dataclasses.Field]:
    """The fields a person sets in the Training tab (the rest come from the preset or the data picker)."""
    return [f for f in dataclasses.fields(cls) if f.metadata.get("form", True)]


def group_of(cls: type, name: str) -> str:
    """Which shared group a field belongs to ('model', 'lora', 'optimisation', 'data'), or the method's own."""
    groups = ((ModelSettings, "model"), (LoraSettings, "LoRA"), (OptimSettings, "optimisation"), (DataSettings, "data"))
    for group, label in groups:
        if issubclass(cls, group) and name in {f.name for f in dataclasses.fields(group)}:
            return label
    return f"{cls.__name__.removesuffix('RunConfig').lower() or 'method'} only"
