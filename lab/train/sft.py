"""Supervised fine-tuning with a LoRA adapter (optionally on a 4-bit base: QLoRA), through TRL's SFTTrainer.

The data is the run's own data.jsonl (TRL's conversational `messages` format),
frozen when the run is prepared; the loss falls on the assistant turns only.

    python -m lab train sft --preset cpu-default --data demos.jsonl --max-steps 30
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lab.train.config import TrainConfig, help_field


@dataclass
class SFTRunConfig(TrainConfig):
    """Everything an SFT run needs; saved as the run's config.yaml."""

    sample_every: int = help_field(
        20,
        "Every this many steps, write the model's answer to two held-out prompts to samples.jsonl (0 = never).",
        low=0,
        high=1_000_000,
    )


def load_examples(path: str | Path, eval_fraction: float, seed: int):
    """data.jsonl → (train, eval) datasets of prompt/completion pairs, split by conversation."""
    from datasets import Dataset

    from lab.data import sft_examples
    from lab.store import Demonstration
    from lab.train.snapshot import read_rows

    demos = [Demonstration(row["messages"]) for row in read_rows(path)]
    if not demos:
        raise ValueError("The training data is empty: add demonstrations first.")
    n_eval = int(len(demos) * eval_fraction)
    if n_eval == 0:
        return Dataset.from_list(sft_examples(demos)), None
    split = Dataset.from_list([{"index": i} for i in range(len(demos))]).train_test_split(test_size=n_eval, seed=seed)
    pick = lambda part: Dataset.from_list(sft_examples([demos[i] for i in split[part]["index"]]))  # noqa: E731
    return pick("train"), pick("test")


def build(config: SFTRunConfig, run_dir: Path):
    """TRL's SFTTrainer for this config: the base (maybe 4-bit), a LoRA adapter, a sampler of held-out answers."""
    from trl import SFTConfig, SFTTrainer

    from lab.train.callbacks import SamplesCallback
    from lab.train.common import load_for_training, training_args

    lm, model, peft_config = load_for_training(config, kind="chat")
    train, evaluation = load_examples(config.data, config.eval_fraction, config.seed)
    args = training_args(
        SFTConfig,
        config,
        run_dir,
        lm.device,
        has_eval=evaluation is not None,
        max_length=config.max_length,
        completion_only_loss=True,  # loss on the assistant turns only
    )
    held_out = evaluation if evaluation is not None else train
    prompts = [row["prompt"] for row in held_out.select(range(min(2, len(held_out))))]
    return SFTTrainer(
        model=model,
        args=args,
        train_dataset=train,
        eval_dataset=evaluation,
        processing_class=lm.tokenizer,
        peft_config=peft_config,
        callbacks=[SamplesCallback(run_dir, prompts, config.sample_every)],
    )
