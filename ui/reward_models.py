"""The reward-model picker's choices, shared by the Chat, Ranking and Reward tabs."""

from __future__ import annotations

from lab import Lab

NO_REWARD = "none"  # the "no scoring" choice of the pickers that may score nothing


def reward_model_choices(ctx: Lab, with_none: bool = True) -> list[tuple[str, str]]:
    """(label, run id) of the workspace's reward runs, newest first, after "none" when `with_none`."""
    runs = [(a.label, run_id) for run_id, a in ctx.adapters(kind="reward").items()]
    return [(NO_REWARD, NO_REWARD), *runs] if with_none else runs
