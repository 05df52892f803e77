"""Which public shape a file holds, and its rows converted and checked: all or nothing, naming the first bad row.

Every shape the lab knows is one entry of SHAPES, tried in order on the first row's columns (the more specific
first: an unpaired `prompt`/`completion`/`label` row is not a demonstration, an UltraFeedback row with its
`messages` column is a preference pair). `--format NAME` skips detection.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from lab.formats import conversations, pairs, unpaired
from lab.formats.messages import looks_like_transcript, optional_text, tags
from lab.formats.read import DataFileError, fail
from lab.store import Comparison, Demonstration, UnpairedRating

KINDS = ("demonstrations", "comparisons", "unpaired")  # where each shape's rows go in the workspace


@dataclass(frozen=True)
class Shape:
    """One public dataset shape: how to recognise it from a row, and how to convert a row."""

    name: str  # what --format takes
    label: str  # what the preview says it recognised
    kind: str  # one of KINDS
    needs: tuple[frozenset[str], ...]  # one of these sets of columns must all be present
    convert: Callable[[dict, Counter], object]
    when: Callable[[dict], bool] = lambda row: True  # a further look at the first row's values

    def matches(self, row: dict) -> bool:
        return any(columns <= set(row) for columns in self.needs) and self.when(row)


def _cols(*groups: str) -> tuple[frozenset[str], ...]:
    return tuple(frozenset(group.split()) for group in groups)


SHAPES: tuple[Shape, ...] = (
    Shape(
        "unpaired", "TRL unpaired preferences", "unpaired", _cols("prompt completion label"), unpaired.trl_unpaired_row
    ),
    Shape(
        "kto",
        "LLaMA-Factory KTO conversations",
        "unpaired",
        _cols("messages kto_tag", "conversations kto_tag", "messages label", "conversations label"),
        unpaired.kto_row,
    ),
    Shape("scored", "scored responses", "comparisons", _cols("prompt responses"), pairs.scored_row),
    Shape(
        "ultrafeedback",
        "UltraFeedback-binarized preferences",
        "comparisons",
        _cols("prompt chosen rejected score_chosen score_rejected"),
        pairs.ultrafeedback_row,
    ),
    Shape(
        "preference",
        "TRL preferences (explicit prompt)",
        "comparisons",
        _cols("prompt chosen rejected"),
        pairs.preference_row,
    ),
    Shape(
        "llamafactory-preference",
        "LLaMA-Factory ShareGPT preferences",
        "comparisons",
        _cols("conversations chosen rejected"),
        pairs.llamafactory_row,
    ),
    Shape(
        "alpaca-preference",
        "LLaMA-Factory alpaca preferences",
        "comparisons",
        _cols("instruction chosen rejected"),
        pairs.alpaca_preference_row,
    ),
    Shape(
        "hh-rlhf",
        "Anthropic HH-RLHF transcripts",
        "comparisons",
        _cols("chosen rejected"),
        pairs.hh_row,
        when=lambda row: looks_like_transcript(row.get("chosen")),
    ),
    Shape(
        "implicit-prompt",
        "TRL preferences (implicit prompt)",
        "comparisons",
        _cols("chosen rejected"),
        pairs.implicit_row,
    ),
    Shape("sharegpt", "ShareGPT conversations", "demonstrations", _cols("conversations"), conversations.sharegpt_row),
    Shape(
        "messages",
        "chat messages (TRL conversational / OpenAI fine-tuning)",
        "demonstrations",
        _cols("messages"),
        conversations.messages_row,
    ),
    Shape("alpaca", "alpaca instructions", "demonstrations", _cols("instruction output"), conversations.alpaca_row),
    Shape(
        "prompt-completion",
        "TRL prompt-completion",
        "demonstrations",
        _cols("prompt completion"),
        conversations.prompt_completion_row,
    ),
    Shape("text", "TRL language modelling text", "demonstrations", _cols("text"), conversations.text_row),
)
FORMATS = tuple(shape.name for shape in SHAPES)
BY_NAME = {shape.name: shape for shape in SHAPES}


def known_shapes() -> str:
    """The shapes the lab imports, in words, for an error message."""
    return "; ".join(f"{s.name} ({' or '.join('/'.join(sorted(c)) for c in s.needs)})" for s in SHAPES)


def find_shape(records: list[dict], form: str | None = None) -> Shape:
    """The shape named by `form`, else the first in SHAPES that the first row matches."""
    if form:
        if form not in BY_NAME:
            raise DataFileError(f"Unknown format '{form}': use one of {', '.join(FORMATS)}.")
        return BY_NAME[form]
    if not records:
        raise DataFileError("The file has no rows.")
    for shape in SHAPES:
        if shape.matches(records[0]):
            return shape
    found = ", ".join(f"'{c}'" for c in records[0]) or "none"
    raise DataFileError(f"Unknown format: the columns are {found}. The lab imports these shapes: {known_shapes()}.")


def detect_format(records: list[dict]) -> str:
    """The name of the shape the rows hold (one of FORMATS)."""
    return find_shape(records).name


@dataclass
class Parsed:
    """A file's rows as the lab's own: demonstrations, comparisons or unpaired ratings, all checked."""

    shape: Shape
    items: list = field(default_factory=list)  # Demonstration, Comparison or UnpairedRating, in file order
    notes: Counter = field(default_factory=Counter)

    @property
    def kind(self) -> str:
        return self.shape.kind

    def describe(self) -> str:
        """What was recognised: "ShareGPT conversations, 2 rows, 1 with a system prompt"."""
        n = len(self.items)
        parts = [f"{self.shape.label}, {n} row{'s' * (n != 1)}"]
        if self.kind == "unpaired":
            good = sum(r.label == "good" for r in self.items)
            parts.append(f"{good} good, {n - good} bad")
        if self.kind == "comparisons":
            pairs_made = sum(len(set(c.ranks)) > 1 for c in self.items)
            parts.append(
                f"{pairs_made} preference pair{'s' * (pairs_made != 1)}" if self.shape.name != "scored" else ""
            )
        starts = [_conversation(item)[0]["role"] for item in self.items]
        if (systems := starts.count("system")) and n:
            parts.append(f"{systems} with a system prompt")
        parts += [f"{count} {note}" for note, count in self.notes.items()]
        return ", ".join(p for p in parts if p)


def _conversation(item: Demonstration | Comparison | UnpairedRating) -> list[dict]:
    return item.messages if isinstance(item, Demonstration) else item.prompt


def parse(records: list[dict], source: str, form: str | None = None) -> Parsed:
    """Convert and check every row; the first bad one raises DataFileError naming its line or row."""
    shape = find_shape(records, form)
    places = getattr(records, "places", None) or [f"row {n}" for n in range(1, len(records) + 1)]
    parsed = Parsed(shape)
    for place, row in zip(places, records, strict=True):
        try:
            item = _typed(shape, shape.convert(row, parsed.notes), row, source)
            item.check()
        except ValueError as err:
            raise fail(place, str(err)) from err
        parsed.items.append(item)
    return parsed


def _typed(shape: Shape, value, row: dict, source: str) -> Demonstration | Comparison | UnpairedRating:
    if shape.kind == "demonstrations":
        return Demonstration(
            messages=value,
            category=optional_text(row, "category") or "other",
            tags=tags(row.get("tags")),
            author=optional_text(row, "author"),
            source=source,
        )
    if shape.kind == "unpaired":
        prompt, completion, good = value
        return UnpairedRating(prompt, completion, "good" if good else "bad", source=source)
    prompt, texts, ranks = value
    candidates = [{"text": t, "model": "imported", "settings": {}} for t in texts]
    verdict = "tie" if len(set(ranks)) == 1 else "ranked"
    annotator = str(row.get("annotator") or "")
    return Comparison(prompt, candidates, list(range(len(texts))), ranks, verdict, annotator, source=source)
