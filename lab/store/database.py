"""Connections to the workspace database: short transactions on fresh connections, and the schema brought forward.

Every write opens its own short transaction (BEGIN IMMEDIATE) on a fresh connection, so several
browser tabs, threads or processes writing at once queue on SQLite's lock instead of losing rows.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lab.store import schema
from lab.store.rows import from_row, now, workspace_dir


def contains_text(messages: str, needle: str) -> bool:
    """Whether the contents of a stored conversation hold `needle`, ignoring case (Unicode casefold).

    The messages column is ASCII-escaped JSON, so LIKE would miss non-ASCII text and match the keys
    ("role", "content"); decoding it here searches only what people wrote.
    """
    contents = " ".join(m.get("content", "") for m in json.loads(messages))
    return needle.casefold() in contents.casefold()


class WorkspaceFullError(ValueError):
    """A write the disk had no room for; the transaction was rolled back whole, so earlier rows are intact."""


def disk_trouble(err: BaseException) -> str | None:
    """One sentence for a write SQLite could not make for want of room, or None for any other error.

    A full disk is SQLITE_FULL; a write refused by a quota or a file size limit (EDQUOT, EFBIG) reaches SQLite as
    an I/O error, as does a failing disk, which the sentence cannot tell apart.
    """
    name = getattr(err, "sqlite_errorname", "") if isinstance(err, sqlite3.OperationalError) else ""
    if name == "SQLITE_FULL":
        return "The workspace's disk is full: nothing was saved; free some space and try again."
    if name.startswith("SQLITE_IOERR"):
        return (
            "The workspace's disk refused the write (full, over a quota, or failing): nothing was saved; "
            "free some space and try again."
        )
    return None


class Database:
    """The workspace folder and its SQLite database (WAL), at the latest schema once constructed."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = workspace_dir(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.path = self.root / "lab.sqlite"
        with self._read() as db:
            db.execute("PRAGMA journal_mode=WAL")
            schema.migrate(db, self.path)

    @property
    def runs_dir(self) -> Path:
        """Where each run keeps its artifacts, in runs/<run id>/."""
        return self.root / "runs"

    @property
    def schema_version(self) -> int:
        """The number of migrations this database has run."""
        with self._read() as db:
            return db.execute("PRAGMA user_version").fetchone()[0]

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA foreign_keys=ON")
        db.execute("PRAGMA busy_timeout=30000")
        db.create_function("contains_text", 2, contains_text, deterministic=True)
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
        except BaseException as err:
            if db.in_transaction:  # BEGIN itself may have failed (database locked)
                db.execute("ROLLBACK")
            if (trouble := disk_trouble(err)) is not None:
                raise WorkspaceFullError(trouble) from err
            raise
        finally:
            db.close()

    def _get(self, cls: type, table: str, row_id: int | str, noun: str):
        """The row of `table` with this id, typed as `cls`; KeyError naming the noun if there is none."""
        try:
            with self._read() as db:
                r = db.execute(f"SELECT * FROM {table} WHERE id = ?", (row_id,)).fetchone()
        except OverflowError:  # beyond SQLite's 64-bit integers: no such row, not a crash
            r = None
        if r is None:
            raise KeyError(f"No {noun} with id {row_id}.")
        return from_row(cls, r)

    def _save(self, table: str, row, columns: dict) -> int:
        """Insert `row` (a typed row whose id is None) or update it by id, stamping created_at and updated_at."""
        stamp = now()
        names = list(columns)
        with self._write() as db:
            if row.id is None:
                row.id = db.execute(
                    f"INSERT INTO {table} ({', '.join(names)}, created_at, updated_at)"
                    f" VALUES ({', '.join('?' * len(names))}, ?, ?)",
                    (*columns.values(), stamp, stamp),
                ).lastrowid
                row.created_at = stamp
            else:
                db.execute(
                    f"UPDATE {table} SET {', '.join(f'{n}=?' for n in names)}, updated_at=? WHERE id=?",
                    (*columns.values(), stamp, row.id),
                )
            row.updated_at = stamp
        return row.id
