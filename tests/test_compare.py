"""Compare chat on the tiny model with two adapters: one batched pass answers as separately loaded models would,
the vote it casts is in the workspace after reopening it, and the conversation exports as Markdown and JSON."""

import json

import pytest
from test_adapters import finished_run

from lab import Lab
from lab.adapters import attach_adapter
from lab.compare import Answer, ColumnLog, answer_for, comparison, score_last_replies, to_json, to_markdown
from lab.generate import GenerationSettings, PromptTooLongError, build_messages, encode_chat
from lab.models import load_model
from lab.preferences import Side
from lab.store import Store

GREEDY = {"temperature": 0.0, "max_new_tokens": 16}
QUESTION = "What is the capital of France?"
SYSTEM = "Answer the question truthfully and briefly, then say goodbye."
HISTORY = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Mirrors do not bring bad luck."}]


@pytest.fixture(scope="module")
def lab(tmp_path_factory, tiny_model_dir):
    """The tiny base loaded once, with two chat runs whose (random) adapters change what it says."""
    store = Store(tmp_path_factory.mktemp("compare") / "workspace")
    for seed, run_id in enumerate(("sft-1", "sft-2"), 1):
        finished_run(store, run_id, "sft", str(tiny_model_dir), seed=seed)
    lab = Lab(store)
    lab.load(str(tiny_model_dir), "fp32", "cpu")
    return lab


def alone(lab: Lab, view: str, messages: list[dict]) -> str:
    """The greedy reply of a freshly loaded base, plus the view's adapter from its folder, generating by itself
    through plain PEFT and `model.generate`."""
    import torch
    from peft import PeftModel

    lm = load_model(lab.models.loaded.base, "fp32", "cpu", progress=lambda _: None)
    if view != "base":
        lm.model = PeftModel.from_pretrained(lm.model, str(lab.store.runs_dir / view / "adapter")).eval()
    ids = encode_chat(lm, messages, GREEDY["max_new_tokens"])
    out = lm.model.generate(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        do_sample=False,
        max_new_tokens=GREEDY["max_new_tokens"],
        pad_token_id=lm.tokenizer.pad_token_id,
    )
    return lm.tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip()


def test_one_batch_answers_each_column_as_its_model_alone(lab, monkeypatch):
    same = {view: alone(lab, view, build_messages(QUESTION)) for view in ("base", "sft-1", "sft-2")}
    assert len(set(same.values())) == 3, f"the adapters should change what the base says: {same}"

    for view in ("sft-1", "sft-2"):  # attached before counting: the first one wraps the model in PEFT's
        attach_adapter(lab.store, lab.models, view)
    calls = []
    original = lab.models.loaded.model.generate
    monkeypatch.setattr(lab.models.loaded.model, "generate", lambda **kw: calls.append(kw) or original(**kw))
    columns = ["base", ("sft-1", SYSTEM), "sft-2"]  # three prompt lengths: left padding in one batch
    active = lab.models.loaded.model.base_model.active_adapter
    replies = lab.compare(QUESTION, columns, histories=[[], [], HISTORY], **GREEDY)

    assert len(calls) == 1 and lab.models.loaded.model.base_model.active_adapter == active  # put back after
    assert not any("forward" in vars(m) for m in lab.models.loaded.model.modules())  # the batch's forwards are gone
    assert calls[0]["attention_mask"].sum(1).unique().numel() == 3
    assert replies == [
        same["base"],
        alone(lab, "sft-1", build_messages(QUESTION, SYSTEM)),
        alone(lab, "sft-2", build_messages(QUESTION, history=HISTORY)),
    ]


def test_sampling_with_one_seed_repeats_every_column(lab):
    sampled = {"temperature": 1.0, "max_new_tokens": 12, "seed": 3}
    first = lab.compare("Tell me something", ["base", "sft-1", "sft-1"], **sampled)
    assert first == lab.compare("Tell me something", ["base", "sft-1", "sft-1"], **sampled)
    assert first[1] != first[2], "two rows of one view draw their own numbers"


def test_a_column_count_out_of_range_or_a_column_too_long_is_refused(lab):
    with pytest.raises(ValueError, match="2 or 3 columns"):
        lab.compare(QUESTION, ["base"])
    long = [{"role": "user", "content": "mirror " * 120}, {"role": "assistant", "content": "Yes."}]
    with pytest.raises(PromptTooLongError, match="^Column 2: The prompt is"):
        lab.compare(QUESTION, ["base", "sft-1"], histories=[[], long], **GREEDY)


def compared(lab: Lab, sides: list[Side]) -> list[ColumnLog]:
    """A one-turn compare chat as the tab keeps it: each column's turns and who answered."""
    settings = GenerationSettings(**GREEDY)
    replies = lab.compare(QUESTION, [(side.view, side.system) for side in sides], **GREEDY)
    return [
        ColumnLog(
            [{"role": "user", "content": QUESTION}, {"role": "assistant", "content": reply}],
            [answer_for(lab.models.loaded.base, side, settings)],
        )
        for side, reply in zip(sides, replies, strict=True)
    ]


def test_this_one_is_better_is_a_vote_in_the_workspace(lab):
    columns = compared(lab, [Side("base"), Side("sft-1", SYSTEM), Side("sft-2")])
    lab.store.add_comparison(comparison(columns, 1, " ada "))

    [vote] = Store(lab.store.root).list_comparisons(source="compare")  # reopened
    assert vote.ranks == [2, 1, 2] and vote.annotator == "ada" and vote.shown == [0, 1, 2]
    assert vote.prompt == [{"role": "user", "content": QUESTION}]
    assert [c["text"] for c in vote.candidates] == [c.messages[-1]["content"] for c in columns]
    assert vote.candidates[1]["model"].endswith(" · sft-1 + system prompt")
    sampling = {"temperature": 0.0, "top_p": 0.9, "max_new_tokens": 16, "seed": None}
    assert vote.candidates[1]["settings"] == {**sampling, "system": SYSTEM}


def test_a_vote_needs_every_reply_and_different_ones(lab):
    columns = compared(lab, [Side("base"), Side("base")])
    with pytest.raises(ValueError, match="Column 2's reply is the same as column 1's"):
        comparison(columns, 0)
    waiting = ColumnLog([{"role": "user", "content": QUESTION}], [])
    with pytest.raises(ValueError, match="Column 2 has no reply yet"):
        comparison([columns[0], waiting], 0)


def test_export_holds_every_column_with_its_model_system_prompt_settings_and_reward(lab, trained):
    store, run = trained  # a reward model of the tiny base
    judge = Lab(store)
    columns = compared(lab, [Side("base"), Side("sft-1", SYSTEM)])
    assert score_last_replies(columns, run.id, lambda turns, reply: judge.score(run.id, turns, [reply])[0]) == ""
    reply = columns[1].messages[-1]["content"]
    assert columns[1].answers[-1].reward == pytest.approx(judge.score(run.id, [columns[1].messages[0]], [reply])[0])

    data = json.loads(to_json(columns))
    turn = data["columns"][1]["messages"][1]
    assert turn["model"].endswith("sft-1 + system prompt") and turn["system"] == SYSTEM
    assert turn["settings"]["max_new_tokens"] == 16 and turn["reward_model"] == run.id
    assert turn["content"] == columns[1].messages[-1]["content"]

    markdown = to_markdown(columns)
    assert "## Column 1" in markdown and "## Column 2" in markdown
    assert f"*System prompt:* {SYSTEM}" in markdown and "*System prompt:* (none)" in markdown
    assert f"**User:** {QUESTION}" in markdown
    assert f"reward {columns[1].answers[-1].reward:+.2f} by {run.id}" in markdown


def test_a_reply_the_reward_model_cannot_read_keeps_no_reward_and_says_why():
    column = ColumnLog(
        [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
        [Answer("m · base", "base", "", {})],
    )

    def too_long(turns, reply):
        raise ValueError("The reply is 900 tokens; the reward model reads 512.")

    assert score_last_replies([column], "rm-1", too_long).startswith("The reply is 900 tokens")
    assert column.answers[-1].reward is None
    assert score_last_replies([column], "rm-1", too_long) == ""  # not tried again for the same run
