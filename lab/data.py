"""Demonstrations in and out of the workspace: the names other modules import, now kept in lab.formats.

lab.formats reads every public dataset shape (one module per family) and writes TRL's formats.
"""

from lab.formats import (
    EXTENSIONS,
    FORMATS,
    DataFileError,
    ImportPreview,
    ImportReport,
    Records,
    detect_format,
    export_demonstrations,
    import_demonstrations,
    preview_import,
    read_records,
    sft_examples,
    write_jsonl,
)
from lab.formats.detect import parse


def to_demonstrations(records: list[dict], source: str, form: str | None = None) -> list:
    """Convert and check every row of a demonstration file; the first bad one raises DataFileError naming it."""
    parsed = parse(records, source, form)
    if parsed.kind != "demonstrations":
        raise DataFileError(f"The file holds {parsed.describe()}, not demonstrations.")
    return parsed.items


__all__ = [
    "EXTENSIONS",
    "FORMATS",
    "DataFileError",
    "ImportPreview",
    "ImportReport",
    "Records",
    "detect_format",
    "export_demonstrations",
    "import_demonstrations",
    "preview_import",
    "read_records",
    "sft_examples",
    "to_demonstrations",
    "write_jsonl",
]
