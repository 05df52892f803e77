"""Workshop scenarios: a bundled task (questions, guidelines, starter demonstrations and comparisons, held-out
questions and a rule check) seeded into a fresh workspace, so a room starts from the same data and nothing mixes
with earlier work.

    from lab.scenarios import open_scenario
    store, counts = open_scenario("truthfulness")  # workspaces/truthfulness (or -2, -3…), seeded
    counts  # {"prompts": 32, "held_out": 12, "demonstrations": 24, "comparisons": 36}

A scenario is a preset in presets/scenarios/ (lab.presets.ScenarioPreset), named by its display name
("Instruction following") or its file's name ("instructions"). Its files are read and checked whole before anything
is written; seeding twice adds nothing twice. The TruthfulQA scenario is built from the user's copy of its CSV (the
project ships none): a question-level split keeps the held-out questions out of every training row.

Besides the database rows, seeding writes `scenarios/<file name>/held-out.jsonl` in the workspace (TRL prompt-only
rows, for `Lab.evaluate(prompts=...)`) and, for TruthfulQA, `held-out.csv` (its held-out questions in the CSV's own
shape, for the MC1/MC2 check).
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from lab.formats import DataFileError, read_records, write_jsonl
from lab.formats.detect import parse
from lab.presets import ASSETS_DIR, HELD_OUT_DIR, ScenarioPreset, load_question_set, scenario_files
from lab.refs import BASE_VIEW, DEFAULT_MODEL, normalise_base
from lab.store import Comparison, Demonstration, Prompt, Store, fingerprint
from lab.truthfulqa import COLUMNS, Question, read_questions, split_questions
from lab.truthfulqa import preference_rows as truthfulqa_pairs

WORKSPACES = Path("workspaces")  # where fresh scenario workspaces go, one folder each
STARTER_SOURCE = "scenario"  # the source of a scenario's starter comparisons (their annotator names the scenario)
CANDIDATES_DIR = ASSETS_DIR / "candidates"
CANDIDATE_TOKENS = 96  # the length cap of shipped candidates: long enough to answer, short enough to read
DATABASE_FILES = {"lab.sqlite", "lab.sqlite-wal", "lab.sqlite-shm", "runs"}


def scenario_names() -> list[str]:
    """The scenarios' display names, in file order."""
    return [preset.name for preset in scenario_files().values()]


def find(name: str) -> tuple[str, ScenarioPreset]:
    """(file name, preset) of the scenario called `name` (display or file name, any letter case); ValueError
    listing the choices otherwise."""
    wanted = name.strip().casefold()
    for slug, preset in scenario_files().items():
        if wanted in (slug.casefold(), preset.name.casefold()):
            return slug, preset
    choices = ", ".join(f"{slug} ({p.name})" for slug, p in scenario_files().items())
    raise ValueError(f"No scenario named '{name}': choose one of {choices}.")


@dataclass
class ScenarioData:
    """A scenario's rows, read and checked, ready to seed a workspace."""

    slug: str
    preset: ScenarioPreset
    prompts: list[Prompt]  # to rank and to train on: the prompt pool
    held_out: list[Prompt]  # for the before/after evaluation only
    demonstrations: list[Demonstration] = field(default_factory=list)
    comparisons: list[Comparison] = field(default_factory=list)
    truthfulqa_held_out: list[Question] = field(default_factory=list)  # the MC1/MC2 questions

    @property
    def source(self) -> str:
        """What the seeded prompts and demonstrations record as their source, and the comparisons as annotator."""
        return f"scenario:{self.slug}"


def load(name: str, truthfulqa_csv: str | Path | None = None) -> ScenarioData:
    """Read and check a scenario's files (or, for TruthfulQA, the user's CSV); writes nothing. Raises ValueError
    naming the file and line of a bad row, or a held-out question found among the training rows."""
    slug, preset = find(name)
    if preset.truthfulqa:
        if not truthfulqa_csv:
            raise ValueError(
                f"Scenario {preset.name} is built from TruthfulQA's CSV, which the lab does not ship: give its path "
                "(--truthfulqa FILE, or truthfulqa= in Python)."
            )
        data = _from_truthfulqa(slug, preset, Path(truthfulqa_csv))
    else:
        if truthfulqa_csv:
            raise ValueError(f"Scenario {preset.name} is bundled: it takes no TruthfulQA file.")
        data = _bundled(slug, preset)
    _check_held_out(data)
    return data


def _bundled(slug: str, preset: ScenarioPreset) -> ScenarioData:
    source = f"scenario:{slug}"
    prompts = [_sourced(p, source) for p in load_question_set(preset.questions)]
    held = load_question_set(preset.held_out, HELD_OUT_DIR) if preset.held_out else []
    data = ScenarioData(slug, preset, prompts, [_sourced(p, f"{source}:held-out") for p in held])
    if preset.demonstrations:
        rows = _parse(ASSETS_DIR / "demonstrations" / f"{preset.demonstrations}.jsonl", source, "demonstrations")
        data.demonstrations = [_as_starter_demonstration(d, source) for d in rows]
    if preset.comparisons:
        rows = _parse(ASSETS_DIR / "comparisons" / f"{preset.comparisons}.jsonl", STARTER_SOURCE, "comparisons")
        data.comparisons = [_as_starter_comparison(c, source) for c in rows]
    return data


def _sourced(prompt: Prompt, source: str) -> Prompt:
    return Prompt(prompt.text, prompt.category, list(prompt.tags), source)


def _parse(path: Path, source: str, kind: str) -> list:
    """The rows of a bundled TRL file, checked as an import checks them; the error names the file and line."""
    try:
        parsed = parse(read_records(path), source)
    except DataFileError as err:
        raise DataFileError(f"{path.name}: {err}") from err
    if parsed.kind != kind:
        raise DataFileError(f"{path.name} holds {parsed.describe()}, not {kind}.")
    return parsed.items


def _as_starter_demonstration(demo: Demonstration, source: str) -> Demonstration:
    demo.author, demo.origin, demo.status, demo.source = source, "human", "accepted", source
    return demo


def _as_starter_comparison(comparison: Comparison, source: str) -> Comparison:
    comparison.annotator = source
    comparison.candidates = [{**c, "model": source} for c in comparison.candidates]
    return comparison


def _from_truthfulqa(slug: str, preset: ScenarioPreset, path: Path) -> ScenarioData:
    train, held = split_questions(read_questions(path), preset.held_out_fraction, preset.split_seed)
    source = f"scenario:{slug}"

    def prompt(q: Question, where: str) -> Prompt:
        return Prompt(q.question, "open QA", ["truthfulqa", q.category] if q.category else ["truthfulqa"], where)

    demonstrations = [
        Demonstration(
            [{"role": "user", "content": q.question}, {"role": "assistant", "content": q.best}],
            "open QA",
            ["truthfulqa"],
            source,
            source=source,
        )
        for q in train
    ]
    pairs = [
        Comparison(
            row["prompt"],
            [{"text": row[side][0]["content"], "model": source, "settings": {}} for side in ("chosen", "rejected")],
            [0, 1],
            [1, 2],
            annotator=source,
            source=STARTER_SOURCE,
        )
        for row in truthfulqa_pairs(train)
    ]
    for number, row in enumerate([*demonstrations, *pairs], 1):
        try:
            row.check()
        except ValueError as err:
            raise ValueError(f"{path.name}: training row {number}: {err}.") from err
    return ScenarioData(
        slug,
        preset,
        [prompt(q, source) for q in train],
        [prompt(q, f"{source}:held-out") for q in held],
        demonstrations,
        pairs,
        held,
    )


def _check_held_out(data: ScenarioData) -> None:
    """A held-out question must never be trained on: not in the pool, a demonstration or a comparison."""
    held = {_key(p.text) for p in data.held_out}
    trained = [p.text for p in data.prompts]
    trained += [next(m["content"] for m in d.messages if m["role"] == "user") for d in data.demonstrations]
    trained += [c.prompt[-1]["content"] for c in data.comparisons]
    leaked = next((text for text in trained if _key(text) in held), None)
    if leaked is not None:
        raise ValueError(f"Scenario {data.preset.name}: the held-out question '{leaked}' is also a training row.")


def _key(text: str) -> str:
    return " ".join(text.casefold().split())


# seeding a workspace


def seed(store: Store, name: str, truthfulqa_csv: str | Path | None = None) -> dict[str, int]:
    """Put a scenario into a workspace: its questions into the prompt pool, its demonstrations (accepted) and its
    comparisons, and its held-out files; returns how many of each were new (seeding twice adds nothing twice).
    Every file is checked before anything is written, so a bad one writes nothing."""
    return write(store, load(name, truthfulqa_csv), truthfulqa_csv)


def write(store: Store, data: ScenarioData, truthfulqa_csv: str | Path | None = None) -> dict[str, int]:
    """Seed checked scenario data (see `seed`)."""
    folder = scenario_folder(store, data.slug)
    folder.mkdir(parents=True, exist_ok=True)
    if data.held_out:
        rows = [{"prompt": [{"role": "user", "content": p.text}]} for p in data.held_out]
        write_jsonl(folder / "held-out.jsonl", rows)
    if data.truthfulqa_held_out:
        _write_truthfulqa(folder / "held-out.csv", data.truthfulqa_held_out)
    known = {fingerprint(d.messages) for d in store.list_demonstrations(status=None)}
    demonstrations = [d for d in data.demonstrations if fingerprint(d.messages) not in known]
    voted = {(c.item, c.annotator) for c in store.list_comparisons(source=STARTER_SOURCE)}
    comparisons = [c for c in data.comparisons if (c.item, c.annotator) not in voted]
    counts = {
        "prompts": store.add_prompts(data.prompts),
        "held_out": len(data.held_out),
        "demonstrations": len(store.add_demonstrations(demonstrations)) if demonstrations else 0,
        "comparisons": len(store.add_comparisons(comparisons)) if comparisons else 0,
    }
    about = {"name": data.preset.name, "truthfulqa": str(Path(truthfulqa_csv).resolve()) if truthfulqa_csv else None}
    (folder / "scenario.json").write_text(json.dumps(about, indent=1), encoding="utf-8")
    return counts


def seeded(store: Store) -> list[str]:
    """The names of the scenarios seeded into this workspace, in the order they were."""
    found = sorted((store.root / "scenarios").glob("*/scenario.json"), key=lambda path: path.stat().st_mtime)
    return [json.loads(path.read_text(encoding="utf-8"))["name"] for path in found]


def scenario_folder(store: Store, name: str) -> Path:
    """Where a seeded scenario keeps its held-out files in the workspace: scenarios/<file name>/."""
    slug = name if name in scenario_files() else find(name)[0]
    return store.root / "scenarios" / slug


def _write_truthfulqa(path: Path, questions: list[Question]) -> None:
    """Held-out questions in TruthfulQA's own CSV shape (what lab.truthfulqa and the evaluation read)."""
    partial = path.with_name(f".{path.name}.partial")
    with partial.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(COLUMNS)
        for q in questions:
            writer.writerow(["", q.category, q.question, q.best, "; ".join(q.correct), "; ".join(q.incorrect), ""])
    os.replace(partial, path)


def queue_questions(store: Store, name: str) -> list[str]:
    """The questions of a scenario's ranking queue: its bundled set, or for one built from a CSV (TruthfulQA) the
    training questions seeded into this workspace (none before it is seeded)."""
    slug, preset = find(name)
    if preset.truthfulqa:
        return [p.text for p in store.list_prompts(source=f"scenario:{slug}")]
    return [p.text for p in load_question_set(preset.questions)]


def describe(name: str, counts: dict[str, int]) -> str:
    """'Scenario Truthfulness: 32 prompts, 12 held out for evaluation, 24 demonstrations, 36 comparisons.'"""
    _, preset = find(name)
    return (
        f"Scenario {preset.name}: {counts['prompts']} prompts, {counts['held_out']} held out for evaluation, "
        f"{counts['demonstrations']} demonstrations, {counts['comparisons']} comparisons."
    )


# fresh workspaces


def holds_work(folder: Path) -> bool:
    """Whether a folder holds anything: a file of its own, or a workspace database with prompts, demonstrations,
    comparisons, experiments or runs in it. A missing or empty folder holds nothing."""
    if not folder.exists():
        return False
    if not folder.is_dir():
        return True
    names = {p.name for p in folder.iterdir()}
    if names - DATABASE_FILES:
        return True
    if "lab.sqlite" not in names:
        return bool(names)
    store = Store(folder)
    return bool(
        store.list_prompts()
        or store.list_demonstrations(status=None)
        or store.list_comparisons()
        or store.list_experiments()
        or store.list_runs()
    )


def fresh_workspace(name: str, root: Path = WORKSPACES) -> Path:
    """A new folder for a scenario's workspace, created empty: <root>/<file name>, else -2, -3…; never one that
    holds anything."""
    slug, _ = find(name)
    root = Path(root).expanduser()
    for number in range(1, 10_000):
        folder = root / (slug if number == 1 else f"{slug}-{number}")
        try:
            folder.mkdir(parents=True)
            return folder.resolve()
        except FileExistsError:
            if folder.is_dir() and not any(folder.iterdir()):
                return folder.resolve()
    raise ValueError(f"{root} holds 9,999 workspaces of scenario {slug}: pick another --root.")


def open_scenario(
    name: str,
    workspace: str | Path | None = None,
    truthfulqa: str | Path | None = None,
    mix: bool = False,
    root: Path = WORKSPACES,
) -> tuple[Store, dict[str, int]]:
    """A workspace seeded with a scenario, and the counts of what was added: a fresh one under `root`, or
    `workspace` when it is empty (or `mix` asks to add the scenario to the work already there). The files are
    checked before any folder is made."""
    data = load(name, truthfulqa)
    if workspace is None:
        folder = fresh_workspace(name, root)
    else:
        folder = Path(workspace).expanduser()
        if not mix and holds_work(folder):
            raise ValueError(
                f"Workspace {folder} already holds work: leave the workspace out for a fresh one, pick an empty "
                "folder, or mix the scenario into it (--mix)."
            )
    store = Store(folder)
    return store, write(store, data, truthfulqa)


# candidates made ahead, so nobody waits for the first answers in the Ranking tab


def candidates_path(name: str) -> Path:
    return CANDIDATES_DIR / f"{find(name)[0]}.jsonl"


def shipped_candidates(name: str, question: str, model: str = DEFAULT_MODEL) -> list[dict] | None:
    """The answers the scenario ships for this question, as vote candidates ({"text", "model", "settings"}, the
    shape lab.preferences makes), when they were made by `model` (the loaded base); None otherwise: generate them."""
    try:
        path = candidates_path(name)
    except ValueError:
        return None
    row = _shipped(path).get(_key(question))
    if row is None or normalise_base(row["model"]) != normalise_base(model):
        return None
    settings = {**row["settings"], "model": row["model"], "shipped": True}
    return [{"text": text, "model": BASE_VIEW, "settings": settings} for text in row["answers"]]


def _shipped(path: Path) -> dict[str, dict]:
    if not path.is_file():
        return {}
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return {_key(row["question"]): row for row in rows}


def regenerate_candidates(name: str, model: str = DEFAULT_MODEL, progress=print) -> Path:
    """Make the shipped candidates again: per question of the scenario, `k` answers sampled from `model` at the
    scenario's temperature, capped at CANDIDATE_TOKENS, seeded by the question's place (reproducible on one
    machine); writes assets/candidates/<file name>.jsonl whole and returns it."""
    from lab.generate import GenerationSettings, build_messages, sample_candidates
    from lab.models import load_model

    slug, preset = find(name)
    if preset.truthfulqa:
        raise ValueError(f"Scenario {preset.name} is built from the user's TruthfulQA file: it ships no candidates.")
    lm = load_model(model, "fp32", "cpu", progress=progress)
    rows = []
    questions = load_question_set(preset.questions)
    for number, prompt in enumerate(questions):
        settings = GenerationSettings(preset.temperature, 0.9, CANDIDATE_TOKENS, number)
        answers = sample_candidates(lm, build_messages(prompt.text), settings, preset.k)
        rows.append(
            {
                "question": prompt.text,
                "answers": [a.text for a in answers],
                "model": model,
                "settings": settings.sampling(),
            }
        )
        progress(f"{number + 1}/{len(questions)} {prompt.text}")
    path = CANDIDATES_DIR / f"{slug}.jsonl"
    CANDIDATES_DIR.mkdir(parents=True, exist_ok=True)
    write_jsonl(path, rows)
    return path
