"""Every public dataset shape in, TRL's formats out.

read: files to rows within the lab's limits; messages: turns in every spelling; one module per family of shapes
(conversations: demonstrations, pairs: preferences, unpaired: labelled completions); detect: which shape a file
holds; importing: into the workspace, all or nothing.
"""

from lab.formats.conversations import export_demonstrations, sft_examples
from lab.formats.detect import FORMATS, KINDS, SHAPES, Parsed, Shape, detect_format, known_shapes, parse
from lab.formats.importing import (
    ImportPreview,
    ImportReport,
    NotDemonstrationsError,
    PreferenceImport,
    import_demonstrations,
    import_file,
    import_preferences,
    preview_import,
    preview_preferences,
    read_file,
)
from lab.formats.read import EXTENSIONS, DataFileError, Records, read_records, write_jsonl
from lab.formats.unpaired import good_demonstrations, unpaired_rows

__all__ = [
    "EXTENSIONS",
    "FORMATS",
    "KINDS",
    "SHAPES",
    "DataFileError",
    "ImportPreview",
    "ImportReport",
    "NotDemonstrationsError",
    "Parsed",
    "PreferenceImport",
    "Records",
    "Shape",
    "detect_format",
    "export_demonstrations",
    "good_demonstrations",
    "import_demonstrations",
    "import_file",
    "import_preferences",
    "known_shapes",
    "parse",
    "preview_import",
    "preview_preferences",
    "read_file",
    "read_records",
    "sft_examples",
    "unpaired_rows",
    "write_jsonl",
]
