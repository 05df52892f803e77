"""GRPO (Shao et al. 2024) through TRL's GRPOTrainer, with a LoRA adapter (optionally on a 4-bit base): each
completion's advantage is its reward minus the mean of its prompt's K completions, scaled by their spread; the KL
to the reference (kl_coef, TRL's beta) is added to the per-token loss.

The data is the run's own data.jsonl (TRL's conversational prompt-only rows), frozen when the run is prepared;
what is rewarded is the run's `reward` spec (lab.rewards). Shared with rloo: lab.train.rollouts.

    python -m lab train grpo --preset cpu-default --data prompts.jsonl --set reward='model:RUN_ID'
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lab.train.rollouts import RolloutRunConfig


@dataclass
class GRPORunConfig(RolloutRunConfig):
    """Everything a GRPO run needs; saved as the run's config.yaml."""


def build(config: GRPORunConfig, run_dir: Path):
    """TRL's GRPOTrainer for this config (lab.train.rollouts.build_trainer)."""
    from trl import GRPOConfig, GRPOTrainer

    from lab.train.rollouts import build_trainer

    return build_trainer(GRPOTrainer, GRPOConfig, config, run_dir)
