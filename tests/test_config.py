"""Run configs: one check for a dict, a YAML file, CLI flags and --set; a run's config.yaml reproduces it;
runs record where they came from and their adapter's card says so."""

import json
import math
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from lab.cli import main
from lab.fields import Checked, help_field
from lab.presets import ModelPreset
from lab.store import Store
from lab.train.config import config_from_preset
from lab.train.sft import SFTRunConfig

SIGNOFF = Path(__file__).resolve().parent.parent / "assets" / "demonstrations" / "signoff.jsonl"


@dataclass
class Probe(Checked):
    label: str | None = help_field(None, "optional text")
    tags: list = help_field([], "a list")
    share: float = help_field(0.5, "a share", low=0, high=1, high_open=True)


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"label": 3}, "label"),  # default None: still type-checked
        ({"tags": "a,b"}, "tags"),  # default from a factory: still type-checked
        ({"share": 1.0}, "share"),  # outside [0, 1)
        ({"share": math.nan}, "share"),
        ({"share": True}, "share"),  # a bool is not a number here
        ({"shares": 0.1}, "shares"),
    ],
)
def test_every_field_is_checked_and_named(values, named):
    with pytest.raises(ValueError, match=f"'{named}'"):
        Probe.from_dict(values)


def test_ranges_are_stated_in_the_message():
    with pytest.raises(ValueError, match=r"warmup_ratio.*\[0, 1\)"):
        SFTRunConfig(warmup_ratio=1.5)
    with pytest.raises(ValueError, match="max_steps.*at least -1|max_steps.*-1"):
        SFTRunConfig(max_steps=-5)
    with pytest.raises(ValueError, match="learning_rate"):
        SFTRunConfig(learning_rate=1e9)
    assert SFTRunConfig(max_steps=3, learning_rate=1).learning_rate == 1.0  # an int for a float field is fine


def test_a_yaml_file_is_checked_like_a_dict(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"lora_r": "sixteen"}))
    with pytest.raises(ValueError, match="config.yaml: key 'lora_r' should be int"):
        SFTRunConfig.from_file(path)
    path.write_text(yaml.safe_dump({"lora_rank": 8}))
    with pytest.raises(ValueError, match="config.yaml: unknown key 'lora_rank'"):
        SFTRunConfig.from_file(path)


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--set", "warmup_ratio=2"], "warmup_ratio"),
        (["--warmup-ratio", "-0.5"], "warmup_ratio"),
        (["--batch-size", "four"], "batch_size"),
        (["--set", "learning_rat=0.1"], "learning_rat"),
    ],
)
def test_the_cli_refuses_bad_values_naming_the_key(tmp_path, capsys, argv, named):
    assert main(["train", "sft", "--workspace", str(tmp_path), *argv]) == 2
    assert f"'{named}'" in capsys.readouterr().err
    assert Store(tmp_path).list_runs() == []


def test_an_8bit_preset_is_refused_with_a_reason():
    preset = ModelPreset(name="p", description="d", tier="cpu", model="m", precision="8bit")
    with pytest.raises(ValueError, match="8-bit, which does not train"):
        config_from_preset(SFTRunConfig, preset)
    assert config_from_preset(SFTRunConfig, preset, {"precision": "4bit"}).precision == "4bit"


def test_a_runs_config_yaml_reproduces_it_with_provenance(tiny_model_dir, tmp_path, capsys):
    workspace = tmp_path / "ws"
    flags = ["--model", str(tiny_model_dir), "--device", "cpu", "--max-steps", "2", "--batch-size", "4"]
    first = ["train", "sft", "--workspace", str(workspace), "--data", str(SIGNOFF), *flags, "--sample-every", "0"]
    assert main(first) == 0
    store = Store(workspace)
    [original] = store.list_runs()
    folder = store.runs_dir / original.id

    assert main(["train", "sft", "--workspace", str(workspace), "--config", str(folder / "config.yaml")]) == 0
    again = next(run for run in store.list_runs() if run.id != original.id)
    assert again.status == "done"
    differs = {k for k in original.config if original.config[k] != again.config[k]}
    assert differs == {"data"}  # the same config, on its own frozen copy of the same data
    assert again.provenance["data"]["sha256"] == original.provenance["data"]["sha256"]

    p = original.provenance
    assert p["base_model"] == str(Path(tiny_model_dir).resolve()) and p["parent_adapter"] is None
    assert p["data"]["source"] == "file signoff.jsonl" and p["data"]["rows"] == len(SIGNOFF.read_text().splitlines())
    card = (folder / "adapter" / "README.md").read_text()
    assert "file signoff.jsonl" in card and p["data"]["sha256"] in card and "base_model:" in card
    assert json.loads((folder / "final_metrics.json").read_text())["train_loss"] > 0


@pytest.mark.parametrize(("field", "value"), [("max_steps", -5), ("learning_rate", 1e9)])
def test_the_training_form_refuses_values_out_of_range(tmp_path, field, value):
    import gradio as gr

    from lab import Lab
    from ui.errors import UserError
    from ui.training import build_training, queue_run

    lab = Lab(tmp_path / "ws")
    with gr.Blocks():
        form = build_training(lab)
    values = {form.method: "sft", form.preset: "cpu-default", form.name: "", form.start_from: "(new adapter)"}
    values |= {form.origins: ["human"], form.data_file: str(SIGNOFF), **{c: c.value for c in form.votes.inputs}}
    values |= {control: control.value for control in form.fields["sft"].values()}
    values[form.fields["sft"][field]] = value
    with pytest.raises(UserError, match=rf"key '{field}' is .*; it must be in \["):
        queue_run(lab, form, values)
    assert Store(tmp_path / "ws").list_runs() == []  # nothing was queued
