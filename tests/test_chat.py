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


# rewards beside the replies: scored after a turn, one new reply at a time, never part of the conversation


def test_each_reply_is_scored_given_the_turns_before_it_and_only_once():
    from lab.preferences import score_replies

    calls = []

    def scorer(turns, reply):
        calls.append((turns, reply))
        if reply == "far too long":
            raise ValueError("Response 1 is 900 tokens with its prompt; the model reads 256.")
        return float(len(reply))

    turns = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "And?"},
        {"role": "assistant", "content": "Bye!"},
    ]
    first = score_replies(turns, scorer)
    assert first.rewards == [5.0, 4.0] and first.problem == ""
    assert calls == [(turns[:1], "Hello"), (turns[:3], "Bye!")]
    calls.clear()
    assert score_replies(turns, scorer, first.known).rewards == [5.0, 4.0]
    assert calls == []  # nothing new to score
    retried = [*turns[:3], {"role": "assistant", "content": "far too long"}]
    again = score_replies(retried, scorer, first.known)
    assert again.rewards == [5.0, None] and "the model reads 256" in again.problem
    assert [reply for _, reply in calls] == ["far too long"]  # only the new reply
    assert score_replies(retried, scorer, again.known).problem == ""  # said once, not after every turn
    assert len(again.known) == 2  # the replaced reply is forgotten


def test_a_replys_reward_shows_beside_the_conversation_and_never_in_it(trained, tiny_model_dir):
    import copy

    from ui.chat import show_rewards
    from ui.reward_models import NO_REWARD

    store, run = trained
    lab = Lab(store)
    lab.load(str(tiny_model_dir), "fp32", "cpu")
    calls = []
    score = lab.score
    lab.score = lambda *args, **kwargs: calls.append(args) or score(*args, **kwargs)

    def turn(text: str, history: list, conversation_id: int | None) -> tuple[list, int]:
        _, history, conversation_id = add_message(lab, text, history, "Be brief.", conversation_id, 8, "base")
        *_, history = bot_reply(lab, history, conversation_id, "Be brief.", 0.0, 1.0, 8, 0, "", "base")
        return history, conversation_id

    history, conversation_id = turn("Tell me about the sea, please (7).", [], None)
    shown = copy.deepcopy(history)
    known, line = show_rewards(lab, history, run.id, {})
    [(_, prompt, [reply])] = calls
    assert prompt == history[:1] and reply == history[1]["content"]  # the turns before it, no system prompt
    expected = lab.score(run.id, history[:1], [history[1]["content"]])[0]
    assert line == f"**Rewards:** reply 1 **{expected:+.2f}**"
    assert history == shown  # the conversation on screen is unchanged

    calls.clear()
    history, conversation_id = turn("And a cat?", history, conversation_id)
    known, line = show_rewards(lab, history, run.id, known)
    assert len(calls) == 1 and calls[0][1] == history[:3]  # only the new reply is scored
    assert line.startswith(f"**Rewards:** reply 1 **{expected:+.2f}** · reply 2 **")
    saved = lab.store.get_conversation(conversation_id)
    assert saved.messages == [{"role": m["role"], "content": m["content"]} for m in history]
    assert "Reward" not in str(saved.messages)
    assert show_rewards(lab, history, NO_REWARD, known) == ({}, "")  # no scorer: no line
