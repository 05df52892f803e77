"""Inspect a trained reward model on the pairs it never trained on: held-out pairwise accuracy with a 95% interval,
the "always prefer the longer answer" baseline, how much of the reward length alone explains, the pairs it gets
most wrong, and two plotly figures.

`inspect_reward` scores a reward run's held-out pairs (the same split the run used); `summarise` and
`length_bias` are the pure parts, so they are checked without a model.

    from lab.reward_report import inspect_reward
    report = inspect_reward(store, "reward-20250101-120000-ab12")
    print(report.accuracy, report.accuracy_ci, report.length_baseline)
    report.reward_histogram().show()
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import plotly.graph_objects as go

if TYPE_CHECKING:
    from lab.rewards import Prompt
    from lab.store import Comparison, Store

R_SQUARED_LIMIT = 0.5  # length "explains" the reward above this share of its variance
LONGER_PREFERRED_LIMIT = 0.7  # pairs whose longer answer is chosen this often teach length rather than quality
TOP_K = 5


@dataclass(frozen=True)
class LengthBias:
    """How far answer length (in characters) goes in explaining a set of pairs, and their rewards if given.

    - `longer_preferred`: the share of pairs whose chosen answer is the longer one, ties in length counting half;
      it is also the accuracy of a "reward model" that always prefers the longer answer.
    - `length_explains_preference`: `longer_preferred >= LONGER_PREFERRED_LIMIT` (0.7): a reward model trained on
      such pairs can score well by rewarding length alone.
    - `r`: Pearson's correlation of reward against length over every scored answer (chosen and rejected), None
      without rewards or when lengths or rewards are all equal (no correlation is defined).
    - `length_explains_reward`: `r**2 > R_SQUARED_LIMIT` (0.5): length alone accounts for more than half of the
      variance of the rewards.
    """

    pairs: int
    longer_preferred: float
    r: float | None = None

    @property
    def length_explains_preference(self) -> bool:
        return self.longer_preferred >= LONGER_PREFERRED_LIMIT

    @property
    def r_squared(self) -> float | None:
        return None if self.r is None else self.r**2

    @property
    def length_explains_reward(self) -> bool:
        return self.r is not None and self.r**2 > R_SQUARED_LIMIT


def length_bias(
    chosen: Sequence[str],
    rejected: Sequence[str],
    chosen_rewards: Sequence[float] | None = None,
    rejected_rewards: Sequence[float] | None = None,
) -> LengthBias:
    """Length against preference for pairs (chosen[i], rejected[i]), and against reward when both reward lists
    are given (one reward per answer, in the same order)."""
    if len(chosen) != len(rejected) or not chosen:
        raise ValueError(
            f"Need as many chosen as rejected answers, at least one: got {len(chosen)} and {len(rejected)}."
        )
    chosen_len, rejected_len = np.array([len(t) for t in chosen]), np.array([len(t) for t in rejected])
    longer = float(np.mean((chosen_len > rejected_len) + 0.5 * (chosen_len == rejected_len)))
    r = None
    if chosen_rewards is not None and rejected_rewards is not None:
        if not len(chosen_rewards) == len(rejected_rewards) == len(chosen):
            raise ValueError("Need one reward per chosen and per rejected answer.")
        lengths = np.concatenate([chosen_len, rejected_len]).astype(float)
        rewards = np.concatenate([chosen_rewards, rejected_rewards]).astype(float)
        # a constant has no correlation: pearsonr would warn and return nan, which a flag must not read as "no bias"
        if lengths.std() > 0 and rewards.std() > 0:
            r = float(np.corrcoef(lengths, rewards)[0, 1])
    return LengthBias(pairs=len(chosen), longer_preferred=longer, r=r)


def wilson_interval(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion: unlike the normal approximation it stays inside [0, 1]
    and is sensible at 0 or n successes, which a small held-out set often gives."""
    from scipy.stats import binomtest

    ci = binomtest(successes, trials).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


@dataclass(frozen=True)
class ScoredPair:
    """One held-out pair with the reward of each answer; `margin` > 0 means the model prefers the rejected one."""

    prompt: Prompt
    chosen: str
    rejected: str
    chosen_reward: float
    rejected_reward: float

    @property
    def margin(self) -> float:
        return self.rejected_reward - self.chosen_reward


@dataclass(frozen=True)
class RewardReport:
    """A reward model on its held-out pairs. Accuracy counts a pair right only when the chosen answer scores
    strictly higher (as TRL's eval_accuracy does), so a tie is wrong."""

    run_id: str
    pairs: list[ScoredPair]
    accuracy: float
    accuracy_ci: tuple[float, float]  # 95% Wilson interval
    length: LengthBias
    worst: list[ScoredPair] = field(default_factory=list)  # largest rejected-minus-chosen margin first
    # The annotators' agreement with each other on the items two or more voted ({"items", "percent"}), from the
    # run's provenance: the ceiling of a reward model's accuracy on these labels. None for data from a file.
    agreement: dict | None = None

    @property
    def n_pairs(self) -> int:
        return len(self.pairs)

    @property
    def length_baseline(self) -> float:
        """Accuracy of always preferring the longer answer on the same pairs (ties in length count half)."""
        return self.length.longer_preferred

    @property
    def length_r(self) -> float | None:
        return self.length.r

    @property
    def length_explains_reward(self) -> bool:
        """r² of reward against length > 0.5 (see LengthBias)."""
        return self.length.length_explains_reward

    def summary(self) -> str:
        """One Markdown paragraph: accuracy against the length baseline, and the length warning if it applies."""
        low, high = self.accuracy_ci
        r = "undefined" if self.length_r is None else f"{self.length_r:.2f}"
        lines = [
            f"**Held-out accuracy {self.accuracy:.1%}** (95% CI {low:.1%} to {high:.1%}, {self.n_pairs} pairs); "
            f"always preferring the longer answer scores {self.length_baseline:.1%}. Reward against length: r = {r}."
        ]
        lines.append(self.ceiling())
        if self.length_explains_reward:
            lines.append("Length alone explains more than half of the reward's variance: check for a length bias.")
        return "  \n".join(lines)

    def ceiling(self) -> str:
        """The annotators' own agreement in one sentence, or why it is not known."""
        if self.agreement is None:
            return "The annotators' agreement is not known for data from a file."
        if not self.agreement.get("items") or self.agreement.get("percent") is None:
            return "The annotators' agreement is not measured yet: no item was voted on by two people."
        return (
            f"The annotators agree with each other on {self.agreement['percent']:.1%} of the "
            f"{self.agreement['items']} items two or more voted on: the ceiling for a model trained on their labels."
        )

    def reward_histogram(self) -> go.Figure:
        """Rewards of chosen and of rejected answers, overlaid: a good model separates the two humps."""
        fig = go.Figure()
        for name, values, color in (
            ("chosen", [p.chosen_reward for p in self.pairs], "#16a34a"),
            ("rejected", [p.rejected_reward for p in self.pairs], "#dc2626"),
        ):
            fig.add_trace(go.Histogram(x=values, name=name, opacity=0.6, marker={"color": color}))
        fig.update_layout(barmode="overlay", title="Held-out rewards", xaxis_title="reward", yaxis_title="answers")
        return fig

    def reward_vs_length(self) -> go.Figure:
        """Reward against answer length (characters), chosen and rejected in two colours, r in the title."""
        fig = go.Figure()
        for name, points, color in (
            ("chosen", [(len(p.chosen), p.chosen_reward) for p in self.pairs], "#16a34a"),
            ("rejected", [(len(p.rejected), p.rejected_reward) for p in self.pairs], "#dc2626"),
        ):
            x, y = zip(*points, strict=True) if points else ((), ())
            fig.add_trace(go.Scatter(x=x, y=y, name=name, mode="markers", marker={"color": color}))
        r = "undefined" if self.length_r is None else f"{self.length_r:.2f}"
        fig.update_layout(title=f"Reward against length (r = {r})", xaxis_title="characters", yaxis_title="reward")
        return fig


def summarise(run_id: str, pairs: list[ScoredPair], top_k: int = TOP_K, agreement: dict | None = None) -> RewardReport:
    """The report for pairs already scored; `agreement` is the votes' agreement the run's data recorded."""
    if not pairs:
        raise ValueError(f"Run {run_id} has no held-out pairs to inspect: train it with eval_fraction above 0.")
    right = sum(p.chosen_reward > p.rejected_reward for p in pairs)
    length = length_bias(
        [p.chosen for p in pairs],
        [p.rejected for p in pairs],
        [p.chosen_reward for p in pairs],
        [p.rejected_reward for p in pairs],
    )
    worst = sorted(pairs, key=lambda p: p.margin, reverse=True)[:top_k]
    accuracy, interval = right / len(pairs), wilson_interval(right, len(pairs))
    return RewardReport(run_id, pairs, accuracy, interval, length, worst, agreement)


def split_answer(prompt: Prompt, answer: str | list[dict]) -> tuple[Prompt, str]:
    """(prompt, response) as the reward model reads one side of a row: an answer given as messages puts all but
    its last turn after the prompt, so a multi-turn answer is scored as the trainer saw it."""
    if isinstance(answer, str):
        return prompt, answer
    if len(answer) == 1:
        return prompt, answer[0]["content"]
    from lab.generate import build_messages

    turns = build_messages(prompt) if isinstance(prompt, str) else list(prompt)  # as lab.rewards.conversation does
    return turns + [dict(m) for m in answer[:-1]], answer[-1]["content"]


def held_out_rows(store: Store, run_id: str) -> list[dict]:
    """The run's held-out pairs: its frozen data.jsonl split as the run split it (config.yaml's seed and
    eval_fraction), so none of these pairs was trained on."""
    import yaml

    from lab.jobs import run_dir
    from lab.train.reward import split_by_prompt
    from lab.train.snapshot import read_rows

    folder = run_dir(store, run_id)
    config = yaml.safe_load((folder / "config.yaml").read_text(encoding="utf-8"))
    return split_by_prompt(read_rows(folder / "data.jsonl"), config["eval_fraction"], config["seed"])[1]


def inspect_reward(
    store: Store,
    run_id: str,
    batch_size: int = 8,
    top_k: int = TOP_K,
    device: str = "auto",
    precision: str | None = None,
) -> RewardReport:
    """Score a reward run's held-out pairs with its reward model and report accuracy, the length baseline, the
    length correlation and the `top_k` worst pairs. Raises ValueError when the run held out no pairs."""
    from lab.rewards import load_reward_model, score

    rows = held_out_rows(store, run_id)
    if not rows:  # before loading a model: an empty split is a config problem, said in one sentence
        return summarise(run_id, [], top_k)
    data = (store.get_run(run_id).provenance or {}).get("data") or {}
    agreement = (data.get("details") or {}).get("agreement")
    lm = load_reward_model(store, run_id, precision=precision, device=device, progress=lambda _: None)
    chosen = [split_answer(row["prompt"], row["chosen"]) for row in rows]
    rejected = [split_answer(row["prompt"], row["rejected"]) for row in rows]
    rewards = score(lm, chosen + rejected, batch_size)  # one call: batches fill across both sides
    pairs = [
        ScoredPair(row["prompt"], c[1], r[1], rewards[i], rewards[len(rows) + i])
        for i, (row, c, r) in enumerate(zip(rows, chosen, rejected, strict=True))
    ]
    return summarise(run_id, pairs, top_k, agreement)


def votes_behind(votes: list[Comparison], pair: ScoredPair) -> list[Comparison]:
    """Those of `votes` (the workspace's live ones) that made this pair (its prompt, its chosen answer ranked above
    its rejected one): where a wrong label is fixed, by withdrawing the vote."""
    from lab.preferences import ranked_pairs

    prompt = json.dumps(pair.prompt, sort_keys=True)
    found = []
    for vote in votes:
        if vote.verdict != "ranked" or json.dumps(vote.prompt, sort_keys=True) != prompt:
            continue
        texts = [c["text"] for c in vote.candidates]
        if any((texts[b], texts[w]) == (pair.chosen, pair.rejected) for b, w in ranked_pairs(vote.ranks)):
            found.append(vote)
    return found
