"""The workspace: one SQLite database (WAL) and a folder of run artifacts.

Every write opens its own short transaction (BEGIN IMMEDIATE) on a fresh
connection, so several browser tabs or threads writing at once queue on
SQLite's lock instead of losing rows. The schema carries a version
(PRAGMA user_version) and is brought forward by the MIGRATIONS list in order.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
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
    # 2: demonstrations and training runs
    """
    CREATE TABLE demonstrations (
        id INTEGER PRIMARY KEY,
        messages TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        category TEXT NOT NULL DEFAULT 'other',
        tags TEXT NOT NULL DEFAULT '[]',
        author TEXT NOT NULL DEFAULT '',
        origin TEXT NOT NULL DEFAULT 'human' CHECK (origin IN ('human', 'model-edited', 'model', 'teacher')),
        draft TEXT,
        teacher TEXT NOT NULL DEFAULT '',
        status TEXT NOT NULL DEFAULT 'accepted' CHECK (status IN ('accepted', 'pending', 'rejected')),
        source TEXT NOT NULL DEFAULT 'typed',
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        deleted_at TEXT
    );
    CREATE INDEX demonstrations_fingerprint ON demonstrations (fingerprint);
    CREATE TABLE runs (
        id TEXT PRIMARY KEY,
        method TEXT NOT NULL,
        name TEXT NOT NULL DEFAULT '',
        config TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'queued'
            CHECK (status IN ('queued', 'running', 'stopping', 'done', 'failed', 'stopped')),
        device TEXT NOT NULL DEFAULT 'cpu',
        pid INTEGER,
        exit_code INTEGER,
        error TEXT NOT NULL DEFAULT '',
        created_at TEXT NOT NULL,
        started_at TEXT,
        finished_at TEXT
    );
    """,
    # 3: comparisons (preference votes)
    """
    CREATE TABLE comparisons (
        id INTEGER PRIMARY KEY,
        prompt TEXT NOT NULL,
        item TEXT NOT NULL,
        candidates TEXT NOT NULL,
        shown TEXT NOT NULL,
        ranks TEXT,
        verdict TEXT NOT NULL CHECK (verdict IN ('ranked', 'tie', 'both-bad', 'skipped')),
        annotator TEXT NOT NULL DEFAULT '',
        reason TEXT NOT NULL DEFAULT '',
        source TEXT NOT NULL DEFAULT 'typed',
        created_at TEXT NOT NULL,
        deleted_at TEXT
    );
    CREATE INDEX comparisons_item ON comparisons (item);
    CREATE INDEX comparisons_annotator ON comparisons (annotator, created_at);
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


ORIGINS = ("human", "model-edited", "model", "teacher")
STATUSES = ("accepted", "pending", "rejected")
RUN_STATES = ("queued", "running", "stopping", "done", "failed", "stopped")


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
        check_messages(self.messages)


def check_messages(messages: list[dict]) -> None:
    """A conversation: optional system turn first, then user and assistant alternating, ending with assistant."""
    if not isinstance(messages, list) or not messages:
        raise ValueError("the conversation is empty" if not messages else "messages must be a list of turns")
    for number, message in enumerate(messages, start=1):
        if not isinstance(message, dict) or set(message) - {"role", "content"} or "role" not in message:
            raise ValueError(f"message {number} must have exactly a role and a content")
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


def _demonstration_fields(d: Demonstration) -> tuple:
    """The stored columns of a demonstration, in the order of the INSERT (source last)."""
    return (
        json.dumps(d.messages),
        fingerprint(d.messages),
        d.category,
        json.dumps(d.tags),
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
        if self.verdict not in VERDICTS:
            raise ValueError(f"unknown verdict '{self.verdict}'")
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
}


def _from_row(cls: type, r: sqlite3.Row):
    """A typed row from a database row: the dataclass's fields by column name, JSON columns decoded."""
    columns = r.keys()
    return cls(
        **{
            f.name: json.loads(r[f.name]) if f.name in JSON_COLUMNS else r[f.name]
            for f in fields(cls)
            if f.name in columns
        }
    )


def _check_all(rows: list[Demonstration] | list[Comparison], kind: str) -> None:
    """Check every row before a batch insert, naming the first bad one ("comparison 3: ...")."""
    for number, row in enumerate(rows, start=1):
        try:
            row.check()
        except ValueError as err:
            raise ValueError(f"{kind} {number}: {err}") from err


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
            if db.in_transaction:  # BEGIN itself may have failed (database locked)
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
        return [_from_row(Prompt, r) for r in rows]

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
        return _from_row(Experiment, r)

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
        return [_from_row(Result, r) for r in rows]

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
        return _from_row(Conversation, r)

    def list_conversations(self, limit: int = 50) -> list[Conversation]:
        with self._read() as db:
            ids = [
                r[0]
                for r in db.execute("SELECT id FROM conversations ORDER BY updated_at DESC, id DESC LIMIT ?", (limit,))
            ]
        return [self.get_conversation(i) for i in ids]

    # demonstrations

    def add_demonstrations(self, demos: list[Demonstration]) -> list[int]:
        """Insert all of them in one transaction, or none if any is invalid."""
        _check_all(demos, "demonstration")
        stamp = now()
        with self._write() as db:
            ids = []
            for d in demos:
                cur = db.execute(
                    "INSERT INTO demonstrations (messages, fingerprint, category, tags, author, origin, draft, teacher,"
                    " status, source, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (*_demonstration_fields(d), stamp, stamp),
                )
                d.id, d.created_at, d.updated_at = cur.lastrowid, stamp, stamp
                ids.append(cur.lastrowid)
        return ids

    def update_demonstration(self, demo: Demonstration) -> None:
        demo.check()
        with self._write() as db:
            cur = db.execute(
                "UPDATE demonstrations SET messages=?, fingerprint=?, category=?, tags=?, author=?, origin=?, draft=?,"
                " teacher=?, status=?, updated_at=? WHERE id=? AND deleted_at IS NULL",
                (*_demonstration_fields(demo)[:-1], now(), demo.id),
            )
            if cur.rowcount == 0:
                raise KeyError(f"No demonstration with id {demo.id}.")

    def set_demonstration_status(self, ids: list[int], status: str) -> None:
        if status not in STATUSES:
            raise ValueError(f"unknown status '{status}'")
        with self._write() as db:
            db.executemany(
                "UPDATE demonstrations SET status=?, updated_at=? WHERE id=?", [(status, now(), i) for i in ids]
            )

    def delete_demonstrations(self, ids: list[int]) -> None:
        """Move to the bin (restore_demonstrations undoes it)."""
        with self._write() as db:
            db.executemany("UPDATE demonstrations SET deleted_at=? WHERE id=?", [(now(), i) for i in ids])

    def restore_demonstrations(self, ids: list[int]) -> None:
        with self._write() as db:
            db.executemany("UPDATE demonstrations SET deleted_at=NULL WHERE id=?", [(i,) for i in ids])

    def find_duplicate(self, messages: list[dict], exclude: int | None = None) -> int | None:
        """The id of a live demonstration with the same conversation, if any."""
        with self._read() as db:
            row = db.execute(
                "SELECT id FROM demonstrations WHERE fingerprint=? AND deleted_at IS NULL AND id IS NOT ?",
                (fingerprint(messages), exclude),
            ).fetchone()
        return row[0] if row else None

    def get_demonstration(self, demo_id: int) -> Demonstration:
        with self._read() as db:
            r = db.execute("SELECT * FROM demonstrations WHERE id = ?", (demo_id,)).fetchone()
        if r is None:
            raise KeyError(f"No demonstration with id {demo_id}.")
        return self._demonstration(r)

    def list_demonstrations(
        self,
        search: str = "",
        category: str | None = None,
        origins: list[str] | None = None,
        status: str | None = "accepted",
    ) -> list[Demonstration]:
        """Live demonstrations, newest first, filtered by text, category, origin and review status."""
        query, args = "SELECT * FROM demonstrations WHERE deleted_at IS NULL", []
        if search.strip():
            query, args = query + " AND messages LIKE ?", [*args, f"%{search.strip()}%"]
        if category:
            query, args = query + " AND category = ?", [*args, category]
        if origins:
            query += f" AND origin IN ({', '.join('?' * len(origins))})"
            args += origins
        if status:
            query, args = query + " AND status = ?", [*args, status]
        with self._read() as db:
            rows = db.execute(query + " ORDER BY id DESC", args).fetchall()
        return [self._demonstration(r) for r in rows]

    @staticmethod
    def _demonstration(r: sqlite3.Row) -> Demonstration:
        return _from_row(Demonstration, r)

    # runs

    def add_run(self, run: Run) -> None:
        run.created_at = run.created_at or now()
        with self._write() as db:
            db.execute(
                "INSERT INTO runs (id, method, name, config, status, device, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (run.id, run.method, run.name, json.dumps(run.config), run.status, run.device, run.created_at),
            )

    def update_run(self, run_id: str, expect: tuple[str, ...] = (), **fields) -> bool:
        """Set some columns of a run (status, pid, exit_code, error, started_at, finished_at).

        With `expect`, only while the run's status is one of those (compare-and-set, so a late writer
        cannot overwrite a newer status); returns whether the row changed.
        """
        allowed = {"status", "pid", "exit_code", "error", "started_at", "finished_at"}
        if set(fields) - allowed:
            raise ValueError(f"cannot update {sorted(set(fields) - allowed)} of a run")
        if fields.get("status", "queued") not in RUN_STATES:
            raise ValueError(f"unknown run status '{fields['status']}'")
        guard = f" AND status IN ({', '.join('?' * len(expect))})" if expect else ""
        with self._write() as db:
            cur = db.execute(
                f"UPDATE runs SET {', '.join(f'{k}=?' for k in fields)} WHERE id=?{guard}",
                (*fields.values(), run_id, *expect),
            )
            return cur.rowcount > 0

    def get_run(self, run_id: str) -> Run:
        with self._read() as db:
            r = db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        if r is None:
            raise KeyError(f"No run with id {run_id}.")
        return self._run(r)

    def list_runs(self, statuses: tuple[str, ...] = ()) -> list[Run]:
        query, args = "SELECT * FROM runs", []
        if statuses:
            query += f" WHERE status IN ({', '.join('?' * len(statuses))})"
            args = list(statuses)
        with self._read() as db:
            return [self._run(r) for r in db.execute(query + " ORDER BY created_at DESC, id DESC", args)]

    @staticmethod
    def _run(r: sqlite3.Row) -> Run:
        return _from_row(Run, r)

    # comparisons

    def add_comparison(self, comparison: Comparison) -> int:
        """Store one vote; it is in the database when this returns."""
        [comparison.id] = self.add_comparisons([comparison])
        return comparison.id

    def add_comparisons(self, comparisons: list[Comparison]) -> list[int]:
        """Insert all (an import) in one transaction, or none if any is invalid."""
        _check_all(comparisons, "comparison")
        stamp = now()
        with self._write() as db:
            for c in comparisons:
                c.created_at = stamp
                c.id = db.execute(
                    "INSERT INTO comparisons (prompt, item, candidates, shown, ranks, verdict, annotator, reason,"
                    " source, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        json.dumps(c.prompt),
                        c.item,
                        json.dumps(c.candidates),
                        json.dumps(c.shown),
                        json.dumps(c.ranks),
                        c.verdict,
                        c.annotator,
                        c.reason,
                        c.source,
                        stamp,
                    ),
                ).lastrowid
        return [c.id for c in comparisons]

    def undo_last_comparison(self, annotator: str) -> Comparison | None:
        """Withdraw this annotator's latest live vote cast here (not imported); returns it (None if none)."""
        if not annotator.strip():
            return None
        with self._write() as db:
            row = db.execute(
                "SELECT * FROM comparisons WHERE annotator = ? AND deleted_at IS NULL AND source NOT LIKE 'import:%'"
                " ORDER BY id DESC LIMIT 1",
                (annotator,),
            ).fetchone()
            if row is None:
                return None
            db.execute("UPDATE comparisons SET deleted_at = ? WHERE id = ?", (now(), row["id"]))
        return self._comparison(row)

    def list_comparisons(self, exclude_annotators: tuple[str, ...] = (), source: str | None = None) -> list[Comparison]:
        """Live votes, oldest first."""
        query, args = "SELECT * FROM comparisons WHERE deleted_at IS NULL", []
        if exclude_annotators:
            query += f" AND annotator NOT IN ({', '.join('?' * len(exclude_annotators))})"
            args += list(exclude_annotators)
        if source:
            query, args = query + " AND source = ?", [*args, source]
        with self._read() as db:
            return [self._comparison(r) for r in db.execute(query + " ORDER BY id", args)]

    @staticmethod
    def _comparison(r: sqlite3.Row) -> Comparison:
        return _from_row(Comparison, r)
