"""RLOO (REINFORCE leave-one-out, Ahmadian et al. 2024) through TRL's RLOOTrainer, with a LoRA adapter (optionally
on a 4-bit base): each completion's advantage is its reward minus the mean reward of the other K − 1 completions of
its prompt; the KL to the reference is a penalty on the sequence's reward (kl_coef × the summed log-ratio).

The data is the run's own data.jsonl (TRL's conversational prompt-only rows), frozen when the run is prepared;
what is rewarded is the run's `reward` spec (lab.rewards). Shared with grpo: lab.train.rollouts.

    python -m lab train rloo --preset cpu-default --data prompts.jsonl --set reward='length:200 - refusal'
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lab.train.rollouts import RolloutRunConfig


@dataclass
class RLOORunConfig(RolloutRunConfig):
    """Everything an RLOO run needs; saved as the run's config.yaml."""


def build(config: RLOORunConfig, run_dir: Path):
    """TRL's RLOOTrainer for this config (lab.train.rollouts.build_trainer)."""
    from trl import RLOOConfig, RLOOTrainer

    from lab.train.rollouts import build_trainer

    return build_trainer(RLOOTrainer, RLOOConfig, config, run_dir)
