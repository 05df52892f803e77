"""Seconds per training step and peak memory: the app's path against a plain TRL script, measured in one run.

For each method (SFT, reward model), both paths train a LoRA adapter on the embedded default model with the same
config (data, steps, batch, length, LoRA, optimizer, seed, and the same bf16 choice). The app's path is
`python -m lab train METHOD` (the job engine's runner with its metrics and stop callbacks); the plain path is a bare
TRL script: SFTTrainer over the bundled sign-off demonstrations, or RewardTrainer (a one-score head, LoRA with
task_type SEQ_CLS, center_rewards_coefficient 0.01 as the app's default) over TruthfulQA's preference pairs (best
answer chosen, the first incorrect one rejected). Each runs in its own process, alternating, so each peak memory is
its own.

The app computes in bf16 only where the hardware does it natively (`native_bf16`); the plain script is given that
same choice. TRL's own default (bf16=True on any CPU, emulated and many times slower where bf16 is not native) is
printed beside the result for reference, and never run.

Usage:
    python bench/train.py [--method sft|reward|both] [--steps 6] [--batch-size 4] [--rounds 2] [--precision fp32|4bit]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script from anywhere: make `lab` importable
DEMONSTRATIONS = ROOT / "assets" / "demonstrations" / "signoff.jsonl"
TRUTHFULQA = ROOT.parent / "shared" / "data" / "truthfulqa" / "TruthfulQA.csv"
TARGET = 1.05  # the app's step may cost at most 5% more than the plain script's, and its peak memory too


DEVICE = "cpu"
MAX_LENGTH = 512
LEARNING_RATE = 1e-3
SEED = 42
LORA = {"r": 16, "lora_alpha": 32, "lora_dropout": 0.05, "target_modules": "all-linear"}  # the cpu-default preset
CENTER_REWARDS = 0.01  # RewardRunConfig's default center_rewards_coefficient


def app_bf16() -> bool:
    """The bf16 choice the app makes for this config (mixed precision on, an fp32 or 4-bit base) on DEVICE."""
    from lab.train.common import native_bf16

    return native_bf16(DEVICE)


def trl_default_bf16() -> bool:
    """What a plain SFTConfig picks for bf16 on this machine when the script does not say."""
    from trl import SFTConfig

    return SFTConfig(output_dir=tempfile.mkdtemp(), use_cpu=DEVICE == "cpu", report_to="none").bf16


def write_pairs(folder: Path) -> Path:
    """TruthfulQA's preference pairs (one per question) as a JSONL file in `folder`: the reward methods' data."""
    from lab.truthfulqa import preference_rows, read_questions

    path = folder / "truthfulqa_pairs.jsonl"
    rows = preference_rows(read_questions(TRUTHFULQA), pairs_per_question=1)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def plain_model(kind: str, precision: str):
    """(model, tokenizer) as a plain script loads them: a causal LM ("chat") or a one-score classifier ("reward")
    whose padding token the head can find, as TRL's reward examples set it."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer, BitsAndBytesConfig

    from lab.models import convert_default_model

    folder = convert_default_model(progress=lambda _: None)
    quant = {}
    if precision == "4bit":
        quant = {
            "quantization_config": BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type="nf4",
                bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=torch.float32,
            )
        }
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if kind == "chat":
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, device_map={"": "cpu"}, **quant)
        return model, tokenizer
    model = AutoModelForSequenceClassification.from_pretrained(
        folder, num_labels=1, dtype=torch.float32, device_map={"": "cpu"}, **quant
    )
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def plain_args(config_cls: type, steps: int, batch_size: int, **extra):
    """A TRL config with the settings both methods' plain scripts share."""
    return config_cls(
        output_dir=tempfile.mkdtemp(),
        max_steps=steps,
        per_device_train_batch_size=batch_size,
        learning_rate=LEARNING_RATE,
        lr_scheduler_type="cosine",
        max_length=MAX_LENGTH,
        logging_steps=1,
        seed=SEED,
        save_strategy="no",
        report_to="none",
        use_cpu=DEVICE == "cpu",
        bf16=app_bf16(),  # the app's choice, not TRL's default (emulated, many times slower, on AVX2-only CPUs)
        gradient_checkpointing=False,
        optim="adamw_torch",
        dataloader_pin_memory=False,
        disable_tqdm=True,
        **extra,
    )


def timed_train(trainer) -> dict:
    """Train, stamping the end of every step; returns step times and this process's peak memory."""
    import resource

    from transformers import TrainerCallback

    stamps: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            stamps.append(time.monotonic())

    trainer.add_callback(Clock())
    trainer.train()
    return {
        "step_seconds": [b - a for a, b in zip(stamps, stamps[1:], strict=False)],
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def plain_sft(steps: int, batch_size: int, precision: str, data: Path) -> dict:
    """The SFT reference: a bare TRL SFTTrainer on the demonstrations, loss on the answers only."""
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import set_seed
    from trl import SFTConfig, SFTTrainer

    set_seed(SEED)
    model, tokenizer = plain_model("chat", precision)
    rows = [json.loads(line)["messages"] for line in data.read_text().splitlines()]
    dataset = Dataset.from_list([{"prompt": m[:-1], "completion": m[-1:]} for m in rows])
    args = plain_args(SFTConfig, steps, batch_size, completion_only_loss=True)
    lora = LoraConfig(**LORA, task_type="CAUSAL_LM")
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer, peft_config=lora)
    return timed_train(trainer)


def plain_reward(steps: int, batch_size: int, precision: str, data: Path) -> dict:
    """The reward reference: a bare TRL RewardTrainer on the pairs (shuffled into batches, as the app's default
    'pairwise' pairing trains), with the centring penalty the app applies by default."""
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import set_seed
    from trl import RewardConfig, RewardTrainer

    set_seed(SEED)
    model, tokenizer = plain_model("reward", precision)
    dataset = Dataset.from_list([json.loads(line) for line in data.read_text().splitlines()])
    args = plain_args(RewardConfig, steps, batch_size, center_rewards_coefficient=CENTER_REWARDS)
    lora = LoraConfig(**LORA, task_type="SEQ_CLS")
    trainer = RewardTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer, peft_config=lora)
    return timed_train(trainer)


PLAIN = {"sft": plain_sft, "reward": plain_reward}


def app_path(method: str, steps: int, batch_size: int, precision: str, data: Path) -> dict:
    """The app's path: the headless `train METHOD` command, read back from the run's metrics.jsonl."""
    workspace = Path(tempfile.mkdtemp())
    overrides = [
        f"max_steps={steps}",
        f"batch_size={batch_size}",
        f"learning_rate={LEARNING_RATE}",
        f"seed={SEED}",
        "eval_fraction=0.0",
        "save_steps=100000",
        f"precision={precision}",
        f"device={DEVICE}",
        f"max_length={MAX_LENGTH}",
    ]
    overrides += ["sample_every=0"] if method == "sft" else [f"center_rewards_coefficient={CENTER_REWARDS}"]
    command = [sys.executable, "-m", "lab", "train", method, "--workspace", str(workspace), "--data", str(data)]
    for pair in overrides:
        command += ["--set", pair]
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True)
    [run] = list((workspace / "runs").iterdir())
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    times = [r["time"] for r in rows if "loss" in r and "train_loss" not in r]
    return {
        "step_seconds": [b - a for a, b in zip(times, times[1:], strict=False)],
        "peak_mb": max(r["memory_mb"] for r in rows),
    }


def measure(method: str, path: str, data: Path, args: argparse.Namespace) -> dict:
    """Run one path of one method in a fresh process, so its peak memory is its own."""
    command = [sys.executable, __file__, "--only", path, "--method", method, "--data", str(data)]
    command += ["--steps", str(args.steps), "--batch-size", str(args.batch_size), "--precision", args.precision]
    out = subprocess.run(command, cwd=ROOT, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def compare(method: str, data: Path, args: argparse.Namespace) -> None:
    """Alternate the plain and the app's path of `method` for args.rounds rounds, then print the two ratios."""
    results: dict[str, list[dict]] = {"app": [], "plain": []}
    for _ in range(args.rounds):  # alternate, so drifts in machine speed hit both paths alike
        for path in ("plain", "app"):
            results[path].append(measure(method, path, data, args))
    step = {p: statistics.median(s for r in rs for s in r["step_seconds"][1:]) for p, rs in results.items()}
    peak = {p: max(r["peak_mb"] for r in rs) for p, rs in results.items()}
    step_ratio, peak_ratio = step["app"] / step["plain"], peak["app"] / peak["plain"]
    what = {"sft": "SFT on the sign-off demonstrations", "reward": "reward model on TruthfulQA pairs"}[method]
    print(
        f"\n{what}, embedded SmolLM2-135M-Instruct, {args.precision}, LoRA r16 all-linear, batch {args.batch_size}, "
        f"{args.steps} steps x {args.rounds} rounds (median step after the first)"
    )
    print(f"{'path':<8}{'s/step':>10}{'peak MiB':>12}")
    for path in ("plain", "app"):
        print(f"{path:<8}{step[path]:>10.2f}{peak[path]:>12.0f}")
    for label, ratio in (("step time", step_ratio), ("peak memory", peak_ratio)):
        print(f"app/plain {label}: {ratio:.3f} (target <= {TARGET}) {'PASS' if ratio <= TARGET else 'FAIL'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # Defaults sized to finish within five minutes per method on 2 CPU cores (four processes, each loading the model).
    parser.add_argument("--method", default="both", choices=["sft", "reward", "both"])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "4bit"])
    parser.add_argument("--only", choices=["app", "plain"], help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.only:
        if args.only == "app":
            result = app_path(args.method, args.steps, args.batch_size, args.precision, args.data)
        else:
            result = PLAIN[args.method](args.steps, args.batch_size, args.precision, args.data)
        print(json.dumps(result))
        return

    bf16, default = app_bf16(), trl_default_bf16()
    print(f"bf16 autocast in both paths: {'on' if bf16 else 'off'} (the app's choice: on only where bf16 is native)")
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        data = {"sft": DEMONSTRATIONS, "reward": write_pairs(Path(tmp))}
        for method in ("sft", "reward") if args.method == "both" else (args.method,):
            compare(method, data[method], args)
    native = "native here" if bf16 else "EMULATED here, many times slower; not run"
    print(f"\nfor reference, TRL's default on this machine: bf16={default} ({native if default else 'fp32'})")


if __name__ == "__main__":
    main()
