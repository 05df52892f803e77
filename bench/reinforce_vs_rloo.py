"""Does the lab's REINFORCE with the leave-one-out baseline track TRL's RLOOTrainer? Mean-reward curves side by side.

Both train a LoRA adapter on the same base, prompts, reward, seed and config: batch_size completions per step
(batch_size / K prompts), K completions per prompt, the same completion length, temperature, KL coefficient (TRL's
beta), learning rate, cosine schedule, LoRA (dropout off: TRL clips the ratio π/π_old, which dropout alone moves off 1)
and bf16 choice. The math is the same (a sequence-level KL penalty in the
reward, leave-one-out baseline, no normalisation, one gradient step per batch), but the two draw different samples
from the same seed, so the curves are compared averaged over seeds and smoothed: the closeness figure is the mean
absolute difference of the smoothed mean-reward curves, beside each one's final mean reward (last 5 steps) and
its rise over the run.

The reward is the tests' length target (the share of 12 letters a completion reaches; the tiny random model's text
is mostly undecodable bytes), or any lab reward spec with --reward (lab.rewards).

Usage:
    python bench/reinforce_vs_rloo.py [--model tiny|default|PATH] [--steps 20] [--seeds 3] [--batch-size 24]
        [--num-generations 4] [--max-completion-length 8] [--lr 1e-2] [--kl 0.01] [--reward SPEC] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script from anywhere: make `lab` importable
sys.path.insert(0, str(ROOT / "tests"))  # conftest's tiny model builder

PROMPTS = ["Hi", "What is the capital of France?", "Translate this sentence.", "Say goodbye.", "Why?", "Be brief."]
TARGET = 12  # letters


def reach_length(prompts, completions, **kwargs) -> list[float]:
    """The share of TARGET letters a completion reaches (tests/test_reinforce.py's length target)."""
    letters = [sum(ch.isascii() and ch.isalpha() for ch in c[-1]["content"]) for c in completions]
    return [min(n, TARGET) / TARGET for n in letters]


def base_model(name: str, folder: Path) -> str:
    if name == "tiny":
        from conftest import build_tiny_model

        return str(build_tiny_model(folder / "tiny"))
    if name == "default":
        from lab.refs import DEFAULT_MODEL

        return DEFAULT_MODEL
    return name


def lab_config(args, model: str, data: Path, seed: int):
    from lab.train.reinforce import ReinforceRunConfig

    return ReinforceRunConfig(
        model=model,
        device="cpu",
        data=str(data),
        max_steps=args.steps,
        batch_size=args.batch_size,
        num_generations=args.num_generations,
        max_completion_length=args.max_completion_length,
        temperature=1.0,
        kl_coef=args.kl,
        learning_rate=args.lr,
        lora_r=8,
        lora_alpha=32,
        lora_dropout=0.0,  # TRL's RLOO clips the ratio π/π_old, which dropout alone would move off 1
        seed=seed,
        save_steps=10_000,
        sample_every=0,
        baseline="leave-one-out",
        reward=args.reward or "length:100",
    )


def run_lab(args, config, folder: Path, reward) -> list[float]:
    """The lab's path: reinforce.build (the job engine's trainer) and common.fit."""
    from lab.train import reinforce
    from lab.train.common import fit
    from lab.train.runs import StopSignal

    reinforce.make_reward = lambda spec, run_dir, device: reward
    trainer = reinforce.build(config, folder)
    fit(trainer, folder, StopSignal())
    return [row["reward"] for row in trainer.state.log_history if "reward" in row]


def run_trl(args, config, folder: Path, reward) -> list[float]:
    """The plain path: TRL's RLOOTrainer with the same base, LoRA, prompts, reward and settings."""
    from datasets import Dataset
    from transformers import set_seed
    from trl import RLOOConfig, RLOOTrainer

    from lab.models import load_model
    from lab.train.common import native_bf16, training_args

    set_seed(config.seed)
    lm = load_model(config.model, config.precision, "cpu", progress=lambda m: None)
    trl_args = training_args(
        RLOOConfig,
        config,
        folder,
        "cpu",
        has_eval=False,
        num_generations=config.num_generations,
        max_completion_length=config.max_completion_length,
        temperature=config.temperature,
        beta=config.kl_coef,
        save_strategy="no",
        log_completions=False,
        disable_dropout=True,  # as the lab's rloo method runs it
        bf16=native_bf16("cpu"),  # the lab's choice; TRL's default would be bf16=True on any CPU
    )
    trainer = RLOOTrainer(
        model=lm.model,
        reward_funcs=reward,
        args=trl_args,
        train_dataset=Dataset.from_list([{"prompt": [{"role": "user", "content": p}]} for p in PROMPTS]),
        processing_class=lm.tokenizer,
        peft_config=config.lora_config(),
    )
    trainer.train()
    return [row["reward"] for row in trainer.state.log_history if "reward" in row]


def smooth(curve: list[float], window: int = 5) -> list[float]:
    return [statistics.fmean(curve[max(0, i - window + 1) : i + 1]) for i in range(len(curve))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny", help="tiny (the tests' random Llama), default, or a model folder")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=24, help="completions per step")
    parser.add_argument("--num-generations", type=int, default=4)
    parser.add_argument("--max-completion-length", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--kl", type=float, default=0.01)
    parser.add_argument("--reward", default="", help="a lab reward spec (lab.rewards); default: the letters target")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest for the tiny model)")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="reinforce-vs-rloo-"))
    model = base_model(args.model, work)
    data = work / "prompts.jsonl"
    data.write_text("".join(json.dumps({"prompt": [{"role": "user", "content": p}]}) + "\n" for p in PROMPTS))
    if args.reward:
        from lab.rewards import build_reward

        reward = build_reward(args.reward, work / "workspace", "cpu")
    else:
        reward = reach_length
    reward.__name__ = "reward"  # TRL names its reward metrics after the function

    curves: dict[str, list[list[float]]] = {"reinforce": [], "rloo": []}
    seconds = {"reinforce": 0.0, "rloo": 0.0}
    for seed in range(args.seeds):
        config = lab_config(args, model, data, seed=42 + seed)
        for name, run in (("reinforce", run_lab), ("rloo", run_trl)):
            folder = work / f"{name}-{seed}"
            folder.mkdir()
            start = time.monotonic()
            curves[name].append(run(args, config, folder, reward))
            seconds[name] += time.monotonic() - start
            print(f"seed {42 + seed} {name}: {len(curves[name][-1])} steps", flush=True)

    mean_curve = {name: [statistics.fmean(step) for step in zip(*runs, strict=True)] for name, runs in curves.items()}
    smoothed = {name: smooth(curve) for name, curve in mean_curve.items()}
    print(f"\nmean reward per step, averaged over {args.seeds} seeds (smoothed over 5 steps in brackets)")
    print(f"{'step':>4}  {'REINFORCE (leave-one-out)':>26}  {'TRL RLOOTrainer':>22}")
    for i in range(args.steps):
        a, b = mean_curve["reinforce"][i], mean_curve["rloo"][i]
        print(f"{i + 1:>4}  {a:>12.3f} ({smoothed['reinforce'][i]:>7.3f})    {b:>12.3f} ({smoothed['rloo'][i]:>7.3f})")
    gap = statistics.fmean(abs(a - b) for a, b in zip(smoothed["reinforce"], smoothed["rloo"], strict=True))
    spread = statistics.fmean(abs(a - b) for runs in curves.values() for a, b in zip(runs[0], runs[-1], strict=True))
    print(f"\nmean |difference| of the smoothed curves: {gap:.3f}")
    print(f"(for scale: mean |difference| between two seeds of one method, unsmoothed: {spread:.3f})")
    for name, label in (("reinforce", "REINFORCE (leave-one-out)"), ("rloo", "TRL RLOOTrainer")):
        curve = mean_curve[name]
        final, first = statistics.fmean(curve[-5:]), statistics.fmean(curve[:5])
        print(
            f"{label:>26}: final mean reward {final:.3f} (first 5 steps {first:.3f}, rise {final - first:+.3f}), "
            f"{seconds[name] / args.seeds / args.steps:.2f} s/step"
        )


if __name__ == "__main__":
    main()
