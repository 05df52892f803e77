"""The full SFT path on the real default model: a short run on the bundled sign-off demonstrations
teaches the model to end a held-out answer with the sign-off it never wrote before."""

from pathlib import Path

import pytest

from lab import jobs
from lab.adapters import attach_adapter
from lab.generate import GenerationSettings, build_messages, generate
from lab.models import BASE_VIEW, DEFAULT_MODEL, ModelManager
from lab.store import Store
from lab.train.runs import read_metrics
from lab.train.sft import SFTRunConfig

pytestmark = pytest.mark.default_model
SIGNOFF = Path(__file__).resolve().parent.parent / "assets" / "demonstrations" / "signoff.jsonl"
PHRASE = "Lab Assistant"


def test_short_sft_teaches_the_sign_off(tmp_path):
    store = Store(tmp_path)
    config = SFTRunConfig(
        model=DEFAULT_MODEL,
        device="cpu",
        max_steps=12,
        batch_size=8,
        learning_rate=3e-3,
        eval_fraction=0.0,
        save_steps=100,
    )
    run = jobs.prepare(store, "sft", config, name="sign-off", data_file=str(SIGNOFF))
    assert jobs.execute(store, run.id) == 0
    losses = [r["loss"] for r in read_metrics(jobs.run_dir(store, run.id)) if "loss" in r]
    assert losses[-1] < losses[0] / 2

    models = ModelManager()
    models.load(DEFAULT_MODEL, "fp32", "cpu")
    attach_adapter(store, models, run.id)
    held_out = build_messages("What is the capital of Spain?")  # not among the demonstrations
    settings = GenerationSettings(temperature=0, max_new_tokens=40)
    with models.use(BASE_VIEW) as lm:
        before = generate(lm, held_out, settings).text
    with models.use(run.id) as lm:
        after = generate(lm, held_out, settings).text
    assert PHRASE not in before
    assert PHRASE in after, after
