"""The Chat tab's handlers: refusals keep the conversation, saved chats record the view that answered,
and a refused request is one log line, not a traceback."""

import logging

import gradio as gr
import pytest
import torch

from lab import Lab
from ui.chat import add_message, bot_reply


@pytest.fixture
def lab(tmp_path, tiny_model_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    lab = Lab(tmp_path / "workspace")
    lab.load(str(tiny_model_dir), "fp32", "cpu")
    torch.manual_seed(0)
    adapter = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir), LoraConfig(r=2))
    adapter.save_pretrained(tmp_path / "adapter")
    lab.models.add_adapter("tuned", tmp_path / "adapter")
    return lab


def test_an_empty_message_is_a_warning_that_keeps_the_conversation(lab):
    history = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    with pytest.warns(UserWarning, match="Type a message first"):
        assert add_message(lab, "  ", history, "", None, 16, "base") == (gr.skip(),) * 3


@pytest.mark.parametrize("view", ["base", "tuned"])
def test_a_saved_conversation_records_the_view_that_answered(lab, view):
    _, history, conversation_id = add_message(lab, "Hi there", [], "", None, 8, view)
    replies = list(bot_reply(lab, history, conversation_id, "", 0.0, 1.0, 8, 0, "", view))
    assert replies[-1][-1]["role"] == "assistant"
    saved = lab.store.get_conversation(conversation_id)
    assert saved.model.endswith(f"· {view}")  # the adapter is attached either way; only the view answered


def test_a_refusal_is_one_log_line(caplog):
    from ui.errors import UserError

    with caplog.at_level(logging.INFO, logger="alignment_lab"):
        error = UserError("Pick a run first.")
    assert error.print_exception is False
    assert [r.getMessage() for r in caplog.records] == ["refused: Pick a run first."]
