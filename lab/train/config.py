"""Run configs: the groups every training method shares (model, LoRA, optimisation, data), checked fields
(lab.fields) that the Training tab's form and the CLI's flags are generated from.

A method's config inherits `TrainConfig` and adds its own fields; it is saved as the run's config.yaml, which
`python -m lab train METHOD --config FILE` reads back with the same checks.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

from lab.fields import Checked, help_field
from lab.refs import DEFAULT_MODEL, DEVICES, TRAINABLE_PRECISIONS

# The shared groups. A method's config inherits the ones it needs, then adds its own fields.


@dataclass
class ModelSettings:
    model: str = help_field(DEFAULT_MODEL, "Base model: the embedded default, a local folder, or a hub id.", form=False)
    precision: str = help_field(
        "fp32",
        "fp32 / bf16 / fp16, or 4bit for QLoRA (NF4 base, LoRA in full precision). 8-bit bases do not train.",
        choices=TRAINABLE_PRECISIONS,
        form=False,
    )
    device: str = help_field("auto", "Where to train: auto, cpu, cuda or mps.", choices=DEVICES, form=False)
    mixed_precision: bool = help_field(
        True,
        "Compute in bf16 where the hardware does it natively (recent GPUs; CPUs with AVX512-BF16 or AMX), "
        "keeping the weights in their precision: faster and lighter, as TRL does by default.",
    )
    init_adapter: str = help_field(
        "", "Continue training this adapter folder instead of starting a new one.", form=False
    )


@dataclass
class LoraSettings:
    lora_r: int = help_field(16, "LoRA rank: the width of the low-rank update.", low=1, high=1024)
    lora_alpha: int = help_field(32, "LoRA scaling numerator; the update is scaled by alpha / r.", low=1, high=4096)
    lora_dropout: float = help_field(0.05, "Dropout on the LoRA input during training.", low=0, high=1, high_open=True)
    target_modules: str = help_field("all-linear", "Modules that get adapters: 'all-linear' or comma-separated names.")

    def lora_config(self, task_type: str = "CAUSAL_LM"):
        """PEFT's LoraConfig; `task_type` is CAUSAL_LM for chat adapters, SEQ_CLS for reward models."""
        from peft import LoraConfig

        targets = self.target_modules if self.target_modules == "all-linear" else self.target_modules.split(",")
        return LoraConfig(
            r=self.lora_r,
            lora_alpha=self.lora_alpha,
            lora_dropout=self.lora_dropout,
            target_modules=targets,
            task_type=task_type,
        )


@dataclass
class OptimSettings:
    learning_rate: float = help_field(
        2e-4, "Peak learning rate (LoRA tolerates higher rates than full tuning).", low=1e-8, high=1.0
    )
    epochs: float = help_field(3.0, "Passes over the data (ignored when max_steps > 0).", low=0, high=1000)
    max_steps: int = help_field(
        -1, "Stop after this many optimizer steps; -1 = run the epochs.", low=-1, high=1_000_000
    )
    batch_size: int = help_field(4, "Examples per step on the device.", low=1, high=4096)
    grad_accum: int = help_field(1, "Steps whose gradients add up before one optimizer update.", low=1, high=1024)
    warmup_ratio: float = help_field(
        0.0, "Share of the steps spent ramping the learning rate up.", low=0, high=1, high_open=True
    )
    seed: int = help_field(
        42, "Random seed for the split, the adapter's initialisation and shuffling.", low=0, high=2**32 - 1
    )
    logging_steps: int = help_field(1, "Write a metrics row every this many steps.", low=1, high=100_000)
    save_steps: int = help_field(25, "Write a checkpoint (for resume) every this many steps.", low=1, high=1_000_000)


@dataclass
class DataSettings:
    data: str = help_field(
        "", "The run's training data (JSONL in TRL's format), frozen into the run folder.", form=False
    )
    eval_fraction: float = help_field(
        0.1, "Share of the examples held out for the validation metrics.", low=0, high=0.5, high_open=True
    )
    max_length: int = help_field(
        512, "Longest training sequence in tokens; longer ones are truncated.", low=8, high=131072
    )


@dataclass
class RolloutSettings:
    """What the RL methods (rloo, grpo, reinforce) share: the reward, and how completions are sampled and held
    near the reference (the base with the adapter off)."""

    # Shared fields an RL run does not read (no held-out split; prompts are not cut): left out of the form.
    unused_fields: ClassVar[tuple[str, ...]] = ("eval_fraction", "max_length")

    reward: str = help_field(
        "length:100",
        "What to reward: a weighted sum of terms, e.g. 'model:RUN_ID + 0.5*length:200 - contains:sorry' "
        "(see lab.rewards: model, length, contains, not_contains, regex, refusal, echo, refuses_tagged, scenario).",
    )
    num_generations: int = help_field(
        4, "Completions sampled per prompt (K), compared with each other.", low=2, high=64
    )
    max_completion_length: int = help_field(64, "Longest completion sampled, in tokens.", low=1, high=8192)
    temperature: float = help_field(1.0, "Sampling temperature of the rollouts.", low=0.01, high=4)
    kl_coef: float = help_field(
        0.05,
        "Weight of the KL penalty to the reference: 0 lets the policy drift as far as the reward pulls it.",
        low=0,
        high=10,
    )
    sample_every: int = help_field(
        5,
        "Every this many steps, write the sampled completions of one prompt with their rewards to samples.jsonl "
        "(0 = never).",
        low=0,
        high=1_000_000,
    )

    def check(self) -> None:
        """A reward spec that cannot be read fails here, when the config is built, not in the training process."""
        from lab.rewards import RewardSpecError, parse_reward

        super().check()  # the next group's rules (TrainConfig's), in the method config's MRO
        try:
            parse_reward(self.reward)
        except RewardSpecError as err:
            raise ValueError(f"key 'reward': {err}") from err


@dataclass
class TrainConfig(DataSettings, OptimSettings, LoraSettings, ModelSettings, Checked):
    """The groups every LoRA-training method shares (model first in config.yaml); a method adds its own fields."""

    def check(self) -> None:
        if self.max_steps == 0 or (self.max_steps < 0 and self.epochs <= 0):
            raise ValueError("key 'max_steps': set max_steps > 0, or max_steps -1 with epochs > 0")


def config_from_preset(
    cls: type, preset: Any, overrides: dict | None = None, where: str = "--set", recipe: dict | None = None
) -> Any:
    """A method's config from a model preset (model, precision, device, LoRA, max length), then the preset's
    `recipe` for the method (its tier's learning rate, batch…), then the overrides."""
    overrides = dict(overrides or {})
    if preset.precision == "8bit" and "precision" not in overrides:
        raise ValueError(
            f"preset '{preset.name}' loads its model in 8-bit, which does not train here: LoRA trains on an "
            "fp32/bf16/fp16 base or a 4-bit one (QLoRA); set precision=4bit or pick another preset"
        )
    targets = preset.lora.target_modules
    values = {
        "model": preset.model,
        "precision": preset.precision,
        "device": preset.device,
        "lora_r": preset.lora.r,
        "lora_alpha": preset.lora.alpha,
        "lora_dropout": preset.lora.dropout,
        "target_modules": ",".join(targets) if isinstance(targets, list) else targets,
        "max_length": preset.max_length,
    }
    names = {f.name for f in dataclasses.fields(cls)}
    preset_values = {**{k: v for k, v in values.items() if k in names}, **(recipe or {})}
    return cls.from_dict({**preset_values, **overrides}, where)


def form_fields(cls: type) -> list[dataclasses.Field]:
    """The fields a person sets in the Training tab (the rest come from the preset or the data picker)."""
    unused = getattr(cls, "unused_fields", ())
    return [f for f in dataclasses.fields(cls) if f.metadata.get("form", True) and f.name not in unused]


def group_of(cls: type, name: str) -> str:
    """Which shared group a field belongs to ('model', 'lora', 'optimisation', 'data'), or the method's own."""
    groups = (
        (ModelSettings, "model"),
        (LoraSettings, "LoRA"),
        (OptimSettings, "optimisation"),
        (DataSettings, "data"),
        (RolloutSettings, "rollouts"),
    )
    for group, label in groups:
        if issubclass(cls, group) and name in {f.name for f in dataclasses.fields(group)}:
            return label
    return f"{cls.__name__.removesuffix('RunConfig').lower() or 'method'} only"
