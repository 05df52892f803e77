"""Chat generation: the chat template, streaming token by token, K candidates in one call, and several
conversations (each with its own adapter) in one batch.

Every path goes through `model.generate` with a leaner decoding step (`lab.decoding`: few-row products in the
orientation this CPU runs faster, LoRA applied per row); streaming adds only a streamer that hands each step's
tokens to the reading thread, with `generate` on a worker thread.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lab import decoding, limits
from lab.fields import Checked, help_field
from lab.models import LoadedModel
from lab.refs import BASE_VIEW

if TYPE_CHECKING:
    import torch


class PromptTooLongError(ValueError):
    """The formatted prompt does not leave room in the model's context."""


@dataclass
class GenerationSettings(Checked):
    """Sampling settings; temperature 0 means greedy decoding. Out-of-range values are refused, naming the key."""

    temperature: float = help_field(0.7, "0 = greedy: always the most likely token.", low=0, high=5)
    top_p: float = help_field(
        0.9, "Sample from the smallest set of tokens whose probability adds up to this.", low=0.01, high=1
    )
    max_new_tokens: int = help_field(256, "Longest reply in tokens.", low=1, high=limits.NEW_TOKENS)
    seed: int | None = help_field(None, "Same seed, same sampled reply; none = random.", low=0, high=limits.SEED)
    stop: list = help_field([], f"Strings that end the reply (at most {limits.STOP_STRINGS}).")

    def sampling(self) -> dict:
        """What a saved answer records of how it was sampled (a vote's candidates, a compare reply)."""
        return {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_new_tokens": self.max_new_tokens,
            "seed": self.seed,
        }

    def check(self) -> None:
        if len(self.stop) > limits.STOP_STRINGS:
            raise ValueError(f"key 'stop': at most {limits.STOP_STRINGS} stop strings, got {len(self.stop)}")
        for text in self.stop:
            if not isinstance(text, str) or not 0 < len(text) <= limits.STOP_STRING_CHARS:
                raise ValueError(f"key 'stop': each stop string has 1 to {limits.STOP_STRING_CHARS} characters")


@dataclass
class Generation:
    text: str
    prompt_tokens: int
    new_tokens: int
    seconds: float


Message = dict[str, str]


@dataclass
class Column:
    """One conversation of a batch: its messages (system prompt, history, the new user turn) and the view that
    answers it ('base' or an adapter's name)."""

    messages: list[Message]
    view: str = BASE_VIEW


def build_messages(user: str, system: str | None = None, history: list[Message] | None = None) -> list[Message]:
    """System prompt (if any), the earlier turns, then the new user turn (ValueError if it is empty)."""
    if not user or not user.strip():
        raise ValueError("The prompt is empty: type a message for the model to answer.")
    if len(user) > limits.MESSAGE_CHARS:
        raise ValueError(f"The message has {len(user):,} characters; the limit is {limits.MESSAGE_CHARS:,}.")
    if system and len(system) > limits.SYSTEM_PROMPT_CHARS:
        raise ValueError(
            f"The system prompt has {len(system):,} characters; the limit is {limits.SYSTEM_PROMPT_CHARS:,}."
        )
    messages: list[Message] = [{"role": "system", "content": system}] if system and system.strip() else []
    messages += [{"role": m["role"], "content": m["content"]} for m in history or []]
    messages.append({"role": "user", "content": user})
    return messages


def plain_messages(history: list[dict]) -> list[Message]:
    """Chat turns as {"role", "content": str}; UI components may hold content as a list of text parts."""

    def text(content) -> str:
        if isinstance(content, str):
            return content
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))

    return [{"role": m["role"], "content": text(m["content"])} for m in history]


def encode_chat(lm: LoadedModel, messages: list[Message], max_new_tokens: int) -> torch.Tensor:
    """Token ids (1, T) of the conversation with the generation prompt appended."""
    ids = lm.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)[
        "input_ids"
    ]
    budget = lm.context_length - max_new_tokens
    if ids.shape[1] > budget:
        raise PromptTooLongError(
            f"The prompt is {ids.shape[1]} tokens but only {max(budget, 0)} fit in the model's "
            f"{lm.context_length}-token context with {max_new_tokens} new tokens: shorten it or lower max new tokens."
        )
    return ids.to(lm.model.device)


def _generate_kwargs(lm: LoadedModel, settings: GenerationSettings, prompt_length: int, *criteria) -> dict:
    """model.generate's arguments: sampling, and stopping criteria (`criteria`, then the stop strings)."""
    from transformers import StoppingCriteriaList

    kw = {
        "max_new_tokens": settings.max_new_tokens,
        "pad_token_id": lm.tokenizer.pad_token_id,
    }
    if settings.temperature > 0:
        kw.update(do_sample=True, temperature=settings.temperature, top_p=settings.top_p)
    else:
        kw.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    if settings.stop:
        criteria = (*criteria, _stop_on_text(lm, settings.stop, prompt_length))
    if criteria:
        kw["stopping_criteria"] = StoppingCriteriaList(criteria)
    return kw


def _stop_on_text(lm: LoadedModel, stop: list[str], prompt_length: int):
    """Ends each sequence once its reply's text contains a stop string.

    transformers' own `stop_strings` precomputes tables over the whole vocabulary for every stop string
    (about a second per hundred characters on a CPU, while the request holds the model); decoding the last
    few tokens at each step costs microseconds instead.
    """
    import torch
    from transformers import StoppingCriteria

    window = max(map(len, stop)) + 4  # tokens: each holds at least one character, and a few may decode to none

    class StopOnText(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs) -> torch.Tensor:
            tails = lm.tokenizer.batch_decode(input_ids[:, prompt_length:][:, -window:], skip_special_tokens=True)
            return torch.tensor([any(s in tail for s in stop) for tail in tails], device=input_ids.device)

    return StopOnText()


def _seed(settings: GenerationSettings) -> None:
    import torch

    if settings.seed is not None:
        torch.manual_seed(settings.seed)


def _cut_at_stop(text: str, stop: list[str]) -> tuple[str, bool]:
    cuts = [text.index(s) for s in stop if s and s in text]
    return (text[: min(cuts)], True) if cuts else (text, False)


def stream_chat(
    model: LoadedModel | Callable[[], AbstractContextManager[LoadedModel]],
    messages: list[Message],
    settings: GenerationSettings,
) -> Iterator[str]:
    """Yield the reply as it grows (the whole text so far, each time a token adds to it): `stream_columns` with one
    column, whose view is whatever `model` holds. Closing the iterator stops the generation at the next token."""
    with contextlib.closing(stream_columns(model, [Column(messages)], settings)) as replies:
        for texts in replies:
            yield texts[0]


def stream_columns(
    model: LoadedModel | Callable[[], AbstractContextManager[LoadedModel]],
    columns: list[Column],
    settings: GenerationSettings,
) -> Iterator[list[str]]:
    """Answer several conversations in one batched `generate`, yielding every reply so far each time one grows.

    `model` is a loaded model, or a function returning a context that holds one (ModelManager.use_many): it is
    entered on the generating thread, never across a yield, so a consumer that stops reading cannot keep the model
    locked. Rows whose views differ each run their own adapter (`lab.decoding.row_adapters`), the base rows none;
    rows that share one view run it as the holder set it. Each reply ends at its own end of sequence or stop
    string. Closing the iterator stops the generation at the next token.

    Same settings, same seed: the seed is set once before the one call. With temperature 0 each reply is the
    greedy reply its conversation gets alone (up to the float rounding of batched matrix products); with sampling
    each row draws its own numbers from the one seeded generator, so the same columns with the same seed give the
    same replies, but a column's reply depends on which columns sit beside it.
    """
    import torch
    from transformers import StoppingCriteria
    from transformers.generation.streamers import BaseStreamer

    if not columns:
        raise ValueError("Nothing to answer: give at least one conversation.")
    hold = model if callable(model) else (lambda: nullcontext(model))
    cancelled = threading.Event()
    steps: queue.SimpleQueue = queue.SimpleQueue()  # each step's new token of every row; None once generate ends
    ready: list[LoadedModel] = []  # the model, once the generating thread holds it and encoded the prompts
    failure: list[BaseException] = []
    started = threading.Event()

    class Cancelled(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs) -> torch.Tensor:
            return torch.full((input_ids.shape[0],), cancelled.is_set(), dtype=torch.bool, device=input_ids.device)

    class Steps(BaseStreamer):
        """Hands each step's tokens (B,) to the reader; TextIteratorStreamer takes one row only."""

        prompt = True  # generate's first put is the prompt (B, T)

        def put(self, value: torch.Tensor) -> None:
            if self.prompt:
                self.prompt = False
            else:
                steps.put(value.tolist())

        def end(self) -> None:
            steps.put(None)

    def work() -> None:
        try:
            with hold() as lm:
                ids, mask = encode_batch(lm, [c.messages for c in columns], settings.max_new_tokens)
                ready.append(lm)
                started.set()
                _seed(settings)
                decoding.generate(
                    lm.model,
                    [c.view for c in columns],
                    input_ids=ids,
                    attention_mask=mask,
                    streamer=Steps(),
                    **_generate_kwargs(lm, settings, ids.shape[1], Cancelled()),
                )
        except BaseException as err:  # re-raised in the consumer's thread below
            failure.append(err)
            steps.put(None)
        finally:
            started.set()

    worker = threading.Thread(target=work, name="generate", daemon=True)
    worker.start()
    started.wait()
    if not ready:
        worker.join()
        raise failure[0]
    tokens: list[list[int]] = [[] for _ in columns]
    texts = [""] * len(columns)
    try:
        for waiting in _waiting_steps(steps):
            for step in waiting:
                for row, token in zip(tokens, step, strict=True):
                    row.append(token)
            grown = [_reply_text(ready[0], row, settings.stop) for row in tokens]
            if grown != texts:
                texts = grown
                yield list(texts)
    finally:
        cancelled.set()
    worker.join()
    if failure:
        raise failure[0]


def _waiting_steps(steps: queue.SimpleQueue) -> Iterator[list[list[int]]]:
    """Every step that has arrived since the last look, until generate ends: a reader that fell behind decodes once
    for all of them, instead of once per token while the generating thread waits for the interpreter."""
    while True:
        waiting = [steps.get()]
        while not steps.empty():
            waiting.append(steps.get())
        if None in waiting:
            yield waiting[: waiting.index(None)]
            return
        yield waiting


def _reply_text(lm: LoadedModel, tokens: list[int], stop: list[str]) -> str:
    """A row's reply so far: up to its end of sequence, cut at a stop string, without a half-decoded character."""
    eos = lm.tokenizer.eos_token_id
    if eos in tokens:
        tokens = tokens[: tokens.index(eos)]
    text = lm.tokenizer.decode(tokens, skip_special_tokens=True).rstrip("\ufffd")
    return _cut_at_stop(text, stop)[0]


def generate(lm: LoadedModel, messages: list[Message], settings: GenerationSettings) -> Generation:
    """One complete reply with its token counts and wall time."""
    import torch

    ids = encode_chat(lm, messages, settings.max_new_tokens)
    _seed(settings)
    start = time.perf_counter()
    kwargs = _generate_kwargs(lm, settings, ids.shape[1])
    out = decoding.generate(lm.model, input_ids=ids, attention_mask=torch.ones_like(ids), **kwargs)
    seconds = time.perf_counter() - start
    new = out[0, ids.shape[1] :]
    text, _ = _cut_at_stop(lm.tokenizer.decode(new, skip_special_tokens=True), settings.stop)
    return Generation(text=text.strip(), prompt_tokens=ids.shape[1], new_tokens=_count_new(lm, new), seconds=seconds)


def _count_new(lm: LoadedModel, new: torch.Tensor) -> int:
    """New tokens up to and including the first end-of-sequence (the rest is padding)."""
    eos = lm.tokenizer.eos_token_id
    hits = (new == eos).nonzero()
    return int(hits[0, 0]) + 1 if len(hits) else int(new.shape[0])


def sample_candidates(
    lm: LoadedModel, messages: list[Message], settings: GenerationSettings, k: int
) -> list[Generation]:
    """K sampled replies to one conversation in a single batched `generate` call."""
    import torch

    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if settings.temperature == 0 and k > 1:
        raise ValueError("Greedy decoding gives K identical candidates: set a temperature above 0.")
    ids = encode_chat(lm, messages, settings.max_new_tokens)
    _seed(settings)
    start = time.perf_counter()
    out = decoding.generate(
        lm.model,
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        num_return_sequences=k,
        **_generate_kwargs(lm, settings, ids.shape[1]),
    )  # (k, T + new)
    seconds = time.perf_counter() - start
    candidates = []
    for row in out[:, ids.shape[1] :]:
        text, _ = _cut_at_stop(lm.tokenizer.decode(row, skip_special_tokens=True), settings.stop)
        candidates.append(Generation(text.strip(), ids.shape[1], _count_new(lm, row), seconds))
    return candidates


def encode_batch(lm: LoadedModel, conversations: list[list[Message]], max_new_tokens: int):
    """(input_ids, attention_mask), each (B, T): the conversations left-padded to one width, so every row's reply
    starts at column T and a batch generates together."""
    import torch

    rows = [encode_chat(lm, messages, max_new_tokens)[0].tolist() for messages in conversations]
    width = max(map(len, rows))
    pad = lm.tokenizer.pad_token_id
    ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], device=lm.model.device)
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=lm.model.device)
    return ids, mask


def generate_batch(
    lm: LoadedModel, conversations: list[list[Message]], settings: GenerationSettings
) -> list[Generation]:
    """One reply to each conversation, all in one batched `generate` call (evaluations answer many prompts so).

    Left padding changes a row's arithmetic slightly (different matrix shapes), so a greedy reply can in rare
    near-ties differ from the same conversation generated alone."""

    ids, mask = encode_batch(lm, conversations, settings.max_new_tokens)
    _seed(settings)
    start = time.perf_counter()
    kwargs = _generate_kwargs(lm, settings, ids.shape[1])
    out = decoding.generate(lm.model, input_ids=ids, attention_mask=mask, **kwargs)
    seconds = time.perf_counter() - start
    replies = []
    for prompt, row in zip(mask.sum(1).tolist(), out[:, ids.shape[1] :], strict=True):
        text, _ = _cut_at_stop(lm.tokenizer.decode(row, skip_special_tokens=True), settings.stop)
        replies.append(Generation(text.strip(), prompt, _count_new(lm, row), seconds))
    return replies
