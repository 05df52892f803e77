"""Rewards: the one scoring function over a trained reward model, and loading a reward run onto its base.

A reward model is a base loaded with `kind="reward"` (a one-score head) plus a reward run's adapter, which holds
the LoRA update and the trained head. Scoring renders each (prompt, response) exactly as TRL's RewardTrainer
rendered its training pairs: the chat template over the prompt's messages and one assistant turn, no generation
prompt, right padding; the head reads the last token that is not padding.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from lab.models import LoadedModel, ModelError, Progress

if TYPE_CHECKING:
    from lab.store import Store

Prompt = str | list[dict]  # one user turn, or the conversation so far (messages)


def conversation(prompt: Prompt, response: str) -> list[dict]:
    """The messages a reward model reads: the prompt's turns, then the response as the assistant's turn."""
    from lab.generate import build_messages

    messages = build_messages(prompt) if isinstance(prompt, str) else [dict(m) for m in prompt]
    return messages + [{"role": "assistant", "content": response}]


def score(lm: LoadedModel, pairs: Sequence[tuple[Prompt, str]], batch_size: int = 8) -> list[float]:
    """One reward per (prompt, response), in order, scored `batch_size` at a time (a 4-bit base works the same).

    Raises ValueError when a conversation is longer than the model reads.
    """
    import torch

    if lm.kind != "reward":
        raise ModelError("This model has no reward head: load a reward run with load_reward_model.")
    tokenizer, limit = lm.tokenizer, lm.context_length
    encoded = []
    for number, (prompt, response) in enumerate(pairs, 1):
        ids = tokenizer.apply_chat_template(conversation(prompt, response), tokenize=True, return_dict=True)
        ids = list(ids["input_ids"])
        if len(ids) > limit:
            raise ValueError(f"Response {number} is {len(ids)} tokens with its prompt; the model reads {limit}.")
        encoded.append(ids)
    device = next(lm.model.parameters()).device
    scores: list[float] = []
    with torch.inference_mode():
        for start in range(0, len(encoded), max(1, batch_size)):
            batch = encoded[start : start + batch_size]
            width = max(len(ids) for ids in batch)
            # Right padding, as TRL's preference collator pads: the head then reads the same last token.
            input_ids = torch.tensor([ids + [tokenizer.pad_token_id] * (width - len(ids)) for ids in batch])
            mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids in batch])
            logits = lm.model(input_ids=input_ids.to(device), attention_mask=mask.to(device)).logits
            scores += logits[:, 0].float().tolist()
    return scores


def load_reward_model(
    store: Store, run_id: str, precision: str | None = None, device: str = "auto", progress: Progress = print
) -> LoadedModel:
    """The base a reward run trained on, loaded with its one-score head, with the run's adapter (and trained head)
    attached; `precision` defaults to the run's own (fp32 / bf16 / fp16 / 4bit)."""
    from peft import PeftModel

    from lab.adapters import list_adapters
    from lab.models import load_model

    found = list_adapters(store, kind=None)
    if run_id not in found or found[run_id].kind != "reward":
        what = "a chat adapter, not a reward model" if run_id in found else "no trained reward model"
        raise ModelError(f"Run {run_id} has {what}.")
    adapter = found[run_id]
    run = store.get_run(run_id)
    lm = load_model(
        adapter.base, precision or run.config.get("precision", "fp32"), device, kind="reward", progress=progress
    )
    lm.model = PeftModel.from_pretrained(lm.model, str(adapter.path), adapter_name=run_id).eval()
    lm.adapters[run_id] = str(adapter.path)
    return lm
