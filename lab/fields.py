"""Checked settings: dataclass fields that carry their help text and range, checked the same way everywhere.

A dataclass that inherits `Checked` refuses, naming the key, an unknown key, a
wrong type (also for fields whose default is None or a factory), a number that
is not finite or is outside its range, and a value outside its choices: built
in Python, from a dict, from a YAML file or from `--set key=value`. The forms
and the CLI flags read the same fields for their help, so it has one source.

No torch here: the app's page imports this to build its forms.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import field
from pathlib import Path
from typing import Any

import yaml


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


class Checked:
    """Base of every checked settings dataclass: checks each field's type and range after construction."""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for spec in dataclasses.fields(self):
            value = getattr(self, spec.name)
            setattr(self, spec.name, _check_value(spec, hints[spec.name], value))
        self.check()

    def check(self) -> None:
        """Rules across fields; a method's config overrides it (calling super) to add its own."""

    @classmethod
    def from_dict(cls, values: dict, where: str = "config") -> Checked:
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
    def from_file(cls, path: str | Path) -> Checked:
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

    def replace(self, **changes: Any) -> Checked:
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
