"""Adapters are listed per base and per kind, a retrained adapter reloads where it is attached, and a base has
one spelling; on a shared app only the command line chooses the base."""

import shutil

import gradio as gr
import pytest
import torch

from lab import Lab
from lab.adapters import attach_adapter, list_adapters
from lab.generate import build_messages, encode_chat
from lab.models import ModelError, ModelManager
from lab.refs import ModelRef
from lab.store import Run, Store
from lab.train import METHODS, Method


def save_adapter(model_dir, folder, seed: int) -> None:
    """A LoRA adapter with random (non-zero) weights: what a run would leave, without the training."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(model_dir)
    model = get_peft_model(base, LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False))
    model.save_pretrained(folder)


def finished_run(store: Store, run_id: str, method: str, model: str, seed: int = 1) -> None:
    store.add_run(Run(run_id, method, {"model": model}, status="done"))
    save_adapter(model, store.runs_dir / run_id / "adapter", seed)


def last_logits(models: ModelManager, view: str) -> torch.Tensor:
    with models.use(view) as lm, torch.inference_mode():
        return lm.model(input_ids=encode_chat(lm, build_messages("Hello?"), 4)).logits[0, -1]


@pytest.fixture
def store(tmp_path):
    return Store(tmp_path / "workspace")


def test_a_reward_model_is_never_offered_as_a_chat_view(store, tiny_model_dir, monkeypatch):
    reward = Method("reward-probe", "scores answers", METHODS["sft"].config, "preferences", "reward-model", (), None)
    monkeypatch.setitem(METHODS, "reward-probe", reward)
    finished_run(store, "chat-1", "sft", str(tiny_model_dir))
    finished_run(store, "judge-1", "reward-probe", str(tiny_model_dir))
    store.add_run(Run("elsewhere", "sft", {"model": "owner/other-model"}, status="done"))  # another base's adapter
    shutil.copytree(store.runs_dir / "chat-1" / "adapter", store.runs_dir / "elsewhere" / "adapter")

    lab = Lab(store)
    lab.load(str(tiny_model_dir), "fp32", "cpu")
    views = [view for _, view in lab.views()]
    assert views == ["base", "chat-1"]
    assert set(list_adapters(store, kind="reward")) == {"judge-1"}
    with pytest.raises(ModelError, match="reward model, not a chat adapter"):
        attach_adapter(store, lab.models, "judge-1")
    with pytest.raises(ModelError, match="load that base model first"):
        attach_adapter(store, lab.models, "elsewhere")


def test_a_base_has_one_spelling(tiny_model_dir, monkeypatch, store):
    monkeypatch.chdir(tiny_model_dir.parent)
    relative = f"./{tiny_model_dir.name}/"
    assert ModelRef(relative) == ModelRef(str(tiny_model_dir))
    finished_run(store, "chat-1", "sft", relative)
    assert set(list_adapters(store, base=str(tiny_model_dir))) == {"chat-1"}
    models = ModelManager()
    models.load(relative, "fp32", "cpu")
    attach_adapter(store, models, "chat-1")  # trained on "./x/", loaded as "/abs/x": the same base


def test_a_retrained_adapter_reloads_where_it_is_attached(store, tiny_model_dir):
    finished_run(store, "chat-1", "sft", str(tiny_model_dir), seed=1)
    models = ModelManager()
    models.load(str(tiny_model_dir), "fp32", "cpu")
    attach_adapter(store, models, "chat-1")
    before = last_logits(models, "chat-1")
    attach_adapter(store, models, "chat-1")  # unchanged: nothing reloads
    assert torch.equal(before, last_logits(models, "chat-1"))

    folder = store.runs_dir / "chat-1" / "adapter"
    save_adapter(tiny_model_dir, folder, seed=2)  # the run was resumed and saved new weights under the same id
    attach_adapter(store, models, "chat-1")
    assert not torch.allclose(before, last_logits(models, "chat-1"))
    assert list(models.loaded.adapters) == ["chat-1"]


def test_a_shared_app_does_not_load_typed_models(store):
    from ui.chat import load_model
    from ui.demonstrations import run_distillation

    lab = Lab(store, shared=True)
    with pytest.raises(gr.Error, match="only the command line"):
        load_model(lab, "/etc", "fp32", "cpu")
    with pytest.raises(gr.Error, match="only the command line"):
        next(run_distillation(lab, "/home/someone/model", "starter", 0, 16, "", ""))
    assert lab.models.loaded is None
