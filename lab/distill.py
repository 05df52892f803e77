"""Distilled demonstrations (dSFT): a teacher answers a prompt set; a person reviews each answer.

The teacher is either another local model (loaded beside the app's model for
the duration, then freed) or the app's own model made stronger with a careful
system prompt and a few accepted demonstrations as worked examples. Every answer
is stored as a `teacher` demonstration with status `pending` until accepted,
so a user can train on human-only, teacher-only or both and compare.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from functools import partial

from lab.generate import GenerationSettings, stream_chat
from lab.models import BASE_VIEW, ModelManager, free_memory, load_model
from lab.store import Demonstration, Prompt, Store

TEACHER_SYSTEM = (
    "You are an expert assistant writing model answers for a training set. Answer accurately, "
    "helpfully and concisely; if you are not sure, say so rather than guess."
)


@dataclass
class Teacher:
    """Who writes the answers: `model` ("" = the app's loaded model) with a system prompt and worked examples."""

    model: str = ""
    precision: str = "fp32"
    system: str = TEACHER_SYSTEM
    few_shot: int = 3

    def describe(self) -> str:
        who = self.model or "loaded model"
        return f"{who} + system prompt + {self.few_shot} examples"


def teacher_messages(teacher: Teacher, examples: list[Demonstration], prompt: str) -> list[dict]:
    """System prompt, then each example as a user/assistant exchange, then the prompt."""
    messages = [{"role": "system", "content": teacher.system}] if teacher.system.strip() else []
    for example in examples[: teacher.few_shot]:
        turns = [m for m in example.messages if m["role"] != "system"]
        messages += turns[-2:]  # the final exchange: the prompt and its ideal answer
    return messages + [{"role": "user", "content": prompt}]


@dataclass
class DistillProgress:
    """After each prompt: how many were answered, of how many, and how many answers were saved so far."""

    done: int
    total: int
    prompt: str
    saved: int = 0


class StopFlag(threading.Event):
    """A stop request that a UI can hold per browser session (in gr.State) and a running distillation checks.

    gr.State deep-copies its value, which an Event (it holds a lock) refuses; the flag is shared, never
    copied, so the Stop handler and the running generator see the same one.
    """

    def __deepcopy__(self, memo: dict) -> StopFlag:
        return self


def answer(
    hold: Callable[[], AbstractContextManager],
    messages: list[dict],
    settings: GenerationSettings,
    stop: threading.Event,
) -> str | None:
    """The teacher's whole answer, or None if `stop` was set before it finished (checked at every token)."""
    if stop.is_set():
        return None
    replies = stream_chat(hold, messages, settings)
    text = ""
    try:
        for grown in replies:
            if stop.is_set():
                break
            text = grown
    finally:
        replies.close()  # ends the generation at the next token
    return None if stop.is_set() else text.strip()


def distill(
    store: Store,
    models: ModelManager,
    teacher: Teacher,
    prompts: list[Prompt],
    settings: GenerationSettings,
    author: str = "",
    stop: threading.Event | None = None,
) -> Iterator[DistillProgress]:
    """Answer each prompt with the teacher and store it as a pending teacher demonstration, one at a time.

    Setting `stop` ends the work within the answer being written, which is dropped (half an answer is no
    demonstration); the answers saved before it stay. Closing the iterator stops at the next prompt.
    """
    stop = stop or threading.Event()
    prompts = [p for p in prompts if p.text.strip()]
    if not prompts:
        raise ValueError("Choose at least one prompt for the teacher to answer.")
    examples = store.list_demonstrations(status="accepted", origins=["human", "model-edited"])
    # Another model is loaded once for the whole set; the app's own model is held one prompt at a time,
    # so that chat keeps working in between.
    external = load_model(teacher.model, teacher.precision, progress=lambda _: None) if teacher.model else None
    hold = partial(nullcontext, external) if external else partial(models.use, BASE_VIEW)
    saved = 0
    try:
        for done, prompt in enumerate(prompts, start=1):
            text = answer(hold, teacher_messages(teacher, examples, prompt.text), settings, stop)
            if text is None:
                return
            if text:
                messages = [{"role": "user", "content": prompt.text}, {"role": "assistant", "content": text}]
                demo = Demonstration(
                    messages,
                    prompt.category,
                    [*prompt.tags, "distilled"],
                    author,
                    origin="teacher",
                    draft=text,
                    teacher=teacher.describe(),
                    status="pending",
                    source=prompt.source,
                )
                store.add_demonstrations([demo])
                saved += 1
            yield DistillProgress(done, len(prompts), prompt.text, saved)
    finally:
        external = hold = None  # free the teacher's weights now, not at the next collection
        free_memory()
