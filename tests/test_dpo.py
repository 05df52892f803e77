"""DPO on the tiny model: on pairs whose chosen answer says "banana", a few steps raise the preference accuracy and
the margins, and the adapter makes the policy prefer held-out chosen answers more than the base does; the reference
is the base with the adapter off (no second copy), or a continued adapter's starting point; reference-free, ipo and
robust (on a 4-bit base) runs train."""

import json
import math

import pytest
from test_reward import marker_pairs

from lab import jobs
from lab.store import Store
from lab.train import dpo, get_method
from lab.train.dpo import DPORunConfig
from lab.train.reward import split_by_prompt
from lab.train.runs import read_metrics


def config(tiny_model_dir, **overrides) -> DPORunConfig:
    values = {
        "model": str(tiny_model_dir),
        "device": "cpu",
        "max_steps": 5,
        "batch_size": 8,
        "learning_rate": 1e-2,
        "lora_r": 8,
        "save_steps": 100,
        "eval_fraction": 0.25,
        "logging_steps": 1,
        "max_length": 64,
    }
    return DPORunConfig(**{**values, **overrides})


def train_rows(rows: list[dict]) -> list[dict]:
    return [r for r in rows if "loss" in r and "rewards/chosen" in r]


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("dpo-data") / "pairs.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in marker_pairs()), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model_dir, pairs_file):
    """One DPO run on the marker pairs: (store, run)."""
    store = Store(tmp_path_factory.mktemp("dpo") / "workspace")
    run = jobs.prepare(store, "dpo", config(tiny_model_dir), data_file=str(pairs_file))
    assert jobs.execute(store, run.id) == 0, store.get_run(run.id).error
    return store, run


def completion_logp(model, tokenizer, prompt: list[dict], answer: list[dict]) -> float:
    """log p(answer | prompt) summed over the answer's tokens, as DPO scores a completion."""
    import torch

    prompt_ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=True)
    full_ids = tokenizer.apply_chat_template(prompt + answer, tokenize=True, return_dict=True)
    start, ids = len(prompt_ids["input_ids"]), torch.tensor([full_ids["input_ids"]])  # (1, T)
    with torch.no_grad():
        logps = model(input_ids=ids).logits[0, :-1].log_softmax(-1)  # (T-1, V): token t+1 given tokens up to t
    return logps[start - 1 :].gather(-1, ids[0, start:, None]).sum().item()


def test_a_dpo_run_raises_the_preference_accuracy_and_the_margins(trained):
    store, run = trained
    assert store.get_run(run.id).status == "done"
    rows = read_metrics(jobs.run_dir(store, run.id))
    steps = train_rows(rows)
    # the first step compares the policy with itself: the new adapter starts as the identity, so the reference
    # (the base with the adapter off) and the policy agree and every reward is 0
    assert steps[0]["step"] == 1 and steps[0]["rewards/chosen"] == 0 and steps[0]["rewards/margins"] == 0
    assert steps[-1]["rewards/accuracies"] >= 0.9, steps
    assert steps[-1]["rewards/margins"] > 1 and steps[-1]["loss"] < steps[0]["loss"]
    assert steps[-1]["rewards/chosen"] > 0 > steps[-1]["rewards/rejected"]
    evals = [r for r in rows if "eval_rewards/accuracies" in r]
    assert evals and evals[-1]["eval_rewards/accuracies"] >= 0.8 and evals[-1]["eval_rewards/margins"] > 0, evals
    # every curve the method declares is in the run's metrics
    assert {key for key, _ in get_method("dpo").panels} <= {key for row in rows for key in row}
    assert sorted(p.name for p in (jobs.run_dir(store, run.id) / "adapter").iterdir()) == [
        "README.md",
        "adapter_config.json",
        "adapter_model.safetensors",
    ]


def test_the_adapter_prefers_held_out_chosen_answers_more_than_the_base(trained):
    from peft import PeftModel

    from lab.models import load_model

    store, run = trained
    cfg = store.get_run(run.id).config
    _, held_out = split_by_prompt(marker_pairs(), cfg["eval_fraction"], cfg["seed"])
    lm = load_model(cfg["model"], "fp32", "cpu", progress=lambda _: None)
    model = PeftModel.from_pretrained(lm.model, str(jobs.run_dir(store, run.id) / "adapter")).eval()

    def preference() -> list[float]:  # log p(chosen) - log p(rejected), pair by pair
        return [
            completion_logp(model, lm.tokenizer, row["prompt"], row["chosen"])
            - completion_logp(model, lm.tokenizer, row["prompt"], row["rejected"])
            for row in held_out
        ]

    with model.disable_adapter():
        before = preference()
    after = preference()
    assert held_out and all(a > b for a, b in zip(after, before, strict=True)), (before, after)


def test_the_reference_is_the_base_with_the_adapter_off(tiny_model_dir, tmp_path, pairs_file):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    rows = pairs_file.read_text(encoding="utf-8")
    (tmp_path / "data.jsonl").write_text(rows, encoding="utf-8")
    trainer = dpo.build(config(tiny_model_dir, data=str(tmp_path / "data.jsonl")), tmp_path)
    assert trainer.ref_model is None and isinstance(trainer.model, PeftModel)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    base_names = {name for name, _ in base.named_parameters()}
    frozen = [name for name, p in trainer.model.named_parameters() if "lora_" not in name]
    assert len(frozen) == len(base_names)  # one copy of the base's weights, in the policy itself
    assert all(not p.requires_grad for name, p in trainer.model.named_parameters() if "lora_" not in name)


def test_continuing_an_adapter_keeps_it_as_the_reference_and_saves_only_the_trained_one(
    trained, tiny_model_dir, pairs_file
):
    store, first = trained
    start = jobs.run_dir(store, first.id) / "adapter"
    run = jobs.prepare(
        store,
        "dpo",
        config(tiny_model_dir, init_adapter=str(start), max_steps=1, eval_fraction=0),
        data_file=str(pairs_file),
    )
    assert store.get_run(run.id).provenance["parent_adapter"]["run"] == first.id
    assert jobs.execute(store, run.id) == 0, store.get_run(run.id).error
    step = train_rows(read_metrics(jobs.run_dir(store, run.id)))[0]
    # the starting adapter prefers the marker already; measured against itself, its first rewards are 0
    assert step["rewards/chosen"] == 0 and step["rewards/margins"] == 0
    assert not (jobs.run_dir(store, run.id) / "adapter" / "ref").exists()


@pytest.mark.parametrize(
    "variant",
    [
        {"reference_free": True},
        {"loss_type": "ipo"},
        {"loss_type": "robust", "label_smoothing": 0.1, "precision": "4bit"},
    ],
    ids=["reference-free", "ipo", "robust-4bit"],
)
def test_the_variants_train(variant, tiny_model_dir, pairs_file, tmp_path):
    store = Store(tmp_path / "workspace")
    run = jobs.prepare(
        store, "dpo", config(tiny_model_dir, max_steps=1, eval_fraction=0, **variant), data_file=str(pairs_file)
    )
    assert jobs.execute(store, run.id) == 0, store.get_run(run.id).error
    first = train_rows(read_metrics(jobs.run_dir(store, run.id)))[0]
    assert math.isfinite(first["loss"])
    if variant.get("reference_free"):  # the reference contributes 0: a reward is beta x the policy's log-probability
        assert first["rewards/chosen"] == pytest.approx(0.1 * first["logps/chosen"], rel=1e-4)
        assert first["rewards/chosen"] < 0
    elif variant["loss_type"] == "ipo":  # IPO's squared loss aims the margin (0 at first) at 1 / (2 beta) = 5
        assert first["loss"] == pytest.approx(25, rel=1e-3)
    else:
        assert first["loss"] == pytest.approx(math.log(2), rel=1e-3)


def test_the_config_refuses_label_smoothing_without_the_robust_loss_and_at_one_half():
    with pytest.raises(ValueError, match="label_smoothing"):
        DPORunConfig(label_smoothing=0.1)
    with pytest.raises(ValueError, match="label_smoothing"):
        DPORunConfig(loss_type="robust", label_smoothing=0.5)
    with pytest.raises(ValueError, match="loss_type"):
        DPORunConfig(loss_type="hinge")


def test_the_cli_offers_the_dpo_fields(capsys):
    from lab.cli import main

    with pytest.raises(SystemExit):
        main(["train", "dpo", "--help"])
    text = capsys.readouterr().out
    for flag in ("--beta", "--loss-type", "--label-smoothing", "--reference-free", "--exclude-flagged"):
        assert flag in text
