"""Prompt experiments: prompt variants × questions → a grid of responses, saved cell by cell.

Each finished cell is written to the workspace at once, so stopping a run (or a
crash) keeps every answer already produced, and rerunning fills only the gaps.
Each cell records which model answered it (base and view), so running the same
experiment with another model or adapter adds a column beside the first.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from statistics import mean

import pandas as pd

from lab import limits
from lab.generate import GenerationSettings, generate
from lab.models import ModelManager
from lab.presets import ExperimentPreset, Variant, load_question_set
from lab.refs import BASE_VIEW, ModelRef
from lab.store import Experiment, Result, Store
from lab.store.rows import check_name

RATING_MARK = {1: "· good", -1: "· bad", None: ""}
SUMMARY_COLUMNS = ["variant", "model", "answered", "good", "bad", "mean_seconds", "mean_tokens"]
UNRECORDED = "model not recorded"  # cells answered before the lab recorded the model of each cell


def new_experiment(
    name: str, variants: list[dict], questions: list[str], settings: dict, description: str = ""
) -> Experiment:
    """Validate the pieces of an experiment; raises ValueError naming what is wrong."""
    if not name.strip():
        raise ValueError("Give the experiment a name.")
    check_name(name.strip(), "The experiment's name")
    questions = [q.strip() for q in questions if q.strip()]
    if not questions:
        raise ValueError("Add at least one question (one per line).")
    if len(questions) > limits.QUESTIONS or max(map(len, questions)) > limits.MESSAGE_CHARS:
        raise ValueError(
            f"An experiment takes up to {limits.QUESTIONS:,} questions of up to {limits.MESSAGE_CHARS:,} characters."
        )
    if len(variants) > limits.VARIANTS:
        raise ValueError(f"An experiment takes up to {limits.VARIANTS} prompt variants.")
    checked = [_checked_variant(v) for v in variants]
    if not checked:
        raise ValueError("Add at least one prompt variant.")
    names = [v["name"] for v in checked]
    if len(set(names)) != len(names):
        raise ValueError(f"Variant names must be unique, got {', '.join(names)}.")
    GenerationSettings(**settings)
    return Experiment(
        name=name.strip(), variants=checked, questions=questions, settings=settings, description=description
    )


def _checked_variant(row: dict) -> dict:
    """One variant row, validated; a problem is one sentence naming the variant and the field."""
    from pydantic import ValidationError

    try:
        return Variant.model_validate(row).model_dump()
    except ValidationError as err:
        first = err.errors()[0]
        field = ".".join(map(str, first["loc"])) or "row"
        # pydantic words it "Value error, a template must contain …": drop the prefix and the field's own article
        message = first["msg"].removeprefix("Value error, ").removeprefix(f"a {field} ")
        name = str(row.get("name") or "").strip() or "(unnamed)"
        raise ValueError(f"Variant '{name}': the {field} {message[:1].lower()}{message[1:]}.") from None


def from_preset(preset: ExperimentPreset) -> Experiment:
    """A starter experiment from presets/, validated like a typed one."""
    return new_experiment(
        preset.name,
        [v.model_dump() for v in preset.variants],
        [p.text for p in load_question_set(preset.questions)],
        preset.settings.model_dump(),
        description=preset.description,
    )


def save_experiment(store: Store, exp: Experiment, experiment_id: int | None) -> tuple[int, str]:
    """Save the editor's experiment over the one it was opened from (experiment_id), if any; returns (id, message).

    Changed prompts or settings make a new experiment, so the old results keep their meaning; an
    experiment identical to one already saved reopens that one instead of saving a copy.
    """
    note, target = "", None
    if experiment_id is not None:
        target = store.get_experiment(experiment_id)
        exp.description = target.description
        if (target.variants, target.questions, target.settings) != (exp.variants, exp.questions, exp.settings):
            target, note = None, " as a new experiment, since the prompts or settings changed"
    if target is None:
        same = (exp.name, exp.variants, exp.questions, exp.settings)
        target = next(
            (e for e in store.list_experiments() if (e.name, e.variants, e.questions, e.settings) == same), None
        )
        if target is not None:
            note = " (the same experiment was already saved; it is reopened)"
    if target is not None:
        exp.id, exp.description, exp.model = target.id, exp.description or target.description, target.model
    eid = store.save_experiment(exp)
    return eid, f"Saved experiment #{eid}{note}."


@dataclass
class Progress:
    """How far a run has come, and the cell it just answered."""

    done: int
    total: int
    variant: str
    question: str


def model_reference(models: ModelManager, view: str) -> str:
    """A short name for what answers: the loaded base (a local folder by its name) and the view (base or adapter).

    Only the view names an adapter: others may be attached to the model, but the 'base' view disables them all.
    """
    return str(ModelRef(models.require().base, view))


def describe_view(models: ModelManager, view: str) -> str:
    """The experiment's note of what answered: base, precision, device and the view, not every attached adapter."""
    lm = models.require()
    return f"{lm.base} · {lm.precision} · {lm.device} · view: {view}"


def progress_text(done: int, total: int, what: str = "cells", waiting: str | None = None) -> str:
    """Progress in words for a status line: "3 of 12 cells… waiting for the model behind another request"."""
    return f"{done} of {total} {what}… {waiting or 'generating'}"


def _all_cells(exp: Experiment) -> Iterator[tuple[int, int]]:
    """(variant, question) in the order a run fills them: question by question, every variant of each."""
    return ((v, q) for q in range(len(exp.questions)) for v in range(len(exp.variants)))


def missing_cells(store: Store, models: ModelManager, experiment_id: int, view: str) -> list[tuple[int, int]]:
    """The (variant, question) cells the loaded model, in this view, has not answered yet."""
    reference = model_reference(models, view)
    have = {(r.variant, r.question) for r in store.list_results(experiment_id) if r.model == reference}
    return [cell for cell in _all_cells(store.get_experiment(experiment_id)) if cell not in have]


def run_experiment(
    store: Store, models: ModelManager, experiment_id: int, *, view: str = BASE_VIEW, only_missing: bool = True
) -> Iterator[Progress]:
    """Generate every cell (or only those this model and view have not answered) and store each as it finishes.

    Yields after each cell, so a caller can show progress or stop by closing the
    iterator. The model is held one cell at a time, so a chat can interleave.
    Each cell records the view it was generated with (the one passed to `models.use`),
    whatever other adapters are attached.
    """
    exp = store.get_experiment(experiment_id)
    settings = GenerationSettings(**exp.settings)
    cells = missing_cells(store, models, experiment_id, view) if only_missing else list(_all_cells(exp))
    exp.model = describe_view(models, view)
    store.save_experiment(exp)
    for done, (v, q) in enumerate(cells, start=1):
        variant = Variant.model_validate(exp.variants[v])
        with models.use(view) as lm:
            out = generate(lm, variant.messages(exp.questions[q]), settings)
            answered = str(ModelRef(lm.base, view))  # the base and view that just answered, not the first cell's
        result = Result(experiment_id, v, q, out.text, out.prompt_tokens, out.new_tokens, out.seconds, model=answered)
        store.save_result(result)
        yield Progress(done, len(cells), variant.name, exp.questions[q])


def answering_models(results: list[Result]) -> list[str]:
    """The model references in the results, in the order they first answered."""
    return list(dict.fromkeys(r.model for r in results))


def grid_columns(exp: Experiment, results: list[Result]) -> list[tuple[int, str, str]]:
    """The response columns of the grid as (variant, model, label).

    With one model the labels are the variant names; with several, one column per variant and model,
    labelled "variant · model".
    """
    models = answering_models(results)
    if len(models) <= 1:
        model = models[0] if models else ""
        return [(v, model, variant["name"]) for v, variant in enumerate(exp.variants)]
    return [
        (v, model, f"{variant['name']} · {model or UNRECORDED}")
        for v, variant in enumerate(exp.variants)
        for model in models
    ]


def results_table(exp: Experiment, results: list[Result]) -> pd.DataFrame:
    """One row per cell (long format): what a CSV export holds."""
    rows = [
        {
            "question": exp.questions[r.question],
            "variant": exp.variants[r.variant]["name"],
            "system": exp.variants[r.variant]["system"],
            "template": exp.variants[r.variant]["template"],
            "response": r.response,
            "prompt_tokens": r.prompt_tokens,
            "new_tokens": r.new_tokens,
            "seconds": round(r.seconds, 3),
            "rating": r.rating,
            "model": r.model,
        }
        for r in results
    ]
    columns = [
        "question",
        "variant",
        "system",
        "template",
        "response",
        "prompt_tokens",
        "new_tokens",
        "seconds",
        "rating",
        "model",
    ]
    return pd.DataFrame(rows, columns=columns)


def results_grid(exp: Experiment, results: list[Result]) -> pd.DataFrame:
    """Questions down, one column per variant (and model); each cell is the response with its time, tokens, rating."""
    columns = grid_columns(exp, results)
    grid = pd.DataFrame("", index=range(len(exp.questions)), columns=[label for _, _, label in columns])
    where = {(v, model): number for number, (v, model, _) in enumerate(columns)}
    for r in results:
        meta = f"{r.seconds:.1f} s · {r.new_tokens} tok {RATING_MARK[r.rating]}".rstrip()
        grid.iat[r.question, where[r.variant, r.model]] = f"{r.response}\n\n[{meta}]"
    grid.insert(0, "question", exp.questions)
    return grid


def variant_summary(exp: Experiment, results: list[Result]) -> pd.DataFrame:
    """Per variant and model: cells answered, good and bad marks, mean time and length, so the winner shows."""
    rows = []
    for v, model, _ in grid_columns(exp, results):
        cells = [r for r in results if (r.variant, r.model) == (v, model)]
        rows.append(
            {
                "variant": exp.variants[v]["name"],
                "model": model,
                "answered": len(cells),
                "good": sum(r.rating == 1 for r in cells),
                "bad": sum(r.rating == -1 for r in cells),
                "mean_seconds": round(mean(r.seconds for r in cells), 2) if cells else 0.0,
                "mean_tokens": round(mean(r.new_tokens for r in cells), 1) if cells else 0.0,
            }
        )
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def export_csv(store: Store, experiment_id: int, path: str | Path) -> Path:
    """Write the experiment's cells (results_table) as CSV at path; returns it."""
    exp = store.get_experiment(experiment_id)
    path = Path(path)
    partial = path.with_name(f".{path.name}.partial")
    results_table(exp, store.list_results(experiment_id)).to_csv(partial, index=False)
    os.replace(partial, path)  # a download never sees a half-written file
    return path


def seed_prompt_pool(store: Store, sets: list[str]) -> int:
    """Put the bundled question sets in the workspace's prompt pool (idempotent); returns how many were new."""
    return sum(store.add_prompts(load_question_set(name)) for name in sets)


def best_prompt(store: Store, experiment_id: int) -> dict:
    """The experiment's best variant ({"name", "system", "template"}): the most good marks minus bad marks over
    its rated cells, ties to the one with fewer bad marks. "Prompt or fine-tune?" pits it against an adapter.

    Raises ValueError when no cell was rated, since then no variant is better than another."""
    exp = store.get_experiment(experiment_id)
    results = store.list_results(experiment_id)
    if not any(r.rating for r in results):
        raise ValueError(f"Experiment '{exp.name}' has no rated answers: mark answers good or bad to find its best.")

    def merit(v: int) -> tuple[int, int]:
        ratings = [r.rating for r in results if r.variant == v and r.rating]
        return sum(ratings), -ratings.count(-1)

    return dict(exp.variants[max(range(len(exp.variants)), key=merit)])
