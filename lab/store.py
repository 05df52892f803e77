"""The workspace: one SQLite database (WAL) and a folder of run artifacts.

Every write opens its own short transaction (BEGIN IMMEDIATE) on a fresh
connection, so several browser tabs or threads writing at once queue on
SQLite's lock instead of losing rows. The schema carries a version
(PRAGMA user_version) and is brought forward by the MIGRATIONS list in order.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

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

MIGRATIONS: list[str] = [
    # 1: prompts and prompt experiments
    """
    CREATE TABLE prompts (
        id INTEGER PRIMARY KEY,
        text TEXT NOT NULL,
        category TEXT NOT NULL DEFAULT 'other',
        tags TEXT NOT NULL DEFAULT '[]',
        source TEXT NOT NULL DEFAULT 'typed',
        created_at TEXT NOT NULL,
        UNIQUE (text, source)
    );
    CREATE TABLE experiments (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        description TEXT NOT NULL DEFAULT '',
        variants TEXT NOT NULL,
        questions TEXT NOT NULL,
        settings TEXT NOT NULL,
        model TEXT NOT NULL DEFAULT '',
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE TABLE experiment_results (
        id INTEGER PRIMARY KEY,
        experiment_id INTEGER NOT NULL REFERENCES experiments(id) ON DELETE CASCADE,
        variant INTEGER NOT NULL,
        question INTEGER NOT NULL,
        response TEXT NOT NULL,
        prompt_tokens INTEGER NOT NULL,
        new_tokens INTEGER NOT NULL,
        seconds REAL NOT NULL,
        rating INTEGER CHECK (rating IN (-1, 1)),
        created_at TEXT NOT NULL,
        UNIQUE (experiment_id, variant, question)
    );
    CREATE TABLE conversations (
        id INTEGER PRIMARY KEY,
        title TEXT NOT NULL,
        system TEXT NOT NULL DEFAULT '',
        messages TEXT NOT NULL,
        model TEXT NOT NULL DEFAULT '',
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    """,
]


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def workspace_dir(path: str | Path | None = None) -> Path:
    """--workspace, else $LAB_WORKSPACE, else ./workspace."""
    return Path(path or os.environ.get("LAB_WORKSPACE") or "workspace").expanduser().resolve()


@dataclass
class Prompt:
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
    experiment_id: int
    variant: int
    question: int
    response: str
    prompt_tokens: int
    new_tokens: int
    seconds: float
    rating: int | None = None
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


class Store:
    """Typed rows in and out of the workspace database."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = workspace_dir(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.path = self.root / "lab.sqlite"
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
        self._migrate()

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA foreign_keys=ON")
        db.execute("PRAGMA busy_timeout=30000")
        return db

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        db = self._connect()
        try:
            yield db
        finally:
            db.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One transaction: committed whole, or rolled back whole."""
        db = self._connect()
        try:
            db.execute("BEGIN IMMEDIATE")
            yield db
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        finally:
            db.close()

    def _migrate(self) -> None:
        with self._write() as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > len(MIGRATIONS):
                raise RuntimeError(
                    f"{self.path} was written by a newer Alignment Lab (schema {version}); upgrade the lab."
                )
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                for statement in filter(str.strip, script.split(";")):
                    db.execute(statement)
                db.execute(f"PRAGMA user_version = {number}")

    @property
    def schema_version(self) -> int:
        with self._read() as db:
            return db.execute("PRAGMA user_version").fetchone()[0]

    # prompts

    def add_prompts(self, prompts: list[Prompt]) -> int:
        """Insert prompts, skipping any already there with the same text and source; returns how many were new."""
        for p in prompts:
            if p.category not in CATEGORIES:
                raise ValueError(f"Unknown category '{p.category}': use one of {', '.join(CATEGORIES)}.")
            if not p.text.strip():
                raise ValueError("A prompt cannot be empty.")
        with self._write() as db:
            before = db.total_changes
            db.executemany(
                "INSERT OR IGNORE INTO prompts (text, category, tags, source, created_at) VALUES (?, ?, ?, ?, ?)",
                [(p.text, p.category, json.dumps(p.tags), p.source, now()) for p in prompts],
            )
            return db.total_changes - before

    def list_prompts(self, category: str | None = None, source: str | None = None) -> list[Prompt]:
        query, args = "SELECT * FROM prompts WHERE 1=1", []
        if category:
            query, args = query + " AND category = ?", args + [category]
        if source:
            query, args = query + " AND source = ?", args + [source]
        with self._read() as db:
            rows = db.execute(query + " ORDER BY id", args).fetchall()
        return [
            Prompt(r["text"], r["category"], json.loads(r["tags"]), r["source"], r["id"], r["created_at"]) for r in rows
        ]

    # experiments

    def save_experiment(self, exp: Experiment) -> int:
        """Insert a new experiment or update an existing one (by id); returns its id."""
        stamp = now()
        fields = (
            exp.name,
            exp.description,
            json.dumps(exp.variants),
            json.dumps(exp.questions),
            json.dumps(exp.settings),
            exp.model,
        )
        with self._write() as db:
            if exp.id is None:
                cur = db.execute(
                    "INSERT INTO experiments (name, description, variants, questions, settings, model, created_at,"
                    " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (*fields, stamp, stamp),
                )
                exp.id, exp.created_at = cur.lastrowid, stamp
            else:
                db.execute(
                    "UPDATE experiments SET name=?, description=?, variants=?, questions=?, settings=?, model=?,"
                    " updated_at=? WHERE id=?",
                    (*fields, stamp, exp.id),
                )
            exp.updated_at = stamp
        return exp.id

    def get_experiment(self, experiment_id: int) -> Experiment:
        with self._read() as db:
            r = db.execute("SELECT * FROM experiments WHERE id = ?", (experiment_id,)).fetchone()
        if r is None:
            raise KeyError(f"No experiment with id {experiment_id}.")
        return Experiment(
            r["name"],
            json.loads(r["variants"]),
            json.loads(r["questions"]),
            json.loads(r["settings"]),
            r["description"],
            r["model"],
            r["id"],
            r["created_at"],
            r["updated_at"],
        )

    def list_experiments(self) -> list[Experiment]:
        with self._read() as db:
            ids = [r[0] for r in db.execute("SELECT id FROM experiments ORDER BY updated_at DESC, id DESC")]
        return [self.get_experiment(i) for i in ids]

    def save_result(self, result: Result) -> None:
        """Store one cell of an experiment, replacing an earlier answer to the same cell (and its rating)."""
        with self._write() as db:
            db.execute(
                "INSERT OR REPLACE INTO experiment_results (experiment_id, variant, question, response,"
                " prompt_tokens, new_tokens, seconds, rating, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    result.experiment_id,
                    result.variant,
                    result.question,
                    result.response,
                    result.prompt_tokens,
                    result.new_tokens,
                    result.seconds,
                    result.rating,
                    now(),
                ),
            )
            db.execute("UPDATE experiments SET updated_at = ? WHERE id = ?", (now(), result.experiment_id))

    def list_results(self, experiment_id: int) -> list[Result]:
        with self._read() as db:
            rows = db.execute(
                "SELECT * FROM experiment_results WHERE experiment_id = ? ORDER BY question, variant",
                (experiment_id,),
            ).fetchall()
        return [
            Result(
                r["experiment_id"],
                r["variant"],
                r["question"],
                r["response"],
                r["prompt_tokens"],
                r["new_tokens"],
                r["seconds"],
                r["rating"],
                r["id"],
                r["created_at"],
            )
            for r in rows
        ]

    def rate_result(self, experiment_id: int, variant: int, question: int, rating: int | None) -> None:
        """Mark a cell good (1), bad (-1) or unrated (None)."""
        if rating not in (1, -1, None):
            raise ValueError(f"rating must be 1, -1 or None, got {rating}")
        with self._write() as db:
            cur = db.execute(
                "UPDATE experiment_results SET rating = ? WHERE experiment_id = ? AND variant = ? AND question = ?",
                (rating, experiment_id, variant, question),
            )
            if cur.rowcount == 0:
                raise KeyError("That cell has no response yet: run the experiment first.")

    def delete_experiment(self, experiment_id: int) -> None:
        with self._write() as db:
            db.execute("DELETE FROM experiments WHERE id = ?", (experiment_id,))

    # conversations

    def save_conversation(self, conv: Conversation) -> int:
        """Insert or update a chat; its title is its first user message."""
        stamp = now()
        first = next((m["content"] for m in conv.messages if m["role"] == "user"), "")
        conv.title = conv.title or " ".join(first.split())[:60] or "(empty)"
        fields = (conv.title, conv.system, json.dumps(conv.messages), conv.model)
        with self._write() as db:
            if conv.id is None:
                cur = db.execute(
                    "INSERT INTO conversations (title, system, messages, model, created_at, updated_at)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (*fields, stamp, stamp),
                )
                conv.id, conv.created_at = cur.lastrowid, stamp
            else:
                db.execute(
                    "UPDATE conversations SET title=?, system=?, messages=?, model=?, updated_at=? WHERE id=?",
                    (*fields, stamp, conv.id),
                )
            conv.updated_at = stamp
        return conv.id

    def get_conversation(self, conversation_id: int) -> Conversation:
        with self._read() as db:
            r = db.execute("SELECT * FROM conversations WHERE id = ?", (conversation_id,)).fetchone()
        if r is None:
            raise KeyError(f"No conversation with id {conversation_id}.")
        return Conversation(
            json.loads(r["messages"]), r["system"], r["model"], r["title"], r["id"], r["created_at"], r["updated_at"]
        )

    def list_conversations(self, limit: int = 50) -> list[Conversation]:
        with self._read() as db:
            ids = [
                r[0]
                for r in db.execute("SELECT id FROM conversations ORDER BY updated_at DESC, id DESC LIMIT ?", (limit,))
            ]
        return [self.get_conversation(i) for i in ids]
