"""The typed rows of the workspace: one dataclass per table, the checks they share, and the closed vocabularies."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path

from lab import limits

CATEGORIES = (
    "generation",
    "open QA",
    "brainstorming",
    "chat",
    "rewrite",
    "summarization",
    "classification",
    "closed QA",
    "extract",
    "other",
)  # the InstructGPT use-case categories


def now() -> str:
    """The current UTC time as the workspace stores it (ISO 8601, to the second)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def workspace_dir(path: str | Path | None = None) -> Path:
    """--workspace, else $LAB_WORKSPACE, else ./workspace."""
    return Path(path or os.environ.get("LAB_WORKSPACE") or "workspace").expanduser().resolve()


@dataclass
class Prompt:
    """A prompt in the workspace's pool, unique by its text and where it came from."""

    text: str
    category: str = "other"
    tags: list[str] = field(default_factory=list)
    source: str = "typed"
    id: int | None = None
    created_at: str = ""


@dataclass
class Experiment:
    """Prompt variants × questions, with the sampling settings and model they ran with."""

    name: str
    variants: list[dict]  # each {"name", "system", "template"}
    questions: list[str]
    settings: dict
    description: str = ""
    model: str = ""
    id: int | None = None
    created_at: str = ""
    updated_at: str = ""


@dataclass
class Result:
    """One cell of an experiment: a variant's answer to a question, by one model (a short reference)."""

    experiment_id: int
    variant: int
    question: int
    response: str
    prompt_tokens: int
    new_tokens: int
    seconds: float
    rating: int | None = None
    model: str = ""
    id: int | None = None
    created_at: str = ""


@dataclass
class Conversation:
    """A chat as typed: kept so that nothing a user wrote is lost on a reload or a restart."""

    messages: list[dict]  # [{"role", "content"}], without the system prompt
    system: str = ""
    model: str = ""
    title: str = ""
    id: int | None = None
    created_at: str = ""
    updated_at: str = ""


ORIGINS = ("human", "model-edited", "model", "teacher")
STATUSES = ("accepted", "pending", "rejected")
RUN_STATES = ("queued", "running", "stopping", "done", "failed", "stopped")


def to_json(value) -> str:
    """JSON for a column; NaN and infinity are refused, so every stored value is valid JSON for any reader."""
    try:
        return json.dumps(value, allow_nan=False)
    except ValueError as err:
        raise ValueError("a number in it is not finite (NaN or infinity); the workspace stores finite numbers") from err


def fingerprint(messages: list[dict]) -> str:
    """The same conversation, whatever its spacing or letter case, has the same fingerprint."""
    canonical = [[m["role"], " ".join(m["content"].split()).lower()] for m in messages]
    return hashlib.sha256(json.dumps(canonical).encode()).hexdigest()[:32]


@dataclass
class Demonstration:
    """A conversation whose last assistant turn is the ideal response.

    origin says who wrote that response: a person, a person editing a model draft
    (the draft is kept), the model untouched, or a teacher model (distillation,
    waiting for review as status 'pending' until accepted).
    """

    messages: list[dict]
    category: str = "other"
    tags: list[str] = field(default_factory=list)
    author: str = ""
    origin: str = "human"
    draft: str | None = None
    teacher: str = ""
    status: str = "accepted"
    source: str = "typed"
    id: int | None = None
    created_at: str = ""
    updated_at: str = ""

    def check(self) -> None:
        """Raise ValueError naming the problem; the same rules apply to typed and imported rows."""
        if self.category not in CATEGORIES:
            raise ValueError(f"unknown category '{self.category}' (use one of {', '.join(CATEGORIES)})")
        if self.origin not in ORIGINS:
            raise ValueError(f"unknown origin '{self.origin}'")
        if self.status not in STATUSES:
            raise ValueError(f"unknown status '{self.status}'")
        check_name(self.author, "the author's name")
        check_messages(self.messages)


def check_name(name: str, what: str) -> None:
    """A person's, an experiment's or a run's name: at most limits.NAME_CHARS characters."""
    if len(name) > limits.NAME_CHARS:
        raise ValueError(f"{what} has {len(name):,} characters; the limit is {limits.NAME_CHARS}")


def check_messages(messages: list[dict]) -> None:
    """A conversation: optional system turn first, then user and assistant alternating, ending with assistant."""
    if not isinstance(messages, list) or not messages:
        raise ValueError("the conversation is empty" if not messages else "messages must be a list of turns")
    size = sum(len(m["content"]) for m in messages if isinstance(m, dict) and isinstance(m.get("content"), str))
    if size > limits.CONVERSATION_CHARS:
        raise ValueError(f"the conversation has {size:,} characters; the limit is {limits.CONVERSATION_CHARS:,}")
    for number, message in enumerate(messages, start=1):
        if not isinstance(message, dict) or set(message) - {"role", "content", "weight"} or "role" not in message:
            raise ValueError(f"message {number} must have exactly a role and a content")
        if "weight" in message and (message["role"] != "assistant" or message["weight"] not in (0, 1)):
            raise ValueError(f"message {number}: only an assistant turn has a weight, 0 (context) or 1 (learned)")
        if message["role"] not in ("system", "user", "assistant"):
            raise ValueError(f"message {number} has role '{message['role']}' (use system, user or assistant)")
        if not isinstance(message.get("content"), str):
            raise ValueError(f"message {number} ({message['role']}): content must be text")
        if not message["content"].strip():
            raise ValueError(f"message {number} ({message['role']}) has empty text")
    turns = messages[1:] if messages[0]["role"] == "system" else messages
    for number, message in enumerate(turns):
        expected = "user" if number % 2 == 0 else "assistant"
        if message["role"] != expected:
            raise ValueError(
                f"turn {number + 1} is '{message['role']}' but should be '{expected}' "
                "(a system turn only first, then user and assistant alternating)"
            )
    if len(turns) < 2 or turns[-1]["role"] != "assistant":
        raise ValueError("the conversation must end with the assistant's response")


def demonstration_fields(d: Demonstration) -> tuple:
    """The stored columns of a demonstration, in the order of the INSERT (source last)."""
    return (
        to_json(d.messages),
        fingerprint(d.messages),
        d.category,
        to_json(d.tags),
        d.author,
        d.origin,
        d.draft,
        d.teacher,
        d.status,
        d.source,
    )


@dataclass
class Run:
    """A training run: its row in the workspace; artifacts live in runs/<id>/."""

    id: str
    method: str
    config: dict
    name: str = ""
    status: str = "queued"
    device: str = "cpu"
    pid: int | None = None
    exit_code: int | None = None
    error: str = ""
    created_at: str = ""
    started_at: str | None = None
    finished_at: str | None = None
    provenance: dict = field(default_factory=dict)  # what made it: code version, data fingerprints, parent runs


VERDICTS = ("ranked", "tie", "both-bad", "skipped")


@dataclass
class Comparison:
    """One vote: K candidate answers to one prompt, the order they were shown in, and how they ranked.

    ranks[i] is the rank of candidates[i] (1 = best; equal ranks are ties); None when the
    verdict is 'both-bad' or 'skipped'. Each candidate records its model reference and sampling settings.
    """

    prompt: list[dict]
    candidates: list[dict]  # [{"text", "model", "settings"}]
    shown: list[int]  # shown[position] = index of the candidate shown there (left to right)
    ranks: list[int] | None
    verdict: str = "ranked"
    annotator: str = ""
    reason: str = ""
    source: str = "typed"
    id: int | None = None
    created_at: str = ""

    @property
    def item(self) -> str:
        """The same prompt and the same set of answers, whoever votes and in whatever order they are shown."""
        texts = sorted(" ".join(c["text"].split()) for c in self.candidates)
        return fingerprint([*self.prompt, *({"role": "assistant", "content": t} for t in texts)])

    def check(self) -> None:
        """Raise ValueError naming the problem with this vote."""
        if self.verdict not in VERDICTS:
            raise ValueError(f"unknown verdict '{self.verdict}'")
        check_name(self.annotator, "the annotator's name")
        if not 2 <= len(self.candidates) <= 8:
            raise ValueError(f"a comparison needs 2 to 8 candidates, got {len(self.candidates)}")
        if sorted(self.shown) != list(range(len(self.candidates))):
            raise ValueError("shown must be an order of the candidates")
        if any(not str(c.get("text", "")).strip() for c in self.candidates):
            raise ValueError("a candidate answer is empty")
        if not isinstance(self.prompt, list) or not self.prompt or self.prompt[-1].get("role") != "user":
            raise ValueError("the prompt must end with a user turn")
        check_messages([*self.prompt, {"role": "assistant", "content": "answer"}])
        if self.verdict in ("ranked", "tie"):
            if self.ranks is None or len(self.ranks) != len(self.candidates) or min(self.ranks) < 1:
                raise ValueError("give every candidate a rank from 1 (best)")
            if self.verdict == "tie" and len(set(self.ranks)) != 1:
                raise ValueError("a tie gives every candidate the same rank")
        elif self.ranks is not None:
            raise ValueError(f"a '{self.verdict}' vote has no ranks")


LABELS = ("good", "bad")


@dataclass
class UnpairedRating:
    """One completion to a prompt, labelled good or bad on its own (TRL's unpaired preference, as KTO takes it).

    Not a demonstration: a completion labelled bad must never become a target to imitate.
    """

    prompt: list[dict]  # the conversation before the completion, ending with a user turn
    completion: str
    label: str  # "good" or "bad"
    source: str = "typed"
    id: int | None = None
    created_at: str = ""

    def check(self) -> None:
        """Raise ValueError naming the problem with this rating."""
        if self.label not in LABELS:
            raise ValueError(f"unknown label '{self.label}' (use good or bad)")
        if not isinstance(self.prompt, list) or not self.prompt or self.prompt[-1].get("role") != "user":
            raise ValueError("the prompt must end with a user turn")
        check_messages([*self.prompt, {"role": "assistant", "content": self.completion}])


JSON_COLUMNS = {
    "variants",
    "questions",
    "settings",
    "messages",
    "tags",
    "config",
    "prompt",
    "candidates",
    "shown",
    "ranks",
    "provenance",
}


def from_row(cls: type, r: sqlite3.Row):
    """A typed row from a database row: the dataclass's fields by column name, JSON columns decoded."""
    columns = r.keys()
    return cls(
        **{
            f.name: json.loads(r[f.name]) if f.name in JSON_COLUMNS else r[f.name]
            for f in fields(cls)
            if f.name in columns
        }
    )


def check_all(rows: list[Demonstration] | list[Comparison] | list[UnpairedRating], kind: str) -> None:
    """Check every row before a batch insert, naming the first bad one ("comparison 3: ...")."""
    for number, row in enumerate(rows, start=1):
        try:
            row.check()
        except ValueError as err:
            raise ValueError(f"{kind} {number}: {err}") from err
