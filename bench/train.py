"""Seconds per training step and peak memory: the app's path against a plain TRL script, measured in one run.

For each method (SFT, reward model, DPO, RLOO), both paths train a LoRA adapter on the embedded default model with
the same config (data, steps, batch, length, LoRA, optimizer, seed, and the same bf16 choice). The app's path is
`python -m lab train METHOD` (the job engine's runner with its metrics and stop callbacks); the plain path is a bare
TRL script:
  - sft: SFTTrainer over the bundled sign-off demonstrations, the loss on the answers only;
  - reward: RewardTrainer (a one-score head, LoRA with task_type SEQ_CLS, center_rewards_coefficient 0.01 as the
    app's default) over TruthfulQA's preference pairs (best answer chosen, the first incorrect one rejected);
  - dpo: DPOTrainer over the same pairs, sigmoid loss, beta 0.1 (the app's defaults), its reference the base with
    the adapter disabled (a LoRA config and no ref_model);
  - rloo: RLOOTrainer over TruthfulQA's questions as prompts, K = 2 completions of at most 32 tokens per prompt at
    temperature 1, KL weight 0.05 (the app's kl_coef), dropout off, rewarded by the app's default rule `length:100`,
    written in the plain script as a plain reward function (not through lab.rewards).
Each runs in its own process, alternating, so each peak memory is its own.

The app computes in bf16 only where the hardware does it natively (`native_bf16`); the plain script is given that
same choice. TRL's own default (bf16=True on any CPU, emulated and many times slower where bf16 is not native) is
printed beside the result for reference, and never run.

Usage:
    python bench/train.py [--method sft|reward|dpo|rloo|both|all] [--steps 6] [--batch-size 4] [--rounds 2]
                          [--precision fp32|4bit]

`both` is sft and reward (the supervised pair), `all` adds dpo and rloo. rloo's batch counts completions, so it
must be a multiple of K = 2.
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
BETA = 0.1  # DPORunConfig's default beta (loss_type sigmoid)
REWARD_CHARS = 100  # rloo's reward: the app's default spec `length:100`, minus |chars - 100| / 100
NUM_GENERATIONS = 2  # K completions per prompt
MAX_COMPLETION = 32  # tokens per completion
TEMPERATURE = 1.0
KL_COEF = 0.05  # RolloutSettings' default kl_coef, TRL's beta
APP_SETTINGS = {  # each method's own settings, as the app's --set overrides; the plain scripts use the same values
    "sft": {"sample_every": 0},
    "reward": {"center_rewards_coefficient": CENTER_REWARDS},
    "dpo": {"beta": BETA, "loss_type": "sigmoid"},
    "rloo": {
        "reward": f"length:{REWARD_CHARS}",
        "num_generations": NUM_GENERATIONS,
        "max_completion_length": MAX_COMPLETION,
        "temperature": TEMPERATURE,
        "kl_coef": KL_COEF,
        "sample_every": 0,
    },
}


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


def write_prompts(folder: Path) -> Path:
    """TruthfulQA's questions as conversational prompt-only rows in a JSONL file in `folder`: rloo's data."""
    from lab.truthfulqa import read_questions

    path = folder / "truthfulqa_prompts.jsonl"
    rows = [{"prompt": [{"role": "user", "content": q.question}]} for q in read_questions(TRUTHFULQA)]
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


def plain_args(config_cls: type, steps: int, batch_size: int, truncate: bool = True, **extra):
    """A TRL config with the settings every method's plain script shares (`truncate`: cut sequences at MAX_LENGTH;
    RLOOConfig has no max_length, its completions end at max_completion_length instead)."""
    if truncate:
        extra["max_length"] = MAX_LENGTH
    return config_cls(
        output_dir=tempfile.mkdtemp(),
        max_steps=steps,
        per_device_train_batch_size=batch_size,
        learning_rate=LEARNING_RATE,
        lr_scheduler_type="cosine",
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


def plain_dpo(steps: int, batch_size: int, precision: str, data: Path) -> dict:
    """The DPO reference: a bare TRL DPOTrainer on the pairs, given a LoRA config and no reference model, so its
    reference is the base with the adapter disabled."""
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import set_seed
    from trl import DPOConfig, DPOTrainer

    set_seed(SEED)
    model, tokenizer = plain_model("chat", precision)
    dataset = Dataset.from_list([json.loads(line) for line in data.read_text().splitlines()])
    args = plain_args(DPOConfig, steps, batch_size, beta=BETA, loss_type=["sigmoid"])
    lora = LoraConfig(**LORA, task_type="CAUSAL_LM")
    trainer = DPOTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer, peft_config=lora)
    return timed_train(trainer)


def length_reward(completions: list[list[dict]], **kwargs) -> list[float]:
    """The rule `length:REWARD_CHARS` as a TRL reward function: minus how far each answer's length in characters
    is from REWARD_CHARS, over REWARD_CHARS (0 at exactly that length)."""
    texts = ["".join(message["content"] for message in completion) for completion in completions]
    return [-abs(len(text) - REWARD_CHARS) / REWARD_CHARS for text in texts]


def plain_rloo(steps: int, batch_size: int, precision: str, data: Path) -> dict:
    """The RLOO reference: a bare TRL RLOOTrainer on the questions, rewarded by `length_reward`, dropout off."""
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import set_seed
    from trl import RLOOConfig, RLOOTrainer

    set_seed(SEED)
    model, tokenizer = plain_model("chat", precision)
    dataset = Dataset.from_list([json.loads(line) for line in data.read_text().splitlines()])
    args = plain_args(
        RLOOConfig,
        steps,
        batch_size,
        truncate=False,
        num_generations=NUM_GENERATIONS,
        max_completion_length=MAX_COMPLETION,
        temperature=TEMPERATURE,
        beta=KL_COEF,
        disable_dropout=True,
    )
    lora = LoraConfig(**LORA, task_type="CAUSAL_LM")
    trainer = RLOOTrainer(
        model=model,
        reward_funcs=length_reward,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=lora,
    )
    return timed_train(trainer)


PLAIN = {"sft": plain_sft, "reward": plain_reward, "dpo": plain_dpo, "rloo": plain_rloo}


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
    overrides += [f"{key}={value}" for key, value in APP_SETTINGS[method].items()]
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
    what = {
        "sft": "SFT on the sign-off demonstrations",
        "reward": "reward model on TruthfulQA pairs",
        "dpo": f"DPO (sigmoid, beta {BETA}) on TruthfulQA pairs",
        "rloo": f"RLOO (length:{REWARD_CHARS}, K={NUM_GENERATIONS}, {MAX_COMPLETION} tokens) on TruthfulQA questions",
    }[method]
    print(
        f"\n{what}, embedded SmolLM2-135M-Instruct, {args.precision}, LoRA r16 all-linear, batch {args.batch_size}, "
        f"{args.steps} steps x {args.rounds} rounds (median step after the first)"
    )
    print(f"{'path':<8}{'s/step':>10}{'peak MiB':>12}")
    for path in ("plain", "app"):
        print(f"{path:<8}{step[path]:>10.2f}{peak[path]:>12.0f}")
    for label, ratio in (("step time", step_ratio), ("peak memory", peak_ratio)):
        print(f"app/plain {label}: {ratio:.3f} (target <= {TARGET}) {'PASS' if ratio <= TARGET else 'FAIL'}")


GROUPS = {"both": ("sft", "reward"), "all": tuple(PLAIN)}  # --method names that run several methods


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # Defaults sized to finish within five minutes per method on 2 CPU cores (four processes, each loading the model).
    parser.add_argument("--method", default="both", choices=[*PLAIN, *GROUPS])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "4bit"])
    parser.add_argument("--only", choices=["app", "plain"], help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if "rloo" in GROUPS.get(args.method, (args.method,)) and args.batch_size % NUM_GENERATIONS:
        parser.error(f"rloo's --batch-size counts completions: give a multiple of K = {NUM_GENERATIONS}")
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
        pairs = write_pairs(Path(tmp))
        data = {"sft": DEMONSTRATIONS, "reward": pairs, "dpo": pairs, "rloo": write_prompts(Path(tmp))}
        for method in GROUPS.get(args.method, (args.method,)):
            compare(method, data[method], args)
    native = "native here" if bf16 else "EMULATED here, many times slower; not run"
    print(f"\nfor reference, TRL's default on this machine: bf16={default} ({native if default else 'fp32'})")


if __name__ == "__main__":
    main()
