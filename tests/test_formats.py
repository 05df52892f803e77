"""Every public dataset shape, from a small fixture written from its documentation: what import makes of it, what
an export gives back, that a broken row is refused and named, and that plain TRL trains on each export."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from lab.formats import DataFileError, NotDemonstrationsError, import_file, preview_import, read_file
from lab.formats.conversations import export_demonstrations
from lab.preferences import export_preferences, preference_rows
from lab.store import Store

FIXTURES = Path(__file__).parent / "fixtures" / "formats"
SKY = [{"role": "user", "content": "What color is the sky?"}]


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict:
    return {"role": "assistant", "content": text}


# file → (shape, where it goes, how many rows, what the description says, the first row as the lab keeps it)
GOOD = {
    "sharegpt.json": (
        "sharegpt",
        "demonstrations",
        2,
        "ShareGPT conversations, 2 rows, 1 with a system prompt",
        [
            {"role": "system", "content": "You are a helpful assistant."},
            user("What is the capital of France?"),
            assistant("The capital of France is Paris."),
        ],
    ),
    "sharegpt_roles.jsonl": (
        "sharegpt",
        "demonstrations",
        2,
        "ShareGPT conversations, 2 rows, 1 with a system prompt",
        [
            {"role": "system", "content": "Answer in one sentence."},
            user("Why is the sea salty?"),
            assistant("Rivers carry dissolved minerals into it and evaporation leaves the salt behind."),
        ],
    ),
    "openai_chat.jsonl": (
        "messages",
        "demonstrations",
        3,
        "1 cut after the last weighted assistant turn",
        [
            {"role": "system", "content": "Marv is a factual chatbot that is also sarcastic."},
            user("What's the capital of France?"),
            {**assistant("Paris"), "weight": 0},  # context, not a target
            user("Can you be more sarcastic?"),
            assistant("Paris, as if everyone doesn't know that already."),
        ],
    ),
    "alpaca.json": (
        "alpaca",
        "demonstrations",
        2,
        "alpaca instructions, 2 rows, 1 with a system prompt, 1 with history",
        [
            {"role": "system", "content": "You write short summaries."},
            user("What do you do?"),
            assistant("I summarize texts."),
            user("Keep it short?"),
            assistant("Always."),
            user("Summarize the text.\n\nThe quick brown fox jumps over the lazy dog, then runs into the forest."),
            assistant("A fox jumps over a dog and runs away."),
        ],
    ),
    "alpaca.csv": (
        "alpaca",
        "demonstrations",
        2,
        "",
        [user("Translate to French.\n\nGood morning"), assistant("Bonjour")],
    ),
    "trl_prompt_completion.jsonl": (
        "prompt-completion",
        "demonstrations",
        2,
        "TRL prompt-completion, 2 rows",
        [user("The sky is"), assistant(" blue.")],
    ),
    "trl_prompt_completion_conversational.jsonl": (
        "prompt-completion",
        "demonstrations",
        2,
        "",
        [*SKY, assistant("It is blue.")],
    ),
    "trl_language_modeling.jsonl": ("messages", "demonstrations", 2, "", [*SKY, assistant("It is blue.")]),
    "text_transcripts.jsonl": (
        "text",
        "demonstrations",
        2,
        "TRL language modelling text, 2 rows",
        [user("What is a haiku?"), assistant("A short poem of three lines with five, seven and five syllables.")],
    ),
    "trl_preference.jsonl": (
        "preference",
        "comparisons",
        2,
        "TRL preferences (explicit prompt), 2 rows, 2 preference pairs",
        ([user("The sky is")], [" blue.", " green."], [1, 2]),
    ),
    "trl_preference_conversational.jsonl": (
        "preference",
        "comparisons",
        2,
        "1 with a system prompt",
        (SKY, ["It is blue.", "It is green."], [1, 2]),
    ),
    "trl_implicit.jsonl": (
        "implicit-prompt",
        "comparisons",
        2,
        "TRL preferences (implicit prompt), 2 rows",
        ([user("The sky is ")], ["blue.", "green."], [1, 2]),
    ),
    "trl_implicit_conversational.jsonl": (
        "implicit-prompt",
        "comparisons",
        1,
        "",
        (SKY, ["It is blue.", "It is green."], [1, 2]),
    ),
    "hh_rlhf.jsonl": (
        "hh-rlhf",
        "comparisons",
        2,
        "Anthropic HH-RLHF transcripts, 2 rows, 2 preference pairs",
        (
            [user("What are some cuss words in english?")],
            [
                "I'd rather not list those. Is there something I can help you say politely?",
                "Here is a long list of them.",
            ],
            [1, 2],
        ),
    ),
    "ultrafeedback_row.json": (
        "ultrafeedback",
        "comparisons",
        1,
        "UltraFeedback-binarized preferences, 1 row, 1 preference pair",
        (
            [user("Which planet is known as the Red Planet?")],
            ["Mars, because iron oxide on its surface makes it look red.", "Jupiter."],
            [1, 2],
        ),
    ),
    "llamafactory_dpo.json": (
        "llamafactory-preference",
        "comparisons",
        2,
        "LLaMA-Factory ShareGPT preferences, 2 rows",
        (
            [user("Write a greeting for a birthday card.")],
            ["Happy birthday! Wishing you a year full of joy.", "Birthday."],
            [1, 2],
        ),
    ),
    "llamafactory_alpaca_preference.json": (
        "alpaca-preference",
        "comparisons",
        2,
        "",
        (
            [user("What is AI?")],
            ["AI is the field of building machines that perform tasks needing intelligence.", "I don't know."],
            [1, 2],
        ),
    ),
    "scored.jsonl": (
        "scored",
        "comparisons",
        1,
        "",
        ([user("Name a fruit.")], ["Apple.", "Carrot.", "Banana."], [1, 3, 2]),
    ),
    "trl_unpaired.jsonl": (
        "unpaired",
        "unpaired",
        3,
        "TRL unpaired preferences, 3 rows, 2 good, 1 bad",
        ([user("The sky is")], " blue.", "good"),
    ),
    "trl_unpaired_conversational.jsonl": ("unpaired", "unpaired", 2, "1 good, 1 bad", (SKY, "It is blue.", "good")),
    "llamafactory_kto.json": (
        "kto",
        "unpaired",
        3,
        "LLaMA-Factory KTO conversations, 3 rows, 2 good, 1 bad",
        (
            [user("Summarize for a non-technical audience: the regulator is going after spyware.")],
            "The government is cracking down on apps that secretly spy on phones.",
            "good",
        ),
    ),
}


def stored(store: Store, kind: str) -> list:
    """What the workspace holds of one kind, oldest first, as comparable values."""
    if kind == "demonstrations":
        return [d.messages for d in store.list_demonstrations(status=None)[::-1]]
    if kind == "comparisons":
        return [(c.prompt, [x["text"] for x in c.candidates], c.ranks) for c in store.list_comparisons()]
    return [(r.prompt, r.completion, r.label) for r in store.list_unpaired()]


def counts(store: Store) -> tuple[int, int, int]:
    return len(store.list_demonstrations(status=None)), len(store.list_comparisons()), len(store.list_unpaired())


@pytest.mark.parametrize("name", list(GOOD))
def test_each_shape_imports_where_it_belongs_and_says_what_it_is(tmp_path, name):
    shape, kind, rows, description, first = GOOD[name]
    parsed = read_file(FIXTURES / name)
    assert (parsed.shape.name, parsed.kind, len(parsed.items)) == (shape, kind, rows)
    assert description in parsed.describe()

    store = Store(tmp_path / "ws")
    report = import_file(store, FIXTURES / name)
    assert parsed.describe() in report.summary()
    assert stored(store, kind)[0] == first
    assert counts(store) == tuple(rows if k == kind else 0 for k in ("demonstrations", "comparisons", "unpaired"))


def export(store: Store, kind: str, path: Path) -> Path:
    """The workspace's data of one kind, in TRL's format: SFT's messages, DPO's pairs, KTO's unpaired rows."""
    if kind == "demonstrations":
        export_demonstrations(store, path)
    else:
        export_preferences(store, path, negatives=kind == "unpaired")
    return path


@pytest.mark.parametrize("name", list(GOOD))
def test_an_export_imports_back_as_the_same_data(tmp_path, name):
    _, kind, _, _, _ = GOOD[name]
    store = Store(tmp_path / "ws")
    import_file(store, FIXTURES / name)
    path = export(store, kind, tmp_path / "out.jsonl")

    again = Store(tmp_path / "again")
    import_file(again, path)
    if kind == "comparisons":  # a K-way ranking exports as its pairs
        assert preference_rows(again.list_comparisons()) == preference_rows(store.list_comparisons())
        assert {json.dumps(row) for row in map(json.loads, path.read_text().splitlines())} == {
            json.dumps(row) for row in preference_rows(store.list_comparisons())
        }
    else:
        assert stored(again, kind) == stored(store, kind)


def test_a_parquet_file_reads_as_its_json_lines(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    for name in (
        "trl_preference_conversational.jsonl",
        "trl_unpaired_conversational.jsonl",
        "alpaca.json",
        "openai_chat.jsonl",
    ):
        rows = read_file(FIXTURES / name)
        raw = json.loads((FIXTURES / name).read_text()) if name.endswith(".json") else None
        raw = raw or [json.loads(line) for line in (FIXTURES / name).read_text().splitlines()]
        path = tmp_path / f"{Path(name).stem}.parquet"
        pq.write_table(pa.Table.from_pylist(raw), path)
        again = read_file(path)
        assert (again.shape, again.describe()) == (rows.shape, rows.describe())


BROKEN = {
    "sharegpt.jsonl": r"^line 2: turn 2 is 'user' but should be 'assistant'",
    "openai_chat.jsonl": r"^line 2: every assistant turn has weight 0",
    "alpaca.json": r"^row 2: history entry 1 must be a pair",
    "prompt_completion.jsonl": r"^line 2: 'completion' is empty\.$",
    "text.jsonl": r"^line 2: plain 'text' has no prompt and response",
    "preference.jsonl": r"^line 2: 'chosen' and 'rejected' must both be text or both be messages\.$",
    "implicit.jsonl": r"^line 2: chosen and rejected do not begin with a shared prompt\.$",
    "hh_rlhf.jsonl": r"^line 2: chosen and rejected do not share the same conversation before the answer\.$",
    "ultrafeedback.jsonl": r"^line 2: 'score_chosen' and 'score_rejected' must be numbers\.$",
    "llamafactory_dpo.jsonl": r"^line 2: 'chosen' must be the assistant's answer\.$",
    "alpaca_preference.jsonl": r"^line 2: 'instruction' is empty\.$",
    "scored.jsonl": r"^line 2: 'responses' must list at least two answers",
    "unpaired.jsonl": r"^line 2: 'label' must be true or false, got 'maybe'\.$",
    "kto.json": r"^row 2: 'messages' must end with the assistant's answer that 'label' labels\.$",
}


@pytest.mark.parametrize("name", list(BROKEN))
def test_a_broken_row_of_each_shape_is_named_and_nothing_is_written(tmp_path, name):
    store = Store(tmp_path / "ws")
    with pytest.raises(DataFileError, match=BROKEN[name]):
        import_file(store, FIXTURES / "broken" / name)
    assert counts(store) == (0, 0, 0)


def test_labelled_completions_are_never_demonstrations_unless_the_good_ones_are_asked_for(tmp_path):
    store = Store(tmp_path / "ws")
    with pytest.raises(NotDemonstrationsError, match="only the 2 good ones as demonstrations") as refused:
        preview_import(store, FIXTURES / "trl_unpaired.jsonl")
    assert refused.value.good == 2

    report = import_file(store, FIXTURES / "trl_unpaired.jsonl", good_as_demonstrations=True)
    assert (report.imported, report.left_out) == (2, 1)
    assert "1 labelled bad left out" in report.summary()
    assert [d.messages[-1]["content"] for d in store.list_demonstrations()[::-1]] == [" blue.", " wet."]
    assert counts(store) == (2, 0, 0)
    with pytest.raises(DataFileError, match="only completions labelled good or bad"):
        import_file(store, FIXTURES / "sharegpt.json", good_as_demonstrations=True)


def test_format_forces_a_shape_and_an_unknown_shape_lists_the_known_ones(tmp_path):
    assert read_file(FIXTURES / "trl_preference.jsonl", form="preference").shape.name == "preference"
    with pytest.raises(DataFileError, match=r"^line 1: missing field 'conversations'\.$"):
        read_file(FIXTURES / "trl_language_modeling.jsonl", form="sharegpt")
    with pytest.raises(DataFileError, match=r"Unknown format 'dolly': use one of unpaired, kto, "):
        read_file(FIXTURES / "sharegpt.json", form="dolly")
    odd = tmp_path / "odd.jsonl"
    odd.write_text('{"question": "q", "answer": "a"}\n')
    with pytest.raises(
        DataFileError, match=r"columns are 'question', 'answer'\. The lab imports these shapes: .*hh-rlhf"
    ):
        read_file(odd)


def test_a_single_object_is_one_row_and_good_and_bad_ratings_stay_apart(tmp_path):
    store = Store(tmp_path / "ws")
    assert len(read_file(FIXTURES / "ultrafeedback_row.json").items) == 1
    import_file(store, FIXTURES / "llamafactory_kto.json")
    assert [r.label for r in store.list_unpaired("good")] == ["good", "good"]
    assert [r.completion for r in store.list_unpaired("bad")] == ["Water never boils."]


# plain TRL trains on each export: SFTTrainer, DPOTrainer and KTOTrainer, two steps each on the tiny model


def _workspace_of(kind: str, tmp_path: Path) -> Store:
    store = Store(tmp_path / "ws")
    for name, (_, fixture_kind, *_) in GOOD.items():
        if fixture_kind == kind:
            import_file(store, FIXTURES / name)
    return store


def _train(trainer_name: str, tiny_model_dir: Path, tmp_path: Path, data: Path) -> list[float]:
    import trl
    from datasets import load_dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype="float32")
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    common = {
        "output_dir": str(tmp_path / "out"),
        "max_steps": 2,
        "per_device_train_batch_size": 2,
        "learning_rate": 1e-3,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
        "use_cpu": True,
        "bf16": False,
        "max_length": 128,
    }
    config = getattr(trl, f"{trainer_name}Config")(**common)
    options = {}
    if trainer_name != "SFT":  # the reference is the adapter-disabled model, not a second copy
        options["peft_config"] = LoraConfig(
            r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"
        )
    trainer = getattr(trl, f"{trainer_name}Trainer")(
        model=model,
        args=config,
        train_dataset=load_dataset("json", data_files=str(data), split="train"),
        processing_class=tokenizer,
        **options,
    )
    trainer.train()
    return [row["loss"] for row in trainer.state.log_history if "loss" in row]


@pytest.mark.parametrize(("kind", "trainer"), [("demonstrations", "SFT"), ("comparisons", "DPO"), ("unpaired", "KTO")])
def test_plain_trl_trains_on_each_export(tmp_path, tiny_model_dir, kind, trainer):
    data = export(_workspace_of(kind, tmp_path), kind, tmp_path / "export.jsonl")
    losses = _train(trainer, tiny_model_dir, tmp_path, data)
    assert len(losses) == 2 and all(loss == loss for loss in losses)  # two steps, no NaN
    shutil.rmtree(tmp_path / "out", ignore_errors=True)


def test_the_demonstrations_tab_offers_only_the_good_completions_and_the_arena_imports_ratings(tmp_path):
    from lab import Lab
    from ui import arena, demonstrations

    ctx = Lab(tmp_path / "ws")
    names = demonstrations.DemonstrationsView.__dataclass_fields__
    view = demonstrations.DemonstrationsView(**{name: object() for name in names})
    shown = demonstrations.preview(ctx, view, str(FIXTURES / "trl_unpaired.jsonl"))
    assert "Not demonstrations" in shown[view.preview_text] and shown[view.do_import]["interactive"] is False
    assert shown[view.import_good]["value"] == "Import the 2 good completions as demonstrations"
    done = demonstrations.import_file(ctx, view, str(FIXTURES / "trl_unpaired.jsonl"), good_only=True)
    assert done[view.preview_text].startswith("Imported 2 demonstrations") and counts(ctx.store) == (2, 0, 0)
    assert (
        "ShareGPT conversations, 2 rows"
        in demonstrations.preview(ctx, view, str(FIXTURES / "sharegpt.json"))[view.preview_text]
    )

    names = [f for f in arena.ArenaView.__dataclass_fields__ if f != "downloads"]
    board = arena.ArenaView(**{name: object() for name in names}, downloads={False: object(), True: object()})
    said = arena.preview_file(board, str(FIXTURES / "llamafactory_kto.json"))[board.preview]
    assert "3 unpaired ratings (2 good, 1 bad)" in said and "LLaMA-Factory KTO" in said
    arena.import_file(ctx, board, str(FIXTURES / "llamafactory_kto.json"), [])
    assert counts(ctx.store) == (2, 0, 3)
    assert "unpaired export holds 3 rows (2 good, 1 bad)" in arena._export_note(ctx, ())


def test_a_weight_0_turn_is_context_in_training_never_a_target(tmp_path):
    from lab.data import sft_examples

    store = Store(tmp_path / "ws")
    import_file(store, FIXTURES / "openai_chat.jsonl")
    marv = next(d for d in store.list_demonstrations() if d.messages[0]["role"] == "system")
    [example] = sft_examples([marv])  # two assistant turns, one learned
    assert example["completion"][0]["content"].startswith("Paris, as if")
    assert {"role": "assistant", "content": "Paris"} in example["prompt"]
