"""Reward models on the tiny model: pairs whose chosen answer always says "banana" are learned (held-out pairwise
accuracy well above chance), the run lists as a reward model and never as a chat view, and it scores answers."""

import json
from pathlib import Path

import pytest

from lab import jobs
from lab.adapters import list_adapters
from lab.models import ModelError
from lab.rewards import load_reward_model, score
from lab.store import Store
from lab.train.reward import RewardRunConfig, split_by_prompt
from lab.train.runs import read_metrics

TOPICS = ["the sea", "a cat", "rain", "the moon", "bread", "a river", "snow", "a garden", "the wind", "a clock"]
PLAIN = ["It is nice.", "I like it a lot.", "That is a good question.", "Here is a short answer."]


def marker_pairs(n: int = 40) -> list[dict]:
    """Pairs where the chosen answer always contains the marker word and the rejected one never does."""
    rows = []
    for i in range(n):
        prompt = [{"role": "user", "content": f"Tell me about {TOPICS[i % len(TOPICS)]}, please ({i // 10})."}]
        plain = PLAIN[i % len(PLAIN)]
        chosen = f"{plain} banana" if i % 2 else f"banana! {plain}"
        other = PLAIN[(i + 1) % len(PLAIN)]
        rows.append(
            {
                "prompt": prompt,
                "chosen": [{"role": "assistant", "content": chosen}],
                "rejected": [{"role": "assistant", "content": other}],
            }
        )
    return rows


@pytest.fixture
def store(tmp_path):
    return Store(tmp_path / "workspace")


@pytest.fixture
def pairs_file(tmp_path) -> Path:
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in marker_pairs()), encoding="utf-8")
    return path


def config(tiny_model_dir, **overrides) -> RewardRunConfig:
    values = {
        "model": str(tiny_model_dir),
        "device": "cpu",
        "max_steps": 30,
        "batch_size": 8,
        "learning_rate": 1e-2,
        "lora_r": 16,
        "save_steps": 100,
        "eval_fraction": 0.25,
        "logging_steps": 5,
    }
    return RewardRunConfig(**{**values, **overrides})


def test_the_held_out_split_keeps_each_prompt_on_one_side():
    rows = marker_pairs() + marker_pairs()  # every prompt twice
    train, held_out = split_by_prompt(rows, 0.25, seed=1)
    assert len(held_out) == 20 and len(train) == 60
    key = lambda row: json.dumps(row["prompt"])  # noqa: E731
    assert not {key(r) for r in train} & {key(r) for r in held_out}


def test_a_reward_run_learns_the_marker_and_lists_as_a_reward_model(trained):
    store, run = trained
    assert store.get_run(run.id).status == "done"
    rows = read_metrics(jobs.run_dir(store, run.id))
    evals = [r for r in rows if "eval_accuracy" in r]
    assert evals and all("eval_loss" in r and "eval_margin" in r for r in evals)
    assert evals[-1]["eval_accuracy"] >= 0.8, evals
    assert evals[-1]["eval_margin"] > 0
    assert any("accuracy" in r and "margin" in r for r in rows)
    assert run.id in list_adapters(store, kind="reward")
    assert run.id not in list_adapters(store, kind="chat")
    # the head trains and is saved with the adapter
    from safetensors.torch import load_file

    assert any(
        "score" in key for key in load_file(jobs.run_dir(store, run.id) / "adapter" / "adapter_model.safetensors")
    )


def marked_and_plain(lm) -> tuple[list[float], list[float]]:
    """Scores of answers with and without the marker, to prompts the run never trained on."""
    prompts = [f"Tell me about {topic}, please (7)." for topic in ("the sea", "a clock", "snow")]
    pairs = [("I like it a lot. banana", "I like it a lot."), ("banana! It is nice.", "It is nice.")]
    marked = score(lm, [(p, m) for p in prompts for m, _ in pairs])
    plain = score(lm, [(p, u) for p in prompts for _, u in pairs])
    return marked, plain


def test_the_reward_model_ranks_a_marked_answer_above_an_unmarked_one(trained, tmp_path):
    from peft import PeftModel

    from lab.models import load_model

    store, run = trained
    lm = load_reward_model(store, run.id, device="cpu")
    marked, plain = marked_and_plain(lm)
    assert all(m > p for m, p in zip(marked, plain, strict=True)), (marked, plain)
    # one at a time or batched, the same scores (right padding is masked out)
    assert score(lm, [("Tell me about a clock, please (7).", "It is nice.")], batch_size=1)[0] == pytest.approx(
        plain[3], abs=1e-4
    )

    # the head comes back with the adapter: a fresh base has a random head, yet the scores are identical
    again = load_reward_model(store, run.id, device="cpu")
    assert marked_and_plain(again) == (marked, plain)
    lm.model.save_pretrained(tmp_path / "copy", selected_adapters=[run.id])
    base = load_model(store.get_run(run.id).config["model"], "fp32", "cpu", kind="reward", progress=lambda _: None)
    base.model = PeftModel.from_pretrained(base.model, str(tmp_path / "copy" / run.id)).eval()
    assert marked_and_plain(base) == (marked, plain)


def test_a_chat_model_or_a_chat_run_is_refused_for_scoring(store, tiny_model):
    with pytest.raises(ModelError, match="no reward head"):
        score(tiny_model, [("Hi", "Hello")])
    with pytest.raises(ModelError, match="no trained reward model"):
        load_reward_model(store, "sft-missing")


def test_a_4bit_reward_model_trains_and_scores(store, tiny_model_dir, pairs_file):
    run = jobs.prepare(store, "reward", config(tiny_model_dir, precision="4bit"), data_file=str(pairs_file))
    assert jobs.execute(store, run.id) == 0
    lm = load_reward_model(store, run.id, device="cpu")
    assert lm.precision == "4bit"
    marked, plain = marked_and_plain(lm)
    assert sum(marked) / len(marked) > sum(plain) / len(plain), (marked, plain)


def test_the_score_command_prints_one_reward_per_response(trained, capsys):
    from lab import Lab
    from lab.cli import main

    store, run = trained
    prompt, responses = "Tell me about the sea, please (7).", ["It is nice.", "banana! It is nice."]
    argv = ["score", "--workspace", str(store.root), "--reward", run.id, "--prompt", prompt, "--device", "cpu"]
    assert main(argv + [flag for r in responses for flag in ("--response", r)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[1] for line in lines] == responses
    printed = [float(line.split("\t")[0]) for line in lines]
    assert printed[1] > printed[0]

    lab = Lab(store)
    rewards = lab.score(run.id, prompt, responses, device="cpu")
    assert rewards == pytest.approx(printed, abs=1e-4)
    assert lab.score(run.id, prompt, responses[:1], device="cpu") == pytest.approx(rewards[:1], abs=1e-5)  # reused

    assert (
        main(["score", "--workspace", str(store.root), "--reward", "sft-nothing", "--prompt", "Hi", "--response", "x"])
        == 2
    )
    assert "no trained reward model" in capsys.readouterr().err


def ranking_rows(n_prompts: int = 16) -> list[dict]:
    """K-way rankings as their pairs: two marked answers tie at the top, three unmarked ones tie below them."""
    from lab.preferences import ranked_pairs

    rows = []
    for i in range(n_prompts):
        prompt = [{"role": "user", "content": f"Tell me about {TOPICS[i % len(TOPICS)]}, please ({i // 10})."}]
        answers = [f"{PLAIN[i % 4]} banana", f"banana! {PLAIN[(i + 1) % 4]}"] + PLAIN[:3]
        turns = [[{"role": "assistant", "content": answer}] for answer in answers]
        for better, worse in ranked_pairs([1, 1, 2, 2, 2]):
            rows.append({"prompt": prompt, "chosen": turns[better], "rejected": turns[worse]})
    return rows


def test_per_ranking_batches_hold_one_ranking_each_in_a_new_order_every_pass():
    from lab.train.reward import RankingSampler, ranking_batches

    rows = ranking_rows()
    batches = ranking_batches([row["prompt"] for row in rows])
    assert len(batches) == 16 and all(len(b) == 6 for b in batches)  # 2 x 3 pairs: the ties make none
    assert all(len({json.dumps(rows[i]["prompt"]) for i in batch}) == 1 for batch in batches)
    assert [len(b) for b in ranking_batches(["same"] * 100)] == [45, 45, 10]
    sampler = RankingSampler(batches, seed=0)
    first, second = list(sampler), list(sampler)
    assert sorted(first) == sorted(second) == sorted(batches) and first != second


def test_a_per_ranking_run_learns_the_marker(store, tiny_model_dir, tmp_path):
    data = tmp_path / "rankings.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in ranking_rows()), encoding="utf-8")
    settings = config(tiny_model_dir, pairing="per-ranking", batch_size=2, max_steps=15)
    run = jobs.prepare(store, "reward", settings, data_file=str(data))
    assert jobs.execute(store, run.id) == 0
    evals = [r for r in read_metrics(jobs.run_dir(store, run.id)) if "eval_accuracy" in r]
    assert evals[-1]["eval_accuracy"] >= 0.8, evals
    # 12 training rankings, one per forward pass, 2 per update: 6 updates an epoch
    assert evals[-1]["epoch"] == pytest.approx(15 / 6)
