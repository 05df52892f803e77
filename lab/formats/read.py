"""Reading rows from files (JSONL, JSON, CSV, Parquet) within the lab's limits, and writing JSONL atomically."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from lab import limits

EXTENSIONS = (".jsonl", ".json", ".csv", ".parquet")


class DataFileError(ValueError):
    """A file the lab cannot import; the message is one sentence naming the line (or row) and the problem."""


class Records(list):
    """Rows read from a file, each a dict, with `places[i]` saying where row i came from ("line 4", "row 3")."""

    def __init__(self, rows: list[dict], places: list[str]) -> None:
        super().__init__(rows)
        self.places = places


def fail(place: str, problem: str) -> DataFileError:
    """The error for one row: "line 4: 'output' is empty."."""
    return DataFileError(f"{place}: {problem.rstrip('.')}.")


# reading files


def read_records(path: str | Path) -> Records:
    """The rows of a .jsonl, .json (a list of objects, or one object), .csv or .parquet file, as plain dicts.

    JSONL rows are numbered by physical line ("line 3"; blank lines skipped), the others by
    row from 1 ("row 3"). A .json file holding JSON Lines (what `datasets.Dataset.to_json`
    writes) is read as JSONL.
    """
    path = Path(path)
    if path.suffix.lower() not in EXTENSIONS:
        raise DataFileError(f"Cannot import '{path.name}': use a {', '.join(EXTENSIONS[:-1])} or .parquet file.")
    if not path.is_file():
        raise DataFileError(f"There is no file at {path}.")
    megabytes = path.stat().st_size / 2**20
    if megabytes > limits.FILE_MB:
        raise DataFileError(f"'{path.name}' is {megabytes:.0f} MB; the lab imports files up to {limits.FILE_MB} MB.")
    try:
        records = {".jsonl": _read_jsonl, ".json": _read_json, ".csv": _read_csv, ".parquet": _read_parquet}[
            path.suffix.lower()
        ](path)
    except UnicodeDecodeError as err:
        raise DataFileError(f"'{path.name}' is not UTF-8 text (byte {err.start}).") from err
    if not records:
        raise DataFileError(f"'{path.name}' has no rows.")
    if len(records) > limits.IMPORT_ROWS:
        raise DataFileError(f"'{path.name}' has {len(records):,} rows; one import takes up to {limits.IMPORT_ROWS:,}.")
    return records


def _read_jsonl(path: Path, text: str | None = None) -> Records:
    text = path.read_text(encoding="utf-8-sig") if text is None else text
    rows, places = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise fail(f"line {number}", f"not valid JSON ({err.msg} at column {err.colno})") from err
        if not isinstance(row, dict):
            raise fail(f"line {number}", f"expected a JSON object, got {type(row).__name__}")
        rows.append(row)
        places.append(f"line {number}")
    return Records(rows, places)


def _read_json(path: Path) -> Records:
    text = path.read_text(encoding="utf-8-sig")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        if text.lstrip().startswith("{"):  # JSON Lines under a .json name
            return _read_jsonl(path, text)
        raise DataFileError(
            f"'{path.name}' is not valid JSON ({err.msg} at line {err.lineno}, column {err.colno})."
        ) from err
    if isinstance(data, dict):  # one row, as a dataset viewer copies it
        data = [data]
    if not isinstance(data, list):
        raise DataFileError(f"'{path.name}' must hold an object or a list of objects (or use JSON Lines).")
    for number, row in enumerate(data, start=1):
        if not isinstance(row, dict):
            raise fail(f"row {number}", f"expected a JSON object, got {type(row).__name__}")
    return Records(data, [f"row {n}" for n in range(1, len(data) + 1)])


def _read_csv(path: Path) -> Records:
    """Every cell as text (empty cells are "", not NaN); a `messages` cell holds JSON, parsed on conversion."""
    import pandas as pd  # only here: the CLI and the app start without it

    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except pd.errors.EmptyDataError:
        return Records([], [])
    except pd.errors.ParserError as err:
        raise DataFileError(f"'{path.name}' is not a readable CSV file ({' '.join(str(err).split())}).") from err
    rows = frame.to_dict("records")
    return Records(rows, [f"row {n}" for n in range(1, len(rows) + 1)])


def _read_parquet(path: Path) -> Records:
    """Through pyarrow, so nested columns (messages, tags) come back as plain lists and dicts.

    Parquet is compressed: a few kilobytes can hold hundreds of megabytes. The size each row group expands to
    is checked before it is read, group by group, so a compression bomb is refused before it is unpacked.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    budget, rows = limits.DECOMPRESSED_MB * 2**20, []
    try:
        parquet = pq.ParquetFile(path)
        for group in range(parquet.num_row_groups):
            meta = parquet.metadata.row_group(group)
            budget -= sum(meta.column(c).total_uncompressed_size for c in range(meta.num_columns))
            if budget < 0:
                raise DataFileError(
                    f"'{path.name}' unpacks to more than {limits.DECOMPRESSED_MB} MB; the lab imports less than that."
                )
            rows += parquet.read_row_group(group).to_pylist()
    except (pa.ArrowException, OSError) as err:
        raise DataFileError(f"'{path.name}' is not a readable Parquet file ({err}).") from err
    return Records(rows, [f"row {n}" for n in range(1, len(rows) + 1)])


# writing


def write_jsonl(path: Path, rows: list[dict]) -> None:
    """Write rows as JSONL beside the target and move it into place, so a failure never leaves half a file."""
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
