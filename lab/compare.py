"""Compare chat: one message answered by two or three model views side by side in one batched pass, the vote
that says which answered better, and the conversation exported as Markdown or JSON.

Each column is a view ('base' or an adapter) with its own system prompt and its own history: every column
answers the same messages, each going on from its own earlier replies. Each reply keeps who made it and how (an
Answer), so a vote or an export names the model, system prompt and settings of every reply, even after a column
was switched to another view.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from functools import partial

from lab.adapters import attach_adapter
from lab.generate import (
    Column,
    GenerationSettings,
    Message,
    PromptTooLongError,
    build_messages,
    encode_chat,
    stream_columns,
)
from lab.models import ModelManager
from lab.preferences import Side
from lab.refs import ModelRef
from lab.store import Comparison, Store

MIN_COLUMNS, MAX_COLUMNS = 2, 3
SOURCE = "compare"  # the source of the votes cast here


@dataclass
class Answer:
    """Who made one reply and how; `reward` once a reward model scored it (`reward_model` is that run's id)."""

    model: str  # the model reference, e.g. 'smollm2-135m-instruct · base + system prompt'
    view: str
    system: str
    settings: dict  # temperature, top_p, max_new_tokens, seed
    reward: float | None = None
    reward_model: str = ""


@dataclass
class ColumnLog:
    """One column's conversation as shown (user and assistant turns, no system prompt), one Answer per reply."""

    messages: list[Message] = field(default_factory=list)
    answers: list[Answer] = field(default_factory=list)

    @property
    def answered(self) -> bool:
        """Whether the column ends with a reply that has text."""
        return bool(self.messages and self.messages[-1]["role"] == "assistant" and self.messages[-1]["content"].strip())

    def drop_empty_reply(self) -> None:
        """Forget a last reply that got no text (stopped before its first token), with its record."""
        if self.messages and self.messages[-1]["role"] == "assistant" and not self.answered:
            self.messages.pop()
            self.answers.pop()


def answer_for(base: str, side: Side, settings: GenerationSettings) -> Answer:
    """The record of a reply that `side` of the loaded `base` is about to make with these settings."""
    model = str(ModelRef(base, side.view)) + (" + system prompt" if side.system.strip() else "")
    return Answer(model, side.view, side.system.strip(), settings.sampling())


def stream_compare(
    store: Store,
    models: ModelManager,
    message: str,
    sides: list[Side],
    histories: list[list[Message]] | None,
    settings: GenerationSettings,
) -> Iterator[list[str]]:
    """Every column's reply to `message` as it grows, all from one batched pass over the loaded base, each row with
    its own adapter (a trained run's is attached by its id first). `histories[i]` is column i's earlier turns.

    Refusals come before anything is generated: a column count out of range, an empty message, a conversation
    too long for the context (naming its column), an adapter that does not fit the loaded base."""
    if not MIN_COLUMNS <= len(sides) <= MAX_COLUMNS:
        raise ValueError(f"Compare {MIN_COLUMNS} or {MAX_COLUMNS} columns, not {len(sides)}.")
    histories = histories or [[] for _ in sides]
    columns = [
        Column(build_messages(message, side.system, history), side.view)
        for side, history in zip(sides, histories, strict=True)
    ]
    for number, column in enumerate(columns, 1):  # said before the columns wait for the model behind others
        try:
            encode_chat(models.require(), column.messages, settings.max_new_tokens)
        except PromptTooLongError as err:
            raise PromptTooLongError(f"Column {number}: {err}") from err
    for side in sides:
        attach_adapter(store, models, side.view)
    return stream_columns(partial(models.use_many, [side.view for side in sides]), columns, settings)


def comparison(columns: list[ColumnLog], picked: int, annotator: str = "") -> Comparison:
    """The vote "column `picked` is better": every column's last reply is a candidate with its model reference and
    settings (the system prompt among them), the picked one ranked 1 and the others 2, shown left to right.

    The prompt is the picked column's conversation before its reply; the other columns answered the same message,
    each after its own earlier replies. A missing reply, a different last message or a reply the same as the
    picked one is refused in one sentence (ValueError)."""
    if not 0 <= picked < len(columns):
        raise ValueError(f"There is no column {picked + 1}.")
    for number, column in enumerate(columns, 1):
        if not column.answered:
            raise ValueError(f"Column {number} has no reply yet: send a message and wait for every answer.")
    message = columns[picked].messages[-2]["content"]
    texts = [column.messages[-1]["content"] for column in columns]
    for number, (column, text) in enumerate(zip(columns, texts, strict=True), 1):
        if column.messages[-2]["content"] != message:
            raise ValueError(f"Column {number} answered another message: send this one to every column first.")
        if number != picked + 1 and " ".join(text.split()) == " ".join(texts[picked].split()):
            raise ValueError(f"Column {number}'s reply is the same as column {picked + 1}'s: nothing to prefer.")
    candidates = [
        {"text": text, "model": column.answers[-1].model, "settings": _settings(column.answers[-1])}
        for column, text in zip(columns, texts, strict=True)
    ]
    ranks = [1 if index == picked else 2 for index in range(len(columns))]
    prompt = columns[picked].messages[:-1]
    return Comparison(prompt, candidates, list(range(len(columns))), ranks, "ranked", annotator.strip(), source=SOURCE)


def score_last_replies(columns: list[ColumnLog], run_id: str, scorer: Callable[[list[Message], str], float]) -> str:
    """Give each column's last reply its reward from reward run `run_id`, given the turns before it (the system
    prompt is the model's instruction, not what the reply is judged on), unless that run scored it already.

    A reply the reward model cannot read (a ValueError from `scorer`) keeps no reward; returns why, or ""."""
    problem = ""
    for column in columns:
        if not column.answered or column.answers[-1].reward_model == run_id:
            continue
        answer = column.answers[-1]
        try:
            answer.reward = float(scorer(column.messages[:-1], column.messages[-1]["content"]))
        except ValueError as err:
            answer.reward, problem = None, problem or str(err)
        answer.reward_model = run_id
    return problem


def to_json(columns: list[ColumnLog]) -> str:
    """Every column's conversation, each reply with who made it and how (and its reward, once scored)."""
    data = {"columns": [{"column": n, "messages": _turns(column)} for n, column in enumerate(columns, 1)]}
    return json.dumps(data, indent=2, ensure_ascii=False)


def to_markdown(columns: list[ColumnLog]) -> str:
    """The compare chat as a readable transcript: one section per column, each reply under its model, system
    prompt, settings and reward."""
    parts = ["# Compare chat"]
    for number, column in enumerate(columns, 1):
        parts.append(f"## Column {number}")
        system = None
        for turn in _turns(column):
            if turn["role"] == "user":
                parts.append(f"**User:** {turn['content']}")
                continue
            if turn["system"] != system:
                system = turn["system"]
                parts.append(f"*System prompt:* {system or '(none)'}")
            parts.append(f"**{turn['model']}** ({_describe(turn)}):\n\n{turn['content']}")
    return "\n\n".join(parts) + "\n"


def _turns(column: ColumnLog) -> list[dict]:
    """The conversation with each assistant turn carrying its Answer's fields."""
    answers = iter(column.answers)
    return [m if m["role"] != "assistant" else {**m, **asdict(next(answers))} for m in column.messages]


def _settings(answer: Answer) -> dict:
    return {**answer.settings, "system": answer.system}


def _describe(turn: dict) -> str:
    """temperature 0.7, top-p 0.9, at most 256 new tokens, seed 7, reward +0.42 by rm-1"""
    s = turn["settings"]
    seed = "random seed" if s["seed"] is None else f"seed {s['seed']}"
    text = f"temperature {s['temperature']}, top-p {s['top_p']}, at most {s['max_new_tokens']} new tokens, {seed}"
    if turn["reward"] is not None:
        text += f", reward {turn['reward']:+.2f} by {turn['reward_model']}"
    return text
