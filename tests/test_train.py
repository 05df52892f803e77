"""SFT through the job engine on the tiny model: loss goes down, the adapter changes the output,
stop keeps a loadable adapter, a killed or orphaned run is marked failed, runs queue, resume continues."""

import json
import os
import signal
from pathlib import Path

import pytest
import torch
from conftest import wait_for

from lab import jobs
from lab.adapters import attach_adapter
from lab.generate import build_messages, encode_chat
from lab.models import BASE_VIEW, ModelManager
from lab.store import Demonstration, Store
from lab.train.runs import read_metrics
from lab.train.sft import SFTRunConfig

SIGNOFF = Path(__file__).resolve().parent.parent / "assets" / "demonstrations" / "signoff.jsonl"


@pytest.fixture
def store(tmp_path):
    return Store(tmp_path / "workspace")


def config(tiny_model_dir, **overrides) -> SFTRunConfig:
    values = {
        "model": str(tiny_model_dir),
        "device": "cpu",
        "max_steps": 8,
        "batch_size": 8,
        "learning_rate": 2e-2,
        "lora_r": 8,
        "save_steps": 4,
        "eval_fraction": 0.2,
    }
    return SFTRunConfig(**{**values, **overrides})


def last_logits(models: ModelManager, view: str) -> torch.Tensor:
    with models.use(view) as lm, torch.inference_mode():
        ids = encode_chat(lm, build_messages("What is the capital of Italy?"), 4)
        return lm.model(input_ids=ids).logits[0, -1]


@pytest.mark.parametrize("precision", ["fp32", "4bit"])
def test_sft_lowers_the_loss_and_the_adapter_changes_the_output(store, tiny_model_dir, precision):
    run = jobs.prepare(store, "sft", config(tiny_model_dir, precision=precision), data_file=str(SIGNOFF))
    folder = jobs.run_dir(store, run.id)
    assert (folder / "config.yaml").is_file() and (folder / "data.jsonl").is_file()  # written before step 0
    assert jobs.execute(store, run.id) == 0
    assert store.get_run(run.id).status == "done"
    rows = read_metrics(folder)
    losses = [r["loss"] for r in rows if "loss" in r]
    assert losses[-1] < losses[0] * 0.8, losses
    assert any("eval_loss" in r for r in rows)
    assert all(r["max_steps"] == 8 for r in rows)

    models = ModelManager()
    models.load(str(tiny_model_dir), precision, "cpu")
    attach_adapter(store, models, run.id)
    assert not torch.allclose(last_logits(models, run.id), last_logits(models, BASE_VIEW), atol=1e-3)


def test_workspace_demonstrations_are_the_default_data_and_origins_filter_them(store, tiny_model_dir):
    human = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! ~ Lab"}]
    teacher = [{"role": "user", "content": "Yo"}, {"role": "assistant", "content": "Hey there."}]
    store.add_demonstrations([Demonstration(human), Demonstration(teacher, origin="teacher")])
    run = jobs.prepare(store, "sft", config(tiny_model_dir), origins=["human"])
    lines = (jobs.run_dir(store, run.id) / "data.jsonl").read_text().splitlines()
    assert [json.loads(line)["messages"] for line in lines] == [human]


def test_bad_config_names_the_field(tiny_model_dir):
    with pytest.raises(ValueError, match="learning_rate"):
        config(tiny_model_dir, learning_rate=0)
    with pytest.raises(ValueError, match="precision"):
        config(tiny_model_dir, precision="8bit")


def start_child(store, tiny_model_dir, **overrides):
    run = jobs.prepare(store, "sft", config(tiny_model_dir, **overrides), data_file=str(SIGNOFF))
    return jobs.submit(store, run)


def test_stop_keeps_a_loadable_adapter_and_resume_continues(store, tiny_model_dir):
    run = start_child(store, tiny_model_dir, max_steps=400, save_steps=2)
    assert run.status == "running"
    folder = jobs.run_dir(store, run.id)
    wait_for(lambda: len(read_metrics(folder)) >= 3, what="three logged steps")
    jobs.stop(store, run.id)
    wait_for(lambda: store.get_run(run.id).status == "stopped", what="the run to stop")
    stopped_at = read_metrics(folder)[-1]["step"]
    assert stopped_at < 400

    models = ModelManager()
    models.load(str(tiny_model_dir), "fp32", "cpu")
    attach_adapter(store, models, run.id)  # the adapter learned so far loads
    assert run.id in models.loaded.adapters

    resumed = jobs.resume(store, run.id)
    assert resumed.status == "running"
    wait_for(lambda: read_metrics(folder)[-1]["step"] > stopped_at + 1, what="steps after the resume")
    jobs.stop(store, run.id)
    wait_for(lambda: store.get_run(run.id).status == "stopped", what="the resumed run to stop")


def test_a_killed_run_is_failed_with_its_log(store, tiny_model_dir):
    run = start_child(store, tiny_model_dir, max_steps=400)
    wait_for(lambda: read_metrics(jobs.run_dir(store, run.id)), what="the first step")
    os.kill(store.get_run(run.id).pid, signal.SIGKILL)
    wait_for(lambda: jobs.refresh(store) or store.get_run(run.id).status == "failed", what="failure")
    failed = store.get_run(run.id)
    assert "died (signal 9)" in failed.error and "Last lines of its log" in failed.error
    assert failed.exit_code == -9


def test_an_orphaned_running_run_is_repaired_after_a_restart(store):
    """The app was restarted while a run was 'running' and its process is gone."""
    from lab.store import Run

    store.add_run(Run("sft-orphan", "sft", {"model": "x"}, status="running"))
    store.update_run("sft-orphan", pid=2**22 + 7)
    jobs.run_dir(store, "sft-orphan").mkdir(parents=True)
    (jobs.run_dir(store, "sft-orphan") / "log.txt").write_text("step 3\nstep 4\n")
    jobs._children.clear()  # a fresh app process knows no children
    jobs.refresh(Store(store.root))
    repaired = store.get_run("sft-orphan")
    assert repaired.status == "failed" and "step 4" in repaired.error


def test_a_second_run_waits_in_the_queue(store, tiny_model_dir):
    first = start_child(store, tiny_model_dir, max_steps=3)
    second = start_child(store, tiny_model_dir, max_steps=2)
    assert (first.status, second.status) == ("running", "queued")
    wait_for(lambda: store.get_run(first.id).status == "done", what="the first run")
    jobs.start_next(store)
    wait_for(lambda: store.get_run(second.id).status == "done", what="the queued run")
    assert store.get_run(second.id).started_at >= store.get_run(first.id).finished_at


def test_stopping_a_queued_run_means_it_never_starts(store, tiny_model_dir):
    first = start_child(store, tiny_model_dir, max_steps=2)
    second = start_child(store, tiny_model_dir, max_steps=2)
    jobs.stop(store, second.id)
    assert store.get_run(second.id).status == "stopped"
    wait_for(lambda: store.get_run(first.id).status == "done", what="the first run")
    assert jobs.start_next(store) is None
    with pytest.raises(jobs.JobError, match="no checkpoint"):
        jobs.resume(store, second.id)


def test_samples_show_what_the_model_answers_while_training(store, tiny_model_dir):
    from lab.train.runs import read_samples

    run = jobs.prepare(store, "sft", config(tiny_model_dir, max_steps=4, sample_every=2), data_file=str(SIGNOFF))
    assert jobs.execute(store, run.id) == 0
    samples = read_samples(jobs.run_dir(store, run.id))
    assert sorted({s["step"] for s in samples}) == [2, 4]
    assert all(s["prompt"] and isinstance(s["completion"], str) for s in samples)


def test_the_training_form_follows_the_model_preset(store):
    from lab import Lab
    from ui.training import _preset_config

    values = _preset_config(Lab(store), "sft", "gpu-24gb")
    assert (values.lora_alpha, values.max_length, values.precision) == (16, 2048, "4bit")


def test_a_half_written_sample_line_is_skipped(tmp_path):
    from lab.train.runs import read_samples

    (tmp_path / "samples.jsonl").write_text('{"step": 2, "prompt": "p", "completion": "c"}\n{"step": 4, "pro')
    assert read_samples(tmp_path) == [{"step": 2, "prompt": "p", "completion": "c"}]


def test_a_cli_training_refuses_to_start_beside_a_running_one(store, tiny_model_dir, capsys):
    from lab.cli import main

    run = start_child(store, tiny_model_dir, max_steps=400)
    try:
        code = main(
            ["train", "sft", "--workspace", str(store.root), "--data", str(SIGNOFF), "--set", f"model={tiny_model_dir}"]
        )
        assert code == 2 and f"Run {run.id} is training" in capsys.readouterr().err
    finally:
        jobs.stop(store, run.id)
        wait_for(lambda: jobs.refresh(store) or store.get_run(run.id).status == "stopped", what="the run to stop")


def test_the_metrics_tail_reads_only_what_was_appended(tmp_path):
    from lab.train.runs import MetricsTail

    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "lo')  # the run is writing its second row
    tail = MetricsTail(tmp_path)
    assert tail.read() == [{"step": 1, "loss": 2.0}]
    offset = tail.offset
    with path.open("a") as f:
        f.write('ss": 1.5}\n{"step": 3, "loss": 1.0}\n')
    assert [r["step"] for r in tail.read()] == [1, 2, 3]
    assert tail.offset > offset and tail.offset == path.stat().st_size


def test_4bit_computes_in_bf16_only_on_gpus_that_have_it(monkeypatch):
    from lab.models import _load_kwargs

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert _load_kwargs("4bit", "cuda")["quantization_config"].bnb_4bit_compute_dtype == torch.float16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert _load_kwargs("4bit", "cuda")["quantization_config"].bnb_4bit_compute_dtype == torch.bfloat16
    assert _load_kwargs("4bit", "cpu")["quantization_config"].bnb_4bit_compute_dtype == torch.float32
