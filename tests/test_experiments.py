"""Prompt experiments on the tiny model: run, stop, rate, summarize, export."""

import pandas as pd
import pytest

from lab import experiments
from lab.models import ModelManager
from lab.presets import experiment_presets
from lab.store import Store

VARIANTS = [
    {"name": "plain", "system": "", "template": "{question}"},
    {"name": "careful", "system": "Answer truthfully.", "template": "Q: {question}\nA:"},
]
SETTINGS = {"temperature": 0.0, "max_new_tokens": 6, "seed": 0}


@pytest.fixture
def manager(tiny_model_dir):
    models = ModelManager()
    models.load(str(tiny_model_dir), "fp32", "cpu")
    return models


@pytest.fixture
def store(tmp_path):
    return Store(tmp_path)


def saved(store, questions=("Why is the sky blue?", "Is a tomato a fruit?", "Who wrote Hamlet?")):
    return store.save_experiment(experiments.new_experiment("demo", VARIANTS, list(questions), SETTINGS))


def test_run_fills_the_grid_and_records_time_and_tokens(store, manager):
    eid = saved(store)
    steps = list(experiments.run_experiment(store, manager, eid))
    assert [s.done for s in steps] == [1, 2, 3, 4, 5, 6] and steps[-1].total == 6
    exp, results = store.get_experiment(eid), store.list_results(eid)
    assert len(results) == 6 and all(r.new_tokens == 6 and r.seconds > 0 for r in results)
    assert "fp32" in exp.model
    grid = experiments.results_grid(exp, results)
    assert list(grid.columns) == ["question", "plain", "careful"] and len(grid) == 3
    assert all("6 tok" in cell for cell in grid["careful"])


def test_stopping_keeps_finished_cells_and_a_rerun_fills_only_the_gaps(store, manager):
    eid = saved(store)
    runner = experiments.run_experiment(store, manager, eid)
    next(runner), next(runner)
    runner.close()  # what the Stop button does
    first = {(r.variant, r.question): r.response for r in store.list_results(eid)}
    assert len(first) == 2
    rest = list(experiments.run_experiment(store, manager, eid))
    assert rest[-1].total == 4
    again = {(r.variant, r.question): r.response for r in store.list_results(eid)}
    assert len(again) == 6 and all(again[k] == v for k, v in first.items())


def test_ratings_show_which_variant_wins(store, manager):
    eid = saved(store)
    list(experiments.run_experiment(store, manager, eid))
    for q in range(3):
        store.rate_result(eid, 1, q, 1)
    store.rate_result(eid, 0, 0, -1)
    summary = experiments.variant_summary(store.get_experiment(eid), store.list_results(eid)).set_index("variant")
    assert summary.loc["careful", "good"] == 3 and summary.loc["plain", "bad"] == 1
    assert summary.loc["plain", "answered"] == 3


def test_csv_export_has_one_row_per_cell(store, manager, tmp_path):
    eid = saved(store)
    list(experiments.run_experiment(store, manager, eid))
    store.rate_result(eid, 0, 2, 1)
    table = pd.read_csv(experiments.export_csv(store, eid, tmp_path / "out.csv"))
    assert len(table) == 6
    assert set(table.columns) >= {"question", "variant", "system", "response", "new_tokens", "seconds", "rating"}
    assert table.loc[(table.variant == "plain") & (table.question == "Who wrote Hamlet?"), "rating"].item() == 1


@pytest.mark.parametrize(
    ("name", "variants", "questions", "message"),
    [
        ("", VARIANTS, ["q"], "name"),
        ("x", VARIANTS, ["  "], "at least one question"),
        ("x", [], ["q"], "at least one prompt variant"),
        ("x", [VARIANTS[0], VARIANTS[0]], ["q"], "unique"),
        ("x", [{"name": "a", "template": "no slot"}], ["q"], "{question}"),
    ],
)
def test_bad_experiments_are_refused(name, variants, questions, message):
    with pytest.raises(ValueError, match=message):
        experiments.new_experiment(name, variants, questions, SETTINGS)


def test_every_starter_builds_an_experiment(store):
    for preset in experiment_presets().values():
        exp = experiments.from_preset(preset)
        assert len(exp.variants) >= 2 and exp.questions
        store.save_experiment(exp)
    assert len(store.list_experiments()) == len(experiment_presets())


def test_prompt_pool_is_seeded_once(store):
    first = experiments.seed_prompt_pool(store, ["starter", "misconceptions"])
    assert first == len(store.list_prompts()) > 0
    assert experiments.seed_prompt_pool(store, ["starter", "misconceptions"]) == 0
