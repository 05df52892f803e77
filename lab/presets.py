"""Loading and validating presets/: model presets per hardware tier and starter experiments.

A preset is a flat YAML file read into a pydantic model that forbids unknown
keys, so a typo is an error naming the key and the file, not a silent default.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from lab import limits
from lab.refs import DEVICES, PRECISIONS
from lab.store import CATEGORIES, Prompt

ROOT = Path(__file__).resolve().parent.parent
PRESETS_DIR = ROOT / "presets"
ASSETS_DIR = ROOT / "assets"


class PresetError(ValueError):
    """A preset file that cannot be used; the message names the file and the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LoraDefaults(_Strict):
    r: int = Field(16, gt=0, description="LoRA rank: the width of the low-rank update.")
    alpha: int = Field(32, gt=0, description="LoRA scaling numerator; the update is scaled by alpha / r.")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the LoRA input during training.")
    target_modules: str | list[str] = Field("all-linear", description="Modules that get adapters.")


class ModelPreset(_Strict):
    """A model with the precision, LoRA defaults and lengths that suit one hardware tier."""

    name: str
    description: str
    tier: Literal["cpu", "gpu-8gb", "gpu-24gb", "gpu-48gb", "mps"]
    model: str = Field(description="The embedded default, a local model folder, or a hub id.")
    precision: Literal[PRECISIONS] = "fp32"  # type: ignore[valid-type]
    device: Literal[DEVICES] = "auto"  # type: ignore[valid-type]
    lora: LoraDefaults = LoraDefaults()
    max_prompt_length: int = Field(512, gt=0)
    max_length: int = Field(1024, gt=0)
    recipes: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Per training method, the config values that suit this tier (learning rate, batch, epochs…): "
        "applied over the method's defaults, under what the user sets; checked when a config is built.",
    )

    @model_validator(mode="after")
    def _lengths(self) -> ModelPreset:
        if self.max_prompt_length >= self.max_length:
            raise ValueError("max_prompt_length must be smaller than max_length")
        return self


class Variant(_Strict):
    """One way of asking: an optional system prompt and a user template around {question}."""

    name: str = Field(min_length=1, max_length=limits.NAME_CHARS)
    system: str = Field("", max_length=limits.SYSTEM_PROMPT_CHARS)
    template: str = Field("{question}", max_length=limits.MESSAGE_CHARS)

    @field_validator("template")
    @classmethod
    def _has_question(cls, value: str) -> str:
        if "{question}" not in value:
            raise ValueError("a template must contain {question}")
        return value

    def messages(self, question: str) -> list[dict[str, str]]:
        user = self.template.replace("{question}", question)
        system = [{"role": "system", "content": self.system}] if self.system.strip() else []
        return system + [{"role": "user", "content": user}]


class SamplingPreset(_Strict):
    temperature: float = Field(0.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    max_new_tokens: int = Field(96, gt=0)
    seed: int | None = 0


class ExperimentPreset(_Strict):
    """A starter prompt experiment: variants × a bundled question set."""

    name: str
    description: str
    questions: str = Field(description="Name of a question set in assets/prompts/ (without .jsonl).")
    variants: list[Variant] = Field(min_length=1)
    settings: SamplingPreset = SamplingPreset()
    look_for: str = Field("", description="What a reader should compare across the variants.")

    @model_validator(mode="after")
    def _unique_names(self) -> ExperimentPreset:
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError(f"variant names must be unique, got {names}")
        return self


class ScenarioPreset(_Strict):
    """A ranking task: a question queue, the annotation guidelines shown beside it, and sampling defaults; for a
    workshop also its held-out questions, starter demonstrations and comparisons (lab.scenarios seeds them)."""

    name: str
    description: str
    questions: str = Field(
        "",
        description="Name of a question set in assets/prompts/ (without .jsonl); empty only for a scenario built "
        "from TruthfulQA's CSV, whose questions come from the user's file.",
    )
    guidelines: str = Field(min_length=1)
    k: int = Field(2, ge=2, le=4)
    temperature: float = Field(0.9, gt=0, le=2)
    check: str = Field(
        "",
        description="A rule-based reward spec (lab.rewards: length, contains, not_contains, regex, refusal, echo, "
        "refuses_tagged) that says whether an answer does what the scenario aligns for; RL rewards it as the term "
        "scenario:NAME.",
    )
    held_out: str = Field(
        "",
        description="Name of a question set in assets/prompts/held-out/: the before/after evaluation's questions, "
        "never in the queue, the demonstrations or the comparisons.",
    )
    demonstrations: str = Field("", description="Starter demonstrations: a file in assets/demonstrations/ (no .jsonl).")
    comparisons: str = Field("", description="Starter preference pairs: a file in assets/comparisons/ (no .jsonl).")
    truthfulqa: bool = Field(
        False,
        description="Built from the user's TruthfulQA CSV: its questions, Best Answer demonstrations and (Best "
        "Answer, an Incorrect Answer) pairs, with a held-out split for MC1/MC2.",
    )
    votes_per_item: int = Field(
        1, ge=1, le=20, description="Votes each queued question gets before it stops being handed out (Ranking)."
    )
    held_out_fraction: float = Field(0.2, gt=0, lt=1, description="TruthfulQA: the share of questions held out.")
    split_seed: int = Field(42, ge=0, description="TruthfulQA: the seed of the question-level split.")

    @model_validator(mode="after")
    def _questions(self) -> ScenarioPreset:
        if not self.truthfulqa and not self.questions:
            raise ValueError("a scenario needs 'questions' (a question set) unless it is built from TruthfulQA")
        if self.truthfulqa and (self.questions or self.held_out or self.demonstrations or self.comparisons):
            raise ValueError("a TruthfulQA scenario takes its questions, demonstrations and pairs from the CSV")
        return self


def _load(path: Path, kind: type[_Strict]) -> _Strict:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise PresetError(f"{path.name}: not valid YAML ({err.problem or err}).") from err
    if not isinstance(data, dict):
        raise PresetError(f"{path.name}: a preset must be a mapping of keys to values.")
    try:
        return kind.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        key = ".".join(str(part) for part in first["loc"]) or "(top level)"
        message = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
        raise PresetError(f"{path.name}: key '{key}': {message}.") from err


def load_model_preset(path: str | Path) -> ModelPreset:
    return _load(Path(path), ModelPreset)


def load_experiment_preset(path: str | Path) -> ExperimentPreset:
    return _load(Path(path), ExperimentPreset)


def scenario_files(folder: Path = PRESETS_DIR / "scenarios") -> dict[str, ScenarioPreset]:
    """The scenarios by file name without .yaml (the short name a command line takes: truthfulness, …)."""
    return {p.stem: _load(p, ScenarioPreset) for p in sorted(folder.glob("*.yaml"))}


def scenario_presets(folder: Path = PRESETS_DIR / "scenarios") -> dict[str, ScenarioPreset]:
    """The scenarios by their display name (what the queues, the dropdowns and `scenario:NAME` rewards use)."""
    return {p.name: p for p in scenario_files(folder).values()}


def model_presets(folder: Path = PRESETS_DIR / "models") -> dict[str, ModelPreset]:
    presets = (load_model_preset(p) for p in sorted(folder.glob("*.yaml")))
    return {p.name: p for p in presets}


def experiment_presets(folder: Path = PRESETS_DIR / "experiments") -> dict[str, ExperimentPreset]:
    presets = (load_experiment_preset(p) for p in sorted(folder.glob("*.yaml")))
    return {p.name: p for p in presets}


HELD_OUT_DIR = ASSETS_DIR / "prompts" / "held-out"  # evaluation questions: not offered as bundled sets


def question_sets(folder: Path = ASSETS_DIR / "prompts") -> list[str]:
    return sorted(p.stem for p in folder.glob("*.jsonl"))


def load_question_set(name: str, folder: Path = ASSETS_DIR / "prompts") -> list[Prompt]:
    """A bundled prompt set: one JSON object per line with text, category and tags."""
    path = folder / f"{name}.jsonl"
    if not path.is_file():
        raise PresetError(f"No bundled question set '{name}': choose one of {', '.join(question_sets(folder))}.")
    prompts = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise PresetError(f"{path.name} line {number}: not valid JSON ({err.msg}).") from err
        if not isinstance(row, dict) or not isinstance(row.get("text"), str) or not row["text"].strip():
            raise PresetError(f"{path.name} line {number}: each line is an object with a non-empty 'text'.")
        if row.get("category") not in CATEGORIES:
            raise PresetError(f"{path.name} line {number}: category must be one of {', '.join(CATEGORIES)}.")
        prompts.append(Prompt(row["text"], row["category"], row.get("tags", []), f"bundled:{name}"))
    return prompts


def demonstration_sets(folder: Path = ASSETS_DIR / "demonstrations") -> dict[str, Path]:
    """The bundled starter demonstrations (TRL `messages` JSONL), by name."""
    return {p.stem: p for p in sorted(folder.glob("*.jsonl"))}
