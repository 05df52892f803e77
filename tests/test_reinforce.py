"""REINFORCE through the job engine on the tiny model: each baseline raises the mean reward with the KL finite, the
leave-one-out baseline gives smaller weights (reward − baseline) than none, a stopped run resumes where it stopped."""

import json
import math

import pytest
import torch

from lab import jobs
from lab.store import Store
from lab.train import reinforce
from lab.train.reinforce import ReinforceRunConfig, completion_mask, leave_one_out
from lab.train.runs import StopSignal, latest_checkpoint, read_metrics, read_samples

PROMPTS = ["Hi", "What is the capital of France?", "Translate this sentence.", "Say goodbye.", "Why?", "Be brief."]
TARGET = 12  # letters


def reach_length(prompts, completions, **kwargs) -> list[float]:
    """A length target: the share of TARGET letters a completion reaches. The tiny random model's text is mostly
    bytes that decode to nothing readable, so letters are the length it can learn within a test's few steps."""
    letters = [sum(ch.isascii() and ch.isalpha() for ch in c[-1]["content"]) for c in completions]
    return [min(n, TARGET) / TARGET for n in letters]


@pytest.fixture(scope="module", autouse=True)
def one_thread_and_a_test_reward():
    """One thread: the tiny model's steps are far faster so on a shared CPU. The reward comes from the test."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(reinforce, "make_reward", lambda spec, run_dir, device: reach_length)
        yield
    torch.set_num_threads(threads)


def config(tiny_model_dir, **overrides) -> ReinforceRunConfig:
    values = {
        "model": str(tiny_model_dir),
        "device": "cpu",
        "max_steps": 20,
        "batch_size": 24,  # 6 prompts x K = 4
        "num_generations": 4,
        "max_completion_length": 8,
        "learning_rate": 1e-2,
        "lora_r": 8,
        "kl_coef": 0.01,
        "save_steps": 100,
    }
    return ReinforceRunConfig(**{**values, **overrides})


def prepared(store, tiny_model_dir, tmp_path, **overrides):
    data = tmp_path / "prompts.jsonl"
    data.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS), encoding="utf-8")
    return jobs.prepare(store, "reinforce", config(tiny_model_dir, **overrides), data_file=str(data))


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_model_dir):
    """One 20-step run per baseline, same seed: {baseline: (store, run)}."""
    root = tmp_path_factory.mktemp("reinforce")
    store = Store(root / "workspace")
    done = {}
    for baseline in reinforce.BASELINES:
        run = prepared(store, tiny_model_dir, root, baseline=baseline)
        assert jobs.execute(store, run.id) == 0
        done[baseline] = (store, run)
    return done


def mean(values) -> float:
    return sum(values) / len(values)


@pytest.mark.parametrize("baseline", reinforce.BASELINES)
def test_each_baseline_raises_the_mean_reward_with_the_kl_finite(runs, baseline):
    store, run = runs[baseline]
    folder = jobs.run_dir(store, run.id)
    rows = [r for r in read_metrics(folder) if "reward" in r]  # the training rows (not the final summary)
    rewards = [r["reward"] for r in rows]
    assert len(rewards) == 20 and store.get_run(run.id).status == "done"
    assert mean(rewards[-5:]) > mean(rewards[:5]) + 0.05, rewards
    assert all(math.isfinite(r["kl"]) and math.isfinite(r["loss"]) for r in rows)
    assert rows[-1]["completions/mean_length"] > 0 and (folder / "adapter" / "adapter_config.json").is_file()

    samples = read_samples(folder)  # one prompt's K completions, best first, at steps 1, 5, 10, 15, 20
    assert sorted({s["step"] for s in samples}) == [1, 5, 10, 15, 20]
    assert all(isinstance(s["reward"], float) and s["prompt"] in PROMPTS for s in samples)

    yaml = (folder / "config.yaml").read_text().splitlines()
    keys = [line.split(":")[0] for line in yaml if line and not line.startswith(" ")]
    assert keys[0] == "model" and keys.index("max_length") < keys.index("reward") < keys.index("baseline")


def test_leave_one_out_gives_smaller_weights_than_none(runs):
    """The gradient's variance grows with E[(reward − baseline)²]: leave-one-out keeps it well below none's."""
    weights = {
        b: mean([r["weights/mean_square"] for r in read_metrics(jobs.run_dir(s, run.id)) if "reward" in r])
        for b, (s, run) in runs.items()
    }
    assert weights["leave-one-out"] < weights["none"] / 2, weights
    assert weights["running-mean"] < weights["none"], weights


def test_leave_one_out_and_the_completion_mask():
    returns = torch.tensor([1.0, 2.0, 3.0, 6.0, 0.0, 0.0, 0.0, 4.0])  # two prompts, K = 4
    assert leave_one_out(returns, 4).tolist() == pytest.approx([11 / 3, 10 / 3, 3.0, 2.0, 4 / 3, 4 / 3, 4 / 3, 0.0])
    ids = torch.tensor([[5, 2, 7, 7], [5, 6, 7, 8]])  # 2 = end of sequence
    assert completion_mask(ids, [2]).tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]


class StopAfter(StopSignal):
    """Asks the run to stop once its metrics reach `steps` (as a Stop pressed mid-run would)."""

    def __init__(self, folder, steps: int) -> None:
        super().__init__()
        self.folder, self.steps = folder, steps

    def is_set(self) -> bool:
        rows = read_metrics(self.folder)
        return super().is_set() or bool(rows) and rows[-1]["step"] >= self.steps


def test_a_stopped_run_resumes_from_its_checkpoint(tiny_model_dir, tmp_path, monkeypatch):
    store = Store(tmp_path / "workspace")
    run = prepared(store, tiny_model_dir, tmp_path, baseline="running-mean", max_steps=8, batch_size=8)
    folder = jobs.run_dir(store, run.id)
    assert jobs.execute(store, run.id, stop=StopAfter(folder, 3)) == 0
    assert store.get_run(run.id).status == "stopped"
    stopped_at = read_metrics(folder)[-1]["step"]
    checkpoint = latest_checkpoint(folder)
    assert stopped_at < 8 and checkpoint.endswith(f"checkpoint-{stopped_at}")
    saved = json.loads((folder / "checkpoints" / f"checkpoint-{stopped_at}" / "baseline.json").read_text())
    assert isinstance(saved["running_mean"], float)  # the running mean goes on from where it was

    monkeypatch.setattr(jobs, "submit", lambda store, run: store.get_run(run.id))  # resume here, not in a child
    assert jobs.resume(store, run.id).status == "queued"
    assert jobs.execute(store, run.id) == 0
    assert store.get_run(run.id).status == "done"
    steps = [r["step"] for r in read_metrics(folder) if "reward" in r]
    assert steps == list(range(1, 9)), steps  # each step once: the resumed run went on from the checkpoint
