"""The lean decoding step gives the library's numbers: few-row products in either orientation, each row's LoRA
adapter in a mixed batch, and the model as it was once the batch is done."""

import pytest
import torch
from peft import LoraConfig, get_peft_model

from lab import decoding
from lab.decoding import MixedBatchError, row_adapters

TOLERANCE = {"atol": 1e-5, "rtol": 1e-4}  # float rounding of differently shaped products


@pytest.fixture
def two_adapters(tiny_model):
    """The tiny model with two random LoRA adapters on every linear layer, in eval mode as generation runs it."""
    model = get_peft_model(
        tiny_model.model, LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False), adapter_name="a"
    )
    model.add_adapter("b", LoraConfig(r=8, lora_alpha=32, target_modules="all-linear", init_lora_weights=False))
    return model.eval()


def logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model(input_ids=ids).logits


def replaced(model) -> list[str]:
    """Modules still carrying a forward of their own after a context closed."""
    return [name for name, m in model.named_modules() if "forward" in vars(m)]


@pytest.mark.parametrize("rows", [1, 3])
@pytest.mark.parametrize("transposed", [True, False])
def test_few_row_products_in_either_orientation_give_the_linear_layers_numbers(
    tiny_model, monkeypatch, rows, transposed
):
    monkeypatch.setattr(decoding, "transposed_is_faster", lambda weight, rows: transposed)
    model = tiny_model.model.eval()
    step = torch.randint(0, 300, (rows, 1))  # a decoding step: one position per row
    prompt = torch.randint(0, 300, (rows, 12))  # a prompt's pass: more rows than FEW, left as it is
    expected = logits(model, step), logits(model, prompt)
    with decoding.few_rows(model, rows):
        got = logits(model, step), logits(model, prompt)
    torch.testing.assert_close(got[0], expected[0], **TOLERANCE)
    assert torch.equal(got[1], expected[1])
    assert replaced(model) == []


def test_the_orientation_is_timed_once_per_shape_and_row_count(monkeypatch):
    timed = []
    monkeypatch.setattr(decoding, "_faster", {})
    monkeypatch.setattr(decoding, "_fastest", lambda product: timed.append(product) or len(timed))
    weight = torch.randn(64, 32)
    first = [decoding.transposed_is_faster(weight, 1) for _ in range(3)]
    assert len(timed) == 2 and first == [False] * 3  # plain timed 1, transposed 2: plain kept, and remembered
    decoding.transposed_is_faster(weight, 3)
    assert len(timed) == 4


def test_the_active_adapter_runs_on_every_row_and_none_while_disabled(two_adapters):
    ids = torch.randint(0, 300, (2, 5))
    for name in ("a", "b"):
        two_adapters.set_adapter(name)
        expected = logits(two_adapters, ids)
        with row_adapters(two_adapters):
            torch.testing.assert_close(logits(two_adapters, ids), expected, **TOLERANCE)
    with two_adapters.disable_adapter():
        expected = logits(two_adapters, ids)
        with row_adapters(two_adapters):
            assert torch.equal(logits(two_adapters, ids), expected)
    assert replaced(two_adapters) == []


def test_a_mixed_batch_gives_each_row_its_own_adapter_or_none(two_adapters):
    views = ["base", "a", "b", "a"]
    ids = torch.randint(0, 300, (len(views), 6))
    alone = {}
    for name in ("a", "b"):
        two_adapters.set_adapter(name)
        alone[name] = logits(two_adapters, ids)
    with two_adapters.disable_adapter():
        alone["base"] = logits(two_adapters, ids)
    two_adapters.set_adapter("b")  # whatever is active, the views decide

    with row_adapters(two_adapters, views):
        mixed = logits(two_adapters, ids)

    for row, view in enumerate(views):
        torch.testing.assert_close(mixed[row], alone[view][row], **TOLERANCE)
    assert two_adapters.active_adapter == "b" and replaced(two_adapters) == []


def test_dora_keeps_pefts_forward_alone_and_cannot_share_a_mixed_batch(tiny_model):
    model = get_peft_model(tiny_model.model, LoraConfig(r=4, target_modules="all-linear", use_dora=True)).eval()
    ids = torch.randint(0, 300, (2, 5))
    expected = logits(model, ids)
    with row_adapters(model):
        assert replaced(model) == []
        assert torch.equal(logits(model, ids), expected)
    with pytest.raises(MixedBatchError, match="one at a time"), row_adapters(model, ["base", "default"]):
        pass


def test_adapters_kept_in_fp32_on_a_bf16_base_add_as_peft_adds_them(tiny_model_dir):
    from lab.models import load_model

    base = load_model(str(tiny_model_dir), "bf16", "cpu", progress=lambda _: None).model
    model = get_peft_model(base, LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False)).eval()
    assert next(p for n, p in model.named_parameters() if "lora_A" in n).dtype == torch.float32
    ids = torch.randint(0, 300, (2, 5))
    expected = logits(model, ids)
    with row_adapters(model, ["base", "default"]):
        mixed = logits(model, ids)
    torch.testing.assert_close(mixed[1], expected[1], atol=0.02, rtol=0.01)  # bf16 products in other shapes


def test_every_model_call_runs_on_the_one_model_thread_and_its_errors_reach_the_caller(tiny_model, monkeypatch):
    """One thread computes for the whole process, so GNU OpenMP keeps one pool of workers (lab.decoding)."""
    import threading

    from lab.generate import GenerationSettings, build_messages, generate

    threads = set()
    original = tiny_model.model.generate
    monkeypatch.setattr(
        tiny_model.model, "generate", lambda **kw: threads.add(threading.current_thread().name) or original(**kw)
    )
    callers = [
        threading.Thread(target=generate, args=(tiny_model, build_messages("Hi"), GenerationSettings(max_new_tokens=4)))
        for _ in range(3)
    ]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join()
    assert threads == {"model"}
    assert decoding.on_model_thread(lambda: decoding.on_model_thread(threading.current_thread)).name == "model"
    with pytest.raises(ZeroDivisionError):
        decoding.on_model_thread(lambda: 1 / 0)
