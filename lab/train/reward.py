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

PAIRINGS = ("pairwise", "per-ranking")
MAX_RANKING_PAIRS = 45  # a ranking of 10 answers; a larger group of pairs (a file's repeated prompt) is split


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
    pairing: str = help_field(
        "pairwise",
        "pairwise: the pairs shuffled into batches of batch_size, as TRL trains. per-ranking: as InstructGPT "
        "trained, all the pairs of one ranking (the pairs that share a prompt, at most 45: K = 10) in one batch, "
        "so an answer that is in several pairs is not overfit one pair at a time; the loss averages over a "
        "ranking's pairs, then over batch_size x grad_accum rankings per update. Either way ties make no pair and "
        "both-bad votes none (neither says which answer is better); the other pairs of a ranking with a tie stay.",
        choices=PAIRINGS,
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


def ranking_batches(prompts: list, limit: int = MAX_RANKING_PAIRS) -> list[list[int]]:
    """Row indices grouped by prompt (one ranking's pairs), in first-seen order, split beyond `limit` pairs."""
    groups: dict[str, list[int]] = {}
    for index, prompt in enumerate(prompts):
        groups.setdefault(json.dumps(prompt, sort_keys=True), []).append(index)
    return [rows[start : start + limit] for rows in groups.values() for start in range(0, len(rows), limit)]


class RankingSampler:
    """A batch sampler: one ranking per batch, the rankings in a new seeded order on every pass."""

    def __init__(self, batches: list[list[int]], seed: int) -> None:
        self.batches, self.seed, self.passes = batches, seed, 0

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        import random

        order = random.Random(self.seed + self.passes).sample(self.batches, len(self.batches))
        self.passes += 1
        return iter(order)


def per_ranking(trainer_cls: type) -> type:
    """`trainer_cls` (TRL's RewardTrainer) with training batches of one ranking each; TRL's loss, the mean over a
    batch's pairs, is then InstructGPT's mean over a ranking's pairs."""

    class PerRankingTrainer(trainer_cls):
        def get_train_dataloader(self):
            from torch.utils.data import DataLoader

            batches = ranking_batches(self.train_dataset["prompt"])
            dataset = self._remove_unused_columns(self.train_dataset, description="training")
            sampler = RankingSampler(batches, self.args.seed)
            loader = DataLoader(
                dataset,
                batch_sampler=sampler,
                collate_fn=self.data_collator,
                pin_memory=self.args.dataloader_pin_memory,
            )
            return self.accelerator.prepare(loader)

    return PerRankingTrainer


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
    ranked = config.pairing == "per-ranking"
    args = training_args(
        RewardConfig,
        config,
        run_dir,
        lm.device,
        has_eval=bool(held_out),
        max_length=config.max_length,
        center_rewards_coefficient=config.center_rewards_coefficient or None,
        # per-ranking: one ranking per forward pass, so an update averages batch_size x grad_accum of them
        **({"gradient_accumulation_steps": config.batch_size * config.grad_accum} if ranked else {}),
    )
    trainer = (per_ranking(RewardTrainer) if ranked else RewardTrainer)(
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
