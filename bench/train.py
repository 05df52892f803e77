"""Seconds per SFT step and peak memory: the app's path against a plain TRL script, measured in one run.

Both train a LoRA adapter on the embedded default model over the bundled sign-off
demonstrations with the same config (steps, batch, length, LoRA, optimizer,
seed, and the same bf16 choice). The app's path is `python -m lab train sft`
(the job engine's runner with its metrics and stop callbacks); the plain path is
a bare SFTTrainer script. Each runs in its own process, alternating, so each
peak memory is its own.

The app computes in bf16 only where the hardware does it natively (`native_bf16`);
the plain script is given that same choice. TRL's own default (bf16=True on any
CPU, emulated and many times slower where bf16 is not native) is printed beside
the result for reference, and never run.

Usage:
    python bench/train.py [--steps 6] [--batch-size 4] [--rounds 2] [--precision fp32|4bit]
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
DATA = ROOT / "assets" / "demonstrations" / "signoff.jsonl"
TARGET = 1.05  # the app's step may cost at most 5% more than the plain script's


DEVICE = "cpu"
MAX_LENGTH = 512


def app_bf16() -> bool:
    """The bf16 choice the app makes for this config (mixed precision on, an fp32 or 4-bit base) on DEVICE."""
    from lab.train.common import native_bf16

    return native_bf16(DEVICE)


def trl_default_bf16() -> bool:
    """What a plain SFTConfig picks for bf16 on this machine when the script does not say."""
    from trl import SFTConfig

    return SFTConfig(output_dir=tempfile.mkdtemp(), use_cpu=DEVICE == "cpu", report_to="none").bf16


def plain_trl(steps: int, batch_size: int, precision: str) -> dict:
    """The reference: a bare TRL SFTTrainer on the same data and config; returns step times and peak memory."""
    import resource

    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig, TrainerCallback
    from trl import SFTConfig, SFTTrainer

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
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, device_map={"": "cpu"}, **quant)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    rows = [json.loads(line)["messages"] for line in DATA.read_text().splitlines()]
    data = Dataset.from_list([{"prompt": m[:-1], "completion": m[-1:]} for m in rows])
    stamps: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            stamps.append(time.monotonic())

    args = SFTConfig(
        output_dir=tempfile.mkdtemp(),
        max_steps=steps,
        per_device_train_batch_size=batch_size,
        learning_rate=1e-3,
        lr_scheduler_type="cosine",
        max_length=MAX_LENGTH,
        completion_only_loss=True,
        logging_steps=1,
        seed=42,
        save_strategy="no",
        report_to="none",
        use_cpu=DEVICE == "cpu",
        bf16=app_bf16(),  # the app's choice, not TRL's default (emulated, many times slower, on AVX2-only CPUs)
        gradient_checkpointing=False,
        optim="adamw_torch",
        dataloader_pin_memory=False,
        disable_tqdm=True,
    )
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = SFTTrainer(
        model=model, args=args, train_dataset=data, processing_class=tokenizer, peft_config=lora, callbacks=[Clock()]
    )
    trainer.train()
    return {
        "step_seconds": [b - a for a, b in zip(stamps, stamps[1:], strict=False)],
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def app_path(steps: int, batch_size: int, precision: str) -> dict:
    """The app's path: the headless `train sft` command, read back from the run's metrics.jsonl."""
    workspace = Path(tempfile.mkdtemp())
    overrides = [
        f"max_steps={steps}",
        f"batch_size={batch_size}",
        "learning_rate=0.001",
        "eval_fraction=0.0",
        "save_steps=100000",
        "sample_every=0",
        f"precision={precision}",
        f"device={DEVICE}",
        f"max_length={MAX_LENGTH}",
    ]
    command = [sys.executable, "-m", "lab", "train", "sft", "--workspace", str(workspace), "--data", str(DATA)]
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


def measure(path: str, args: argparse.Namespace) -> dict:
    """Run one path in a fresh process, so its peak memory is its own."""
    command = [
        sys.executable,
        __file__,
        "--only",
        path,
        "--steps",
        str(args.steps),
        "--batch-size",
        str(args.batch_size),
        "--precision",
        args.precision,
    ]
    out = subprocess.run(command, cwd=ROOT, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # Defaults sized to finish within five minutes on 2 CPU cores (four processes, each loading the model).
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "4bit"])
    parser.add_argument("--only", choices=["app", "plain"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.only:
        run = app_path if args.only == "app" else plain_trl
        print(json.dumps(run(args.steps, args.batch_size, args.precision)))
        return

    bf16, default = app_bf16(), trl_default_bf16()
    results: dict[str, list[dict]] = {"app": [], "plain": []}
    for _ in range(args.rounds):  # alternate, so drifts in machine speed hit both paths alike
        for path in ("plain", "app"):
            results[path].append(measure(path, args))
    step = {p: statistics.median(s for r in rs for s in r["step_seconds"][1:]) for p, rs in results.items()}
    peak = {p: max(r["peak_mb"] for r in rs) for p, rs in results.items()}
    ratio = step["app"] / step["plain"]
    print(
        f"SFT, embedded SmolLM2-135M-Instruct, {args.precision}, LoRA r16 all-linear, batch {args.batch_size}, "
        f"{args.steps} steps x {args.rounds} rounds (median step after the first)"
    )
    print(f"bf16 autocast in both paths: {'on' if bf16 else 'off'} (the app's choice: on only where bf16 is native)")
    print(f"{'path':<8}{'s/step':>10}{'peak MiB':>12}")
    for path in ("plain", "app"):
        print(f"{path:<8}{step[path]:>10.2f}{peak[path]:>12.0f}")
    verdict = "PASS" if ratio <= TARGET else "FAIL"
    print(
        f"app/plain step time: {ratio:.3f} (target <= {TARGET}) {verdict}; "
        f"peak memory ratio {peak['app'] / peak['plain']:.3f}"
    )
    native = "native here" if bf16 else "EMULATED here, many times slower; not run"
    print(f"for reference, TRL's default on this machine: bf16={default} ({native if default else 'fp32'})")


if __name__ == "__main__":
    main()
