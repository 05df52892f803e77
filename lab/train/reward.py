"""A reward model from preference pairs: a one-score head on the base, with a LoRA adapter, trained by TRL's
RewardTrainer on the Bradley-Terry loss (the chosen answer should score above the rejected one).

The data is the run's own data.jsonl (TRL's conversational prompt / chosen / rejected rows), frozen when the
run is prepared. The head is saved with the adapter: PEFT's SEQ_CLS task puts the model's classification head
(`score` on Llama-like bases) in `modules_to_save`, so the adapter folder alone turns a base into the reward model.

    python -m lab train reward --preset cpu-default --data pairs.jsonl --max-steps 30
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from lab.train.config import TrainConfig, help_field


@dataclass
class RewardRunConfig(TrainConfig):
    """Everything a reward-model run needs; saved as the run's config.yaml."""

    center_rewards_coefficient: float = help_field(
        0.01,
        "Weight of a penalty on the squared mean reward, which keeps scores centred on 0 so that they compare "
        "across prompts (Eisenstein et al. 2023; TRL recommends 0.01). 0 = no penalty.",
        low=0,
        high=10,
    )


def split_by_prompt(rows: list[dict], eval_fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """(train, held-out) pairs, holding out whole prompts: pairs of one prompt share most of their text, so a
    prompt seen in training would flatter the held-out accuracy."""
    import random

    prompts = sorted({json.dumps(row["prompt"], sort_keys=True) for row in rows})
    random.Random(seed).shuffle(prompts)
    held_out = set(prompts[: int(len(prompts) * eval_fraction)])
    train = [row for row in rows if json.dumps(row["prompt"], sort_keys=True) not in held_out]
    return train, [row for row in rows if json.dumps(row["prompt"], sort_keys=True) in held_out]


def build(config: RewardRunConfig, run_dir: Path):
    """TRL's RewardTrainer for this config: the base (maybe 4-bit) with a one-score head and a LoRA adapter."""
    from datasets import Dataset
    from trl import RewardConfig, RewardTrainer

    from lab.train.common import load_for_training, training_args
    from lab.train.snapshot import read_rows

    rows = read_rows(config.data)
    if not rows:
        raise ValueError("The training data is empty: vote in the Ranking tab or import preferences first.")
    train, held_out = split_by_prompt(rows, config.eval_fraction, config.seed)
    lm, model, peft_config = load_for_training(config, kind="reward")
    args = training_args(
        RewardConfig,
        config,
        run_dir,
        lm.device,
        has_eval=bool(held_out),
        max_length=config.max_length,
        center_rewards_coefficient=config.center_rewards_coefficient or None,
    )
    trainer = RewardTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(train),
        eval_dataset=Dataset.from_list(held_out) if held_out else None,
        processing_class=lm.tokenizer,
        peft_config=peft_config,
    )
    # RewardTrainer drops (rather than truncates) pairs longer than max_length: say so, and refuse if none is left.
    kept = len(trainer.train_dataset)
    if kept == 0:
        raise ValueError(f"Every training pair is longer than max_length={config.max_length} tokens: raise it.")
    if kept < len(train):
        print(f"{len(train) - kept} of {len(train)} training pairs are longer than max_length and left out.")
    return trainer
