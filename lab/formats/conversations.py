"""Demonstration shapes (one conversation per row) into messages, and demonstrations out in TRL's format.

Each converter takes a row and a Counter of notes (what the description of the file says about it) and returns
the conversation as {"role", "content"} messages, not yet checked against the conversation rules.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from lab.formats.messages import (
    looks_like_transcript,
    optional_text,
    parse_json_cell,
    system_turn,
    text,
    transcript,
    turns,
)
from lab.formats.read import DataFileError, write_jsonl
from lab.store import Demonstration, Store


def messages_row(row: dict, notes: Counter) -> list[dict]:
    """TRL's conversational language modelling, and OpenAI's chat fine-tuning format with its `weight`s.

    An assistant turn with weight 0 is context, not a target: it stays in the conversation. The lab learns from
    a demonstration's assistant turns up to its last one, so a conversation whose last assistant turns have
    weight 0 is cut after its last weighted turn (what follows it is not to be learned), and one without any
    weighted assistant turn is refused.
    """
    raw = parse_json_cell(row.get("messages"), "messages")
    messages = turns(raw, "messages")
    weights = [m.get("weight") if isinstance(m, dict) else None for m in raw]
    if any(w is not None for w in weights):
        weighted = [
            i for i, (m, w) in enumerate(zip(messages, weights, strict=True)) if m["role"] == "assistant" and w != 0
        ]
        if not weighted:
            raise ValueError("every assistant turn has weight 0, so there is no response to learn")
        if weighted[-1] < len(messages) - 1:
            notes["cut after the last weighted assistant turn"] += 1
            messages = messages[: weighted[-1] + 1]
        context = [i for i, m in enumerate(messages) if m["role"] == "assistant" and weights[i] == 0]
        if context:
            notes["with assistant turns kept as context (weight 0)"] += 1
        messages = [{**m, "weight": 0} if i in context else m for i, m in enumerate(messages)]
    return messages


def sharegpt_row(row: dict, notes: Counter) -> list[dict]:
    """ShareGPT / FastChat: `conversations` (from/value or role/content), and an optional separate `system`."""
    messages = turns(row.get("conversations"), "conversations")
    if system_turn(row) and messages and messages[0]["role"] == "system":
        raise ValueError("there is a 'system' field and a system turn; keep one")
    return [*system_turn(row), *messages]


def alpaca_prompt(row: dict) -> list[dict]:
    """Alpaca's prompt: system, then `history` ([instruction, response] pairs), then instruction and input."""
    history = parse_json_cell(row.get("history"), "history") or []
    if not isinstance(history, list):
        raise ValueError("'history' must be a list of [instruction, response] pairs")
    before = []
    for number, pair in enumerate(history, start=1):
        if not (isinstance(pair, list | tuple) and len(pair) == 2 and all(isinstance(t, str) for t in pair)):
            raise ValueError(f"history entry {number} must be a pair [instruction, response] of texts")
        before += [{"role": "user", "content": pair[0]}, {"role": "assistant", "content": pair[1]}]
    instruction, extra = text(row, "instruction"), optional_text(row, "input")
    user = f"{instruction}\n\n{extra}" if extra.strip() else instruction
    return [*system_turn(row), *before, {"role": "user", "content": user}]


def alpaca_row(row: dict, notes: Counter) -> list[dict]:
    """Alpaca (and LLaMA-Factory's alpaca): instruction, optional input, system and history, and output."""
    if row.get("history"):
        notes["with history"] += 1
    return [*alpaca_prompt(row), {"role": "assistant", "content": text(row, "output")}]


def prompt_completion_row(row: dict, notes: Counter) -> list[dict]:
    """TRL's prompt-completion, standard (texts, with an optional `system`) or conversational (message lists)."""
    prompt, completion = (parse_json_cell(row.get(c), c) for c in ("prompt", "completion"))
    if isinstance(prompt, list) or isinstance(completion, list):
        return turns(prompt, "prompt") + turns(completion, "completion")
    return [
        *system_turn(row),
        {"role": "user", "content": text(row, "prompt")},
        {"role": "assistant", "content": text(row, "completion")},
    ]


def text_row(row: dict, notes: Counter) -> list[dict]:
    """TRL's standard language modelling: only a transcript with Human:/Assistant: turns has a response to learn."""
    value = text(row, "text")
    if not looks_like_transcript(value):
        raise ValueError(
            "plain 'text' has no prompt and response; the lab imports conversations "
            "(or Human:/Assistant: transcripts in 'text')"
        )
    return transcript(value, "text")


# export and training examples


def export_demonstrations(store: Store, path: str | Path, origins: list[str] | None = None) -> int:
    """Write accepted, live demonstrations (oldest first) as TRL conversational JSONL; returns how many.

    The file is written beside the target and moved into place, so a failure never leaves half a file.
    """
    path = Path(path)
    if path.suffix.lower() != ".jsonl":
        raise DataFileError(f"Cannot export to '{path.name}': demonstrations export to a .jsonl file.")
    if not path.parent.is_dir():
        raise DataFileError(f"There is no folder {path.parent} to export into.")
    demos = store.list_demonstrations(origins=origins, status="accepted")[::-1]
    if not demos:
        raise DataFileError("No accepted demonstrations to export.")
    write_jsonl(path, [{"messages": demo.messages} for demo in demos])
    return len(demos)


def sft_examples(demos: list[Demonstration]) -> list[dict]:
    """TRL conversational prompt-completion examples, one per learned assistant turn, so loss falls on every
    response that is to be learned.

    Each is {"prompt": the messages before that assistant turn (system included), "completion": [that turn]}:
    user/assistant gives 1 example, user/assistant/user/assistant gives 2. An assistant turn with weight 0
    (OpenAI's fine-tuning format) is context only: it appears in later prompts, never as a completion.
    """
    plain = lambda m: {"role": m["role"], "content": m["content"]}  # noqa: E731
    examples = []
    for demo in demos:
        for i, message in enumerate(demo.messages):
            if message["role"] == "assistant" and message.get("weight", 1) != 0:
                examples.append({"prompt": [plain(m) for m in demo.messages[:i]], "completion": [plain(message)]})
    return examples
