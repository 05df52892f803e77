"""Preference data: votes into TRL's preference format, and preference files into votes.

A K-way ranking exports as every ordered pair (better, worse): K·(K−1)/2 pairs
when there are no ties; tied candidates give no pair. "Both bad" votes give no
pair either, but are exported as unpaired negatives, with the imported unpaired
ratings (TRL's unpaired `prompt`/`completion`/`label` format, as KTO takes it).
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import TYPE_CHECKING

from lab.formats import DataFileError, write_jsonl
from lab.formats.importing import PreferenceImport, import_preferences, preview_preferences
from lab.formats.unpaired import unpaired_rows
from lab.store import Comparison, Store

if TYPE_CHECKING:
    from collections.abc import Mapping

    from lab.presets import ScenarioPreset

TYPED_QUEUE = "(type your own below)"  # no queue: the voter types each prompt
POOL_QUEUE = "workspace prompt pool"  # every prompt in the workspace; any other queue name is a scenario
EVAL_QUEUE = "eval"  # eval:RUN:MODEL — an evaluation's answers by MODEL against its reference's, made in advance
# What each way of making candidates feeds: only answers from different models meet in the leaderboard.
SAMPLES_FEED = "Feeds preference pairs (reward model / DPO training); not the leaderboard, since one model answers."
MODELS_FEED = "Feeds the model leaderboard and win rates, and preference pairs too."


def ranked_pairs(ranks: list[int]) -> list[tuple[int, int]]:
    """(better, worse) candidate indices for every pair with different ranks (1 = best)."""
    pairs = []
    for i, j in combinations(range(len(ranks)), 2):
        if ranks[i] < ranks[j]:
            pairs.append((i, j))
        elif ranks[j] < ranks[i]:
            pairs.append((j, i))
    return pairs


def _turn(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def preference_rows(comparisons: list[Comparison]) -> list[dict]:
    """TRL conversational preference rows: {"prompt": [...], "chosen": [...], "rejected": [...]}."""
    rows = []
    for c in comparisons:
        if c.verdict != "ranked":
            continue
        for better, worse in ranked_pairs(c.ranks):
            rows.append(
                {
                    "prompt": c.prompt,
                    "chosen": _turn(c.candidates[better]["text"]),
                    "rejected": _turn(c.candidates[worse]["text"]),
                }
            )
    return rows


def negative_rows(comparisons: list[Comparison]) -> list[dict]:
    """Answers judged "both bad", as TRL conversational unpaired rows with label False."""
    return [
        {"prompt": c.prompt, "completion": _turn(candidate["text"]), "label": False}
        for c in comparisons
        if c.verdict == "both-bad"
        for candidate in c.candidates
    ]


def unpaired_export_rows(store: Store, exclude_annotators: tuple[str, ...] = ()) -> list[dict]:
    """TRL's unpaired rows for KTO: the imported good and bad ratings, then the answers voted "both bad"."""
    return unpaired_rows(store.list_unpaired()) + negative_rows(store.list_comparisons(exclude_annotators))


def export_preferences(
    store: Store, path: str | Path, exclude_annotators: tuple[str, ...] = (), negatives: bool = False
) -> int:
    """Write the preference pairs (or, with negatives=True, the unpaired rows: ratings and both-bad answers) as
    JSONL; returns the count.

    Written beside the target and moved into place, so a failure never leaves half a file.
    """
    path = Path(path)
    if negatives:
        rows = unpaired_export_rows(store, exclude_annotators)
    else:
        rows = preference_rows(store.list_comparisons(exclude_annotators))
    if not rows:
        raise DataFileError(
            "No votes that make preference pairs yet."
            if not negatives
            else "No both-bad votes yet (and no unpaired ratings)."
        )
    write_jsonl(path, rows)
    return len(rows)


# import: every preference shape is read in lab.formats (pairs, rankings, unpaired ratings); re-exported here

__all__ = ["PreferenceImport", "import_preferences", "preview_preferences"]


# collecting votes


@dataclass
class Side:
    """Where candidates come from: a model view ('base' or an adapter) with an optional system prompt."""

    view: str = "base"
    system: str = ""

    @property
    def label(self) -> str:
        return f"{self.view} + system prompt" if self.system.strip() else self.view


def check_sides(sides: list[Side]) -> None:
    """Two sides must differ (in model or system prompt), or their votes would never reach the leaderboard."""
    labels = [(side.view, side.system.strip()) for side in sides]
    if len(set(labels)) < len(labels):
        raise ValueError("Model A and model B are the same: pick two different models, or give one a system prompt.")


def shuffled_order(k: int, rng: random.Random | None = None) -> list[int]:
    """A random display order, so neither position nor model gives the answer away."""
    order = list(range(k))
    (rng or random.Random()).shuffle(order)
    return order


def ranks_from_positions(positions: list[int], shown: list[int]) -> list[int]:
    """Ranks given to the displayed positions (left to right) → ranks of the candidates themselves."""
    ranks = [0] * len(shown)
    for position, candidate in enumerate(shown):
        ranks[candidate] = positions[position]
    return ranks


def vote_ranks(choice: str, shown: list[int], positions: list[int] = ()) -> tuple[list[int] | None, str]:
    """A voter's choice → (ranks of the candidates, verdict).

    choice is "A"/"B"/... (that displayed answer is best, the others tie below it; pairs only),
    "ranking" (positions[p] is the rank given to the answer displayed at p), "tie", "both-bad" or "skipped".
    """
    count = len(shown)
    if choice == "ranking":
        ranks = ranks_from_positions(list(positions[:count]), shown)
        return ranks, "tie" if len(set(ranks)) == 1 else "ranked"
    if len(choice) == 1 and choice.isalpha():
        if count > 2:
            raise ValueError("With more than two answers, give each a rank and press Submit ranking.")
        winner = shown["ABCDEFGH".index(choice)]
        return [1 if n == winner else 2 for n in range(count)], "ranked"
    if choice == "tie":
        return [1] * count, "tie"
    return None, choice


def compares_models(c: Comparison) -> bool:
    """Whether the candidates came from different models (a leaderboard battle) or are samples of one model."""
    return len({candidate["model"] for candidate in c.candidates}) > 1


def queue_progress(
    store: Store, questions: list[str], annotator: str, source: str, between_models: bool | None = None
) -> tuple[int, str | None]:
    """How many of the queue's questions this annotator has voted on (or skipped), and the next one.

    With `between_models` set, only comparisons made that way count (answers of different models, or samples of
    one), so a queue done with one model's samples can be ranked again between two models.
    """
    done = {
        c.prompt[-1]["content"]
        for c in store.list_comparisons(source=source)
        if c.annotator == annotator and (between_models is None or compares_models(c) == between_models)
    }
    remaining = [q for q in questions if q not in done]
    return len(questions) - len(remaining), (remaining[0] if remaining else None)


def queue_source(queue: str) -> str:
    """The `source` a vote on a queued question records, so progress is counted per queue."""
    return f"queue:{queue}"


def queue_questions(store: Store, scenarios: Mapping[str, ScenarioPreset], queue: str) -> list[str]:
    """The questions a ranking queue holds, in order: a scenario's questions, the workspace's prompts, or none."""
    from lab.scenarios import queue_questions as scenario_questions

    if queue == TYPED_QUEUE:
        return []
    if queue == POOL_QUEUE:
        return [p.text for p in store.list_prompts()]
    if queue.startswith(f"{EVAL_QUEUE}:"):
        return list(evaluation_pairs(store, queue))
    return scenario_questions(store, scenarios[queue].name)


def send_to_ranking(store: Store, run_id: str, model: str) -> str:
    """Offer an evaluation's pairs for human judgement: per prompt, the reference's answer and `model`'s, as a
    ranking queue (listed by `evaluation_queues`); returns the queue's name."""
    from lab.train.evaluation import read_report

    report = read_report(store.runs_dir / run_id)
    if report is None:
        raise ValueError(f"Run {run_id} has no evaluation report yet: wait for it to finish.")
    models = [row["model"] for row in report["models"][1:]]
    if model not in models:
        raise ValueError(f"Pick one of the models compared with {report['reference']}: {', '.join(models)}.")
    sent = store.runs_dir / run_id / "ranking.json"
    queued = json.loads(sent.read_text(encoding="utf-8")) if sent.is_file() else []
    sent.write_text(json.dumps(sorted({*queued, model})), encoding="utf-8")
    return f"{EVAL_QUEUE}:{run_id}:{model}"


def evaluation_queues(store: Store) -> list[str]:
    """The ranking queues of evaluations sent for human judgement, newest run first."""
    queues = []
    for run in store.list_runs(("done",)):
        sent = store.runs_dir / run.id / "ranking.json"
        if run.method == "eval" and sent.is_file():
            queues += [f"{EVAL_QUEUE}:{run.id}:{model}" for model in json.loads(sent.read_text(encoding="utf-8"))]
    return queues


def evaluation_pairs(store: Store, queue: str) -> dict[str, list[dict]]:
    """An evaluation queue's questions, each with its two answers as candidates (the reference's, then the
    model's); prompts where both answered alike are left out, since there is nothing to judge."""
    from lab.train.evaluation import read_report

    _, run_id, model = queue.split(":", 2)
    report, path = read_report(store.runs_dir / run_id), store.runs_dir / run_id / "answers.jsonl"
    if report is None or not path.is_file():
        return {}
    pairs = {}
    for row in read_json_lines(path):
        answers = {name: row["answers"][name]["text"] for name in (report["reference"], model)}
        if len({text.strip() for text in answers.values()}) == 2:
            pairs[row["prompt"][-1]["content"]] = [
                {"text": text, "model": name, "settings": {"evaluation": run_id}} for name, text in answers.items()
            ]
    return pairs


def prepared_candidates(store: Store, queue: str, question: str) -> list[dict] | None:
    """The candidates a queue made in advance for this question (an evaluation's pair), or None: generate them."""
    if not queue.startswith(f"{EVAL_QUEUE}:"):
        return None
    return evaluation_pairs(store, queue).get(question)


def read_json_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@dataclass(frozen=True)
class QueueStatus:
    """Where one annotator stands in one queue."""

    queue: str
    annotator: str
    done: int
    total: int
    upcoming: str | None  # the next question not yet voted on or skipped; None when the queue is done or empty
    between_models: bool | None = None  # counting only votes between models (True), on samples (False), or all

    @property
    def text(self) -> str:
        """One Markdown line for the screen; empty for a queue without questions."""
        if not self.total:
            return ""
        how = {True: " between models", False: " on samples of one model", None: ""}[self.between_models]
        return f"**{self.done} of {self.total} done**{how} in '{self.queue}' by {self.annotator}"


def queue_status(
    store: Store,
    scenarios: Mapping[str, ScenarioPreset],
    queue: str,
    annotator: str,
    between_models: bool | None = None,
) -> QueueStatus:
    """How far `annotator` is through `queue` (counting only votes made that way, when `between_models` is set),
    and the question that comes next."""
    questions = queue_questions(store, scenarios, queue)
    if not questions:
        return QueueStatus(queue, annotator, 0, 0, None, between_models)
    done, upcoming = queue_progress(store, questions, annotator, queue_source(queue), between_models)
    return QueueStatus(queue, annotator, done, len(questions), upcoming, between_models)


# rewards beside the answers: a reward model's view, shown to the person, never stored with the text


def order_by_reward(shown: list[int], rewards: list[float]) -> list[int]:
    """The display order re-sorted best-first: `shown[p]` is the candidate at position p, `rewards[c]` the reward of
    candidate c. Equal rewards keep their current positions, so sorting twice changes nothing.

    The vote records the returned order, so ranks and position-bias counts follow what the voter saw.
    """
    if sorted(shown) != list(range(len(rewards))):
        raise ValueError(f"{len(shown)} answers shown but {len(rewards)} rewards: score every candidate.")
    return sorted(shown, key=lambda candidate: -rewards[candidate])  # sorted() is stable: ties keep their place


Scorer = Callable[[list[dict], str], float]  # (the conversation before a reply, the reply) -> its reward


@dataclass
class ReplyRewards:
    """The reward of each assistant reply in a conversation, and what was scored, kept to score only new replies."""

    rewards: list[float | None]  # one per assistant reply, in order; None where the model cannot read it
    known: dict[str, float | None]  # by reply_key, for the next call
    problem: str = ""  # why some reply has no reward (the first reason met while scoring this time), or ""


def reply_key(turns: list[dict]) -> str:
    """A reply's identity: the conversation up to and including it, so a retried or edited reply is scored anew."""
    return hashlib.sha1(json.dumps(turns, ensure_ascii=False).encode()).hexdigest()


def score_replies(turns: list[dict], scorer: Scorer, known: Mapping[str, float | None] | None = None) -> ReplyRewards:
    """Score each assistant reply in `turns` (plain {"role", "content"} messages, no system prompt) given the turns
    before it, reusing `known` rewards, so after a turn only the new reply is scored.

    A reply the reward model cannot read (a ValueError from `scorer`, such as too many tokens) gets None, and says
    why in `problem`; it is remembered as such, so it is not tried again after every turn.
    """
    known = dict(known or {})
    rewards, kept, problem = [], {}, ""
    for index, message in enumerate(turns):
        if message["role"] != "assistant" or not message["content"].strip():
            continue
        key = reply_key(turns[: index + 1])
        if key not in known:
            try:
                known[key] = float(scorer(turns[:index], message["content"]))
            except ValueError as err:
                known[key], problem = None, problem or str(err)
        kept[key] = known[key]
        rewards.append(known[key])
    return ReplyRewards(rewards, kept, problem)
