"""Prompt experiments on the tiny model: run, stop, rate, summarize, export."""

import shutil

import pandas as pd
import pytest

from lab import experiments
from lab.models import ModelManager
from lab.presets import experiment_presets
from lab.store import Result, Store

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
    model = experiments.model_reference(manager, "base")
    for q in range(3):
        store.rate_result(eid, 1, q, 1, model=model)
    store.rate_result(eid, 0, 0, -1, model=model)
    summary = experiments.variant_summary(store.get_experiment(eid), store.list_results(eid)).set_index("variant")
    assert summary.loc["careful", "good"] == 3 and summary.loc["plain", "bad"] == 1
    assert summary.loc["plain", "answered"] == 3


def test_csv_export_has_one_row_per_cell(store, manager, tmp_path):
    eid = saved(store)
    list(experiments.run_experiment(store, manager, eid))
    store.rate_result(eid, 0, 2, 1, model=experiments.model_reference(manager, "base"))
    table = pd.read_csv(experiments.export_csv(store, eid, tmp_path / "out.csv"))
    assert len(table) == 6
    assert set(table.columns) >= {
        "question",
        "variant",
        "system",
        "response",
        "new_tokens",
        "seconds",
        "rating",
        "model",
    }
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


def test_each_cell_records_the_model_that_answered(store, manager, tiny_model_dir):
    eid = saved(store)
    list(experiments.run_experiment(store, manager, eid))
    assert experiments.model_reference(manager, "base") == f"{tiny_model_dir.name} · base"
    assert {r.model for r in store.list_results(eid)} == {f"{tiny_model_dir.name} · base"}


def test_another_model_adds_its_own_cells_beside_the_first(store, manager, tiny_model_dir, tmp_path):
    eid = saved(store, questions=("Why is the sky blue?", "Who wrote Hamlet?"))
    list(experiments.run_experiment(store, manager, eid))
    first = {(r.variant, r.question): r.response for r in store.list_results(eid)}
    other = ModelManager()
    other.load(str(shutil.copytree(tiny_model_dir, tmp_path / "other-model")), "fp32", "cpu")
    steps = list(experiments.run_experiment(store, other, eid))
    assert steps[-1].total == 4  # "only missing" means missing for this model
    results = store.list_results(eid)
    assert len(results) == 8
    assert {(r.variant, r.question): r.response for r in results if r.model != "other-model · base"} == first
    store.rate_result(eid, 1, 0, 1, model="other-model · base")
    assert [r.model for r in results if r.rating == 1] == []
    assert [r.model for r in store.list_results(eid) if r.rating == 1] == ["other-model · base"]
    assert list(experiments.run_experiment(store, other, eid)) == []  # nothing left for it


def cells(models: list[str]) -> list[Result]:
    return [Result(1, v, q, f"{v}{q}{m}", 5, 3, 0.5, model=m) for m in models for q in range(2) for v in range(2)]


def test_one_model_keeps_variant_columns_and_several_get_one_column_each():
    exp = experiments.new_experiment("demo", VARIANTS, ["q1", "q2"], SETTINGS)
    one = experiments.results_grid(exp, cells(["a · base"]))
    assert list(one.columns) == ["question", "plain", "careful"]
    two = experiments.results_grid(exp, cells(["", "a · base"]))
    assert list(two.columns) == [
        "question",
        "plain · model not recorded",
        "plain · a · base",
        "careful · model not recorded",
        "careful · a · base",
    ]
    assert two.loc[1, "careful · a · base"].startswith("11a · base")
    summary = experiments.variant_summary(exp, cells(["", "a · base"]))
    assert summary[["variant", "model", "answered"]].values.tolist() == [
        ["plain", "", 2],
        ["plain", "a · base", 2],
        ["careful", "", 2],
        ["careful", "a · base", 2],
    ]
    assert experiments.variant_summary(exp, [])["answered"].tolist() == [0, 0]


def test_an_identical_experiment_is_reopened_and_a_changed_one_is_new(store):
    exp = experiments.new_experiment("demo", VARIANTS, ["q1"], SETTINGS)
    eid, message = experiments.save_experiment(store, exp, None)
    assert message == f"Saved experiment #{eid}."
    again, message = experiments.save_experiment(
        store, experiments.new_experiment("demo", VARIANTS, ["q1"], SETTINGS), None
    )
    assert again == eid and "reopened" in message
    renamed = experiments.new_experiment("renamed", VARIANTS, ["q1"], SETTINGS)
    assert experiments.save_experiment(store, renamed, eid)[0] == eid
    assert store.get_experiment(eid).name == "renamed"
    changed = experiments.new_experiment("renamed", VARIANTS, ["q1", "q2"], SETTINGS)
    new_id, message = experiments.save_experiment(store, changed, eid)
    assert new_id != eid and "new experiment" in message
    assert store.get_experiment(eid).questions == ["q1"]


def test_a_bad_variant_is_one_sentence_naming_it():
    with pytest.raises(ValueError) as err:
        experiments.new_experiment("x", [VARIANTS[0], {"name": "x", "template": "no slot"}], ["q"], SETTINGS)
    assert str(err.value) == "Variant 'x': the template must contain {question}."


def test_cells_record_the_view_that_answered_not_the_adapters_attached(store, manager, tmp_path):
    from peft import LoraConfig, get_peft_model

    lora = get_peft_model(manager.require().model, LoraConfig(r=4, target_modules="all-linear"))
    lora.save_pretrained(tmp_path / "adapter")
    manager.loaded.model = lora.unload()  # back to the plain base, then attach the saved adapter by name
    manager.add_adapter("sft-1", tmp_path / "adapter")
    eid = saved(store, questions=("Why is the sky blue?",))
    list(experiments.run_experiment(store, manager, eid, view="base"))
    assert {r.model for r in store.list_results(eid)} == {experiments.model_reference(manager, "base")}
    assert "sft-1" not in store.get_experiment(eid).model and "view: base" in store.get_experiment(eid).model
    list(experiments.run_experiment(store, manager, eid, view="sft-1"))
    assert {r.model.split(" · ")[-1] for r in store.list_results(eid)} == {"base", "sft-1"}
    assert store.get_experiment(eid).model.endswith("view: sft-1")


def test_waiting_for_the_model_is_said_in_words(manager):
    import threading

    assert manager.waiting() is None
    held, release = threading.Event(), threading.Event()

    def chat() -> None:
        with manager.use("base"):
            held.set()
            release.wait(10)

    thread = threading.Thread(target=chat)
    thread.start()
    held.wait(10)
    try:
        assert manager.waiting() == "waiting for the model behind another request"
    finally:
        release.set()
        thread.join()
    manager.loading, manager.status = True, "Converting the default model…"
    assert manager.waiting() == "waiting for the model to load (Converting the default model…)"
    text = experiments.progress_text(3, 12, waiting="waiting for the model behind another request")
    assert text == "3 of 12 cells… waiting for the model behind another request"


# the Prompting tab's handlers, without a browser


@pytest.fixture
def tab(store, manager):
    from lab import Lab
    from ui.prompting import PromptingView

    ctx = Lab(store)
    ctx.models = manager
    view = PromptingView(**{name: object() for name in PromptingView.__dataclass_fields__})
    return ctx, view


def editor(variants=VARIANTS, questions="Why is the sky blue?\nWho wrote Hamlet?") -> list:
    return ["demo", pd.DataFrame(variants), questions, 0.0, 6, 0]


def test_a_bad_variant_is_said_beside_the_buttons_and_leaves_the_results_alone(tab):
    from ui.prompting import save_and_run

    ctx, ui = tab
    bad = [VARIANTS[0], {"name": "x", "system": "", "template": "no slot"}]
    shown = list(save_and_run(ctx, ui, None, *editor(bad), "base"))
    assert shown == [{ui.note: "**Variant 'x': the template must contain {question}.**"}]


def test_a_run_streams_its_cells_and_says_what_it_waits_for(tab):
    import threading

    from ui.prompting import save_and_run

    ctx, ui = tab
    held, release = threading.Event(), threading.Event()

    def chat() -> None:
        with ctx.models.use("base"):
            held.set()
            release.wait(10)

    thread = threading.Thread(target=chat)
    thread.start()
    held.wait(10)
    run = save_and_run(ctx, ui, None, *editor(), "base")
    saved = next(run)
    assert saved[ui.note] == "" and saved[ui.status].startswith("Saved experiment")
    waiting = next(run)
    release.set()
    thread.join()
    assert waiting == {ui.status: "0 of 4 cells… waiting for the model behind another request"}
    rest = list(run)
    statuses = [step[ui.status] for step in rest if ui.grid in step]
    assert statuses == [f"{n} of 4 cells… generating" for n in range(1, 5)] + ["Done: every cell has a response."]
    assert rest[0][ui.grid]["value"].iloc[0, 1].endswith("tok]")  # the first cell is on screen while the rest run
    assert rest[-1][ui.grid]["column_widths"] == ["20%", "40.00%", "40.00%"]
