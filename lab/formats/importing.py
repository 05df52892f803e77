"""Import a file into the workspace: read, recognise, check every row, then insert in one transaction.

A file goes where its shape says: demonstrations, comparisons (preference pairs, rankings) or unpaired ratings.
A bad row anywhere means nothing is written, and the error names the line or row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from lab.demonstrations import preview
from lab.formats.detect import Parsed, parse
from lab.formats.read import DataFileError, read_records
from lab.formats.unpaired import good_demonstrations
from lab.store import Comparison, Demonstration, Store, UnpairedRating, fingerprint

if TYPE_CHECKING:
    import pandas as pd


class NotDemonstrationsError(DataFileError):
    """A file of completions labelled good or bad offered as demonstrations; `good` says how many are good."""

    def __init__(self, message: str, good: int) -> None:
        super().__init__(message)
        self.good = good


def read_file(path: str | Path, form: str | None = None) -> Parsed:
    """Read and check the whole file (`form` forces a shape, else it is detected); writes nothing."""
    path = Path(path)
    return parse(read_records(path), source=f"import:{path.name}", form=form)


# demonstrations


@dataclass
class ImportPreview:
    """What importing a file would do: the new demonstrations, and how many rows are duplicates."""

    path: Path
    format: str
    demonstrations: list[Demonstration]  # the new ones, in file order, that an import inserts
    duplicates: int  # rows identical to a live demonstration in the store, or to an earlier row of the file
    description: str = ""  # what was recognised in the file

    def summary(self) -> str:
        new, dup = len(self.demonstrations), self.duplicates
        skipped = f" ({dup} duplicate{'s' * (dup != 1)} will be skipped)" if dup else ""
        return f"{self.description}: {new} new demonstration{'s' * (new != 1)}{skipped}."

    def table(self, limit: int = 20) -> pd.DataFrame:
        """The first `limit` new demonstrations: first user turn, last assistant turn, turns (without system)."""
        import pandas as pd

        rows = []
        for demo in self.demonstrations[:limit]:
            turns = [m for m in demo.messages if m["role"] != "system"]
            prompt = next(m["content"] for m in turns if m["role"] == "user")
            rows.append(
                {
                    "prompt": preview(prompt),
                    "response": preview(turns[-1]["content"]),
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
    left_out: int = 0  # completions labelled bad, when only the good ones of an unpaired file were imported
    description: str = ""  # what was recognised in the file

    @property
    def imported(self) -> int:
        return len(self.ids)

    def summary(self) -> str:
        n, dup = self.imported, self.duplicates
        skipped = f" ({dup} duplicate{'s' * (dup != 1)} skipped)" if dup else ""
        bad = f"; {self.left_out} labelled bad left out" if self.left_out else ""
        found = f" Recognised: {self.description}." if self.description else ""
        return f"Imported {n} demonstration{'s' * (n != 1)} from '{self.path.name}'{skipped}{bad}.{found}"


def _without_duplicates(store: Store, demos: list[Demonstration]) -> list[Demonstration]:
    seen = {fingerprint(d.messages) for d in store.list_demonstrations(status=None)}
    new = []
    for demo in demos:
        key = fingerprint(demo.messages)
        if key not in seen:
            seen.add(key)
            new.append(demo)
    return new


def preview_import(
    store: Store, path: str | Path, form: str | None = None, good_as_demonstrations: bool = False
) -> ImportPreview:
    """Read and check the whole file, and set aside duplicates; writes nothing.

    A file of preference data is refused; so is one of labelled completions, unless `good_as_demonstrations`
    asks for its good ones (NotDemonstrationsError carries their count, for a button that offers it).
    """
    path = Path(path)
    parsed = read_file(path, form)
    return _demonstrations_preview(store, path, parsed, good_as_demonstrations)


def _demonstrations_preview(store: Store, path: Path, parsed: Parsed, good_as_demonstrations: bool) -> ImportPreview:
    what = f"'{path.name}' holds {parsed.describe()}"
    if parsed.kind == "comparisons":
        raise DataFileError(f"{what}: preference data, not demonstrations; import it in the Arena tab.")
    demos = parsed.items
    if parsed.kind == "unpaired":
        demos = good_demonstrations(parsed.items, source=f"import:{path.name}")
        if not good_as_demonstrations:
            raise NotDemonstrationsError(
                f"{what}: completions labelled good or bad are not demonstrations (SFT would learn the bad ones too). "
                f"Import them in the Arena tab as unpaired ratings for KTO, or import only the {len(demos)} good "
                "ones as demonstrations.",
                len(demos),
            )
    new = _without_duplicates(store, demos)
    return ImportPreview(path, parsed.shape.name, new, len(demos) - len(new), parsed.describe())


def import_demonstrations(
    store: Store, path: str | Path, form: str | None = None, good_as_demonstrations: bool = False
) -> ImportReport:
    """All or nothing: check the whole file, then insert its new demonstrations in one transaction."""
    path = Path(path)
    parsed = read_file(path, form)
    return _import_demonstrations(store, path, parsed, good_as_demonstrations)


def _import_demonstrations(store: Store, path: Path, parsed: Parsed, good_as_demonstrations: bool) -> ImportReport:
    result = _demonstrations_preview(store, path, parsed, good_as_demonstrations)
    ids = store.add_demonstrations(result.demonstrations) if result.demonstrations else []
    bad = sum(r.label == "bad" for r in parsed.items) if parsed.kind == "unpaired" else 0
    return ImportReport(path, result.format, ids, result.duplicates, bad, result.description)


# preferences: comparisons and unpaired ratings


@dataclass
class PreferenceImport:
    """A preference file: its comparisons (pairs, rankings) or its unpaired ratings; `ids` once imported."""

    path: Path
    format: str
    comparisons: list[Comparison] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)
    ratings: list[UnpairedRating] = field(default_factory=list)
    description: str = ""

    def summary(self) -> str:
        from lab.preferences import ranked_pairs  # lab.preferences imports this module

        if self.ratings:
            good = sum(r.label == "good" for r in self.ratings)
            what = f"{len(self.ratings)} unpaired ratings ({good} good, {len(self.ratings) - good} bad)"
        else:
            pairs = sum(len(ranked_pairs(c.ranks)) for c in self.comparisons if c.verdict == "ranked")
            what = f"{len(self.comparisons)} comparisons ({pairs} preference pairs)"
        done = f"Imported {what} from '{self.path.name}'" if self.ids else f"{what} in '{self.path.name}'"
        return f"{done}. Recognised: {self.description}."


def preview_preferences(path: str | Path, form: str | None = None) -> PreferenceImport:
    """Read and check the whole file of preference data (pairs, rankings or unpaired ratings); writes nothing."""
    path = Path(path)
    return _preference_preview(path, read_file(path, form))


def _preference_preview(path: Path, parsed: Parsed) -> PreferenceImport:
    if parsed.kind == "demonstrations":
        raise DataFileError(
            f"'{path.name}' holds {parsed.describe()}: demonstrations, not preferences; "
            "import it in the Demonstrations tab."
        )
    comparisons = parsed.items if parsed.kind == "comparisons" else []
    ratings = parsed.items if parsed.kind == "unpaired" else []
    return PreferenceImport(path, parsed.shape.name, comparisons, [], ratings, parsed.describe())


def import_preferences(store: Store, path: str | Path, form: str | None = None) -> PreferenceImport:
    """All or nothing: check every row, then insert them in one transaction."""
    path = Path(path)
    return _import_preferences(store, _preference_preview(path, read_file(path, form)))


def _import_preferences(store: Store, result: PreferenceImport) -> PreferenceImport:
    result.ids = store.add_comparisons(result.comparisons) if result.comparisons else store.add_unpaired(result.ratings)
    return result


def import_file(
    store: Store, path: str | Path, form: str | None = None, good_as_demonstrations: bool = False
) -> ImportReport | PreferenceImport:
    """Import any file the lab knows where its shape says: demonstrations, comparisons or unpaired ratings.

    `good_as_demonstrations` takes only the good completions of an unpaired file, as demonstrations.
    """
    path = Path(path)
    parsed = read_file(path, form)
    if parsed.kind == "demonstrations" or good_as_demonstrations:
        if good_as_demonstrations and parsed.kind != "unpaired":
            raise DataFileError(
                f"'{path.name}' holds {parsed.describe()}; only completions labelled good or bad can be "
                "imported as good demonstrations."
            )
        return _import_demonstrations(store, path, parsed, good_as_demonstrations)
    return _import_preferences(store, _preference_preview(path, parsed))
