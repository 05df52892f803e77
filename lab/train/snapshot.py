"""Freeze a run's training data into its folder, and say where it came from.

Each kind of data a method trains on (DATA_KINDS) is written as data.jsonl in
TRL's format, validated all or nothing, so config.yaml alone reproduces the run
and a later edit of the workspace never changes what a run trained on.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lab.data import DataFileError, write_jsonl


@dataclass(frozen=True)
class DataSource:
    """Where a run's data came from: shown in the run view and the adapter's model card."""

    source: str  # "workspace demonstrations (human, teacher)", "file signoff.jsonl", …
    rows: int
    sha256: str  # of data.jsonl as frozen in the run folder

    def describe(self) -> str:
        return f"{self.source}: {self.rows} rows, sha256 {self.sha256[:12]}"


def _demonstration_rows(store, data_file: str, options: dict) -> tuple[list[dict], str]:
    from lab.data import read_records, to_demonstrations

    if not data_file:
        origins = options.get("origins")
        demos = store.list_demonstrations(origins=origins or None, status="accepted")[::-1]
        where = f"workspace demonstrations ({', '.join(origins)})" if origins else "workspace demonstrations"
        return [{"messages": d.messages} for d in demos], where
    demos = to_demonstrations(read_records(data_file), source=str(data_file))
    return [{"messages": d.messages} for d in demos], f"file {Path(data_file).name}"


def _preference_rows(store, data_file: str, options: dict) -> tuple[list[dict], str]:
    from lab.preferences import preference_rows, preview_preferences

    if not data_file:
        excluded = tuple(options.get("exclude_annotators") or ())
        left_out = f", without {', '.join(excluded)}" if excluded else ""
        return preference_rows(store.list_comparisons(excluded)), f"workspace comparisons{left_out}"
    return preference_rows(preview_preferences(data_file).comparisons), f"file {Path(data_file).name}"


DATA_KINDS: dict[str, Callable] = {"demonstrations": _demonstration_rows, "preferences": _preference_rows}
EMPTY = {
    "demonstrations": "There are no accepted demonstrations to train on: write, import or accept some first.",
    "preferences": "There are no preference pairs to train on: vote in the Ranking tab or import preferences first.",
}


def snapshot(store, run_dir: Path, kind: str, data_file: str = "", **options) -> DataSource:
    """Write the run's data.jsonl (a validated copy of `data_file`, else the workspace's data of this kind)."""
    try:
        rows, where = DATA_KINDS[kind](store, data_file, options)
    except DataFileError as err:
        raise DataFileError(f"{Path(data_file).name}, {err}" if data_file else str(err)) from err
    if not rows:
        raise DataFileError(EMPTY[kind] if not data_file else f"{Path(data_file).name} has no rows to train on.")
    run_dir.mkdir(parents=True, exist_ok=True)
    target = run_dir / "data.jsonl"
    write_jsonl(target, rows)
    return DataSource(where, len(rows), hashlib.sha256(target.read_bytes()).hexdigest())


def read_rows(path: str | Path) -> list[dict]:
    """A frozen data.jsonl."""
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
