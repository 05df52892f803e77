"""The whole recipe as one pipeline on the tiny model, each step a real run in its own process: SFT → reward model
→ DPO → evaluation ends with the before/after table; a stop leaves the later steps unstarted and a resume continues
the stopped run without redoing the finished ones (there with RLOO as the policy step); a training process that
dies fails the pipeline with its reason; the CLI prints the table and exits 0, or exits non-zero with one sentence;
a scenario is loaded into a workspace only where it mixes with nobody's work."""

import os
import signal
from pathlib import Path

import pytest
from conftest import wait_for

from lab import Lab, jobs
from lab.pipeline import STEPS, PipelineError, latest, load_scenario, open_workspace
from lab.train.runs import latest_checkpoint, read_metrics

SCENARIO = "Truthfulness"
SIGNOFF = Path(__file__).resolve().parent.parent / "assets" / "demonstrations" / "signoff.jsonl"


@pytest.fixture
def lab(tmp_path):
    """A workspace seeded with the Truthfulness scenario: its demonstrations, starter votes and held-out questions."""
    return Lab.from_scenario("truthfulness", tmp_path / "workspace")


def tiny(model_dir, **steps) -> dict:
    """Options for a fast pipeline on the tiny model: three optimizer steps a run, two short evaluation answers."""
    values = {"model": str(model_dir), "steps": 3, "sft": {"batch_size": 2}}
    return {**values, "eval": {"max_prompts": 2, "max_new_tokens": 8}, **steps}


def test_a_stop_leaves_later_steps_unstarted_and_resume_continues_from_that_step(lab, tiny_model_dir):
    pipeline = lab.pipeline(SCENARIO, "rloo", **tiny(tiny_model_dir, reward={"max_steps": 30}))
    record = lambda: pipeline.record  # noqa: E731
    wait_for(lambda: record().runs["reward"] is not None, timeout=300, what="the reward step")
    reward = jobs.run_dir(lab.store, record().runs["reward"])
    wait_for(lambda: read_metrics(reward), timeout=300, what="the reward model's first step")
    pipeline.stop()
    wait_for(lambda: pipeline.status == "stopped", timeout=120, what="the stop")

    assert pipeline.progress().text() == "Stopped at step 2 of 4 (reward model); Resume continues from there."
    assert record().runs["policy"] is None and record().runs["eval"] is None
    assert [run.method for run in lab.store.list_runs()] == ["reward", "sft"]  # nothing after it was queued
    stopped_at = read_metrics(reward)[-1]["step"]
    assert 0 < stopped_at < 30 and latest_checkpoint(reward) is not None  # what it learned is kept
    sft = lab.store.get_run(record().runs["sft"])

    pipeline.resume()
    assert pipeline.wait(timeout=600, poll_s=0.5, echo=lambda line: None) == "done", pipeline.progress().text()
    assert lab.store.get_run(record().runs["sft"]) == sft  # the finished step was not run again
    assert record().runs["reward"] == reward.name  # the stopped run continued, from its checkpoint
    steps = [row["step"] for row in read_metrics(reward) if "loss" in row]
    assert steps[-1] == 30 and stopped_at + 1 in steps and steps.count(1) == 1
    rloo = lab.store.get_run(record().runs["policy"])  # RL on the SFT adapter, rewarded by the reward model
    assert rloo.method == "rloo" and rloo.config["reward"] == f"model:{reward.name}"
    assert rloo.provenance["parent_adapter"]["run"] == sft.id
    assert len(lab.store.list_runs()) == 4 and list(pipeline.table()["stage"]) == ["before", "after SFT", "after RLOO"]


def test_an_app_started_again_drives_the_pipeline_left_running_to_its_end(lab, tiny_model_dir):
    from lab.pipeline import drive_running, start

    record = start(lab, SCENARIO, "dpo", **tiny(tiny_model_dir))  # queued by a process that then went away
    again = Lab(lab.store.root)  # the next app on the same workspace
    assert drive_running(again) == [record.id]
    pipeline = latest(again)
    wait_for(lambda: pipeline.status != "running", timeout=600, what="the pipeline to end")
    assert pipeline.status == "done", pipeline.progress().text()


def test_a_step_whose_process_dies_fails_the_pipeline_with_the_reason(lab, tiny_model_dir):
    pipeline = lab.pipeline(SCENARIO, **tiny(tiny_model_dir))
    sft = pipeline.record.runs["sft"]
    wait_for(lambda: lab.store.get_run(sft).pid is not None, timeout=120, what="the SFT process")
    os.kill(lab.store.get_run(sft).pid, signal.SIGKILL)
    wait_for(lambda: pipeline.status == "failed", timeout=60, what="the failure")

    text = pipeline.progress().text()
    assert text.startswith("Failed at step 1 of 4 (SFT): The training process died (signal 9)"), text
    assert pipeline.record.runs["reward"] is None and len(lab.store.list_runs()) == 1

    pipeline.resume()  # no checkpoint to continue from: the step runs again as a new run
    assert pipeline.record.runs["sft"] != sft and pipeline.record.replaced == [sft]
    pipeline.stop()
    wait_for(lambda: pipeline.status == "stopped", timeout=120, what="the stop")


def test_a_pipeline_that_would_fail_later_is_refused_before_it_starts(tmp_path, lab):
    with pytest.raises(ValueError, match="No scenario named 'Nope'"):
        lab.pipeline("Nope")
    with pytest.raises(PipelineError, match="tunes the policy with dpo or rloo"):
        lab.pipeline(SCENARIO, "kto")
    with pytest.raises(PipelineError, match="Unknown pipeline option 'stepz'"):
        lab.pipeline(SCENARIO, stepz=3)
    with pytest.raises(ValueError, match="max_stepz"):
        lab.pipeline(SCENARIO, sft={"max_stepz": 3})
    with pytest.raises(PipelineError, match="no accepted demonstrations"):
        Lab(tmp_path / "empty").pipeline(SCENARIO)
    assert lab.store.list_runs() == [] and latest(lab) is None


def test_the_command_line_runs_the_four_steps_and_prints_the_before_after_table(lab, tiny_model_dir, capsys):
    from lab.cli import main

    argv = ["pipeline", "--scenario", SCENARIO, "--workspace", str(lab.store.root), "--model", str(tiny_model_dir)]
    argv += ["--steps", "3", "--set", "sft.batch_size=2", "--set", "eval.max_prompts=2"]
    assert main([*argv, "--set", "eval.max_new_tokens=8"]) == 0
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert any(line.startswith("Step 1 of 4 (SFT)") for line in lines)
    assert any(line.startswith("Step 4 of 4 (evaluation)") for line in lines)
    assert lines[-1].startswith("Done in")

    pipeline = latest(Lab(lab.store.root), SCENARIO)  # another process, or the app after a restart, sees the same
    runs = {step: lab.store.get_run(pipeline.record.runs[step]) for step in STEPS}
    assert [run.method for run in runs.values()] == ["sft", "reward", "dpo", "eval"]
    assert all(run.status == "done" for run in runs.values())
    assert runs["policy"].provenance["parent_adapter"]["run"] == runs["sft"].id  # DPO continues the SFT adapter
    assert runs["eval"].config["judge"] == runs["reward"].id
    assert runs["eval"].config["checks"] == f"scenario:{SCENARIO}"

    table = pipeline.table()
    assert list(table["stage"]) == ["before", "after SFT", "after DPO"]
    assert list(table["model"]) == ["base", runs["sft"].id, runs["policy"].id]
    assert {"win rate", "check", "KL"} <= set(table.columns)
    assert table["win rate"].iloc[1:].str.match(r"\d+% \(").all()  # each with its interval
    assert out.startswith(table.to_string(index=False))


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["--scenario", "Nope"], "error: No scenario named 'Nope'"),
        (["--scenario", SCENARIO, "--resume"], "error: No pipeline of scenario 'Truthfulness'"),
        (["--scenario", SCENARIO, "--set", "max_steps=3"], "error: --set max_steps: write STEP.KEY=VALUE"),
    ],
)
def test_the_command_line_exits_non_zero_with_one_sentence(lab, capsys, argv, said):
    from lab.cli import main

    assert main(["pipeline", "--workspace", str(lab.store.root), *argv]) == 2
    assert said in capsys.readouterr().err


def test_a_scenario_loads_into_a_workspace_only_where_it_mixes_with_nobodys_work(tmp_path):
    from lab.experiments import seed_prompt_pool
    from lab.presets import question_sets
    from ui.workshop import act_on_recipe

    fresh = Lab(tmp_path / "fresh")
    seed_prompt_pool(fresh.store, question_sets())  # what the app puts in every workspace: nobody's work
    assert act_on_recipe(fresh, "stop") == "**Nothing to stop: no recipe has run in this workspace.**"
    assert load_scenario(fresh, "Truthfulness").startswith("Scenario Truthfulness: ")
    assert load_scenario(fresh, "Truthfulness")  # loading it again adds nothing twice, refuses nothing

    used = Lab(tmp_path / "used")
    used.import_file(SIGNOFF)
    with pytest.raises(PipelineError, match="tick 'mix with existing work'.*python -m ui --scenario 'Truthfulness'"):
        load_scenario(used, "Truthfulness")
    assert used.store.list_comparisons() == []
    assert "comparisons" in load_scenario(used, "Truthfulness", mix=True) and used.store.list_comparisons()
    with pytest.raises(PipelineError, match="holds other work"):
        open_workspace("instructions", used.store.root)  # the command line never trains on a mix it did not ask for
    assert open_workspace("truthfulness", used.store.root).store.root == used.store.root
