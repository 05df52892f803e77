"""Evaluation as a run on the job engine: several models answer the same held-out prompts, then the numbers a
sceptic asks for, saved as the run's report.json beside every answer (answers.jsonl).

A model is a view of the one loaded base ('base', or a chat run's id) and, written `VIEW+prompt`, asked with the
run's system prompt and template. The first model is the reference; for every other one the report holds:
- the win rate against the reference, judged by a reward run in both orders of every pair, with its 95%
  interval and the judge's position bias (lab.evaluate.win_rate), and the mean reward;
- the KL from the base: log p_model(answer) − log p_base(answer) over its own answers, in nats per answer;
- the mean answer length in tokens, and the mean of a rule check (a scenario's `check:`, or any rule spec);
- TruthfulQA MC1 and MC2 with intervals and per category, when a CSV of its shape is given;
- "prompt or fine-tune?": with a prompted base and a tuned adapter among the models, their head-to-head and a
  one-sentence verdict (lab.evaluate.verdict).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from lab.fields import Checked, help_field
from lab.refs import BASE_VIEW
from lab.train.config import DataSettings, ModelSettings
from lab.train.runs import StopSignal

if TYPE_CHECKING:
    from lab.evaluate import PairJudge
    from lab.store import Store

PROMPTED = "+prompt"  # a model written VIEW+prompt is asked with the run's system prompt and template
CHAT_JUDGE = "chat:"  # a judge written chat:VIEW is that view of the loaded base, reading both answers


@dataclass
class EvalRunConfig(DataSettings, ModelSettings, Checked):
    """What an evaluation compares and how: the models, the judge, the checks and the sampling."""

    unused_fields: ClassVar[tuple[str, ...]] = ("eval_fraction", "max_length", "init_adapter", "mixed_precision")

    models: str = help_field(
        "base",
        "The models to compare, comma-separated: 'base' or a chat run's id, each optionally written "
        "'…+prompt' to ask it with the system prompt and template below. The first is the reference.",
    )
    system: str = help_field("", "The system prompt of the '+prompt' models.")
    template: str = help_field(
        "{question}", "The user turn of the '+prompt' models, with {question} where each prompt goes."
    )
    judge: str = help_field(
        "",
        "What judges the answers (win rates): a reward run's id, a reward spec such as 'model:RUN + "
        "0.1*length:200' (lab.rewards), or 'chat:VIEW' for a chat model reading both answers; empty = no judge.",
    )
    checks: str = help_field(
        "", "A rule spec scored on every answer, e.g. 'scenario:truthfulness' or 'not_contains:sorry'; empty = none."
    )
    truthfulqa: str = help_field("", "A CSV of TruthfulQA's shape: also score every model's MC1 and MC2.")
    mc_limit: int = help_field(0, "Score only the first N TruthfulQA questions (0 = all).", low=0, high=1_000_000)
    max_prompts: int = help_field(0, "Answer only the first N prompts (0 = all).", low=0, high=1_000_000)
    max_new_tokens: int = help_field(128, "Longest answer in tokens.", low=1, high=8192)
    temperature: float = help_field(0.0, "0 = greedy: every model's most likely answer, reproducible.", low=0, high=5)
    seed: int = help_field(0, "Seed of the sampling (with a temperature above 0).", low=0, high=2**32 - 1)
    batch_size: int = help_field(8, "Answers generated (and scored) at once.", low=1, high=512)

    def check(self) -> None:
        from lab.rewards import RewardSpecError, parse_reward

        names = self.model_list()
        if not names or any(not name for name in names):
            raise ValueError("key 'models': give one or more comma-separated models, e.g. base,RUN_ID")
        if len(set(names)) != len(names):
            raise ValueError("key 'models': a model is listed twice")
        if "{question}" not in self.template:
            raise ValueError("key 'template': write {question} where the prompt goes")
        if any(n.endswith(PROMPTED) for n in names) and not (self.system.strip() or self.template != "{question}"):
            raise ValueError("key 'system': a '+prompt' model needs a system prompt or a template")
        if self.judge and not self.judge.startswith(CHAT_JUDGE):
            try:
                parse_reward(judge_spec(self.judge))
            except RewardSpecError as err:
                raise ValueError(f"key 'judge': {err}") from err
        if self.checks:
            try:
                terms = parse_reward(self.checks)
            except RewardSpecError as err:
                raise ValueError(f"key 'checks': {err}") from err
            if any(t.kind == "model" for t in terms):
                raise ValueError("key 'checks': a check is rules only; give a reward model as the judge")

    def model_list(self) -> list[str]:
        return [name.strip() for name in self.models.split(",")]


@dataclass(frozen=True)
class Contender:
    """One model of an evaluation: a view of the loaded base, asked plainly or with the run's prompt."""

    name: str  # as written in the config: 'base', 'RUN', 'RUN+prompt'
    view: str
    system: str
    template: str

    def messages(self, prompt: list[dict]) -> list[dict]:
        """The prompt's turns as this model is asked: its system prompt first, its template around the question."""
        turns = [dict(m) for m in prompt if m["role"] != "system" or not self.system]
        turns[-1]["content"] = self.template.replace("{question}", turns[-1]["content"])
        return ([{"role": "system", "content": self.system}] if self.system else []) + turns

    @property
    def prompted(self) -> bool:
        return self.name.endswith(PROMPTED)


def contenders(config: EvalRunConfig) -> list[Contender]:
    plain = ("", "{question}")
    return [
        Contender(
            name, name.removesuffix(PROMPTED), *((config.system, config.template) if name.endswith(PROMPTED) else plain)
        )
        for name in config.model_list()
    ]


def with_prompt(config: EvalRunConfig, variant: dict) -> EvalRunConfig:
    """The config asking its '+prompt' models with a prompt experiment's variant; without any listed, every model
    is compared with the prompt and without it (base, base+prompt, RUN, RUN+prompt): "prompt or fine-tune?"."""
    names = config.model_list()
    if not any(n.endswith(PROMPTED) for n in names):
        names = [m for n in names for m in (n, n + PROMPTED)]
    return config.replace(models=",".join(names), system=variant.get("system") or "", template=variant["template"])


def check_references(store: Store, config: EvalRunConfig) -> None:
    """Refuse, before anything is queued, a model that is not a chat adapter of the config's base, or a judge
    whose model terms are not reward runs: one sentence naming it."""
    from lab.adapters import list_adapters
    from lab.rewards import parse_reward

    chat = list_adapters(store, base=config.model, kind="chat")
    views = [c.view for c in contenders(config)]
    if config.judge.startswith(CHAT_JUDGE):
        views.append(config.judge.removeprefix(CHAT_JUDGE))
    for view in views:
        if view != BASE_VIEW and view not in chat:
            raise ValueError(
                f"Model '{view}' is not a chat adapter trained on {config.model}: give 'base' or the id of a "
                "finished chat run (sft, dpo, rloo, grpo, reinforce) on that base."
            )
    rewards = list_adapters(store, kind="reward")
    by_reward = config.judge and not config.judge.startswith(CHAT_JUDGE)
    for term in parse_reward(judge_spec(config.judge)) if by_reward else ():
        if term.kind == "model" and term.arg not in rewards:
            raise ValueError(f"Judge '{term.arg}' is not a finished reward run in this workspace.")


def build(config: EvalRunConfig, run_dir: Path) -> Evaluation:
    return Evaluation(config, run_dir)


class Stopped(Exception):
    """The run's Stop was pressed between two batches: the evaluation ends without a report."""


class Evaluation:
    """Runs in the job's process: `run(stop)` writes answers.jsonl and report.json and returns the report's path
    (the run folder when stopped first). Each step prints its progress to the run's log."""

    def __init__(self, config: EvalRunConfig, run_dir: Path) -> None:
        from lab.store import Store

        self.config, self.run_dir, self.store = config, run_dir, Store(run_dir.parent.parent)
        self.who = contenders(config)
        self.prompts = read_prompts(run_dir / "data.jsonl", config.max_prompts)
        self.rows = {
            c.name: {"model": c.name, "view": c.view, "system": c.system, "template": c.template} for c in self.who
        }

    def run(self, stop: StopSignal) -> Path:
        from lab.adapters import attach_adapter
        from lab.models import ModelManager

        config = self.config
        self.stop = stop
        self.models = ModelManager(on_status=lambda message: print(message, flush=True))
        self.models.load(config.model, config.precision, config.device)
        judge = [config.judge.removeprefix(CHAT_JUDGE)] if config.judge.startswith(CHAT_JUDGE) else []
        for view in [c.view for c in self.who] + judge:
            attach_adapter(self.store, self.models, view)
        try:
            self.answers = {c.name: self._answer(c) for c in self.who}
            self._kl()
            if config.checks:
                self._check()
            head_to_head = self._judge() if config.judge else {}
            mc = self._truthfulqa() if config.truthfulqa else {}
        except Stopped:
            print("Stopped before the report was written.", flush=True)
            return self.run_dir
        report = {
            "prompts": len(self.prompts),
            "reference": self.who[0].name,
            "judge": config.judge,
            "check": config.checks,
            "truthfulqa": Path(config.truthfulqa).name if config.truthfulqa else "",
            "models": list(self.rows.values()),
            "verdicts": self._verdicts(head_to_head, mc),
        }
        if mc:
            report["mc_by_category"] = {
                name: r.by_category().reset_index().to_dict("records") for name, r in mc.items()
            }
        write_answers(self.run_dir / "answers.jsonl", self.prompts, self.answers)
        path = self.run_dir / "report.json"
        path.write_text(json.dumps(report, indent=1), encoding="utf-8")
        print(report_text(report), flush=True)
        return path

    def _step(self, what: str, done: int, total: int) -> None:
        if self.stop.is_set():
            raise Stopped
        print(f"{what}: {done}/{total}", flush=True)

    def _answer(self, c: Contender) -> list[dict]:
        """Every prompt's answer by this model, `batch_size` prompts per batched generation."""
        from lab.generate import GenerationSettings, generate_batch

        settings = GenerationSettings(
            temperature=self.config.temperature, max_new_tokens=self.config.max_new_tokens, seed=self.config.seed
        )
        answers, size = [], self.config.batch_size
        with self.models.use(c.view) as lm:
            for start in range(0, len(self.prompts), size):
                self._step(f"Answering as {c.name}", start, len(self.prompts))
                batch = [c.messages(p) for p in self.prompts[start : start + size]]
                answers += [{"text": g.text, "tokens": g.new_tokens} for g in generate_batch(lm, batch, settings)]
        self.rows[c.name]["mean_length"] = mean([a["tokens"] for a in answers])
        return answers

    def _kl(self) -> None:
        """log p(answer) under the model as asked, minus under the plain base, averaged over its answers."""
        from lab.evaluate import answer_logprobs

        for c in self.who:
            if c.view == BASE_VIEW and not c.system and c.template == "{question}":
                self.rows[c.name]["kl"] = 0.0
                continue
            self._step(f"KL from the base of {c.name}", 0, 1)
            texts = [a["text"] for a in self.answers[c.name]]
            with self.models.use(c.view) as lm:
                ours = answer_logprobs(lm, [(c.messages(p), t) for p, t in zip(self.prompts, texts, strict=True)])
            with self.models.use(BASE_VIEW) as lm:
                base = answer_logprobs(lm, list(zip(self.prompts, texts, strict=True)))
            self.rows[c.name]["kl"] = mean([a - b for a, b in zip(ours, base, strict=True)])

    def _check(self) -> None:
        from lab.rewards import build_reward

        rule = build_reward(self.config.checks)
        for c in self.who:
            values = rule(self.prompts, [a["text"] for a in self.answers[c.name]])
            for answer, value in zip(self.answers[c.name], values, strict=True):
                answer["check"] = value
            self.rows[c.name]["check"] = mean(values)

    def _judge(self) -> dict:
        """Each model's win rate against the reference (and the rewards of its answers, for a reward judge); the
        head-to-heads of tuned models against the prompted base, by (tuned, prompted) name."""
        if self.config.judge.startswith(CHAT_JUDGE):
            from lab.evaluate import chat_judge

            view = self.config.judge.removeprefix(CHAT_JUDGE)
            with self.models.use(view) as lm:  # the judge reads under the lock: no adapter switches meanwhile
                return self._win_rates(chat_judge(lm, self.prompts))
        return self._win_rates(self._rewards())

    def _rewards(self) -> PairJudge:
        """Score every answer with the reward spec; the judge then prefers the answer with the higher reward."""
        from lab.evaluate import bootstrap_interval, reward_judge
        from lab.rewards import build_reward

        judge = build_reward(judge_spec(self.config.judge), self.store, self.config.device)
        scores = {}
        for number, c in enumerate(self.who):
            self._step("Scoring", number, len(self.who))
            texts = [a["text"] for a in self.answers[c.name]]
            rewards = judge(self.prompts, texts)
            for index, (answer, reward) in enumerate(zip(self.answers[c.name], rewards, strict=True)):
                answer["reward"] = scores[index, answer["text"]] = reward
            low, high = bootstrap_interval(rewards)
            self.rows[c.name].update(mean_reward=mean(rewards), reward_low=low, reward_high=high)
        return reward_judge(scores)

    def _win_rates(self, judged: PairJudge) -> dict:
        """Every model against the reference, each pair judged in both orders; then the head-to-heads."""
        from lab.evaluate import win_rate

        def against(c: Contender, other: Contender):
            texts = [[a["text"] for a in self.answers[x.name]] for x in (c, other)]
            return win_rate(judged, *texts, c.name, other.name)

        reference = self.who[0]
        for number, c in enumerate(self.who[1:]):
            self._step(f"Judging against {reference.name}", number, len(self.who) - 1)
            result = against(c, reference)
            low, high = result.interval()
            self.rows[c.name].update(
                win_rate=result.rate, win_low=low, win_high=high, position_bias=result.position_bias
            )
        return {(t.name, p.name): against(t, p) for t, p in prompt_or_finetune(self.who)}

    def _truthfulqa(self) -> dict:
        """MC1 and MC2 of every model as it is asked, and each one's paired difference from the reference."""
        from lab.evaluate import paired_difference, truthfulqa_mc
        from lab.truthfulqa import read_questions

        questions = read_questions(self.config.truthfulqa)
        questions = questions[: self.config.mc_limit] if self.config.mc_limit else questions
        results = {}
        for number, c in enumerate(self.who):
            self._step("TruthfulQA multiple choice", number, len(self.who))
            asked = [replace(q, question=c.template.replace("{question}", q.question)) for q in questions]
            with self.models.use(c.view) as lm:
                results[c.name] = truthfulqa_mc(lm, asked, c.system or None, c.name)
            row = self.rows[c.name]
            for metric in ("mc1", "mc2"):
                row[metric] = getattr(results[c.name], metric)
                row[f"{metric}_low"], row[f"{metric}_high"] = results[c.name].interval(metric)
        for c in self.who[1:]:
            delta = paired_difference(results[self.who[0].name], results[c.name], "mc1")
            self.rows[c.name].update(mc1_delta=delta.difference, mc1_delta_low=delta.low, mc1_delta_high=delta.high)
        return results

    def _verdicts(self, head_to_head: dict, mc: dict) -> list[dict]:
        from lab.evaluate import paired_difference, verdict

        verdicts = []
        for tuned, prompted in prompt_or_finetune(self.who):
            match = head_to_head.get((tuned.name, prompted.name))
            delta = paired_difference(mc[prompted.name], mc[tuned.name], "mc1") if mc else None
            if match is None and delta is None:
                continue
            entry = {
                "tuned": tuned.name,
                "prompted": prompted.name,
                "sentence": verdict(prompted.name, tuned.name, match, delta),
            }
            if match is not None:
                entry.update(zip(("win_rate", "win_low", "win_high"), (match.rate, *match.interval()), strict=True))
            verdicts.append(entry)
        return verdicts


def judge_spec(judge: str) -> str:
    """The reward spec a judge names: a reward run's id alone means `model:RUN`; anything else is a spec."""
    return f"model:{judge}" if re.fullmatch(r"[\w.-]+", judge) and ":" not in judge and judge != "refusal" else judge


def prompt_or_finetune(who: list[Contender]) -> list[tuple[Contender, Contender]]:
    """(tuned model, prompted base) pairs to settle "prompt or fine-tune?": every adapter, with the prompt or
    without, against the base with the prompt."""
    prompted = [c for c in who if c.view == BASE_VIEW and c.prompted]
    return [(c, p) for p in prompted for c in who if c.view != BASE_VIEW]


def mean(values: list[float]) -> float:
    return float(np.mean(values)) if len(values) else float("nan")


def read_prompts(path: Path, limit: int = 0) -> list[list[dict]]:
    """The run's frozen prompts (TRL's prompt-only rows: each a list of messages ending with the user's turn)."""
    rows = [json.loads(line)["prompt"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return rows[:limit] if limit else rows


def write_answers(path: Path, prompts: list[list[dict]], answers: dict[str, list[dict]]) -> None:
    """One line per prompt: its turns and every model's answer (with its reward and check, when judged)."""
    with path.open("w", encoding="utf-8") as out:
        for index, prompt in enumerate(prompts):
            out.write(json.dumps({"prompt": prompt, "answers": {name: a[index] for name, a in answers.items()}}) + "\n")


def read_report(run_dir: Path) -> dict | None:
    """An evaluation run's report, or None when it has none (still running, stopped, failed)."""
    path = run_dir / "report.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def report_head(report: dict) -> str:
    """What the report's win rates are measured against, in one line."""
    head = f"{report['prompts']} prompts; win rates against {report['reference']}"
    if report.get("judge"):
        head += f", judged by {report['judge']} in both orders"
    return head


def report_text(report: dict) -> str:
    """The report as a terminal table (each metric with its 95% interval), then the verdicts."""
    from lab.evaluate import report_table, summary_table

    table = summary_table(report_table({"": report})).to_string(index=False)
    return "\n".join([report_head(report), table, *(v["sentence"] for v in report.get("verdicts", []))])
