"""The GPU presets' figures on a CUDA machine, with random weights at each model's real size: a DPO step's seconds and
peak GPU memory against the lab's estimate, and compare chat's three columns against one.

Usage: python bench/gpu.py [--only NAME ...] [--steps 3] [--max-new-tokens 128] [--rounds 3]

Nothing is downloaded. Each model is written from its published config (the SIZES below) with random weights in
bf16, beside the small byte-level BPE tokenizer the tests use (vocabulary 320, a ChatML template): the figures
depend on the shapes and the token counts, which the data below fixes, not on what the tokens say.

For each size, in a child process of its own (so one size's cached memory does not count in the next):
- train: the preset's DPO config (its precision, LoRA, batch, accumulation and max_length; gradient checkpointing
  where the lab turns it on, i.e. 4-bit on a GPU) built through the method's own `build` and trained `--steps`
  optimiser steps on pairs padded to max_length. Printed: seconds per optimiser step after the first, the peak of
  `torch.cuda.max_memory_allocated` and `max_memory_reserved` during training, and `lab.train.memory`'s estimate
  (total and the tensors alone, i.e. without its CUDA-context term, which PyTorch's counters do not see);
- compare: `bench/generate.py`'s compare-chat measurement (three columns, the base, the base with a system prompt
  and a random r-16 LoRA adapter, in one batched pass through `lab.generate.stream_columns`, against one column)
  on the preset's precision.

Measured once on an H200 (torch 2.11, sandboxed): SmolLM2-135M's shapes in bf16, 128 tokens a column, one column
9.47 s, three in one batch 14.69 s = 1.55x, three in a row 3.00x. Decoding ran at 13.5 tokens/s for one row there,
so the step was bound by the per-token launch overhead, not by the GPU's arithmetic or memory.
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
sys.path.insert(0, str(ROOT))  # run as a script from anywhere: make `lab` (and tests.conftest) importable

LLAMA_135M = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "vocab_size": 49152,
    "max_position_embeddings": 8192,
    "rope_theta": 100000.0,
    "rms_norm_eps": 1e-5,
    "tie_word_embeddings": True,
}
SIZES = {  # name: (config of the published model, the preset it is trained with)
    "smollm2-135m": (LLAMA_135M, "cpu-default"),
    "smollm2-1.7b": (
        {
            **LLAMA_135M,
            "hidden_size": 2048,
            "intermediate_size": 8192,
            "num_hidden_layers": 24,
            "num_attention_heads": 32,
            "num_key_value_heads": 32,
            "rope_theta": 130000.0,
        },
        "gpu-8gb",
    ),
    "qwen2.5-7b": (
        {
            "architectures": ["Qwen2ForCausalLM"],
            "model_type": "qwen2",
            "hidden_size": 3584,
            "intermediate_size": 18944,
            "num_hidden_layers": 28,
            "num_attention_heads": 28,
            "num_key_value_heads": 4,
            "vocab_size": 152064,
            "max_position_embeddings": 32768,
            "rope_theta": 1000000.0,
            "rms_norm_eps": 1e-6,
            "tie_word_embeddings": False,
        },
        "gpu-24gb",
    ),
}


def write_model(name: str, folder: Path) -> Path:
    """A random-weight model of SIZES[name] saved in bf16 safetensors with the tests' tokenizer."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from tests.conftest import build_tiny_model

    tokenizer_dir = build_tiny_model(folder / "tiny")
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    values, _ = SIZES[name]
    config = AutoConfig.for_model(
        **values,
        dtype="bfloat16",
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    out = folder / name
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    del model
    torch.cuda.empty_cache()
    return out


def train_child(name: str, model: str, steps: int) -> dict:
    """Train the preset's DPO config `steps` steps and return the step time and the GPU memory figures."""
    import torch
    from transformers import AutoTokenizer, TrainerCallback

    from bench.memory import write_data
    from lab.presets import model_presets
    from lab.train import get_method
    from lab.train.memory import estimate_memory

    preset = model_presets()[SIZES[name][1]]
    spec = get_method("dpo")
    folder = Path(tempfile.mkdtemp(prefix="bench-gpu-"))
    values = {"model": model, "device": "cuda", "max_steps": steps, "eval_fraction": 0.0, "save_steps": 10_000}
    config = spec.config_for(preset, values)
    data = folder / "pairs.jsonl"
    rows = config.batch_size * config.grad_accum * steps
    write_data("dpo", config.max_length, AutoTokenizer.from_pretrained(model), data, rows=rows)
    config = spec.config_for(preset, {**values, "data": str(data)})
    estimate = estimate_memory("dpo", config, device="cuda", free=None)
    trainer = spec.build(config, folder)
    ends: list[float] = []

    class StepTimes(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            torch.cuda.synchronize()
            ends.append(time.perf_counter())

    trainer.add_callback(StepTimes())
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    trainer.train()
    gaps = [b - a for a, b in zip([start, *ends[:-1]], ends, strict=True)]
    return {
        "size": name,
        "preset": preset.name,
        "precision": config.precision,
        "batch": f"{config.batch_size} pairs x {config.grad_accum} accumulated, max_length {config.max_length}",
        "first_step_s": gaps[0],
        "step_s": statistics.median(gaps[1:]) if len(gaps) > 1 else gaps[0],
        "peak_allocated": torch.cuda.max_memory_allocated(),
        "peak_reserved": torch.cuda.max_memory_reserved(),
        "estimate_total": estimate.total,
        "estimate_tensors": estimate.total - estimate.term("runtime").bytes,
        "estimate_lines": estimate.lines(),
    }


def compare_child(name: str, model: str, new_tokens: int, rounds: int) -> dict:
    """Compare chat's three columns against one on the preset's precision, as bench/generate.py measures it."""
    from bench.generate import IN_A_ROW, ONE_COLUMN, THREE_COLUMNS, measure_compare
    from lab.presets import model_presets

    precision = model_presets()[SIZES[name][1]].precision
    precision = "bf16" if precision == "fp32" else precision  # on a GPU the CPU preset's model runs in bf16
    runs = measure_compare(new_tokens, rounds, model=model, precision=precision, device="cuda")
    seconds = {path: statistics.median(r.seconds for r in runs[path]) for path in (ONE_COLUMN, THREE_COLUMNS, IN_A_ROW)}
    return {"size": name, "precision": precision, "new_tokens": new_tokens, "seconds": seconds}


def child(kind: str, args: list) -> None:
    result = train_child(*args) if kind == "train" else compare_child(*args)
    print("RESULT " + json.dumps(result))


def run_child(kind: str, *args) -> dict:
    command = [sys.executable, __file__, "--child", json.dumps([kind, list(args)])]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{kind} {args[0]} failed:\n{done.stderr[-4000:]}")
    return json.loads(lines[-1].removeprefix("RESULT "))


def print_train(r: dict) -> None:
    gib = 2**30
    print(
        f"\n{r['size']} DPO, preset {r['preset']} ({r['precision']}, {r['batch']}):\n"
        f"  {r['step_s']:.2f} s per optimiser step (first {r['first_step_s']:.2f} s)\n"
        f"  peak allocated {r['peak_allocated'] / gib:.2f} GiB, reserved {r['peak_reserved'] / gib:.2f} GiB; "
        f"estimate {r['estimate_total'] / gib:.2f} GiB with the CUDA context, {r['estimate_tensors'] / gib:.2f} "
        f"GiB of tensors = {r['estimate_tensors'] / r['peak_allocated']:.2f}x the peak allocated"
    )
    print("\n".join("    " + line for line in r["estimate_lines"]))


def print_compare(r: dict) -> None:
    one, three, row = r["seconds"].values()
    print(
        f"\n{r['size']} compare chat ({r['precision']}, {r['new_tokens']} new tokens a column, greedy): one column "
        f"{one:.2f} s, three in one batch {three:.2f} s = {three / one:.2f}x (target <= 1.6), three in a row "
        f"{row / one:.2f}x"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=list(SIZES), action="append")
    parser.add_argument("--steps", type=int, default=3, help="optimiser steps per DPO run (default 3)")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, child_args = json.loads(args.child)
        child(kind, child_args)
        return 0
    import torch

    if not torch.cuda.is_available():
        parser.error("this benchmark needs a CUDA GPU")
    print(f"GPU: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    with tempfile.TemporaryDirectory(prefix="bench-gpu-models-") as tmp:
        for name in args.only or SIZES:
            start = time.perf_counter()
            model = str(write_model(name, Path(tmp)))
            print(f"\n{name}: random model written in {time.perf_counter() - start:.0f} s", flush=True)
            for kind in ("compare",) if args.skip_train else ("compare", "train"):
                try:
                    if kind == "compare":
                        print_compare(run_child("compare", name, model, args.max_new_tokens, args.rounds))
                    else:
                        print_train(run_child("train", name, model, args.steps))
                except RuntimeError as err:
                    print(f"\n{err}")
                sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
