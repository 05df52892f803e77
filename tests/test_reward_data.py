"""The data a reward model trains on, said before it trains: which votes (flagged annotators left out in one step,
a scenario's queue), how many pairs they give, the warning when they are too few, the annotators' agreement kept
as the report's ceiling, the tier recipes of the presets, and the votes behind a wrong held-out pair."""

import pytest

from lab import Lab, jobs
from lab.cli import main
from lab.preferences import queue_source
from lab.presets import model_presets
from lab.reward_report import ScoredPair, summarise, votes_behind
from lab.store import Comparison, Store
from lab.train import METHODS
from lab.train.snapshot import MIN_PAIRS, count_pairs, preference_votes


def ranking(question: str, texts: list[str], ranks: list[int] | None, annotator: str = "ann", **kw) -> Comparison:
    candidates = [{"text": t, "model": "base", "settings": {}} for t in texts]
    verdict = kw.pop("verdict", "ranked" if ranks else "both-bad")
    prompt = [{"role": "user", "content": question}]
    return Comparison(prompt, candidates, list(range(len(texts))), ranks, verdict, annotator, **kw)


@pytest.fixture
def store(tmp_path):
    return Store(tmp_path / "workspace")


def test_a_ranking_gives_its_pairs_and_ties_and_both_bad_give_none():
    votes = [
        ranking("q1", ["a", "b", "c"], [1, 2, 3]),  # three pairs
        ranking("q1", ["a", "b", "c"], [1, 1, 2]),  # a tie: two pairs (a>c, b>c), none between a and b
        ranking("q2", ["x", "y"], [1, 1], verdict="tie"),
        ranking("q3", ["x", "y"], None),  # both bad
    ]
    count = count_pairs(votes, eval_fraction=0.5)
    assert (count.votes, count.pairs, count.prompts, count.no_pair) == (4, 5, 1, 2)
    assert count.held_out_prompts == 0  # one prompt: half of it rounds down, as split_by_prompt holds out
    assert "too few to learn from" in count.warning and "5 preference pairs" in count.text()


def test_enough_pairs_warn_only_when_nothing_is_held_out():
    votes = [ranking(f"q{i}", ["good", "bad"], [1, 2]) for i in range(MIN_PAIRS)]
    assert count_pairs(votes, 0.1).warning is None
    assert "cannot be measured" in count_pairs(votes, 0.01).warning


def test_flagged_annotators_and_other_queues_are_left_out_in_one_step(store):
    # ann, bob and cat agree on six items, eve always disagrees: the Arena flags eve
    votes = []
    for i in range(6):
        votes += [ranking(f"q{i}", ["right", "wrong"], [1, 2], who) for who in ("ann", "bob", "cat")]
        votes.append(ranking(f"q{i}", ["right", "wrong"], [2, 1], "eve"))
    truth = queue_source("Truthfulness")
    votes.append(ranking("myth", ["no", "yes"], [1, 2], "ann", source=truth))
    store.add_comparisons(votes)

    kept, where = preference_votes(store, exclude_flagged=True)
    assert {v.annotator for v in kept} == {"ann", "bob", "cat"} and "without eve" in where
    kept, where = preference_votes(store, exclude_annotators=["bob"], exclude_flagged=True)
    assert {v.annotator for v in kept} == {"ann", "cat"} and "without bob, eve" in where
    kept, where = preference_votes(store, scenario="Truthfulness")
    assert [v.prompt[0]["content"] for v in kept] == ["myth"] and "scenario Truthfulness" in where
    assert Lab(store.root).count_pairs(exclude_flagged=True).pairs == 19


def test_a_run_keeps_the_agreement_of_the_votes_it_trained_on(store, tiny_model_dir):
    store.add_comparisons(
        [
            ranking(f"q{i}", ["right", "wrong"], [1, 2] if who != "eve" or i else [2, 1], who)
            for i in range(4)
            for who in ("ann", "eve")
        ]
    )
    config = METHODS["reward"].config_for(model_presets()["cpu-default"], {"model": str(tiny_model_dir)})
    run = jobs.prepare(store, "reward", config)
    agreement = run.provenance["data"]["details"]["agreement"]
    assert agreement == {"items": 4, "percent": 0.75}  # eve disagreed with ann once in four
    assert store.get_run(run.id).provenance["data"]["details"]["agreement"] == agreement  # stored, not only returned


def test_the_report_states_the_ceiling_or_why_there_is_none():
    pairs = [ScoredPair("q", "right", "wrong", 1.0, 0.0), ScoredPair("q2", "yes", "no", 0.0, 1.0)]
    assert (
        "agree with each other on 75.0% of the 4 items"
        in summarise("r", pairs, agreement={"items": 4, "percent": 0.75}).summary()
    )
    assert "not measured yet" in summarise("r", pairs, agreement={"items": 0, "percent": None}).summary()
    assert "not known for data from a file" in summarise("r", pairs).summary()


def test_the_votes_behind_a_wrong_pair_can_be_withdrawn(store):
    [wrong, other, _] = store.add_comparisons(
        [
            ranking("q", ["wrong", "right", "meh"], [1, 3, 2], "eve"),  # eve put "wrong" above "right"
            ranking("q", ["right", "wrong"], [2, 1], "bob"),
            ranking("q", ["right", "wrong"], [1, 2], "ann"),  # the other way round: not behind the pair
        ]
    )
    pair = ScoredPair([{"role": "user", "content": "q"}], "wrong", "right", -1.0, 2.0)
    assert [v.id for v in votes_behind(store.list_comparisons(), pair)] == [wrong, other]
    assert store.withdraw_comparisons([wrong, wrong + 100]) == [wrong]
    assert [v.id for v in votes_behind(store.list_comparisons(), pair)] == [other]
    assert store.withdraw_comparisons([wrong]) == []  # already withdrawn


def test_every_preset_recipe_builds_a_checked_config():
    for preset in model_presets().values():
        assert "reward" in preset.recipes, f"{preset.name} has no reward recipe"
        for method, recipe in preset.recipes.items():
            config = METHODS[method].config_for(preset)
            assert {key: getattr(config, key) for key in recipe} == recipe


def test_a_recipe_sits_between_the_defaults_and_what_the_user_sets(tmp_path):
    lab = Lab(tmp_path / "workspace")
    assert lab.config("reward").learning_rate == model_presets()["cpu-default"].recipes["reward"]["learning_rate"]
    assert lab.config("reward", learning_rate=3e-5).learning_rate == 3e-5
    assert lab.config("sft").learning_rate == 2e-4  # no sft recipe: the method's default


def test_the_command_line_counts_the_pairs_before_it_trains(tmp_path, capsys):
    workspace = str(tmp_path / "workspace")
    code = main(["train", "reward", "--workspace", workspace, "--data", "workspace", "--max-steps", "1"])
    err = capsys.readouterr().err
    assert code == 2
    assert "0 preference pairs from 0 votes" in err and "too few to learn from" in err
    assert "no preference pairs to train on" in err
    runs = tmp_path / "workspace" / "runs"
    assert not runs.exists() or not any(runs.iterdir())  # refused before a run folder is made
