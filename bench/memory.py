"""Estimated against measured peak memory of training runs on the CPU (lab.train.memory.estimate_memory).

Each configuration trains a few steps through the lab's own path (the method's `build`, then `trainer.train`) in
its own child process, on synthetic data long enough that every batch is padded to max_length (the estimate's worst
case). The child reads its resident memory after importing the libraries and after building the trainer (model
loaded, adapter attached), resets the kernel's high-water mark (/proc/self/clear_refs), trains, and reads the peak
(VmHWM): the training peak is then that step's own, not the model load's. Printed for each configuration:

- step: measured peak - RSS after the build (weights resident)  vs  the estimate's activations, logits, autocast
  copies, optimiser and step overhead: what training adds to the loaded model
- peak: the measured peak RSS of the process  vs  the estimate's total
- libs: RSS after the build - the estimated weights and adapter  vs  the estimate's runtime term

and the parent's view, resource.getrusage(RUSAGE_CHILDREN).ru_maxrss, for reference (it includes the load).

Usage:
    python bench/memory.py                       # the three default configurations on the embedded default
    python bench/memory.py --only sft-b2-l256    # one of them
    python bench/memory.py --model PATH          # another local model folder
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script from anywhere: make `lab` importable

STEP = ("activations", "logits", "autocast", "optimiser", "overhead")  # what a step adds to the loaded model
STEPS = 3  # the optimiser's states exist from the first update on, so the second step's backward is the peak
CONFIGS = {
    "sft-b2-l256": ("sft", {"batch_size": 2, "max_length": 256, "sample_every": 0}),
    "sft-b4-l512": ("sft", {"batch_size": 4, "max_length": 512, "sample_every": 0}),
    "reward-b4-l256": ("reward", {"batch_size": 4, "max_length": 256}),
    "sft-b1-l64": ("sft", {"batch_size": 1, "max_length": 64, "sample_every": 0}),
}
WORDS = ["the", "model", "answers", "each", "question", "about", "rivers", "and", "stars", "with", "care"]


def rss(key: str) -> int:
    """A memory figure of this process from /proc/self/status, in bytes (VmRSS now, VmHWM the peak)."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


def text_of(tokenizer, tokens: int, rng: random.Random) -> str:
    """Words that tokenize to about `tokens` tokens."""
    words = [rng.choice(WORDS) for _ in range(tokens)]
    while len(tokenizer(" ".join(words))["input_ids"]) > tokens:
        words = words[: max(1, int(len(words) * 0.95))]
    return " ".join(words)


def write_data(method: str, max_length: int, tokenizer, path: Path, rows: int = 48) -> None:
    """Rows of TRL's shapes whose longest in each batch reaches max_length: SFT rows longer than it (truncated), reward
    pairs just under it (the reward trainer drops longer pairs), every other row shorter so batches carry padding."""
    rng = random.Random(0)
    lines = []
    for n in range(rows):
        short = n % 2 == 1
        if method == "sft":
            answer = text_of(tokenizer, max_length // 3 if short else max_length + 64, rng)
            messages = [{"role": "user", "content": "Tell me about rivers."}, {"role": "assistant", "content": answer}]
            lines.append({"messages": messages})
        else:
            budget = (max_length - 40) // (3 if short else 1)  # the chat template's tokens take the rest
            prompt = [{"role": "user", "content": f"Question {n}: which answer is better?"}]
            pair = [[{"role": "assistant", "content": text_of(tokenizer, budget, rng)}] for _ in range(2)]
            lines.append({"prompt": prompt, "chosen": pair[0], "rejected": pair[1]})
    path.write_text("".join(json.dumps(row) + "\n" for row in lines), encoding="utf-8")


def child(method: str, overrides: dict, model: str) -> None:
    """Train STEPS steps through the lab's path and print the memory figures as one JSON line."""
    import torch  # noqa: F401  (the imports are part of the baseline)
    import transformers  # noqa: F401
    import trl  # noqa: F401

    from lab.presets import model_presets
    from lab.train import get_method

    after_imports = rss("VmRSS")
    from transformers import AutoTokenizer

    from lab.models import convert_default_model, resolve_base
    from lab.refs import DEFAULT_MODEL

    if model == DEFAULT_MODEL:
        convert_default_model(progress=lambda _: None)
    tokenizer = AutoTokenizer.from_pretrained(resolve_base(model))
    spec = get_method(method)
    folder = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    data = folder / "data.jsonl"
    write_data(method, overrides["max_length"], tokenizer, data)
    values = {"model": model, "max_steps": STEPS, "eval_fraction": 0.0, "save_steps": 1000, **overrides}
    config = spec.config_for(model_presets()["cpu-default"], {**values, "data": str(data)})
    trainer = spec.build(config, folder)
    for weight in trainer.model.parameters():  # fault in every weight page (safetensors are mapped lazily)
        weight.detach().float().sum()
    after_build = rss("VmRSS")
    with open("/proc/self/clear_refs", "w", encoding="ascii") as refs:
        refs.write("5")  # reset VmHWM: the peak from here on is training's
    trainer.train()
    print(json.dumps({"after_imports": after_imports, "after_build": after_build, "peak": rss("VmHWM")}))


def measure(method: str, overrides: dict, model: str) -> dict:
    command = [sys.executable, __file__, "--child", json.dumps([method, overrides, model])]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"{method} {overrides} failed:\n{done.stderr[-3000:]}")
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    figures["children_maxrss"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    return figures


def main() -> int:
    from lab.presets import model_presets
    from lab.refs import DEFAULT_MODEL
    from lab.train import get_method
    from lab.train.memory import MIB, estimate_memory

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=list(CONFIGS), action="append")
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*json.loads(args.child))
        return 0
    print(f"{'config':<16} {'part':<6} {'estimated':>10} {'measured':>10} {'ratio':>6}")
    worst = 0.0
    for name in args.only or CONFIGS:
        method, overrides = CONFIGS[name]
        values = {"model": args.model, **overrides}
        config = get_method(method).config_for(model_presets()["cpu-default"], values)
        estimate = estimate_memory(method, config, device="cpu", free=None)
        got = measure(method, overrides, args.model)
        step = sum(t.bytes for t in estimate.terms if t.counted and t.name in STEP)
        resident = sum(estimate.term(t).bytes for t in ("weights", "adapter"))
        rows = [
            ("step", step, got["peak"] - got["after_build"]),
            ("peak", estimate.total, got["peak"]),
            ("libs", estimate.term("runtime").bytes, got["after_build"] - resident),
        ]
        for part, est, measured in rows:
            ratio = est / measured
            worst = max(worst, abs(ratio - 1)) if part != "libs" else worst  # libs: a constant, said for reference
            print(f"{name:<16} {part:<6} {est / MIB:>8.0f} M {measured / MIB:>8.0f} M {ratio:>6.2f}")
        print(f"{'':<16} (parent's ru_maxrss of the children so far: {got['children_maxrss'] / MIB:.0f} MiB)")
        print("\n".join("    " + line for line in estimate.lines()))
    print(f"largest deviation of step / peak from measured: {worst:.0%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
