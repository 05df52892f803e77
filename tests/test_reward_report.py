"""Inspecting a reward model: on the tiny "banana" run, the report scores exactly the run's held-out pairs, its
accuracy has a sane interval, the length baseline and correlation are computed, the worst pairs come first and the
figures build; the pure length check flags pairs whose chosen answer is always longer and passes a balanced set."""

import plotly.graph_objects as go
import pytest
from test_reward import marker_pairs

from lab import jobs
from lab.reward_report import ScoredPair, inspect_reward, length_bias, summarise, wilson_interval
from lab.train.reward import split_by_prompt
from lab.train.runs import read_metrics


@pytest.fixture(scope="module")
def report(trained):
    store, run = trained
    return inspect_reward(store, run.id, batch_size=4, top_k=3, device="cpu")


def test_the_report_scores_the_runs_own_held_out_pairs(trained, report):
    # the same split the run made (its seed and eval_fraction): a different one would mix in trained pairs
    settings = trained[0].get_run(trained[1].id).config
    _, held_out = split_by_prompt(marker_pairs(), settings["eval_fraction"], seed=settings["seed"])
    assert report.n_pairs == len(held_out) == 10
    assert [p.chosen for p in report.pairs] == [row["chosen"][0]["content"] for row in held_out]
    assert [p.prompt for p in report.pairs] == [row["prompt"] for row in held_out]


def test_accuracy_has_an_interval_around_it_and_the_marker_is_learned(report):
    low, high = report.accuracy_ci
    assert 0 <= low <= report.accuracy <= high <= 1
    assert report.accuracy == sum(p.chosen_reward > p.rejected_reward for p in report.pairs) / report.n_pairs
    assert report.accuracy >= 0.8  # as test_reward's eval_accuracy: the marker is learned


def test_accuracy_agrees_with_the_trainers_last_evaluation(trained, report):
    # TRL evaluated the final adapter on the same held-out pairs at the last step: the same pairs, the same verdicts
    store, run = trained
    evals = [r for r in read_metrics(jobs.run_dir(store, run.id)) if "eval_accuracy" in r]
    assert evals[-1]["step"] == store.get_run(run.id).config["max_steps"]
    assert report.accuracy == pytest.approx(evals[-1]["eval_accuracy"])


def test_length_baseline_correlation_and_worst_pairs(report):
    expected = sum(
        (len(p.chosen) > len(p.rejected)) + 0.5 * (len(p.chosen) == len(p.rejected)) for p in report.pairs
    ) / len(report.pairs)
    assert report.length_baseline == pytest.approx(expected)
    assert report.length_r is not None and -1 <= report.length_r <= 1
    assert report.length_explains_reward == (report.length_r**2 > 0.5)
    margins = [p.margin for p in report.worst]
    assert len(report.worst) == 3 and margins == sorted(margins, reverse=True)
    assert margins[0] == max(p.margin for p in report.pairs)
    assert "Held-out accuracy" in report.summary()


def test_the_figures_build(report):
    histogram, scatter = report.reward_histogram(), report.reward_vs_length()
    assert isinstance(histogram, go.Figure) and [t.name for t in histogram.data] == ["chosen", "rejected"]
    assert sum(len(t.x) for t in histogram.data) == 2 * report.n_pairs
    assert f"r = {report.length_r:.2f}" in scatter.layout.title.text
    assert sum(len(t.x) for t in scatter.data) == 2 * report.n_pairs


def test_the_length_check_flags_always_longer_chosen_and_passes_a_balanced_set():
    short, long = ["Yes.", "No.", "Maybe.", "Sure."], ["Yes, and here is why at length.", "No, because of this."] * 2
    biased = length_bias(long, short)
    assert biased.longer_preferred == 1 and biased.length_explains_preference
    balanced = length_bias(long[:2] + short[2:], short[:2] + long[2:])
    assert balanced.longer_preferred == 0.5 and not balanced.length_explains_preference
    assert length_bias(["ab"], ["cd"]).longer_preferred == 0.5  # equal lengths count half


def test_the_length_check_flags_a_reward_that_tracks_length():
    chosen, rejected = ["a" * 30, "b" * 50, "c" * 10], ["d" * 20, "e" * 40, "f" * 60]
    tracking = length_bias(chosen, rejected, [3.0, 5.0, 1.0], [2.0, 4.0, 6.0])  # reward = length / 10
    assert tracking.r == pytest.approx(1) and tracking.length_explains_reward
    flat = length_bias(chosen, rejected, [1.0, -1.0, 1.0], [-1.0, 1.0, -1.0])
    assert flat.r is not None and flat.r_squared <= 0.5 and not flat.length_explains_reward
    # constant rewards have no correlation: undefined, and not read as a bias
    constant = length_bias(chosen, rejected, [1.0] * 3, [1.0] * 3)
    assert constant.r is None and not constant.length_explains_reward


def test_the_pure_summary_handles_edges():
    pairs = [ScoredPair("p", "long answer", "short", 1.0, 0.0), ScoredPair("p", "x", "yy", 0.0, 2.0)]
    report = summarise("r", pairs, top_k=5)
    assert report.accuracy == 0.5 and [p.chosen for p in report.worst] == ["x", "long answer"]
    assert wilson_interval(0, 10)[0] == 0 and wilson_interval(10, 10)[1] == 1  # Wilson stays inside [0, 1]
    with pytest.raises(ValueError, match="no held-out pairs"):
        summarise("r", [])
