"""What the online RL methods built on TRL (rloo, grpo) share: their config, the prompts, the reward, the samples
written while training, and the trainer built from them.

Each step samples K = num_generations completions per prompt from the policy (the base with a LoRA adapter),
scores them with the run's reward (lab.rewards: rule terms and reward models in a weighted sum) and moves the
policy towards the completions that scored above their group's baseline, held near the reference by a KL penalty
of weight kl_coef (TRL's beta). The reference is the base with the adapter disabled, so no second copy of the
weights is loaded; a continued adapter (init_adapter) is its own reference, as TRL copies it before training.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab.train.config import RolloutSettings, TrainConfig


@dataclass
class RolloutRunConfig(RolloutSettings, TrainConfig):
    """An RL run's config on TRL's trainers: the shared groups and the rollout settings."""

    def check(self) -> None:
        super().check()
        per_update = self.batch_size * self.grad_accum
        if per_update % self.num_generations:
            raise ValueError(
                f"key 'batch_size': batch_size x grad_accum = {per_update} completions per update must hold whole "
                f"groups of num_generations = {self.num_generations} completions of one prompt: make batch_size "
                f"(or batch_size x grad_accum) a multiple of {self.num_generations}."
            )


class RolloutSamplesCallback:
    """Every `every` steps (and at the end), write the latest completions of one prompt, with their rewards, to
    samples.jsonl: the K answers the policy compared, the best first."""

    def __init__(self, run_dir: Path, reward: Any, every: int, group: int) -> None:
        self.path, self.reward, self.every, self.group = run_dir / "samples.jsonl", reward, every, group

    def on_step_end(self, args, state, control, **kwargs):
        last = state.global_step >= state.max_steps or control.should_training_stop
        if self.every > 0 and self.reward.last and (state.global_step % self.every == 0 or last):
            self.write(state.global_step)

    def write(self, step: int) -> None:
        rows = sorted(self.reward.last[: self.group], key=lambda row: -row[2])
        with self.path.open("a", encoding="utf-8") as f:
            for prompt, completion, reward in rows:
                text = prompt if isinstance(prompt, str) else prompt[-1]["content"]
                f.write(json.dumps({"step": step, "prompt": text, "completion": completion, "reward": reward}) + "\n")


def workspace_of(run_dir: Path) -> Path:
    """The workspace a run folder belongs to (workspace/runs/<run_id>), where a model: reward's run is found."""
    return Path(run_dir).resolve().parent.parent


def build_trainer(trainer_cls: type, args_cls: type, config: RolloutRunConfig, run_dir: Path, **extra: Any):
    """TRL's RLOOTrainer or GRPOTrainer for this config: the prompts of data.jsonl, the base (maybe 4-bit) with a
    LoRA adapter, the run's reward, and the samples callback. `extra` holds the method's own TRL arguments."""
    from datasets import Dataset
    from transformers import TrainerCallback

    from lab.rewards import build_reward
    from lab.train.common import load_for_training, training_args
    from lab.train.snapshot import read_rows

    rows = read_rows(config.data)
    if not rows:
        raise ValueError("The training data is empty: add prompts, pick a scenario or give a file of prompts.")
    lm, model, peft_config = load_for_training(config, kind="chat")
    reward = build_reward(config.reward, workspace_of(run_dir), lm.device)
    print(reward.formula(), flush=True)
    args = training_args(
        args_cls,
        config,
        run_dir,
        lm.device,
        has_eval=False,  # an evaluation would sample K completions for every held-out prompt: the curves suffice
        num_generations=config.num_generations,
        max_completion_length=config.max_completion_length,
        temperature=config.temperature,
        beta=config.kl_coef,
        log_completions=False,
        # Dropout (LoRA's included) would make the policy's log-probabilities differ between the rollout and the
        # update, so the ratio TRL clips would be noise from the first step.
        disable_dropout=True,
        **extra,
    )
    samples = type("Samples", (RolloutSamplesCallback, TrainerCallback), {})  # transformers imported only here
    return trainer_cls(
        model=model,
        reward_funcs=reward,
        args=args,
        train_dataset=Dataset.from_list([{"prompt": row["prompt"]} for row in rows]),
        processing_class=lm.tokenizer,
        peft_config=peft_config,
        callbacks=[samples(run_dir, reward, config.sample_every, config.num_generations)],
    )
