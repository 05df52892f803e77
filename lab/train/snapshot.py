"""Freeze a run's training data into its folder, and say where it came from.

Each kind of data a method trains on (DATA_KINDS) is written as data.jsonl in
TRL's format, validated all or nothing, so config.yaml alone reproduces the run
and a later edit of the workspace never changes what a run trained on.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from lab.data import DataFileError, write_jsonl

if TYPE_CHECKING:
    from lab.store import Comparison, Store

MIN_PAIRS = 50  # fewer preference pairs than this teach a reward model little beyond memorising them


@dataclass(frozen=True)
class DataSource:
    """Where a run's data came from: shown in the run view and the adapter's model card."""

    source: str  # "workspace demonstrations (human, teacher)", "file signoff.jsonl", …
    rows: int
    sha256: str  # of data.jsonl as frozen in the run folder
    details: dict = field(default_factory=dict)  # what the data's kind adds: the votes' agreement for preferences

    def describe(self) -> str:
        return f"{self.source}: {self.rows} rows, sha256 {self.sha256[:12]}"


def _demonstration_rows(store, data_file: str, options: dict) -> tuple[list[dict], str, dict]:
    from lab.data import read_records, to_demonstrations

    if not data_file:
        origins = options.get("origins")
        demos = store.list_demonstrations(origins=origins or None, status="accepted")[::-1]
        where = f"workspace demonstrations ({', '.join(origins)})" if origins else "workspace demonstrations"
        return [{"messages": d.messages} for d in demos], where, {}
    demos = to_demonstrations(read_records(data_file), source=str(data_file))
    return [{"messages": d.messages} for d in demos], f"file {Path(data_file).name}", {}


def preference_votes(
    store: Store,
    data_file: str = "",
    exclude_annotators: tuple[str, ...] | list[str] = (),
    exclude_flagged: bool = False,
    scenario: str = "",
) -> tuple[list[Comparison], str]:
    """The votes a preference run trains on, and where they came from in words: the comparisons of `data_file`,
    else the workspace's, less the annotators named, the annotators the Arena flags (when `exclude_flagged`),
    and the votes outside a scenario's queue (when `scenario` is given)."""
    from lab.preferences import preview_preferences, queue_source

    if data_file:
        return preview_preferences(data_file).comparisons, f"file {Path(data_file).name}"
    excluded = tuple(exclude_annotators or ())
    if exclude_flagged:
        from lab.arena import annotator_report

        report = annotator_report(store.list_comparisons())
        excluded += tuple(name for name in report.loc[report["flagged"], "annotator"] if name not in excluded)
    votes = store.list_comparisons(excluded, source=queue_source(scenario) if scenario else None)
    where = f"workspace comparisons of scenario {scenario}" if scenario else "workspace comparisons"
    return votes, where + (f", without {', '.join(excluded)}" if excluded else "")


@dataclass(frozen=True)
class PairCount:
    """What a set of votes gives a reward model, said before it trains."""

    votes: int
    pairs: int
    prompts: int  # distinct prompts: the unit the held-out split draws
    no_pair: int  # ties, both-bad and skipped votes, which say no answer is better
    held_out_prompts: int  # at the run's eval_fraction, as lab.train.reward.split_by_prompt holds them out

    @property
    def warning(self) -> str | None:
        if self.pairs < MIN_PAIRS:
            return (
                f"{self.pairs} pairs are too few to learn from: a reward model needs a few hundred to generalise; "
                f"below {MIN_PAIRS} it mostly memorises them."
            )
        if self.held_out_prompts == 0:
            return "No prompt is held out at this eval_fraction, so the accuracy cannot be measured: raise it."
        return None

    def text(self) -> str:
        """The counts in one line, then the warning if any."""
        line = (
            f"{self.pairs} preference pairs from {self.votes} votes on {self.prompts} prompts "
            f"({self.no_pair} ties, both-bad or skipped votes give none); {self.held_out_prompts} prompts held out."
        )
        return line + (f"\nWarning: {self.warning}" if self.warning else "")


def count_pairs(votes: list[Comparison], eval_fraction: float = 0.1) -> PairCount:
    """The pairs `votes` give as training rows, and how many prompts the held-out split takes."""
    from lab.preferences import preference_rows

    rows = preference_rows(votes)
    prompts = len({json.dumps(row["prompt"], sort_keys=True) for row in rows})
    no_pair = sum(1 for c in votes if c.verdict != "ranked" or len(set(c.ranks)) == 1)
    return PairCount(len(votes), len(rows), prompts, no_pair, int(prompts * eval_fraction))


def _preference_rows(store, data_file: str, options: dict) -> tuple[list[dict], str, dict]:
    from lab.arena import agreement
    from lab.preferences import preference_rows

    votes, where = preference_votes(store, data_file, **options)
    agreed = agreement(votes)  # the annotators' own agreement: the ceiling a reward model's accuracy is read against
    return preference_rows(votes), where, {"agreement": {"items": agreed["items"], "percent": agreed["percent"]}}


def _prompt_rows(store, data_file: str, options: dict) -> tuple[list[dict], str, dict]:
    """TRL's conversational prompt-only rows: a file's `prompt` column (text or messages), else a scenario's
    question set (`scenario=NAME`), else the workspace's prompt pool."""
    from lab.data import read_records

    def turns(prompt) -> list[dict]:
        return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt

    if data_file:
        records = read_records(data_file)
        for place, row in zip(records.places, records, strict=True):
            if not isinstance(row.get("prompt"), str | list) or not row["prompt"]:
                raise DataFileError(f"{place}: every row needs a 'prompt' (text, or a list of messages).")
        return [{"prompt": turns(row["prompt"])} for row in records], f"file {Path(data_file).name}", {}
    scenario = options.get("scenario") or ""
    if scenario:
        from lab.presets import scenario_presets
        from lab.scenarios import queue_questions

        scenarios = scenario_presets()
        if scenario not in scenarios:
            raise DataFileError(f"No scenario named '{scenario}': choose one of {', '.join(scenarios)}.")
        texts = queue_questions(store, scenario)
        if not texts:
            raise DataFileError(
                f"Scenario '{scenario}' has no questions in this workspace yet: load the scenario first."
            )
        return [{"prompt": turns(t)} for t in texts], f"scenario {scenario}'s questions", {}
    return [{"prompt": turns(p.text)} for p in store.list_prompts()], "workspace prompt pool", {}


DATA_KINDS: dict[str, Callable] = {
    "demonstrations": _demonstration_rows,
    "preferences": _preference_rows,
    "prompts": _prompt_rows,
}
EMPTY = {
    "demonstrations": "There are no accepted demonstrations to train on: write, import or accept some first.",
    "preferences": "There are no preference pairs to train on: vote in the Ranking tab or import preferences first.",
    "prompts": "There are no prompts to train on: add some in the Prompting tab, pick a scenario or give a file.",
}


def snapshot(store, run_dir: Path, kind: str, data_file: str = "", **options) -> DataSource:
    """Write the run's data.jsonl (a validated copy of `data_file`, else the workspace's data of this kind)."""
    try:
        rows, where, details = DATA_KINDS[kind](store, data_file, options)
    except DataFileError as err:
        raise DataFileError(f"{Path(data_file).name}, {err}" if data_file else str(err)) from err
    if not rows:
        raise DataFileError(EMPTY[kind] if not data_file else f"{Path(data_file).name} has no rows to train on.")
    run_dir.mkdir(parents=True, exist_ok=True)
    target = run_dir / "data.jsonl"
    write_jsonl(target, rows)
    return DataSource(where, len(rows), hashlib.sha256(target.read_bytes()).hexdigest(), details)


def read_rows(path: str | Path) -> list[dict]:
    """A frozen data.jsonl."""
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
