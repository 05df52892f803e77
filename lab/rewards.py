"""Rewards: the one scoring function over a trained reward model, loading a reward run onto its base, and the
rewards RL trains on (rule terms and reward models in a weighted sum, parsed from a spec string).

A reward model is a base loaded with `kind="reward"` (a one-score head) plus a reward run's adapter, which holds
the LoRA update and the trained head. Scoring renders each (prompt, response) exactly as TRL's RewardTrainer
rendered its training pairs: the chat template over the prompt's messages and one assistant turn, no generation
prompt, right padding; the head reads the last token that is not padding.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lab.decoding import on_model_thread
from lab.models import LoadedModel, ModelError, Progress

if TYPE_CHECKING:
    from pathlib import Path

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

    def run() -> list[float]:
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

    return on_model_thread(run)  # one OpenMP pool for the process (lab.decoding)


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


# Rewards for RL: a spec string ('model:RUN + 0.5*length:200 - contains:sorry') is a weighted sum of terms, each a
# function of one completion (and its prompt, for a reward model). The sum is one callable with TRL's reward_funcs
# signature, f(prompts, completions, **kwargs) -> list[float], which RLOO, GRPO and REINFORCE all call.

REFUSALS = (
    "i can't",
    "i cannot",
    "i can not",
    "i won't",
    "i will not",
    "i'm not able to",
    "i am not able to",
    "i'm unable to",
    "i am unable to",
    "i must decline",
    "i'm sorry, but",
    "i am sorry, but",
    "i apologize, but",
    "as an ai",
    "as a language model",
)

TERMS = {  # kind → (what its argument is, an example) for the help text and the errors
    "model": ("a reward run's id", "model:RUN_ID"),
    "length": ("a target length in characters", "length:200"),
    "contains": ("the text to look for", "contains:thanks"),
    "not_contains": ("the text to avoid", "not_contains:sorry"),
    "regex": ("a regular expression", r"regex:\d+"),
    "refusal": ("nothing", "refusal"),
    "echo": ("nothing", "echo"),
    "refuses_tagged": ("a tag of bundled prompts", "refuses_tagged:harmful"),
    "scenario": ("a workshop scenario's name", "scenario:NAME"),
}
NO_ARGUMENT = ("refusal", "echo")


class RewardSpecError(ValueError):
    """A reward spec that cannot be read: the message names the term."""


@dataclass(frozen=True)
class Term:
    """One weighted term of a reward: `weight × kind(argument)`."""

    weight: float
    kind: str  # one of TERMS
    arg: str = ""

    @property
    def label(self) -> str:
        """The term as written in a spec, without its weight: 'length:200', 'refusal'."""
        return f"{self.kind}:{self.arg}" if self.arg else self.kind

    def describe(self) -> str:
        """The term's value in words and symbols, as the form's formula shows it."""
        shown = {
            "model": f"reward_model({self.arg})",
            "length": f"(−|chars − {self.arg}| / {self.arg})",
            "contains": f"[contains {self.arg!r}]",
            "not_contains": f"[does not contain {self.arg!r}]",
            "regex": f"[matches /{self.arg}/]",
            "refusal": "[refuses]",
            "echo": "[repeats the prompt]",
            "refuses_tagged": f"[refuses exactly when the prompt is tagged {self.arg!r}]",
            "scenario": f"scenario_check({self.arg})",
        }
        return shown[self.kind]

    def rule(self, text: str, prompt: Prompt | None = None) -> float:
        """The value of a rule term (every kind but model) for one completion's text; `echo` and
        `refuses_tagged` also read the prompt it answers."""
        if self.kind == "length":
            target = int(self.arg)
            return -abs(len(text) - target) / target
        if self.kind == "contains":
            return float(self.arg.lower() in text.lower())
        if self.kind == "not_contains":
            return float(self.arg.lower() not in text.lower())
        if self.kind == "regex":
            return float(re.search(self.arg, text) is not None)
        if self.kind == "refusal":
            return float(is_refusal(text))
        if self.kind == "echo":
            return float(repeats_prompt(text, question_of(prompt)))
        if self.kind == "refuses_tagged":
            return float(is_refusal(text) == (_plain(question_of(prompt)) in tagged_prompts(self.arg)))
        if self.kind == "scenario":
            return sum(term.weight * term.rule(text, prompt) for term in scenario_check(self.arg))
        raise ValueError(f"Reward term '{self.label}' is not a rule: it needs a model to score it.")


def is_refusal(text: str) -> bool:
    """Does the answer refuse? A phrase list ('I can't', 'As an AI', …), case-insensitive, curly quotes too."""
    text = text.lower().replace("\u2019", "'")
    return any(phrase in text for phrase in REFUSALS)


def question_of(prompt: Prompt | None) -> str:
    """The question a completion answers: the prompt's text, or its last user turn."""
    if prompt is None:
        raise ValueError("This reward term reads the prompt too: call it with the prompts it answers.")
    if isinstance(prompt, str):
        return prompt
    return next((m["content"] for m in reversed(prompt) if m.get("role") == "user"), "")


def _plain(text: str) -> str:
    """Letters, digits and single spaces, lower case: what 'the same words' compares."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def repeats_prompt(text: str, question: str) -> bool:
    """Does the answer repeat the prompt word for word (punctuation and case aside) instead of answering it? A base
    model often copies the instruction or goes on writing more of it."""
    words = _plain(question)
    return len(words.split()) >= 3 and words in _plain(text)


@functools.cache
def tagged_prompts(tag: str) -> frozenset[str]:
    """The bundled prompts (assets/prompts/, held-out ones included) that carry `tag`, compared as _plain text."""
    from lab.presets import HELD_OUT_DIR, load_question_set, question_sets

    sets = [(name, HELD_OUT_DIR.parent) for name in question_sets()]
    sets += [(name, HELD_OUT_DIR) for name in question_sets(HELD_OUT_DIR)]
    return frozenset(_plain(p.text) for name, folder in sets for p in load_question_set(name, folder) if tag in p.tags)


_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_HEAD = re.compile(rf"\s*(?P<sign>[+-])?\s*(?:(?P<weight>{_NUMBER})\s*\*\s*)?(?P<kind>[A-Za-z_]\w*)")
_NEXT = re.compile(r"\s+[+-]\s+|\s*$")  # an unquoted argument runs to ' + ', ' - ' or the end


def parse_reward(spec: str) -> tuple[Term, ...]:
    """The terms of a reward spec such as "model:RUN + 0.5*length:200 - contains:sorry".

    Terms join with ' + ' or ' - ' (spaces around); a weight is written `0.5*`; an argument follows ':' and runs to
    the next ' + ' / ' - ', or is quoted ('…' or "…") when it holds one. Raises RewardSpecError naming the term.
    """
    terms, pos, text = [], 0, spec.strip()
    if not text:
        raise RewardSpecError("The reward is empty: give at least one term, e.g. length:100.")
    while pos < len(text):
        head = _HEAD.match(text, pos)
        if not head or (terms and not head.group("sign")):
            raise RewardSpecError(
                f"The reward cannot be read at '{text[pos:].strip()}': join terms with ' + ' or ' - ' and write a "
                "weight as 0.5*length:200."
            )
        sign = -1.0 if head.group("sign") == "-" else 1.0
        weight = sign * float(head.group("weight") or 1.0)
        kind, pos, arg = head.group("kind"), head.end(), ""
        if text.startswith(":", pos):
            pos += 1
            if text[pos : pos + 1] in ("'", '"'):
                end = text.find(text[pos], pos + 1)
                if end < 0:
                    raise RewardSpecError(f"Reward term '{kind}:{text[pos:]}' opens a quote it never closes.")
                arg, pos = text[pos + 1 : end], end + 1
            else:
                stop = _NEXT.search(text, pos)
                arg, pos = text[pos : stop.start()].strip(), stop.start()
        terms.append(_checked(Term(weight, kind, arg)))
        if pos < len(text) and not _NEXT.match(text, pos):
            raise RewardSpecError(f"Reward term '{terms[-1].label}' is followed by '{text[pos:].strip()}'.")
    return tuple(terms)


def _checked(term: Term) -> Term:
    """The term, or RewardSpecError saying in one sentence what is wrong with it."""
    label = term.label
    if term.kind not in TERMS:
        raise RewardSpecError(f"Reward term '{label}' is not known: use one of {', '.join(TERMS)}.")
    what, example = TERMS[term.kind]
    if term.kind in NO_ARGUMENT:
        if term.arg:
            raise RewardSpecError(f"Reward term '{label}' takes no argument: write just '{term.kind}'.")
        return term
    if not term.arg:
        raise RewardSpecError(f"Reward term '{label}' needs {what}, e.g. {example}.")
    if term.kind == "length" and not (term.arg.isdigit() and int(term.arg) > 0):
        raise RewardSpecError(f"Reward term '{label}' needs a whole number of characters above 0, e.g. {example}.")
    if term.kind == "refuses_tagged" and not tagged_prompts(term.arg):
        raise RewardSpecError(f"Reward term '{label}': no bundled prompt (assets/prompts/) is tagged '{term.arg}'.")
    if term.kind == "regex":
        try:
            re.compile(term.arg)
        except re.error as err:
            raise RewardSpecError(f"Reward term '{label}' is not a valid regular expression ({err}).") from err
    if term.kind == "scenario":
        scenario_check(term.arg)  # a scenario that does not exist, or has no check, is refused here
    return term


@functools.cache
def scenario_check(name: str) -> tuple[Term, ...]:
    """The rule terms of a scenario's check (its preset's `check` spec): whether an answer did what the scenario
    aligns for, e.g. not repeating a myth. Raises RewardSpecError for an unknown scenario or one without a check."""
    from lab.presets import scenario_presets

    scenarios = scenario_presets()
    if name not in scenarios:
        raise RewardSpecError(f"Reward term 'scenario:{name}': no scenario is named so; one of {', '.join(scenarios)}.")
    if not scenarios[name].check:
        raise RewardSpecError(f"Reward term 'scenario:{name}': this scenario has no check.")
    terms = parse_reward(scenarios[name].check)
    if any(t.kind in ("model", "scenario") for t in terms):
        raise RewardSpecError(f"Scenario {name}'s check may use rule terms only (no model or scenario terms).")
    return terms


def formula(terms: Sequence[Term]) -> str:
    """'r = 1.0 × reward_model(RUN) + 0.5 × (−|chars − 200| / 200) − 1.0 × [contains 'sorry']'."""
    parts = []
    for number, term in enumerate(terms):
        sign = ("−" if term.weight < 0 else "") if number == 0 else (" − " if term.weight < 0 else " + ")
        parts.append(f"{sign}{abs(term.weight)} × {term.describe()}")
    return "r = " + "".join(parts)


def completion_text(completion: str | list[dict]) -> str:
    """A completion as text: TRL's conversational completions are lists of messages (the assistant's turns)."""
    if isinstance(completion, str):
        return completion
    return "".join(m["content"] for m in completion if isinstance(m.get("content"), str))


class RewardFunction:
    """A parsed reward spec as one callable with TRL's reward_funcs signature: the weighted sum of its terms.

    `last` keeps the latest call's (prompt, completion, reward) triples, for the samples a run writes.
    """

    def __init__(self, terms: Sequence[Term], models: dict[str, LoadedModel] | None = None, batch_size: int = 8):
        self.terms, self.models, self.batch_size = tuple(terms), dict(models or {}), batch_size
        self.__name__ = "reward"  # TRL names a function's metrics after it: rewards/reward/mean
        self.last: list[tuple[Prompt, str, float]] = []

    def formula(self) -> str:
        return formula(self.terms)

    def term_values(self, prompts: Sequence[Prompt], completions: Sequence) -> list[list[float]]:
        """Each term's unweighted value per completion: one list per term."""
        texts = [completion_text(c) for c in completions]
        values = []
        for term in self.terms:
            if term.kind == "model":
                if term.arg not in self.models:
                    raise ModelError(f"Reward term '{term.label}' has no loaded reward model: use build_reward.")
                values.append(score(self.models[term.arg], list(zip(prompts, texts, strict=True)), self.batch_size))
            else:
                values.append([term.rule(text, prompt) for prompt, text in zip(prompts, texts, strict=True)])
        return values

    def __call__(self, prompts: Sequence[Prompt], completions: Sequence, **kwargs) -> list[float]:
        values = self.term_values(prompts, completions)
        totals = [sum(t.weight * v[i] for t, v in zip(self.terms, values, strict=True)) for i in range(len(prompts))]
        log_metric = kwargs.get("log_metric")  # TRL's trainers pass it: a curve per term beside the total
        if log_metric and len(self.terms) > 1:
            for term, term_values in zip(self.terms, values, strict=True):
                log_metric(f"rewards/{term.label}", sum(term_values) / max(1, len(term_values)))
        self.last = list(zip(prompts, [completion_text(c) for c in completions], totals, strict=True))
        return totals


def build_reward(spec: str, workspace: Store | str | Path | None = None, device: str = "auto") -> RewardFunction:
    """The reward a spec describes, ready to call; a `model:RUN_ID` term loads that reward run (at its own
    precision, 4-bit included) from `workspace` (a Store or its folder) onto `device`, once per run id."""
    terms = parse_reward(spec)
    models: dict[str, LoadedModel] = {}
    wanted = sorted({t.arg for t in terms if t.kind == "model"})
    if wanted:
        from lab.store import Store

        if workspace is None:
            raise RewardSpecError("A model: reward term needs the workspace that holds the reward run.")
        store = workspace if isinstance(workspace, Store) else Store(workspace)
        for run_id in wanted:
            models[run_id] = load_reward_model(store, run_id, device=device, progress=lambda m: print(m, flush=True))
    return RewardFunction(terms, models)
