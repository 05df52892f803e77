"""Loading bases in every precision, clear errors, and adapters switched in place."""

import gc
import weakref

import pytest
import torch

from lab.generate import GenerationSettings, build_messages, encode_chat
from lab.models import BASE_VIEW, ModelError, ModelManager, load_model, resolve_base

QUIET = {"progress": lambda _: None}


def greedy_logits(lm) -> torch.Tensor:
    ids = encode_chat(lm, build_messages("What is the capital of France?"), 8)
    with torch.inference_mode():
        return lm.model(input_ids=ids).logits[0, -1].float()


def make_adapter(tiny_model_dir, folder, seed: int):
    """A LoRA adapter with random (non-zero) weights, so it visibly changes the output."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    base = load_model(str(tiny_model_dir), "fp32", "cpu", **QUIET).model
    peft_model = get_peft_model(base, LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False))
    peft_model.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("precision", ["fp32", "bf16", "4bit", "8bit"])
def test_every_precision_loads_and_generates_on_cpu(tiny_model_dir, precision):
    from lab.generate import generate

    lm = load_model(str(tiny_model_dir), precision, "cpu", **QUIET)
    out = generate(lm, build_messages("Hello"), GenerationSettings(temperature=0, max_new_tokens=5))
    assert out.new_tokens == 5 and out.prompt_tokens > 0
    if precision == "4bit":
        import bitsandbytes as bnb

        assert isinstance(lm.model.model.layers[0].mlp.up_proj, bnb.nn.Linear4bit)


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        ("/no/such/folder", "There is no folder"),
        ("", "No model given"),
        ("not a model id", "Unknown model"),
    ],
)
def test_bad_references_give_one_sentence(reference, expected):
    with pytest.raises(ModelError, match=expected):
        resolve_base(reference)


def test_folder_without_config_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(ModelError, match="no config.json"):
        resolve_base(str(tmp_path))


def test_failed_load_keeps_the_loaded_model(tiny_model_dir, tmp_path):
    manager = ModelManager()
    first = manager.load(str(tiny_model_dir), "fp32", "cpu")
    with pytest.raises(ModelError):
        manager.load(str(tmp_path / "missing"), "fp32", "cpu")
    assert manager.loaded is first
    assert "There is no folder" in manager.status and manager.status.startswith(f"Loaded {first.base}")


def test_loading_a_second_base_frees_the_first(tiny_model_dir):
    manager = ModelManager()
    manager.load(str(tiny_model_dir), "fp32", "cpu")
    old = weakref.ref(manager.loaded.model)
    manager.load(str(tiny_model_dir), "bf16", "cpu")
    gc.collect()
    assert old() is None
    assert manager.loaded.precision == "bf16"


def test_adapters_switch_in_place_and_base_view_disables_them(tiny_model_dir, tmp_path):
    manager = ModelManager()
    manager.load(str(tiny_model_dir), "fp32", "cpu")
    with manager.use(BASE_VIEW) as lm:
        plain = greedy_logits(lm)
    manager.add_adapter("a", make_adapter(tiny_model_dir, tmp_path / "a", seed=1))
    manager.add_adapter("b", make_adapter(tiny_model_dir, tmp_path / "b", seed=2))
    with manager.use("a") as lm:
        with_a = greedy_logits(lm)
    with manager.use("b") as lm:
        with_b = greedy_logits(lm)
    with manager.use(BASE_VIEW) as lm:
        base_again = greedy_logits(lm)
    assert not torch.allclose(with_a, plain, atol=1e-4)
    assert not torch.allclose(with_a, with_b, atol=1e-4)
    torch.testing.assert_close(base_again, plain)
    assert list(manager.loaded.adapters) == ["a", "b"]
    with pytest.raises(ModelError, match="No adapter named 'c'"), manager.use("c"):
        pass


def test_adapter_folder_is_checked(tiny_model_dir, tmp_path):
    manager = ModelManager()
    manager.load(str(tiny_model_dir), "fp32", "cpu")
    with pytest.raises(ModelError, match="not a LoRA adapter"):
        manager.add_adapter("x", tmp_path)


def test_using_the_model_before_loading_says_so():
    with pytest.raises(ModelError, match="No model is loaded"), ModelManager().use():
        pass
