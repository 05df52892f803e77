"""What people judge and write: demonstrations (ideal responses), comparisons (preference votes) and unpaired
ratings (one completion labelled good or bad)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lab.store.database import Database
from lab.store.rows import (
    STATUSES,
    Comparison,
    Demonstration,
    UnpairedRating,
    check_all,
    demonstration_fields,
    fingerprint,
    from_row,
    now,
    to_json,
)


class AnnotationTables(Database):
    """Demonstrations and comparisons, both kept in a bin when deleted so that undo can bring them back."""

    # demonstrations

    def add_demonstrations(self, demos: list[Demonstration]) -> list[int]:
        """Insert all of them in one transaction, or none if any is invalid."""
        check_all(demos, "demonstration")
        stamp = now()
        with self._write() as db:
            ids = []
            for d in demos:
                cur = db.execute(
                    "INSERT INTO demonstrations (messages, fingerprint, category, tags, author, origin, draft, teacher,"
                    " status, source, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (*demonstration_fields(d), stamp, stamp),
                )
                d.id, d.created_at, d.updated_at = cur.lastrowid, stamp, stamp
                ids.append(cur.lastrowid)
        return ids

    def update_demonstration(self, demo: Demonstration) -> None:
        """Rewrite a live demonstration (all but its source); KeyError if it is gone."""
        demo.check()
        with self._write() as db:
            cur = db.execute(
                "UPDATE demonstrations SET messages=?, fingerprint=?, category=?, tags=?, author=?, origin=?, draft=?,"
                " teacher=?, status=?, updated_at=? WHERE id=? AND deleted_at IS NULL",
                (*demonstration_fields(demo)[:-1], now(), demo.id),
            )
            if cur.rowcount == 0:
                raise KeyError(f"No demonstration with id {demo.id}.")

    def set_demonstration_status(self, ids: list[int], status: str) -> list[int]:
        """Accept, reject or send back to review the live demonstrations with these ids; returns the ids it changed.

        An id that is not there (never was, or is in the bin) and one that already has this status are left out,
        so that a message built from the result says only what happened.
        """
        if status not in STATUSES:
            raise ValueError(f"unknown status '{status}'")
        return self._change_demonstrations(
            ids, "SET status=?, updated_at=? WHERE id=? AND deleted_at IS NULL AND status != ?", (status, now()), status
        )

    def delete_demonstrations(self, ids: list[int]) -> list[int]:
        """Move the live ones among these ids to the bin (restore_demonstrations undoes it); returns those moved."""
        return self._change_demonstrations(ids, "SET deleted_at=? WHERE id=? AND deleted_at IS NULL", (now(),))

    def restore_demonstrations(self, ids: list[int]) -> list[int]:
        """Bring the ones among these ids back from the bin; returns those restored."""
        return self._change_demonstrations(ids, "SET deleted_at=NULL WHERE id=? AND deleted_at IS NOT NULL", ())

    def _change_demonstrations(self, ids: list[int], update: str, before: tuple, *after) -> list[int]:
        """Run `UPDATE demonstrations <update>` once per id in one transaction; the ids whose row it changed."""
        changed = []
        with self._write() as db:
            for i in dict.fromkeys(ids):  # an id typed twice changes once
                if not -(2**63) <= i < 2**63:  # beyond SQLite's integers: no such row, not an OverflowError
                    continue
                if db.execute(f"UPDATE demonstrations {update}", (*before, i, *after)).rowcount:
                    changed.append(i)
        return changed

    def find_duplicate(self, messages: list[dict], exclude: int | None = None) -> int | None:
        """The id of a live demonstration with the same conversation, if any."""
        with self._read() as db:
            row = db.execute(
                "SELECT id FROM demonstrations WHERE fingerprint=? AND deleted_at IS NULL AND id IS NOT ?",
                (fingerprint(messages), exclude),
            ).fetchone()
        return row[0] if row else None

    def get_demonstration(self, demo_id: int) -> Demonstration:
        """One demonstration (even from the bin); KeyError if there is none with that id."""
        return self._get(Demonstration, "demonstrations", demo_id, "demonstration")

    def list_demonstrations(
        self,
        search: str = "",
        category: str | None = None,
        origins: list[str] | None = None,
        status: str | None = "accepted",
    ) -> list[Demonstration]:
        """Live demonstrations, newest first, filtered by text, category, origin and review status.

        The search is a plain substring of what the turns say (any letter case, any script; % and _ are
        literal), never of the stored JSON's keys.
        """
        query, args = "SELECT * FROM demonstrations WHERE deleted_at IS NULL", []
        if search.strip():
            query, args = query + " AND contains_text(messages, ?)", [*args, search.strip()]
        if category:
            query, args = query + " AND category = ?", [*args, category]
        if origins:
            query += f" AND origin IN ({', '.join('?' * len(origins))})"
            args += origins
        if status:
            query, args = query + " AND status = ?", [*args, status]
        with self._read() as db:
            rows = db.execute(query + " ORDER BY id DESC", args).fetchall()
        return [from_row(Demonstration, r) for r in rows]

    # comparisons

    def add_comparison(self, comparison: Comparison) -> int:
        """Store one vote; it is in the database when this returns."""
        [comparison.id] = self.add_comparisons([comparison])
        return comparison.id

    def add_comparisons(self, comparisons: list[Comparison]) -> list[int]:
        """Insert all (an import) in one transaction, or none if any is invalid."""
        return self._insert_all(
            comparisons,
            "comparison",
            "comparisons",
            lambda c: {
                "prompt": to_json(c.prompt),
                "item": c.item,
                "candidates": to_json(c.candidates),
                "shown": to_json(c.shown),
                "ranks": to_json(c.ranks),
                "verdict": c.verdict,
                "annotator": c.annotator,
                "reason": c.reason,
                "source": c.source,
            },
        )

    def _insert_all(self, rows: list, kind: str, table: str, columns: Callable[[Any], dict]) -> list[int]:
        """Check every row, then insert them all in one transaction, giving each its id and created_at."""
        check_all(rows, kind)
        stamp = now()
        with self._write() as db:
            for row in rows:
                values = {**columns(row), "created_at": stamp}
                row.created_at = stamp
                row.id = db.execute(  # the table and column names are this module's own, never a user's
                    f"INSERT INTO {table} ({', '.join(values)}) VALUES ({', '.join('?' * len(values))})",
                    tuple(values.values()),
                ).lastrowid
        return [row.id for row in rows]

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
        return from_row(Comparison, row)

    def withdraw_comparisons(self, ids: list[int]) -> list[int]:
        """Withdraw these live votes (kept in the database, marked withdrawn); returns the ids withdrawn."""
        if not ids:
            return []
        marks = ", ".join("?" * len(ids))
        with self._write() as db:
            live = [
                r["id"]
                for r in db.execute(
                    f"SELECT id FROM comparisons WHERE deleted_at IS NULL AND id IN ({marks})", tuple(ids)
                )
            ]
            db.executemany("UPDATE comparisons SET deleted_at = ? WHERE id = ?", [(now(), i) for i in live])
        return live

    def list_comparisons(self, exclude_annotators: tuple[str, ...] = (), source: str | None = None) -> list[Comparison]:
        """Live votes, oldest first."""
        query, args = "SELECT * FROM comparisons WHERE deleted_at IS NULL", []
        if exclude_annotators:
            query += f" AND annotator NOT IN ({', '.join('?' * len(exclude_annotators))})"
            args += list(exclude_annotators)
        if source:
            query, args = query + " AND source = ?", [*args, source]
        with self._read() as db:
            return [from_row(Comparison, r) for r in db.execute(query + " ORDER BY id", args)]

    # unpaired ratings

    def add_unpaired(self, ratings: list[UnpairedRating]) -> list[int]:
        """Insert all (an import) in one transaction, or none if any is invalid."""
        return self._insert_all(
            ratings,
            "rating",
            "unpaired_ratings",
            lambda r: {
                "prompt": to_json(r.prompt),
                "completion": r.completion,
                "label": r.label,
                "source": r.source,
            },
        )

    def list_unpaired(self, label: str | None = None) -> list[UnpairedRating]:
        """Live unpaired ratings, oldest first: only the good or only the bad ones when `label` says so."""
        query, args = "SELECT * FROM unpaired_ratings WHERE deleted_at IS NULL", []
        if label:
            query, args = query + " AND label = ?", [label]
        with self._read() as db:
            return [from_row(UnpairedRating, r) for r in db.execute(query + " ORDER BY id", args)]

    def delete_unpaired(self, ids: list[int]) -> int:
        """Move these ratings to the bin (an import undone); returns how many were live."""
        stamp = now()
        with self._write() as db:
            return sum(
                db.execute(
                    "UPDATE unpaired_ratings SET deleted_at=? WHERE id=? AND deleted_at IS NULL", (stamp, i)
                ).rowcount
                for i in dict.fromkeys(ids)
            )
