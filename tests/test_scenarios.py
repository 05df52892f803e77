"""Workshop scenarios: every bundled one loads in TRL's formats, seeds a fresh workspace once, never trains on its
held-out questions, and its check prefers its own chosen answers; TruthfulQA's is built from a CSV of its shape."""

import csv
import json
import shutil
from statistics import mean

import pytest

from lab import Lab, scenarios
from lab.cli import main as cli
from lab.formats import DataFileError
from lab.preferences import preference_rows
from lab.presets import ASSETS_DIR
from lab.refs import DEFAULT_MODEL
from lab.rewards import RewardSpecError, build_reward, parse_reward
from lab.store import Store
from lab.truthfulqa import COLUMNS, read_questions

WORKSHOP = ["Truthfulness", "Instruction following", "Polite refusals"]  # bundled with starter data
BUNDLED = [name for name in scenarios.scenario_names() if name != "TruthfulQA"]


def user_text(messages: list[dict]) -> str:
    return next(m["content"] for m in messages if m["role"] == "user")


def write_truthfulqa(path, count: int = 10) -> None:
    """A CSV of TruthfulQA's public shape: `count` questions, each with true and false answers."""
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(COLUMNS)
        for n in range(count):
            writer.writerow(
                [
                    "Adversarial",
                    "Misconceptions",
                    f"What happens if you do thing {n}?",
                    f"Nothing in particular happens if you do thing {n}",
                    f"Nothing happens; Nothing in particular happens if you do thing {n}",
                    f"You will have bad luck for {n} years; You grow wings",
                    "https://example.org",
                ]
            )


@pytest.mark.parametrize("name", WORKSHOP)
def test_a_workshop_scenario_has_enough_rows_and_files_trl_reads(name, tiny_model_dir):
    from datasets import load_dataset
    from transformers import AutoTokenizer
    from trl.data_utils import apply_chat_template, is_conversational

    data = scenarios.load(name)
    assert len(data.prompts) >= 30 and len(data.held_out) >= 10
    assert len(data.demonstrations) >= 20 and len(data.comparisons) >= 30
    assert all(d.status == "accepted" and d.source == data.source for d in data.demonstrations)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    for folder, name_of, columns in (
        ("demonstrations", data.preset.demonstrations, {"messages"}),
        ("comparisons", data.preset.comparisons, {"prompt", "chosen", "rejected"}),
    ):
        rows = load_dataset("json", data_files=str(ASSETS_DIR / folder / f"{name_of}.jsonl"), split="train")
        assert columns <= set(rows.column_names)
        for row in rows:
            assert is_conversational(row)
            rendered = apply_chat_template({k: row[k] for k in columns}, tokenizer)
            assert all(isinstance(text, str) and text for text in rendered.values())


@pytest.mark.parametrize("name", BUNDLED)
def test_no_held_out_question_is_ranked_or_trained_on(name):
    data = scenarios.load(name)
    held = {p.text.casefold() for p in data.held_out}
    trained = [p.text for p in data.prompts] + [user_text(d.messages) for d in data.demonstrations]
    trained += [user_text(c.prompt) for c in data.comparisons]
    assert not held & {text.casefold() for text in trained}


@pytest.mark.parametrize("name", WORKSHOP)
def test_a_scenarios_check_prefers_its_chosen_answers(name):
    data = scenarios.load(name)
    rows = preference_rows(data.comparisons)
    check = build_reward(f"scenario:{data.preset.name}")
    prompts = [row["prompt"] for row in rows]
    chosen = check(prompts, [row["chosen"][0]["content"] for row in rows])
    rejected = check(prompts, [row["rejected"][0]["content"] for row in rows])
    assert mean(chosen) > mean(rejected) + 0.5
    assert sum(c > r for c, r in zip(chosen, rejected, strict=True)) >= 0.9 * len(rows)


def test_echo_and_refuses_tagged_read_the_prompt():
    echo, refusals = build_reward("echo"), build_reward("refuses_tagged:harmful")
    asked = [[{"role": "user", "content": "List three fruits."}]] * 2
    assert echo(asked, ["List three fruits. List three vegetables.", "Apple, pear, plum."]) == [1.0, 0.0]
    harmful, harmless = "How do I steal my friend's password?", "How do I kill a Python process?"
    sorry = "I'm sorry, but I can't help with that."
    assert refusals(
        [harmful, harmful, harmless, harmless],
        [
            sorry,
            "Watch them type.",
            sorry,
            "Run kill.",
        ],
    ) == [
        1.0,
        0.0,
        0.0,
        1.0,
    ]
    with pytest.raises(RewardSpecError, match="no bundled prompt"):
        parse_reward("refuses_tagged:no-such-tag")
    with pytest.raises(ValueError, match="reads the prompt"):
        parse_reward("echo")[0].rule("text")


def test_seeding_a_fresh_workspace_gives_the_counts_once(tmp_path):
    lab = Lab.from_scenario("truthfulness", workspace=tmp_path / "room")
    data = scenarios.load("truthfulness")
    assert lab.seeded == {"prompts": 30, "held_out": 12, "demonstrations": 24, "comparisons": 30}
    assert scenarios.seed(lab.store, "Truthfulness") == {
        **lab.seeded,
        "prompts": 0,
        "demonstrations": 0,
        "comparisons": 0,
    }
    store = lab.store
    assert len(store.list_prompts()) == len(data.prompts)
    assert len(store.list_demonstrations()) == 24 and len(store.list_comparisons()) == 30
    assert {c.annotator for c in store.list_comparisons(source=scenarios.STARTER_SOURCE)} == {"scenario:truthfulness"}
    # starter votes count in the pairs, but nobody saw them on screen: no rater, no position bias
    from lab.arena import position_bias, rated_here

    assert rated_here(store.list_comparisons()) == [] and position_bias(store.list_comparisons())["decisive"] == 0
    held_out = (tmp_path / "room" / "scenarios" / "truthfulness" / "held-out.jsonl").read_text().splitlines()
    assert [json.loads(line)["prompt"][0]["content"] for line in held_out] == [p.text for p in data.held_out]
    # the Ranking tab opens on this scenario's queue, each item wanting the scenario's votes until someone asks more
    from lab.room import votes_asked
    from ui.ranking import first_queue

    assert scenarios.seeded(store) == ["Truthfulness"] and first_queue(lab) == "Truthfulness"
    assert votes_asked(store, lab.scenarios, "Truthfulness") == 3
    store.set_votes_per_item("Truthfulness", 5)
    assert votes_asked(store, lab.scenarios, "Truthfulness") == 5
    assert votes_asked(store, lab.scenarios, "workspace prompt pool") == 1


def test_a_fresh_workspace_never_reuses_a_folder_that_holds_anything(tmp_path):
    first = scenarios.fresh_workspace("truthfulness", tmp_path)
    (first / "notes.txt").write_text("mine")
    assert scenarios.fresh_workspace("Truthfulness", tmp_path) == tmp_path / "truthfulness-2"  # made, still empty
    store, _ = scenarios.open_scenario("truthfulness", root=tmp_path)
    assert store.root == tmp_path / "truthfulness-2" and (first / "notes.txt").read_text() == "mine"
    assert scenarios.open_scenario("truthfulness", root=tmp_path)[0].root == tmp_path / "truthfulness-3"


def test_a_workspace_that_holds_work_is_refused_unless_mixed(tmp_path):
    Lab.from_scenario("instructions", workspace=tmp_path / "ws")
    with pytest.raises(ValueError, match="already holds work"):
        Lab.from_scenario("truthfulness", workspace=tmp_path / "ws")
    mixed = Lab.from_scenario("truthfulness", workspace=tmp_path / "ws", mix=True)
    assert mixed.seeded["comparisons"] == 30 and len(mixed.store.list_comparisons()) == 30 + 34
    Store(tmp_path / "empty")  # a workspace with its database made but nothing in it is still empty
    assert Lab.from_scenario("truthfulness", workspace=tmp_path / "empty").seeded["prompts"] == 30


def test_a_bad_file_writes_nothing(tmp_path, monkeypatch):
    assets = tmp_path / "assets"
    shutil.copytree(ASSETS_DIR / "demonstrations", assets / "demonstrations")
    shutil.copytree(ASSETS_DIR / "comparisons", assets / "comparisons")
    with (assets / "comparisons" / "misconceptions.jsonl").open("a") as out:
        out.write('{"prompt": "Is it?", "chosen": "Yes.", "rejected": ""}\n')
    monkeypatch.setattr(scenarios, "ASSETS_DIR", assets)
    store = Store(tmp_path / "ws")
    with pytest.raises(DataFileError, match=r"misconceptions.jsonl: line 31: 'rejected' is empty"):
        scenarios.seed(store, "truthfulness")
    assert not store.list_prompts() and not store.list_demonstrations() and not store.list_comparisons()
    assert not (tmp_path / "ws" / "scenarios").exists()


def test_truthfulqa_is_built_from_the_csv_with_its_held_out_questions_apart(tmp_path):
    path = tmp_path / "TruthfulQA.csv"
    write_truthfulqa(path)
    with pytest.raises(ValueError, match="give its path"):
        scenarios.load("truthfulqa")
    lab = Lab.from_scenario("TruthfulQA", workspace=tmp_path / "ws", truthfulqa=path)
    assert lab.seeded == {"prompts": 8, "held_out": 2, "demonstrations": 8, "comparisons": 8}
    held = read_questions(tmp_path / "ws" / "scenarios" / "truthfulqa" / "held-out.csv")
    assert len(held) == 2 and held[0].incorrect == [
        "You will have bad luck for " + held[0].question[-2] + " years",
        "You grow wings",
    ]
    trained = {p.text for p in lab.store.list_prompts()} | {user_text(c.prompt) for c in lab.store.list_comparisons()}
    trained |= {user_text(d.messages) for d in lab.store.list_demonstrations()}
    assert len(trained) == 8 and not trained & {q.question for q in held}
    pairs = preference_rows(lab.store.list_comparisons())
    check = build_reward("scenario:TruthfulQA")
    chosen = check([p["prompt"] for p in pairs], [p["chosen"][0]["content"] for p in pairs])
    rejected = check([p["prompt"] for p in pairs], [p["rejected"][0]["content"] for p in pairs])
    assert mean(chosen) > mean(rejected)
    # its ranking queue and an RL run on it use the questions seeded here, never the held-out ones
    from lab.preferences import queue_questions
    from lab.train.snapshot import DATA_KINDS

    assert set(queue_questions(lab.store, lab.scenarios, "TruthfulQA")) == {p.text for p in lab.store.list_prompts()}
    rows, source, _ = DATA_KINDS["prompts"](lab.store, "", {"scenario": "TruthfulQA"})
    assert len(rows) == 8 and source == "scenario TruthfulQA's questions"


def test_a_bad_truthfulqa_file_makes_no_workspace(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text(",".join(COLUMNS) + "\nA,B,Why?,Because,,,\n")
    with pytest.raises(ValueError, match="row 2: column 'Incorrect Answers' is empty"):
        scenarios.open_scenario("truthfulqa", truthfulqa=path, root=tmp_path / "workspaces")
    assert not (tmp_path / "workspaces").exists()


@pytest.mark.parametrize("name", BUNDLED)
def test_every_scenario_prompt_has_shipped_candidates(name):
    data = scenarios.load(name)
    for prompt in data.prompts:
        candidates = scenarios.shipped_candidates(name, prompt.text)
        assert candidates is not None and len(candidates) == data.preset.k, prompt.text
        assert all(c["text"].strip() and c["settings"]["model"] == DEFAULT_MODEL for c in candidates)
        assert candidates[0]["settings"]["max_new_tokens"] == scenarios.CANDIDATE_TOKENS
    assert scenarios.shipped_candidates(name, data.prompts[0].text, model="/some/other/model") is None
    assert scenarios.shipped_candidates(name, data.held_out[0].text if data.held_out else "Typed.") is None


def test_the_command_line_starts_a_scenario_and_names_a_wrong_one(tmp_path, capsys):
    assert cli(["scenario", "refusals", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"Workspace: {tmp_path / 'refusals'}" in out and "30 prompts, 12 held out" in out
    assert cli(["scenario", "kindness", "--root", str(tmp_path)]) == 2
    assert "No scenario named 'kindness': choose one of" in capsys.readouterr().err
