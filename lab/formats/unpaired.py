"""Unpaired shapes (one completion labelled good or bad) in, TRL's unpaired preference format out (for KTO).

A labelled completion is a rating, never a demonstration: SFT on it would teach the answers marked bad.
Turning the good ones into demonstrations is a separate, explicit step (`good_demonstrations`).
"""

from __future__ import annotations

from collections import Counter

from lab.formats.messages import label, parse_json_cell, text, turns
from lab.store import Demonstration, UnpairedRating

Unpaired = tuple[list[dict], str, bool]  # (prompt messages, completion, good)


def trl_unpaired_row(row: dict, notes: Counter) -> Unpaired:
    """TRL's unpaired preference: `prompt`, `completion`, boolean `label`; standard or conversational."""
    good = label(row.get("label"), "label")
    prompt, completion = (parse_json_cell(row.get(c), c) for c in ("prompt", "completion"))
    if isinstance(prompt, list) or isinstance(completion, list):
        answer = turns(completion, "completion")
        if len(answer) != 1 or answer[0]["role"] != "assistant":
            raise ValueError("'completion' must be one assistant message")
        return turns(prompt, "prompt"), answer[0]["content"], good
    return [{"role": "user", "content": text(row, "prompt")}], text(row, "completion"), good


def kto_row(row: dict, notes: Counter) -> Unpaired:
    """LLaMA-Factory's KTO: a conversation (`messages` or `conversations`) whose last answer `kto_tag` labels."""
    # by value, not by key: Parquet gives every row every column, None where a row had no such key
    column = "messages" if row.get("messages") is not None else "conversations"
    tag = "kto_tag" if row.get("kto_tag") is not None else "label"
    good = label(row.get(tag), tag)
    messages = turns(row.get(column), column)
    if len(messages) < 2 or messages[-1]["role"] != "assistant":
        raise ValueError(f"'{column}' must end with the assistant's answer that '{tag}' labels")
    return messages[:-1], messages[-1]["content"], good


def unpaired_rows(ratings: list[UnpairedRating]) -> list[dict]:
    """TRL conversational unpaired rows: {"prompt": [...], "completion": [assistant turn], "label": bool}."""
    return [
        {
            "prompt": r.prompt,
            "completion": [{"role": "assistant", "content": r.completion}],
            "label": r.label == "good",
        }
        for r in ratings
    ]


def good_demonstrations(ratings: list[UnpairedRating], source: str) -> list[Demonstration]:
    """The good ratings as demonstrations (prompt + completion); the bad ones are left out."""
    return [
        Demonstration(messages=[*r.prompt, {"role": "assistant", "content": r.completion}], source=source)
        for r in ratings
        if r.label == "good"
    ]
