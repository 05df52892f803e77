"""A run outgrows one device unchanged: the config.yaml a single-process run trains from runs data-parallel in two
processes under `accelerate launch`, through accelerate (DDP), not code of ours; the first process claims the run
and writes its status, metrics and adapter once.

    python -m lab train dpo --config runs/<a run>/config.yaml --prepare-only     # prints the new run's id
    accelerate launch --multi_gpu --num_processes 2 -m lab run RUN_ID --workspace WORKSPACE

(`--multi_gpu` is accelerate's torchrun launcher; here each process trains on the CPU, as the run's config says.
`--cpu` alone starts a single process unless an MPI host file is given.)
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from browser import free_port
from test_reward import marker_pairs

from lab import jobs
from lab.store import Store
from lab.train.dpo import DPORunConfig
from lab.train.runs import read_metrics

ROOT = Path(__file__).resolve().parent.parent
ACCELERATE = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or shutil.which("accelerate")


@pytest.mark.skipif(ACCELERATE is None, reason="needs accelerate's launcher")
def test_a_dpo_config_trains_in_two_processes_under_accelerate_launch(tiny_model_dir, tmp_path):
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in marker_pairs()), encoding="utf-8")
    store = Store(tmp_path / "workspace")
    config = DPORunConfig(
        model=str(tiny_model_dir),
        device="cpu",
        max_steps=3,
        batch_size=4,
        learning_rate=1e-2,
        lora_r=8,
        save_steps=100,
        eval_fraction=0.25,
        logging_steps=1,
        max_length=64,
    )
    first = jobs.prepare(store, "dpo", config, data_file=str(data))  # a run a single process would train
    resolved = jobs.run_dir(store, first.id) / "config.yaml"
    store.update_run(first.id, expect=("queued",), status="stopped")  # set aside: only its config is reused
    prepared = subprocess.run(
        [sys.executable, "-m", "lab", "train", "dpo", "--workspace", str(store.root), "--config", str(resolved)]
        + ["--prepare-only"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert prepared.returncode == 0, prepared.stderr[-2000:]
    run = store.get_run(prepared.stdout.strip())
    folder = jobs.run_dir(store, run.id)
    written = (folder / "config.yaml").read_text(encoding="utf-8")
    same = [line for line in written.splitlines() if not line.startswith("data:")]
    assert same == [line for line in resolved.read_text().splitlines() if not line.startswith("data:")]

    launch = [ACCELERATE, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1"]
    launch += ["--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port())]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    result = subprocess.run(
        [*launch, "-m", "lab", "run", run.id, "--workspace", str(store.root)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    assert store.get_run(run.id).status == "done", store.get_run(run.id).error
    assert (folder / "config.yaml").read_text(encoding="utf-8") == written
    assert (folder / "adapter" / "adapter_model.safetensors").is_file()
    steps = [row for row in read_metrics(folder) if "loss" in row]
    assert [row["step"] for row in steps] == [1, 2, 3]  # one row per step: only the first process writes
    # each step took a batch in each process: 2 x 4 of the 30 training pairs (40 pairs, a quarter held out)
    assert steps[0]["epoch"] == pytest.approx(1 / 4)
    assert sum("Adapter saved in" in line for line in result.stdout.splitlines()) == 1
