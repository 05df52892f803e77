"""A workshop room: many people annotating at once on one machine, each under their own name.

- Who: with logins, a vote or a demonstration is signed by the login, never by a typed name.
- Which item: a queue hands each person an item nobody else holds now and that still lacks votes, until every
  item has the votes asked for; nobody gets the same item twice (`next_item`).
- Nobody waits for candidates: one background worker makes the answers of the next items ahead of the voters
  and keeps them in the workspace (`Room.prepare`); everyone who votes on an item sees the same answers, so their
  votes can be compared.
- Turns at the model: the model answers one request at a time; people take turns round-robin and the background
  worker only when no person is waiting, stepping aside mid-answer when one arrives (`Turns`).
- The instructor's view: per person, votes, demonstrations, agreement with the majority and the flag (`roster`).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pandas as pd

from lab.adapters import attach_adapter
from lab.models import BASE_VIEW
from lab.preferences import EVAL_QUEUE, Side, check_sides, compares_models, evaluation_pairs, queue_source
from lab.scenarios import shipped_candidates
from lab.store import Store

if TYPE_CHECKING:
    from lab.generate import GenerationSettings
    from lab.models import LoadedModel, ModelManager
    from lab.presets import ScenarioPreset
    from lab.store.room import VoteRow

HOLD_S = 120.0  # how long an item handed out stays reserved for its person (then it goes back to the others)
AHEAD = 4  # items whose candidates the background worker keeps ready beyond those handed out
ANSWER_TOKENS = 96  # the default cap on a candidate's length: long enough to judge, short enough to read (and make)
BACKGROUND = "background"  # the worker's name in the turns: it goes after every person
ROSTER_COLUMNS = ["person", "votes", "skipped", "demonstrations", "agreement with majority", "flagged"]


def annotator_name(typed: str | None, login: str | None) -> str:
    """Who a vote or a demonstration is from: the login when the app has logins (so nobody signs as someone
    else, whatever the name box says), otherwise the name typed."""
    return login or (typed or "").strip()


# which item next


@dataclass
class Assignment:
    """Picks the item to hand `annotator` from a queue's votes and the items others hold (lab.store.RoomTables.reserve
    calls it inside its write transaction); says afterwards why there was none."""

    questions: list[str]
    annotator: str
    votes_per_item: int
    between_models: bool | None = None  # count only votes between models (True), on samples (False), or all
    held_by_others: bool = False  # set when every item left to this person is held by someone else now

    def __call__(self, votes: list[VoteRow], held: dict[str, set[str]]) -> str | None:
        counted, mine = Counter(), set()
        for question, who, voted, models in votes:
            if self.between_models is not None and (len(set(models)) > 1) != self.between_models:
                continue
            if who == self.annotator:
                mine.add(question)  # voted or skipped: never handed to them again
            counted[question] += voted
        self.held_by_others = False
        for question in self.questions:
            if question in mine or counted[question] >= self.votes_per_item:
                continue
            if counted[question] + len(held.get(question, set()) - {self.annotator}) < self.votes_per_item:
                return question
            self.held_by_others = True
        return None


def next_item(
    store: Store,
    queue: str,
    questions: list[str],
    annotator: str,
    votes_per_item: int,
    between_models: bool | None = None,
    hold_s: float = HOLD_S,
) -> str:
    """The item `annotator` votes on next, reserved for them for `hold_s` seconds: the first of the queue that they
    have not voted on (or skipped), that lacks votes, and that others do not hold enough of to fill it.

    ValueError in one sentence when there is none: they have done their part, or the rest is in others' hands.
    """
    if not annotator:
        raise ValueError("Type your name first: votes are counted per person.")
    pick = Assignment(questions, annotator, votes_per_item, between_models)
    question = store.reserve(queue, queue_source(queue), annotator, pick, hold_s)
    if question is not None:
        return question
    if pick.held_by_others:
        raise ValueError("The items left are being voted on by others right now: press Next again in a minute.")
    votes = "1 vote" if votes_per_item == 1 else f"{votes_per_item} votes"
    raise ValueError(
        f"You have voted on every item of '{queue}' that still needs votes (each gets {votes}): pick another queue "
        "or type a prompt."
    )


def vote_counts(store: Store, queue: str, between_models: bool | None = None) -> Counter:
    """Votes per item of a queue (skips are not votes), only those between models (True) or on samples of one
    model (False) when `between_models` says so: the two ways of ranking an item fill separately."""
    return Counter(
        c.prompt[-1]["content"]
        for c in store.list_comparisons(source=queue_source(queue))
        if c.verdict != "skipped" and (between_models is None or compares_models(c) == between_models)
    )


def votes_asked(store: Store, scenarios: Mapping[str, ScenarioPreset], queue: str) -> int:
    """The votes each item of `queue` gets: what was asked for in the Ranking tab, else the scenario's default."""
    scenario = scenarios.get(queue)
    return store.votes_per_item(queue, default=scenario.votes_per_item if scenario else 1)


def coverage(
    store: Store, queue: str, questions: list[str], votes_per_item: int, between_models: bool | None = None
) -> tuple[int, int]:
    """(items with all the votes asked for, items) in a queue."""
    counted = vote_counts(store, queue, between_models)
    return sum(counted[q] >= votes_per_item for q in questions), len(questions)


def still_open(
    store: Store, queue: str, questions: list[str], votes_per_item: int, between_models: bool | None = None
) -> list[str]:
    """The queue's items that still lack votes, in order."""
    counted = vote_counts(store, queue, between_models)
    return [q for q in questions if counted[q] < votes_per_item]


# candidates that need no waiting


def ready_candidates(store: Store, queue: str, question: str, k: int, base: str) -> list[dict] | None:
    """Answers that exist already for a queued question, so nobody waits: an evaluation's pair, those the
    background worker (or an earlier voter's request) made with this base model, or those the scenario ships.
    None: they must be made now."""
    if queue.startswith(f"{EVAL_QUEUE}:"):
        return evaluation_pairs(store, queue).get(question)
    made = store.prepared(queue, base).get(question) or shipped_candidates(queue, question, base)
    return made if made and len(made) == k else None


# turns at the model


@dataclass(eq=False)
class Ticket:
    """One request's place in line for the model."""

    who: str
    background: bool = False
    arrived: float = field(default_factory=time.monotonic)
    granted: bool = False


class Turns:
    """Whose turn it is at the model: the person served least recently goes first (round-robin, so one person's
    requests never starve the others'), background work only when no person waits. One turn at a time."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._line: list[Ticket] = []
        self._holder: Ticket | None = None
        self._served: dict[str, float] = {}  # when each person's last turn began

    def _order(self, ticket: Ticket) -> tuple:
        return ticket.background, self._served.get(ticket.who, 0.0), ticket.arrived

    def join(self, who: str, background: bool = False) -> Ticket:
        """Get in line; the ticket is granted at once when the model is free."""
        ticket = Ticket(who, background)
        with self._changed:
            self._line.append(ticket)
            self._grant()
        return ticket

    def _grant(self) -> None:
        if self._holder is None and self._line:
            ticket = min(self._line, key=self._order)
            self._line.remove(ticket)
            self._holder, ticket.granted = ticket, True
            self._served[ticket.who] = time.monotonic()
            self._changed.notify_all()

    def wait(self, ticket: Ticket, timeout: float | None = None) -> bool:
        """Whether the ticket's turn has come (waiting up to `timeout` seconds for it)."""
        with self._changed:
            return self._changed.wait_for(lambda: ticket.granted, timeout)

    def ahead(self, ticket: Ticket) -> int:
        """How many requests go before this one (the one being answered included)."""
        with self._changed:
            if ticket.granted:
                return 0
            mine = self._order(ticket)
            return (self._holder is not None) + sum(self._order(t) < mine for t in self._line if t is not ticket)

    def people_waiting(self) -> bool:
        with self._changed:
            return any(not t.background for t in self._line)

    def leave(self, ticket: Ticket) -> None:
        """End the turn (or give up the place in line) and hand the model to the next."""
        with self._changed:
            if self._holder is ticket:
                self._holder = None
            elif ticket in self._line:
                self._line.remove(ticket)
            self._grant()
            self._changed.notify_all()

    @contextmanager
    def turn(self, who: str, background: bool = False) -> Iterator[Ticket]:
        ticket = self.join(who, background)
        try:
            self.wait(ticket)
            yield ticket
        finally:
            self.leave(ticket)


def waiting_text(ahead: int) -> str:
    """What a person waiting for the model reads."""
    return f"Queued: waiting for {ahead} others' answers…" if ahead > 1 else "Queued: waiting for another's answers…"


# the room: turns plus the worker that prepares ahead


@dataclass
class Preparation:
    """Where preparing a queue ahead stands: `done` of `asked` items have candidates; `problem` if it stopped."""

    asked: int = 0
    done: int = 0
    problem: str = ""

    @property
    def text(self) -> str:
        if self.problem:
            return f"Preparing stopped: {self.problem}"
        if not self.asked:
            return ""
        if self.done >= self.asked:
            return f"{self.done} items prepared: their answers are ready."
        return f"Preparing answers in the background: {self.done} of {self.asked} items ready…"


@dataclass
class _Job:
    queue: str
    question: str
    k: int
    settings: GenerationSettings


class Room:
    """The room of one Lab: turns at its model, and one background worker making candidates ahead."""

    def __init__(self, store: Store, models: ModelManager) -> None:
        self.store, self.models = store, models
        self.turns = Turns()
        self._jobs: deque[_Job] = deque()
        self._lock = threading.Lock()
        self._worker: threading.Thread | None = None
        self.preparations: dict[str, Preparation] = {}  # by queue
        self._closing = False

    @contextmanager
    def model(self, ticket: Ticket, views: list[str]) -> Iterator[LoadedModel]:
        """Hold the model for `ticket` once its turn has come, then end the turn: what `stream_columns` enters."""
        try:
            self.turns.wait(ticket)
            with self.models.use_many(views) as lm:
                yield lm
        finally:
            self.turns.leave(ticket)

    def keep(self, queue: str, question: str, candidates: list[dict]) -> None:
        """Keep answers made on demand, so the next voters on this item see the same ones."""
        if self.models.loaded is not None:
            self.store.add_prepared(queue, question, self.models.loaded.base, candidates)

    def prepare(self, queue: str, questions: list[str], k: int, settings: GenerationSettings) -> Preparation:
        """Make `k` answers for each of these questions in the background, those without any first come first;
        returns the queue's progress, which the worker updates."""
        with self._lock:
            progress = self.preparations.setdefault(queue, Preparation())
            if progress.done >= progress.asked:
                progress.asked = progress.done = 0
            progress.problem = ""
            queued = {(job.queue, job.question) for job in self._jobs}
            for question in questions:
                if (queue, question) not in queued:
                    self._jobs.append(_Job(queue, question, k, settings))
                    progress.asked += 1
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._work, name="prepare-candidates", daemon=True)
                self._worker.start()
        return progress

    def close(self) -> None:
        """Drop the items still to prepare and wait until the worker has left its answer in the middle."""
        with self._lock:
            self._jobs.clear()
            self._closing = True
            worker = self._worker
        if worker is not None:
            worker.join()
        self._closing = False

    def _work(self) -> None:
        from lab.models import ModelError

        while True:
            with self._lock:
                if not self._jobs:
                    self._worker = None
                    return
                job = self._jobs[0]
            progress = self.preparations[job.queue]
            try:
                made = self._make(job)
            except (ModelError, ValueError) as err:
                with self._lock:
                    progress.problem = str(err)
                    self._jobs = deque(j for j in self._jobs if j.queue != job.queue)
                continue
            if made is None:  # a person asked for the model: let them have it, then start this item again
                time.sleep(0.2)
                continue
            with self._lock:
                if self._jobs and self._jobs[0] is job:  # close() may have dropped it meanwhile
                    self._jobs.popleft()
                    progress.done += 1

    def answers(
        self, who: str, question: str, sides: list[Side], count: int, settings: GenerationSettings
    ) -> Iterator[str | list[dict]]:
        """`count` answers to `question` as they are written, all in one batched call, after `who`'s turn at the
        model: while waiting, a line saying why (others' turns); then the candidates so far, each time one grows.
        One side gives `count` samples of it; several give one answer each. The background worker's turn is
        "background": it comes after every person's."""
        from lab.generate import Column, build_messages, stream_columns

        if len(sides) > 1:
            check_sides(sides)
        for side in sides:
            attach_adapter(self.store, self.models, side.view)
        rows = sides if len(sides) > 1 else sides * count
        columns = [Column(build_messages(question, side.system), side.view) for side in rows]
        ticket = self.turns.join(who, background=who == BACKGROUND)
        try:
            while not self.turns.wait(ticket, 0.5):
                yield waiting_text(self.turns.ahead(ticket))
            yield f"Writing {count} answers…"
            texts = stream_columns(lambda: self.model(ticket, [side.view for side in rows]), columns, settings)
            with contextlib.closing(texts):
                for grown in texts:
                    yield [
                        {"text": text.strip(), "model": side.label, "settings": settings.sampling()}
                        for text, side in zip(grown, rows, strict=True)
                    ]
        finally:
            self.turns.leave(ticket)

    def _make(self, job: _Job) -> list[dict] | None:
        """The job's candidates, made and kept, or None if a person arrived while they were being made."""
        while self.models.loading and not self._closing:
            time.sleep(0.5)
        if self._closing:
            return None
        base = self.models.require().base
        if len(self.store.prepared(job.queue, base).get(job.question) or []) == job.k:
            return []
        candidates: list[dict] = []
        steps = self.answers(BACKGROUND, job.question, [Side(BASE_VIEW)], job.k, job.settings)
        with contextlib.closing(steps):
            for step in steps:  # a person asking for the model (here or in Chat, Compare…) comes first
                if self._closing or (
                    isinstance(step, list) and (self.turns.people_waiting() or self.models.asked_for())
                ):
                    return None
                if isinstance(step, list):
                    candidates = step
        self.store.add_prepared(job.queue, job.question, base, candidates)
        return candidates


# the instructor's view


def roster(store: Store) -> pd.DataFrame:
    """Per person: votes (skips apart), demonstrations written, agreement with the others' majority and whether
    the Arena flags them (lab.arena.annotator_report), busiest first."""
    from lab.arena import annotator_report, is_imported

    comparisons = [c for c in store.list_comparisons() if c.annotator and not is_imported(c)]
    quality = annotator_report(comparisons).set_index("annotator")
    skipped = Counter(c.annotator for c in comparisons if c.verdict == "skipped")
    demos = Counter(d.author for d in store.list_demonstrations() if d.author)
    people = sorted({c.annotator for c in comparisons} | set(demos))
    rows = [
        {
            "person": name,
            "votes": int(quality["votes"].get(name, 0)),
            "skipped": skipped[name],
            "demonstrations": demos[name],
            "agreement with majority": quality["agreement with majority"].get(name),
            "flagged": bool(quality["flagged"].get(name, False)),
        }
        for name in people
    ]
    frame = pd.DataFrame(rows, columns=ROSTER_COLUMNS)
    return frame.sort_values(["votes", "demonstrations"], ascending=False, kind="stable").reset_index(drop=True)
