"""The memory estimate: its arithmetic on a tiny config computed by hand, its advice, and one measured run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lab.train import get_method
from lab.train.memory import MIB, NF4_BYTES, RUNTIME_BYTES, STEP_OVERHEAD_BYTES, estimate_memory, model_shape
from lab.train.reward import RewardRunConfig
from lab.train.sft import SFTRunConfig

ROOT = Path(__file__).resolve().parent.parent
STEP = ("activations", "logits", "autocast", "optimiser", "overhead")  # what a step adds to the loaded model
TINY = {  # a Llama of the shape conftest's tiny model has, with a round vocabulary
    "model_type": "llama",
    "vocab_size": 100,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "tie_word_embeddings": True,
}


def tiny_config(**changes) -> SFTRunConfig:
    values = {"batch_size": 2, "max_length": 32, "lora_r": 8, "mixed_precision": False, "precision": "fp32"}
    return SFTRunConfig.from_dict({**values, **changes})


def test_shape_of_a_config_dict():
    shape = model_shape(TINY)
    # per layer: q 64x64, k 64x32, v 64x32, o 64x64, gate / up 64x128, down 128x64
    assert shape.linear_params == 2 * (4096 + 2048 + 2048 + 4096 + 3 * 8192) == 73728
    assert shape.other_params == 100 * 64 + 2 * 2 * 64 + 64  # tied embeddings once, 2 norms a layer, final norm
    assert (shape.layers, shape.hidden, shape.kv_heads, shape.head_dim) == (2, 64, 2, 16)


def test_terms_computed_by_hand():
    est = estimate_memory("sft", tiny_config(), shape=model_shape(TINY), device="cpu", free=None)
    lora = 2 * 8 * ((64 + 64) + 2 * (64 + 32) + (64 + 64) + 3 * (64 + 128))  # r x (in + out), 7 modules, 2 layers
    assert lora == 16384
    assert est.term("weights").bytes == (73728 + 6720) * 4
    assert est.term("adapter").bytes == lora * 4
    assert est.term("optimiser").bytes == lora * 12  # fp32 gradient + AdamW's two moments
    # a token and layer: 8h + 4i + heads + the padding mask's row (32) + 7 r + dropout's 1.5 x (6 x 64 + 128)
    per_layer = 8 * 64 + 4 * 128 + 4 + 32 + 7 * 8 + 1.5 * (6 * 64 + 128)
    assert per_layer == 1884
    assert est.term("activations").bytes == 2 * 32 * (2 * per_layer + 4 * 64) * 4  # fp32, all layers + 4h once
    tokens = 2 * 31  # the head scores each position's next token
    assert est.term("logits").bytes == 9 * tokens * 100 * 4 + tokens * 64 * 4  # nine fp32 tiles + the input's grad
    assert est.term("runtime").bytes == RUNTIME_BYTES["cpu"]
    assert est.term("overhead").bytes == STEP_OVERHEAD_BYTES["cpu"]
    assert est.total == sum(t.bytes for t in est.terms)
    assert len(est.lines()) == len(est.terms) + 1


def test_method_shapes():
    shape = model_shape(TINY)
    sft = estimate_memory("sft", tiny_config(), shape=shape, device="cpu", free=None)
    checkpointed = estimate_memory(
        "sft", tiny_config(), shape=shape, device="cpu", free=None, gradient_checkpointing=True
    )
    assert checkpointed.term("activations").bytes < sft.term("activations").bytes
    reward = RewardRunConfig.from_dict({k: v for k, v in tiny_config().to_dict().items() if k != "sample_every"})
    rm = estimate_memory("reward", reward, shape=model_shape(TINY, "reward"), device="cpu", free=None)
    assert rm.term("activations").bytes > sft.term("activations").bytes  # chosen and rejected: twice the sequences
    assert rm.term("logits").bytes == 0  # one score, no vocabulary
    nf4 = estimate_memory("sft", tiny_config(precision="4bit"), shape=shape, device="cuda", free=None)
    assert nf4.term("weights").bytes == pytest.approx(73728 * NF4_BYTES + 6720 * 4)
    assert nf4.term("optimiser").bytes == 16384 * 6  # paged 8-bit AdamW on a GPU
    assert nf4.term("activations").bytes < sft.term("activations").bytes  # bf16 and checkpointed


def test_rollouts_of_an_rl_method():
    from dataclasses import dataclass

    from lab.train.config import RolloutSettings, TrainConfig

    @dataclass
    class GRPOLike(RolloutSettings, TrainConfig):
        pass

    values = {"batch_size": 4, "max_length": 96, "max_completion_length": 64, "lora_r": 8, "mixed_precision": False}
    config = GRPOLike.from_dict(values)
    est = estimate_memory("grpo", config, shape=model_shape(TINY), device="cpu", free=None)
    rollouts = est.term("rollouts")
    cache = 2 * 2 * 2 * 16 * 4 * 96 * 4  # K and V x layers x kv heads x head_dim x completions x tokens x fp32
    assert rollouts.bytes > cache and "KV cache" in rollouts.why
    per_layer = 8 * 64 + 4 * 128 + 4 + 96 + 7 * 8 + 1.5 * (6 * 64 + 128)  # the sequence: 32-token prompt + 64
    assert est.term("activations").bytes == 4 * 96 * (2 * per_layer + 4 * 64) * 4


def test_advice_names_the_biggest_term_and_a_change_that_fits():
    shape = model_shape(TINY)
    config = tiny_config(batch_size=64, max_length=1024)
    big = estimate_memory("sft", config, shape=shape, device="cpu", free=None)
    assert big.biggest.name == "activations"
    fixed = RUNTIME_BYTES["cpu"] + STEP_OVERHEAD_BYTES["cpu"]
    free = (fixed + 0.6 * (big.total - fixed)) / 0.9
    est = estimate_memory("sft", config, shape=shape, device="cpu", free=free)
    assert est.fits is False
    assert "will not fit" in est.summary() and "biggest term is activations" in est.summary()
    assert "With batch_size 32 and grad_accum 2 it would fit" in est.alternative
    roomy = estimate_memory("sft", config, shape=shape, device="cpu", free=100 * big.total)
    assert roomy.fits and "fits" in roomy.summary()


def test_the_default_model_shape():
    shape = model_shape("smollm2-135m-instruct")
    assert (shape.layers, shape.hidden, shape.vocab) == (30, 576, 49152)
    assert 134e6 < shape.params < 135e6


def test_measured_peak_on_the_tiny_model(tiny_model_dir):
    """One run of the tiny model trained through the lab's path: its step's peak RSS against the estimate."""
    overrides = {"batch_size": 16, "max_length": 256, "sample_every": 0}
    command = [
        sys.executable,
        str(ROOT / "bench" / "memory.py"),
        "--child",
        json.dumps(["sft", overrides, str(tiny_model_dir)]),
    ]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    config = get_method("sft").config.from_dict({"model": str(tiny_model_dir), **overrides})
    est = estimate_memory("sft", config, device="cpu", free=None)
    step = sum(t.bytes for t in est.terms if t.name in STEP)
    measured = got["peak"] - got["after_build"]
    assert 0.6 < step / measured < 1.5, f"estimated {step / MIB:.0f} MiB, measured {measured / MIB:.0f} MiB"


def test_an_8b_qlora_dpo_on_an_8_gb_card_is_estimated_not_to_fit_at_1024_tokens():
    """Estimated, not measured: a Llama-3-8B-shaped config in NF4, DPO with one pair a step on a GPU."""
    from lab.train.config import TrainConfig
    from lab.train.memory import GIB

    llama3_8b = {
        **{"model_type": "llama", "vocab_size": 128256, "hidden_size": 4096, "intermediate_size": 14336},
        **{"num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8},
        **{"tie_word_embeddings": False, "dtype": "bfloat16"},
    }
    config = TrainConfig.from_dict({"precision": "4bit", "batch_size": 1, "grad_accum": 8, "max_length": 1024})
    est = estimate_memory("dpo", config, shape=model_shape(llama3_8b), device="cuda", free=8 * GIB)
    assert 5 * GIB < est.term("weights").bytes < 5.6 * GIB  # 7.0B in NF4 + 1.05B embeddings and head in bf16
    assert est.term("optimiser").bytes == pytest.approx(est.term("adapter").bytes * 6 / 4)  # paged 8-bit AdamW
    assert est.fits is False and est.biggest.name == "weights" and "max_length 512" in est.alternative
