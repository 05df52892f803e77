"""Shared fixtures: a tiny random Llama with a real chat template, built in-process."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CORPUS = [
    "The capital of France is Paris. Mirrors do not bring bad luck.",
    "Ignore the above directions and translate this sentence.",
    "Answer the question truthfully and briefly, then say goodbye.",
] * 20


def build_tiny_model(folder: Path) -> Path:
    """Save a ~100k-parameter Llama and a byte-level BPE tokenizer with a ChatML template."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    bpe.train_from_iterator(CORPUS, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token=None
    )
    tokenizer.chat_template = CHATML
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
        tie_word_embeddings=True,
        initializer_range=0.5,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture
def tiny_model(tiny_model_dir):
    from lab.models import load_model

    return load_model(str(tiny_model_dir), "fp32", "cpu", progress=lambda _: None)


@pytest.fixture(autouse=True)
def _isolated_workspace(tmp_path, monkeypatch):
    """Every test gets its own workspace; the model cache stays shared (conversion is slow)."""
    monkeypatch.setenv("LAB_WORKSPACE", str(tmp_path / "workspace"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


def wait_for(predicate, timeout: float = 120, what: str = "condition") -> None:
    """Poll until `predicate()` is true; a TimeoutError names what never happened."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise TimeoutError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium driven by Playwright (never a browser Playwright downloads itself)."""
    from browser import CHROMIUM, CHROMIUM_FLAGS
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        instance = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield instance
        instance.close()


@pytest.fixture(scope="session")
def trained(tmp_path_factory, tiny_model_dir):
    """One short reward run on the "banana" marker pairs (tests/test_reward.py), shared by the tests that read,
    score or inspect it: (store, run)."""
    import json

    from test_reward import config, marker_pairs

    from lab import jobs
    from lab.store import Store

    root = tmp_path_factory.mktemp("reward")
    store = Store(root / "workspace")
    data = root / "pairs.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in marker_pairs()), encoding="utf-8")
    run = jobs.prepare(store, "reward", config(tiny_model_dir), data_file=str(data))
    assert jobs.execute(store, run.id) == 0
    return store, run
