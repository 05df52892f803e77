"""Evaluation runs on the tiny model: win rates judged in both orders match a known reward by hand, a judge that
favours the first answer shows as position bias and not as a win, the base's KL is 0, MC1/MC2 match a direct
TruthfulQA pass, "prompt or fine-tune?" gives a verdict, and the CLI prints the table and writes the JSON."""

import json
from pathlib import Path

import numpy as np
import pytest
from test_train import SIGNOFF
from test_train import config as sft_config

from lab import Lab, jobs
from lab.cli import main
from lab.evaluate import WinRate, chat_judge, reward_judge, truthfulqa_mc, verdict, win_rate
from lab.generate import GenerationSettings, generate
from lab.models import ModelManager
from lab.truthfulqa import read_questions

SAMPLE = Path(__file__).parent / "fixtures" / "truthfulqa" / "sample.csv"
TOPICS = ["the sea", "a cat", "rain", "bread", "snow", "a clock"]
SYSTEM = "Answer in one short sentence."


def test_a_known_reward_gives_the_win_rate_counted_by_hand():
    scores = {(0, "a"): 1.0, (0, "b"): 0.0, (1, "a"): 2.0, (1, "b"): 1.0, (2, "a"): 0.0, (2, "b"): 3.0}
    result = win_rate(reward_judge(scores), ["a", "a", "a", "same"], ["b", "b", "b", "same "], "tuned", "base")
    assert result.wins == (1.0, 1.0, 0.0, 0.5)  # identical answers tie without a judgement
    assert result.rate == 0.625 and result.position_bias == 0.0  # a reward model reads each answer alone
    low, high = result.interval()
    assert low < result.rate < high


def test_a_judge_that_always_picks_the_first_answer_shows_as_bias_not_as_a_win():
    always_first = lambda prompt, first, second: 1.0  # noqa: E731
    result = win_rate(always_first, ["x", "y", "z"], ["p", "q", "r"], "tuned", "base")
    assert result.rate == 0.5 and result.position_bias == 0.5


def test_a_chat_model_judges_both_orders_and_its_letter_bias_is_reported(tiny_model):
    prompts = [[{"role": "user", "content": "Is the sea salty?"}]]
    judge = chat_judge(tiny_model, prompts)
    ours_first, theirs_first = judge(0, "Yes, it is.", "No."), judge(0, "No.", "Yes, it is.")
    assert 0 < ours_first < 1 and 0 < theirs_first < 1
    result = win_rate(judge, ["Yes, it is."], ["No."], "tuned", "base")
    assert result.rate == pytest.approx((ours_first + 1 - theirs_first) / 2)
    assert result.position_bias == pytest.approx((ours_first + theirs_first) / 2 - 0.5)


def test_the_verdict_states_its_uncertainty():
    sure = WinRate("tuned", "base+prompt", (1.0,) * 18 + (0.0,) * 2, 0.0)
    unsure = WinRate("tuned", "base+prompt", (1.0, 0.0) * 10, 0.0)
    losing = WinRate("tuned", "base+prompt", (0.0,) * 18 + (1.0,) * 2, 0.0)
    assert verdict("base+prompt", "tuned", sure).startswith("The fine-tune (tuned) beats the prompt")
    assert "95% CI" in verdict("base+prompt", "tuned", sure)
    assert verdict("base+prompt", "tuned", unsure).startswith("No clear winner")
    assert verdict("base+prompt", "tuned", losing).startswith("The prompt (base+prompt) beats the fine-tune")


@pytest.fixture(scope="module")
def evaluated(trained, tiny_model_dir, tmp_path_factory):
    """An SFT run beside the shared reward run, then one evaluation of base, base with a prompt and the SFT
    adapter, judged by the reward run, with a rule check and TruthfulQA: (lab, sft run id, eval run)."""
    store, reward_run = trained
    lab = Lab(store)
    sft = jobs.prepare(store, "sft", sft_config(tiny_model_dir), data_file=str(SIGNOFF))
    assert jobs.execute(store, sft.id) == 0
    prompts = tmp_path_factory.mktemp("prompts") / "prompts.jsonl"
    rows = [{"prompt": [{"role": "user", "content": f"Tell me about {topic}."}]} for topic in TOPICS]
    prompts.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    run = lab.evaluate(
        f"base,base+prompt,{sft.id}",
        prompts=prompts,
        system=SYSTEM,
        judge=reward_run.id,
        checks="contains:the",
        truthfulqa=str(SAMPLE),
        max_new_tokens=12,
        model=str(tiny_model_dir),
        device="cpu",
        start=False,
    )
    assert jobs.execute(store, run.id) == 0 and run.status == "done"
    return lab, sft.id, run


def test_an_evaluation_reports_what_its_answers_show(evaluated, tiny_model_dir):
    lab, sft_id, run = evaluated
    report = run.report()
    rows = {row["model"]: row for row in report["models"]}
    assert list(rows) == ["base", "base+prompt", sft_id] and report["prompts"] == len(TOPICS)
    answers = [json.loads(line)["answers"] for line in (run.folder / "answers.jsonl").read_text().splitlines()]
    for name in ("base+prompt", sft_id):
        ours = [a[name]["reward"] for a in answers]
        theirs = [a["base"]["reward"] for a in answers]
        same = [a[name]["text"] == a["base"]["text"] for a in answers]
        by_hand = [0.5 if tie else (np.sign(o - t) + 1) / 2 for tie, o, t in zip(same, ours, theirs, strict=True)]
        assert rows[name]["win_rate"] == pytest.approx(np.mean(by_hand))
        assert rows[name]["win_low"] <= rows[name]["win_rate"] <= rows[name]["win_high"]
        assert rows[name]["position_bias"] == 0.0
        assert rows[name]["mean_reward"] == pytest.approx(np.mean(ours))
        assert rows[name]["kl"] != 0.0 and np.isfinite(rows[name]["kl"])
    assert rows["base"]["kl"] == 0.0
    assert rows["base"]["check"] == pytest.approx(np.mean([float("the" in a["base"]["text"].lower()) for a in answers]))
    assert rows["base"]["mean_length"] == np.mean([a["base"]["tokens"] for a in answers])

    models = ModelManager()
    models.load(str(tiny_model_dir), "fp32", "cpu")
    with models.use("base") as lm:  # the batched, padded answers are the ones the base gives alone
        alone = generate(
            lm, [{"role": "user", "content": "Tell me about rain."}], GenerationSettings(0, max_new_tokens=12)
        )
        assert alone.text == answers[2]["base"]["text"]
        direct = truthfulqa_mc(lm, read_questions(SAMPLE), SYSTEM)
    assert rows["base+prompt"]["mc1"] == pytest.approx(direct.mc1) and rows["base+prompt"]["mc2"] == pytest.approx(
        direct.mc2
    )
    assert set(report["mc_by_category"]["base"][0]) == {"category", "questions", "mc1", "mc2"}


def test_prompt_or_fine_tune_gets_a_verdict_with_its_interval(evaluated):
    lab, sft_id, run = evaluated
    (found,) = run.report()["verdicts"]
    assert (found["tuned"], found["prompted"]) == (sft_id, "base+prompt")
    assert "95% CI" in found["sentence"] and found["win_low"] <= found["win_rate"] <= found["win_high"]


def test_the_cli_prints_the_table_and_writes_the_report(tiny_model_dir, tmp_path, capsys):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "Tell me about the moon."}) + "\n", encoding="utf-8")
    out = tmp_path / "report.json"
    common = ["--prompts", str(prompts), "--set", f"model={tiny_model_dir}", "--set", "device=cpu"]
    code = main(
        [
            "eval",
            "--models",
            "base,base+prompt",
            "--system",
            SYSTEM,
            "--judge",
            "length:20",
            "--max-new-tokens",
            "8",
            "--out",
            str(out),
            *common,
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "win rate" in printed and "base+prompt" in printed
    assert [row["model"] for row in json.loads(out.read_text())["models"]] == ["base", "base+prompt"]

    assert main(["eval", "--models", "base,sft-nothing", *common]) == 2
    assert "not a chat adapter" in capsys.readouterr().err
    assert main(["eval", "--models", "base+prompt", *common]) == 2  # a '+prompt' model needs a prompt
    assert "system" in capsys.readouterr().err


def test_an_evaluations_pairs_go_to_the_ranking_queue(evaluated):
    from lab.preferences import evaluation_queues, prepared_candidates, queue_questions, send_to_ranking

    lab, sft_id, run = evaluated
    with pytest.raises(ValueError, match="Pick one of the models"):
        send_to_ranking(lab.store, run.id, "base")  # the reference has no pair with itself
    queue = send_to_ranking(lab.store, run.id, sft_id)
    assert queue in evaluation_queues(lab.store)
    answers = [json.loads(line)["answers"] for line in (run.folder / "answers.jsonl").read_text().splitlines()]
    differing = [t for t, a in zip(TOPICS, answers, strict=True) if a["base"]["text"] != a[sft_id]["text"]]
    questions = queue_questions(lab.store, lab.scenarios, queue)
    assert questions == [f"Tell me about {t}." for t in differing] and questions
    first = prepared_candidates(lab.store, queue, questions[0])
    assert [c["model"] for c in first] == ["base", sft_id]
    assert prepared_candidates(lab.store, lab.scenarios and next(iter(lab.scenarios)), questions[0]) is None
