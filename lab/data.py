"""Demonstrations in and out of the workspace, in the dataset formats TRL and the hub use.

Import reads a file (JSONL, JSON, CSV or Parquet), recognises its format (conversational
`messages`, `instruction`/`input`/`output`, or `prompt`/`completion`), checks every row with
the same rules as a typed demonstration, and inserts the new ones in one transaction: a bad
row anywhere means nothing is written, and the error names the line or row. Export writes
TRL's conversational format, one {"messages": [...]} per line, atomically.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from lab import limits
from lab.demonstrations import preview
from lab.store import Demonstration, Store, fingerprint

FORMATS = ("messages", "instruction", "prompt-completion")
EXTENSIONS = (".jsonl", ".json", ".csv", ".parquet")


class DataFileError(ValueError):
    """A file the lab cannot import; the message is one sentence naming the line (or row) and the problem."""


class Records(list):
    """Rows read from a file, each a dict, with `places[i]` saying where row i came from ("line 4", "row 3")."""

    def __init__(self, rows: list[dict], places: list[str]) -> None:
        super().__init__(rows)
        self.places = places


def _fail(place: str, problem: str) -> DataFileError:
    return DataFileError(f"{place}: {problem.rstrip('.')}.")


# reading files


def read_records(path: str | Path) -> Records:
    """The rows of a .jsonl, .json (a top-level list), .csv or .parquet file, as plain dicts.

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
            raise _fail(f"line {number}", f"not valid JSON ({err.msg} at column {err.colno})") from err
        if not isinstance(row, dict):
            raise _fail(f"line {number}", f"expected a JSON object, got {type(row).__name__}")
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
    if not isinstance(data, list):
        raise DataFileError(f"'{path.name}' must hold a list of objects at the top level (or use JSON Lines).")
    for number, row in enumerate(data, start=1):
        if not isinstance(row, dict):
            raise _fail(f"row {number}", f"expected a JSON object, got {type(row).__name__}")
    return Records(data, [f"row {n}" for n in range(1, len(data) + 1)])


def _read_csv(path: Path) -> Records:
    """Every cell as text (empty cells are "", not NaN); a `messages` cell holds JSON, parsed on conversion."""
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


# recognising and converting rows


def detect_format(records: list[dict]) -> str:
    """One of FORMATS, from the columns of the first row."""
    if not records:
        raise DataFileError("The file has no rows.")
    columns = set(records[0])
    if "messages" in columns:
        return "messages"
    if {"instruction", "output"} <= columns:
        return "instruction"
    if {"prompt", "completion"} <= columns:
        return "prompt-completion"
    found = ", ".join(f"'{c}'" for c in records[0]) or "none"
    raise DataFileError(
        f"Unknown format: the columns are {found}; expected 'messages', or 'instruction' and 'output' "
        "(and optionally 'input'), or 'prompt' and 'completion'."
    )


def to_demonstrations(records: list[dict], source: str) -> list[Demonstration]:
    """Convert and check every row; the first bad one raises DataFileError naming its line or row.

    Accepted human demonstrations, with `category`, `tags`, `author` (and `system` for the
    instruction and prompt-completion formats) carried over when the row has them.
    """
    form = detect_format(records)
    places = getattr(records, "places", None) or [f"row {n}" for n in range(1, len(records) + 1)]
    demos = []
    for place, row in zip(places, records, strict=True):
        try:
            demo = Demonstration(
                messages=_conversation(row, form),
                category=_optional_text(row, "category") or "other",
                tags=_tags(row.get("tags")),
                author=_optional_text(row, "author"),
                source=source,
            )
            demo.check()
        except ValueError as err:
            raise _fail(place, str(err)) from err
        demos.append(demo)
    return demos


def _conversation(row: dict, form: str) -> list[dict]:
    """The row as a list of {role, content} messages (not yet checked against the conversation rules)."""
    if form == "messages":
        if row.get("messages") is None:
            raise ValueError("missing field 'messages'")
        return _messages(row["messages"], "messages")
    system = _optional_text(row, "system")
    head = [{"role": "system", "content": system}] if system.strip() else []
    if form == "instruction":
        instruction, output = _text(row, "instruction"), _text(row, "output")
        extra = _optional_text(row, "input")
        user = f"{instruction}\n\n{extra}" if extra.strip() else instruction
        return [*head, {"role": "user", "content": user}, {"role": "assistant", "content": output}]
    prompt, completion = row.get("prompt"), row.get("completion")
    if isinstance(prompt, list) or isinstance(completion, list):  # TRL's conversational prompt-completion
        return _messages(prompt, "prompt") + _messages(completion, "completion")
    prompt, completion = _text(row, "prompt"), _text(row, "completion")
    return [*head, {"role": "user", "content": prompt}, {"role": "assistant", "content": completion}]


def _messages(value: object, column: str) -> list[dict]:
    """A list of message objects; a JSON string (as a CSV cell holds it) is parsed first."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as err:
            raise ValueError(f"the '{column}' cell is not valid JSON ({err.msg} at column {err.colno})") from err
    if not isinstance(value, list):
        raise ValueError(f"'{column}' must be a list of messages, got {type(value).__name__}")
    messages = []
    for number, message in enumerate(value, start=1):
        if not isinstance(message, dict):
            raise ValueError(f"message {number} in '{column}' must be an object with a role and a content")
        # Parquet fills keys that other rows have with None; only real values count
        messages.append({k: v for k, v in message.items() if v is not None or k in ("role", "content")})
    return messages


def _text(row: dict, column: str) -> str:
    value = row.get(column)
    if value is None:  # absent, or a null cell in Parquet
        raise ValueError(f"missing field '{column}'")
    if not isinstance(value, str):
        raise ValueError(f"'{column}' must be text, got {type(value).__name__}")
    if not value.strip():
        raise ValueError(f"'{column}' is empty")
    return value


def _optional_text(row: dict, column: str) -> str:
    value = row.get(column)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"'{column}' must be text, got {type(value).__name__}")
    return value.strip() if column in ("category", "author") else value


def _tags(value: object) -> list[str]:
    """A list of tags, or one comma-separated string of them."""
    if value is None:
        return []
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, list):
        raise ValueError(f"'tags' must be a list or comma-separated text, got {type(value).__name__}")
    return [str(tag).strip() for tag in value if str(tag).strip()]


# import


@dataclass
class ImportPreview:
    """What importing a file would do: the new demonstrations, and how many rows are duplicates."""

    path: Path
    format: str
    demonstrations: list[Demonstration]  # the new ones, in file order, that an import inserts
    duplicates: int  # rows identical to a live demonstration in the store, or to an earlier row of the file

    def summary(self) -> str:
        new, dup = len(self.demonstrations), self.duplicates
        skipped = f" ({dup} duplicate{'s' * (dup != 1)} will be skipped)" if dup else ""
        return f"{new} new demonstration{'s' * (new != 1)} in '{self.format}' format{skipped}."

    def table(self, limit: int = 20) -> pd.DataFrame:
        """The first `limit` new demonstrations: first user turn, last assistant turn, turns (without system)."""
        rows = []
        for demo in self.demonstrations[:limit]:
            turns = [m for m in demo.messages if m["role"] != "system"]
            prompt = next(m["content"] for m in turns if m["role"] == "user")
            response = turns[-1]["content"]
            rows.append(
                {
                    "prompt": preview(prompt),
                    "response": preview(response),
                    "turns": len(turns),
                    "category": demo.category,
                }
            )
        return pd.DataFrame(rows, columns=["prompt", "response", "turns", "category"])


@dataclass
class ImportReport:
    """What an import did; `ids` are the new rows (store.delete_demonstrations(ids) undoes it)."""

    path: Path
    format: str
    ids: list[int] = field(default_factory=list)
    duplicates: int = 0

    @property
    def imported(self) -> int:
        return len(self.ids)

    def summary(self) -> str:
        n, dup = self.imported, self.duplicates
        skipped = f" ({dup} duplicate{'s' * (dup != 1)} skipped)" if dup else ""
        return f"Imported {n} demonstration{'s' * (n != 1)} from '{self.path.name}'{skipped}."


def preview_import(store: Store, path: str | Path) -> ImportPreview:
    """Read and check the whole file, and set aside duplicates; writes nothing."""
    path = Path(path)
    records = read_records(path)
    form = detect_format(records)
    demos = to_demonstrations(records, source=f"import:{path.name}")
    seen = {fingerprint(d.messages) for d in store.list_demonstrations(status=None)}
    new = []
    for demo in demos:
        key = fingerprint(demo.messages)
        if key not in seen:
            seen.add(key)
            new.append(demo)
    return ImportPreview(path, form, new, len(demos) - len(new))


def import_demonstrations(store: Store, path: str | Path) -> ImportReport:
    """All or nothing: check the whole file, then insert its new demonstrations in one transaction."""
    preview = preview_import(store, path)
    ids = store.add_demonstrations(preview.demonstrations) if preview.demonstrations else []
    return ImportReport(preview.path, preview.format, ids, preview.duplicates)


# export and training examples


def export_demonstrations(store: Store, path: str | Path, origins: list[str] | None = None) -> int:
    """Write accepted, live demonstrations (oldest first) as TRL conversational JSONL; returns how many.

    The file is written beside the target and moved into place, so a failure never leaves half a file.
    """
    path = Path(path)
    if path.suffix.lower() != ".jsonl":
        raise DataFileError(f"Cannot export to '{path.name}': demonstrations export to a .jsonl file.")
    if not path.parent.is_dir():
        raise DataFileError(f"There is no folder {path.parent} to export into.")
    demos = store.list_demonstrations(origins=origins, status="accepted")[::-1]
    if not demos:
        raise DataFileError("No accepted demonstrations to export.")
    write_jsonl(path, [{"messages": demo.messages} for demo in demos])
    return len(demos)


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


def sft_examples(demos: list[Demonstration]) -> list[dict]:
    """TRL conversational prompt-completion examples, one per assistant turn, so loss falls on every response.

    Each is {"prompt": the messages before that assistant turn (system included), "completion": [that turn]}:
    user/assistant gives 1 example, user/assistant/user/assistant gives 2.
    """
    examples = []
    for demo in demos:
        for i, message in enumerate(demo.messages):
            if message["role"] == "assistant":
                examples.append({"prompt": [dict(m) for m in demo.messages[:i]], "completion": [dict(message)]})
    return examples
