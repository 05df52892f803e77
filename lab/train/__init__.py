"""The training methods, one module each, and the registry that the Training tab, the CLI and `Lab.train` read.

A method declares its config dataclass (shared groups plus its own fields), the
data it trains on, what it produces and the curves worth watching; its module
holds a `build(config, run_dir) -> trainer` and nothing else. Adding a method is
one module and one `register(...)` line here: the form, the CLI flags, the data
snapshot, the curves and the adapter listings follow from this entry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lab.fields import Checked
from lab.train import dpo, evaluation, grpo, reinforce, reward, rloo, sft

DATA = ("demonstrations", "preferences", "prompts")
PRODUCTS = {"chat-adapter": "chat", "reward-model": "reward", "report": None}  # product → adapter kind it lists as

LOSS_PANELS = (("loss", "training loss"), ("eval_loss", "validation loss"))
SYSTEM_PANELS = (
    ("learning_rate", "learning rate"),
    ("grad_norm", "gradient norm"),
    ("tokens_per_second", "tokens / s"),
    ("memory_mb", "peak memory (MiB)"),
)


@dataclass(frozen=True)
class Method:
    """One training method as the rest of the lab sees it."""

    name: str
    summary: str  # one line for the form and `--help`
    config: type[Checked]
    data: str  # one of DATA: what it trains on
    produces: str  # one of PRODUCTS
    panels: tuple[tuple[str, str], ...]  # (metric key in metrics.jsonl, panel title)
    build: Callable  # (config, run_dir) -> a transformers Trainer, built in the training process

    def __post_init__(self) -> None:
        if self.data not in DATA or self.produces not in PRODUCTS:
            raise ValueError(f"method {self.name}: data must be one of {DATA}, produces one of {tuple(PRODUCTS)}")

    def config_for(self, preset: Any, overrides: dict | None = None, where: str = "--set") -> Checked:
        """This method's config from a model preset, the preset's recipe for this method, then `overrides`."""
        from lab.train.config import config_from_preset

        recipe = preset.recipes.get(self.name, {})
        return config_from_preset(self.config, preset, overrides, where, recipe)

    @property
    def adapter_kind(self) -> str | None:
        """'chat' or 'reward' for the adapter a finished run leaves, None for a report."""
        return PRODUCTS[self.produces]


METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    if method.name in METHODS:
        raise ValueError(f"a method named '{method.name}' is already registered")
    METHODS[method.name] = method
    return method


def training_methods() -> dict[str, Method]:
    """The methods that train an adapter (the Training tab's and `lab train`'s), not those that write a report."""
    return {name: m for name, m in METHODS.items() if m.adapter_kind is not None}


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"Unknown training method '{name}': choose one of {', '.join(METHODS)}.")
    return METHODS[name]


register(
    Method(
        name="sft",
        summary="Supervised fine-tuning on demonstrations (the ideal responses), loss on the assistant turns.",
        config=sft.SFTRunConfig,
        data="demonstrations",
        produces="chat-adapter",
        panels=LOSS_PANELS + SYSTEM_PANELS,
        build=sft.build,
    )
)

register(
    Method(
        name="reward",
        summary="A reward model from preference pairs: a one-score head learns to rank the chosen answer above "
        "the rejected one (Bradley-Terry).",
        config=reward.RewardRunConfig,
        data="preferences",
        produces="reward-model",
        panels=LOSS_PANELS
        + (("eval_accuracy", "held-out pairwise accuracy"), ("eval_margin", "held-out mean margin"))
        + (("accuracy", "training pairwise accuracy"), ("margin", "training mean margin"))
        + SYSTEM_PANELS,
        build=reward.build,
    )
)

register(
    Method(
        name="dpo",
        summary="Direct preference optimisation: the policy learns to prefer the chosen answer over the rejected "
        "one relative to the base (the adapter off), with no reward model.",
        config=dpo.DPORunConfig,
        data="preferences",
        produces="chat-adapter",
        panels=LOSS_PANELS
        + (("rewards/chosen", "reward of chosen"), ("rewards/rejected", "reward of rejected"))
        + (("rewards/margins", "reward margin"), ("rewards/accuracies", "preference accuracy"))
        + (("eval_rewards/margins", "held-out reward margin"), ("eval_rewards/accuracies", "held-out accuracy"))
        + SYSTEM_PANELS,
        build=dpo.build,
    )
)

RL_PANELS = (
    ("reward", "mean reward"),
    ("reward_std", "reward spread (std over the batch)"),
    ("kl", "KL to the reference (per token)"),
    ("completions/mean_length", "completion length (tokens)"),
    ("completions/clipped_ratio", "share cut at max_completion_length"),
    ("clip_ratio/region_mean", "clipped fraction (policy ratio)"),
)

register(
    Method(
        name="rloo",
        summary="RL on prompts (RLOO): K completions per prompt, each rewarded against the mean of the other K-1, "
        "held near the base by a KL penalty.",
        config=rloo.RLOORunConfig,
        data="prompts",
        produces="chat-adapter",
        panels=RL_PANELS + SYSTEM_PANELS,
        build=rloo.build,
    )
)

register(
    Method(
        name="grpo",
        summary="RL on prompts (GRPO): K completions per prompt, each rewarded against its group's mean in units "
        "of the group's spread, held near the base by a KL term in the loss.",
        config=grpo.GRPORunConfig,
        data="prompts",
        produces="chat-adapter",
        panels=RL_PANELS + SYSTEM_PANELS,
        build=grpo.build,
    )
)

register(
    Method(
        name="reinforce",
        summary="RL on prompts, written out (REINFORCE): K completions per prompt, each one's log-probability "
        "weighted by its reward minus a baseline (none, running mean or leave-one-out), held near the base by a "
        "KL penalty.",
        config=reinforce.ReinforceRunConfig,
        data="prompts",
        produces="chat-adapter",
        panels=reinforce.PANELS + SYSTEM_PANELS,
        build=reinforce.build,
    )
)

register(
    Method(
        name="eval",
        summary="Evaluation: several models answer the same held-out prompts; win rates by a reward-model judge in "
        "both orders, KL from the base, length, rule checks and TruthfulQA MC1/MC2, with 95% intervals.",
        config=evaluation.EvalRunConfig,
        data="prompts",
        produces="report",
        panels=(),
        build=evaluation.build,
    )
)
