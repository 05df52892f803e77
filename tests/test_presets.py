"""Presets load, and a bad preset names the file and the key."""

import pytest

from lab.presets import (
    HELD_OUT_DIR,
    PresetError,
    experiment_presets,
    load_experiment_preset,
    load_model_preset,
    load_question_set,
    model_presets,
    question_sets,
    scenario_files,
    scenario_presets,
)
from lab.store import CATEGORIES


def test_bundled_model_presets_cover_the_hardware_tiers():
    presets = model_presets()
    assert {p.tier for p in presets.values()} >= {"cpu", "gpu-8gb", "gpu-24gb"}
    assert presets["gpu-24gb"].precision == "4bit"
    assert presets["cpu-default"].model == "smollm2-135m-instruct"


def test_bundled_experiments_use_bundled_question_sets():
    presets = experiment_presets()
    assert len(presets) >= 4
    for preset in presets.values():
        assert load_question_set(preset.questions), preset.name
    categories = {p.category for name in question_sets() for p in load_question_set(name)}
    assert categories <= set(CATEGORIES)
    assert len(categories) == len(CATEGORIES), "every InstructGPT category has a bundled example"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: x\ndescription: y\ntier: cpu\nmodel: m\nprecison: fp32\n", "key 'precison': unknown key"),
        ("name: x\ndescription: y\ntier: cpu\nmodel: m\nlora: {r: -1}\n", "key 'lora.r'"),
        ("name: x\ndescription: y\ntier: cpu\nmodel: m\nprecision: fp64\n", "key 'precision'"),
        ("- a list\n", "must be a mapping"),
        ("name: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_model_preset_names_file_and_key(tmp_path, text, message):
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    with pytest.raises(PresetError, match="broken.yaml") as err:
        load_model_preset(path)
    assert message in str(err.value)


def test_experiment_template_needs_the_question_placeholder(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("name: x\ndescription: y\nquestions: starter\nvariants:\n  - name: a\n    template: no slot\n")
    with pytest.raises(PresetError, match=r"variants\.0\.template"):
        load_experiment_preset(path)


def test_unknown_question_set_lists_the_choices():
    with pytest.raises(PresetError, match="misconceptions"):
        load_question_set("nope")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: x\ndescription: y\nguidelines: g\n", "needs 'questions'"),
        ("name: x\ndescription: y\nguidelines: g\ntruthfulqa: true\nquestions: starter\n", "from the CSV"),
        ("name: x\ndescription: y\nguidelines: g\nquestions: starter\nheld_out_fraction: 1\n", "held_out_fraction"),
        ("name: x\ndescription: y\nguidelines: g\nquestions: starter\ncomparison: a\n", "key 'comparison': unknown"),
    ],
)
def test_a_bad_scenario_names_file_and_key(tmp_path, text, message):
    (tmp_path / "room.yaml").write_text(text)
    with pytest.raises(PresetError, match="room.yaml") as err:
        scenario_presets(tmp_path)
    assert message in str(err.value)


def test_bundled_scenarios_are_named_by_file_and_by_title():
    files = scenario_files()
    assert {"truthfulness", "helpful-honest", "instructions", "refusals", "truthfulqa"} <= set(files)
    assert set(scenario_presets()) == {p.name for p in files.values()}
    for preset in files.values():
        if preset.questions:
            assert load_question_set(preset.questions)
        if preset.held_out:
            assert load_question_set(preset.held_out, HELD_OUT_DIR)
