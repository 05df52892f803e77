"""A workshop room's tables: votes wanted per item of a queue, items held by the people voting on them, and
candidates made ahead of the voters."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from lab.store.database import Database
from lab.store.rows import now, to_json

# (question, annotator, whether it was a vote rather than a skip, the candidates' model labels) of a live vote
VoteRow = tuple[str, str, bool, tuple[str, ...]]
# votes on the queue, items others hold now → the question to hand out, or None
Chooser = Callable[[list[VoteRow], dict[str, set[str]]], str | None]


class RoomTables(Database):
    """Per-queue settings, reservations and prepared candidates. A reservation lasts `hold_s` seconds, so an item
    handed to someone who walked away goes back to the others."""

    def votes_per_item(self, queue: str, default: int = 1) -> int:
        with self._read() as db:
            row = db.execute("SELECT votes_per_item FROM queue_settings WHERE queue = ?", (queue,)).fetchone()
        return row[0] if row else default

    def set_votes_per_item(self, queue: str, votes: int) -> None:
        if votes < 1:
            raise ValueError(f"An item needs at least one vote, not {votes}.")
        with self._write() as db:
            db.execute(
                "INSERT INTO queue_settings (queue, votes_per_item) VALUES (?, ?)"
                " ON CONFLICT (queue) DO UPDATE SET votes_per_item = excluded.votes_per_item",
                (queue, votes),
            )

    def reserve(self, queue: str, source: str, annotator: str, choose: Chooser, hold_s: float) -> str | None:
        """Hand `annotator` the question `choose` picks, holding it for them for `hold_s` seconds; None if none.

        One write transaction reads the votes and the others' live reservations and records the new one, so two
        people asking at once are served one after the other and never get the same item by accident.
        """
        stamp = time.time()
        with self._write() as db:
            db.execute("DELETE FROM reservations WHERE until < ?", (stamp,))
            db.execute("DELETE FROM reservations WHERE queue = ? AND annotator = ?", (queue, annotator))
            votes = [
                (json.loads(r["prompt"])[-1]["content"], r["annotator"], r["verdict"] != "skipped", _models(r))
                for r in db.execute(
                    "SELECT prompt, annotator, verdict, candidates FROM comparisons"
                    " WHERE source = ? AND deleted_at IS NULL",
                    (source,),
                )
            ]
            held: dict[str, set[str]] = {}
            for r in db.execute("SELECT question, annotator FROM reservations WHERE queue = ?", (queue,)):
                held.setdefault(r["question"], set()).add(r["annotator"])
            question = choose(votes, held)
            if question is not None:
                db.execute(
                    "INSERT INTO reservations (queue, question, annotator, until) VALUES (?, ?, ?, ?)",
                    (queue, question, annotator, stamp + hold_s),
                )
        return question

    def release(self, queue: str, annotator: str) -> None:
        """Give back what `annotator` holds in `queue` (their vote is in, or they moved on)."""
        with self._write() as db:
            db.execute("DELETE FROM reservations WHERE queue = ? AND annotator = ?", (queue, annotator))

    def add_prepared(self, queue: str, question: str, base: str, candidates: list[dict]) -> None:
        """Keep the candidates made ahead for this question (replacing older ones for the same base model)."""
        with self._write() as db:
            db.execute(
                "INSERT OR REPLACE INTO prepared_candidates (queue, question, base, candidates, created_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (queue, question, base, to_json(candidates), now()),
            )

    def prepared(self, queue: str, base: str) -> dict[str, list[dict]]:
        """The candidates made ahead for the questions of `queue` by `base`, by question."""
        with self._read() as db:
            rows = db.execute(
                "SELECT question, candidates FROM prepared_candidates WHERE queue = ? AND base = ?", (queue, base)
            ).fetchall()
        return {r["question"]: json.loads(r["candidates"]) for r in rows}


def _models(row) -> tuple[str, ...]:
    return tuple(candidate["model"] for candidate in json.loads(row["candidates"]))
