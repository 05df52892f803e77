"""Preference shapes (a prompt with a better and a worse answer, or scored answers) into (prompt, answers, ranks).

Each converter returns the prompt as messages, the answers' texts, and their ranks (1 = best; equal = a tie).
"""

from __future__ import annotations

from collections import Counter

from lab.formats.conversations import alpaca_prompt, sharegpt_row
from lab.formats.messages import parse_json_cell, split_shared, split_text, transcript, turn, turns

Pair = tuple[list[dict], list[str], list[int]]


def _prompt(value: object) -> list[dict]:
    value = parse_json_cell(value, "prompt")
    if isinstance(value, str) and value.strip():
        return [{"role": "user", "content": value}]
    if isinstance(value, list) and value:
        return turns(value, "prompt")
    raise ValueError("the prompt must be text or a list of messages")


def _answer(value: object, column: str) -> list[dict] | str:
    """An answer as text, or as messages: one message object (LLaMA-Factory) or a list (TRL, UltraFeedback)."""
    value = parse_json_cell(value, column)
    if isinstance(value, dict):
        return [turn(value, f"'{column}'")]
    if isinstance(value, list):
        return turns(value, column)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"'{column}' is empty")
    return value


def _answers_to(prompt: list[dict], chosen: list[dict] | str, rejected: list[dict] | str) -> tuple[str, str]:
    """The two answers' texts, where each may be text, the assistant turn, or the whole conversation again."""
    if isinstance(chosen, str) and isinstance(rejected, str):
        return chosen, rejected
    if isinstance(chosen, str) or isinstance(rejected, str):
        raise ValueError("'chosen' and 'rejected' must both be text or both be messages")
    if len(chosen) == 1 and len(rejected) == 1:
        for name, answer in (("chosen", chosen), ("rejected", rejected)):
            if answer[0]["role"] != "assistant":
                raise ValueError(f"'{name}' must be the assistant's answer")
        return chosen[0]["content"], rejected[0]["content"]
    shared, better, worse = split_shared(chosen, rejected)  # UltraFeedback repeats the prompt in both
    if shared != prompt:
        raise ValueError("'chosen' and 'rejected' hold a conversation that is not the prompt before the answer")
    return better, worse


def _answers(prompt: list[dict], row: dict) -> list[str]:
    return list(_answers_to(prompt, _answer(row.get("chosen"), "chosen"), _answer(row.get("rejected"), "rejected")))


def preference_row(row: dict, notes: Counter) -> Pair:
    """TRL's explicit-prompt preference: `prompt`, `chosen`, `rejected`, standard or conversational."""
    prompt = _prompt(row.get("prompt"))
    return prompt, _answers(prompt, row), [1, 2]


def ultrafeedback_row(row: dict, notes: Counter) -> Pair:
    """UltraFeedback-binarized: prompt, chosen and rejected conversations, and `score_chosen`/`score_rejected`."""
    prompt, texts, _ = preference_row(row, notes)
    try:
        better, worse = float(row["score_chosen"]), float(row["score_rejected"])
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError("'score_chosen' and 'score_rejected' must be numbers") from err
    if better < worse:
        raise ValueError(f"'score_chosen' ({better:g}) is below 'score_rejected' ({worse:g})")
    if better == worse:
        notes["tied (no pair)"] += 1
    return prompt, texts, [1, 1] if better == worse else [1, 2]


def llamafactory_row(row: dict, notes: Counter) -> Pair:
    """LLaMA-Factory's sharegpt preference: `conversations` (the prompt), `chosen` and `rejected` messages."""
    prompt = sharegpt_row(row, notes)
    return prompt, _answers(prompt, row), [1, 2]


def alpaca_preference_row(row: dict, notes: Counter) -> Pair:
    """LLaMA-Factory's alpaca preference: instruction (input, system, history) with `chosen` and `rejected` texts."""
    prompt = alpaca_prompt(row)
    return prompt, _answers(prompt, row), [1, 2]


def hh_row(row: dict, notes: Counter) -> Pair:
    """Anthropic HH-RLHF: `chosen` and `rejected` are whole transcripts sharing all but the last answer."""
    prompt, better, worse = split_shared(
        transcript(row.get("chosen"), "chosen"), transcript(row.get("rejected"), "rejected")
    )
    return prompt, [better, worse], [1, 2]


def implicit_row(row: dict, notes: Counter) -> Pair:
    """TRL's implicit prompt: only `chosen` and `rejected`, conversations or texts with a common beginning."""
    chosen, rejected = _answer(row.get("chosen"), "chosen"), _answer(row.get("rejected"), "rejected")
    if isinstance(chosen, str) and isinstance(rejected, str):
        prompt, better, worse = split_text(chosen, rejected)
        return [{"role": "user", "content": prompt}], [better, worse], [1, 2]
    if isinstance(chosen, str) or isinstance(rejected, str):
        raise ValueError("'chosen' and 'rejected' must both be text or both be messages")
    prompt, better, worse = split_shared(chosen, rejected)
    return prompt, [better, worse], [1, 2]


def scored_row(row: dict, notes: Counter) -> Pair:
    """The lab's K-way shape: `prompt` and `responses`, each with a text and a score (higher is better)."""
    prompt = _prompt(row.get("prompt"))
    responses = parse_json_cell(row.get("responses"), "responses")
    if not isinstance(responses, list) or len(responses) < 2:
        raise ValueError("'responses' must list at least two answers with scores")
    try:
        texts = [r["text"] for r in responses]
        scores = [float(r["score"]) for r in responses]
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError("each response needs a text and a numeric score") from err
    if not all(isinstance(t, str) and t.strip() for t in texts):
        raise ValueError("'text' is empty")
    return prompt, texts, [1 + sum(other > score for other in scores) for score in scores]
