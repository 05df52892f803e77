"""Prompt experiments: prompt variants × questions → a grid of responses, saved cell by cell.

Each finished cell is written to the workspace at once, so stopping a run (or a
crash) keeps every answer already produced, and rerunning fills only the gaps.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from lab.generate import GenerationSettings, generate
from lab.models import BASE_VIEW, ModelManager
from lab.presets import ExperimentPreset, Variant, load_question_set
from lab.store import Experiment, Result, Store

RATING_MARK = {1: "· good", -1: "· bad", None: ""}


def new_experiment(
    name: str, variants: list[dict], questions: list[str], settings: dict, description: str = ""
) -> Experiment:
    """Validate the pieces of an experiment; raises ValueError naming what is wrong."""
    if not name.strip():
        raise ValueError("Give the experiment a name.")
    questions = [q.strip() for q in questions if q.strip()]
    if not questions:
        raise ValueError("Add at least one question (one per line).")
    checked = [Variant.model_validate(v).model_dump() for v in variants]
    if not checked:
        raise ValueError("Add at least one prompt variant.")
    names = [v["name"] for v in checked]
    if len(set(names)) != len(names):
        raise ValueError(f"Variant names must be unique, got {', '.join(names)}.")
    GenerationSettings(**settings)
    return Experiment(
        name=name.strip(), variants=checked, questions=questions, settings=settings, description=description
    )


def from_preset(preset: ExperimentPreset) -> Experiment:
    return new_experiment(
        preset.name,
        [v.model_dump() for v in preset.variants],
        [p.text for p in load_question_set(preset.questions)],
        preset.settings.model_dump(),
        description=preset.description,
    )


@dataclass
class Progress:
    done: int
    total: int
    variant: str
    question: str


def run_experiment(
    store: Store, models: ModelManager, experiment_id: int, *, view: str = BASE_VIEW, only_missing: bool = True
) -> Iterator[Progress]:
    """Generate every cell (or only those without a response) and store each as it finishes.

    Yields after each cell, so a caller can show progress or stop by closing the
    iterator. The model is held one cell at a time, so a chat can interleave.
    """
    exp = store.get_experiment(experiment_id)
    settings = GenerationSettings(**exp.settings)
    have = {(r.variant, r.question) for r in store.list_results(experiment_id)} if only_missing else set()
    cells = [(v, q) for q in range(len(exp.questions)) for v in range(len(exp.variants)) if (v, q) not in have]
    exp.model = f"{models.require().describe()} · view: {view}"
    store.save_experiment(exp)
    for done, (v, q) in enumerate(cells, start=1):
        variant = Variant.model_validate(exp.variants[v])
        with models.use(view) as lm:
            out = generate(lm, variant.messages(exp.questions[q]), settings)
        store.save_result(Result(experiment_id, v, q, out.text, out.prompt_tokens, out.new_tokens, out.seconds))
        yield Progress(done, len(cells), variant.name, exp.questions[q])


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
    ]
    return pd.DataFrame(rows, columns=columns)


def results_grid(exp: Experiment, results: list[Result]) -> pd.DataFrame:
    """Questions down, variants across; each cell is the response with its time, tokens and rating."""
    names = [v["name"] for v in exp.variants]
    grid = pd.DataFrame("", index=range(len(exp.questions)), columns=names)
    for r in results:
        meta = f"{r.seconds:.1f} s · {r.new_tokens} tok {RATING_MARK[r.rating]}".rstrip()
        grid.iat[r.question, r.variant] = f"{r.response}\n\n[{meta}]"
    grid.insert(0, "question", exp.questions)
    return grid


def variant_summary(exp: Experiment, results: list[Result]) -> pd.DataFrame:
    """Per variant: cells answered, good and bad marks, mean time and length, so the winner shows at a glance."""
    table = results_table(exp, results)
    names = [v["name"] for v in exp.variants]
    if table.empty:
        return pd.DataFrame(
            {"variant": names, "answered": 0, "good": 0, "bad": 0, "mean_seconds": 0.0, "mean_tokens": 0.0}
        )
    grouped = table.groupby("variant", sort=False)
    summary = (
        pd.DataFrame(
            {
                "answered": grouped.size(),
                "good": grouped["rating"].apply(lambda s: int((s == 1).sum())),
                "bad": grouped["rating"].apply(lambda s: int((s == -1).sum())),
                "mean_seconds": grouped["seconds"].mean().round(2),
                "mean_tokens": grouped["new_tokens"].mean().round(1),
            }
        )
        .reindex(names)
        .fillna(0)
    )
    summary[["answered", "good", "bad"]] = summary[["answered", "good", "bad"]].astype(int)
    return summary.rename_axis("variant").reset_index()


def export_csv(store: Store, experiment_id: int, path: str | Path) -> Path:
    exp = store.get_experiment(experiment_id)
    path = Path(path)
    partial = path.with_name(f".{path.name}.partial")
    results_table(exp, store.list_results(experiment_id)).to_csv(partial, index=False)
    os.replace(partial, path)  # a download never sees a half-written file
    return path


def seed_prompt_pool(store: Store, sets: list[str]) -> int:
    """Put the bundled question sets in the workspace's prompt pool (idempotent); returns how many were new."""
    return sum(store.add_prompts(load_question_set(name)) for name in sets)
