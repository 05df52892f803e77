"""RL on the tiny model through the job engine: RLOO and GRPO raise a length reward with a finite KL to the base,
write their rollouts with rewards to samples.jsonl, stop and resume; a trained reward model rewards a run on a
4-bit base end to end."""

import json
import shutil

import pytest

from lab import jobs
from lab.rewards import build_reward
from lab.store import Store
from lab.train import get_method
from lab.train.runs import StopSignal, latest_checkpoint, read_metrics, read_samples

TOPICS = ["the sea", "a cat", "rain", "bread", "the moon", "snow"]
LONG = "length:40"  # more characters than 8 random tokens usually make: the policy learns to pick longer tokens


@pytest.fixture
def store(tmp_path):
    return Store(tmp_path / "workspace")


@pytest.fixture
def prompts_file(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"Tell me about {t}."}) + "\n" for t in TOPICS), encoding="utf-8")
    return path


def prepared(store, method, tiny_model_dir, prompts_file, **overrides):
    values = {
        "model": str(tiny_model_dir),
        "device": "cpu",
        "max_steps": 12,
        "batch_size": 8,
        "num_generations": 4,
        "max_completion_length": 8,
        "learning_rate": 2e-2,
        "reward": LONG,
        "save_steps": 100,
        "sample_every": 4,
    }
    config = get_method(method).config(**{**values, **overrides})
    return jobs.prepare(store, method, config, data_file=str(prompts_file))


@pytest.mark.parametrize("method", ["rloo", "grpo"])
def test_rl_raises_the_reward_with_a_finite_kl(store, tiny_model_dir, prompts_file, method):
    # A light KL weight: RLOO takes the KL off the reward, and a length reward's differences are a few hundredths.
    run = prepared(store, method, tiny_model_dir, prompts_file, kl_coef=0.001)
    assert jobs.execute(store, run.id) == 0
    folder = jobs.run_dir(store, run.id)
    rows = [r for r in read_metrics(folder) if "reward" in r]
    rewards = [r["reward"] for r in rows]
    assert sum(rewards[-4:]) / 4 > sum(rewards[:4]) / 4, rewards
    assert all(0 <= r["kl"] < 50 for r in rows)  # finite: the reference is the base with the adapter off
    for key, _ in get_method(method).panels[:6]:  # TRL's metric keys, as the curves read them
        assert key in rows[-1], key
    samples = read_samples(folder)
    assert {s["step"] for s in samples} == {4, 8, 12}
    assert len(samples) == 3 * 4 and all(isinstance(s["reward"], float) and s["completion"] for s in samples)


def test_an_rl_run_stops_and_resumes_from_its_checkpoint(store, tiny_model_dir, prompts_file, monkeypatch):
    run = prepared(store, "rloo", tiny_model_dir, prompts_file, max_steps=3, save_steps=1)
    early = StopSignal()
    early.set()
    assert jobs.execute(store, run.id, stop=early) == 0
    folder = jobs.run_dir(store, run.id)
    assert store.get_run(run.id).status == "stopped" and (folder / "adapter").is_dir()
    assert read_metrics(folder)[-1]["step"] == 1 and latest_checkpoint(folder) is not None

    monkeypatch.setattr(jobs, "start_next", lambda store: None)  # resume here, not in a child process
    jobs.resume(store, run.id)
    assert jobs.execute(store, run.id) == 0
    assert store.get_run(run.id).status == "done"
    assert [r["step"] for r in read_metrics(folder) if "reward" in r][-2:] == [2, 3]


def test_a_trained_reward_model_rewards_rl_on_a_4bit_base(trained, tiny_model_dir, prompts_file, tmp_path):
    reward_store, reward_run = trained
    shutil.copytree(reward_store.root, tmp_path / "rl-workspace")  # the reward run's workspace, left as it was
    store = Store(tmp_path / "rl-workspace")
    spec = f"model:{reward_run.id} - 0.1*refusal"
    reward = build_reward(spec, store, "cpu")
    assert reward.formula() == f"r = 1.0 × reward_model({reward_run.id}) − 0.1 × [refuses]"
    prompt = [{"role": "user", "content": "Tell me about rain."}]
    scores = reward([prompt, prompt], ["It is nice. banana", "It is nice."])
    assert scores[0] > scores[1]  # the reward run learned to like "banana"

    run = prepared(store, "grpo", tiny_model_dir, prompts_file, reward=spec, precision="4bit", max_steps=2)
    assert jobs.execute(store, run.id) == 0, store.get_run(run.id).error
    rows = [r for r in read_metrics(jobs.run_dir(store, run.id)) if "reward" in r]
    assert len(rows) == 2 and all(r["kl"] == r["kl"] for r in rows)
    assert all("rewards/model:" + reward_run.id in r for r in rows)  # one curve per term


def test_two_runs_one_without_a_kl_penalty_are_told_apart_in_one_line():
    from lab.curves import kl_note

    note = kl_note(("free", "held"), ({"kl_coef": 0.0}, {"kl_coef": 0.05}))
    assert note.startswith("free has no KL penalty") and "held's penalty (kl_coef 0.05)" in note
    assert kl_note(("a", "b"), ({"kl_coef": 0.1}, {"kl_coef": 0.05})) == ""  # both held: nothing to explain
    assert kl_note(("a", "b"), ({"kl_coef": 0.0}, {"learning_rate": 1.0})) == ""  # not two RL runs


def test_the_training_form_queues_rl_on_a_scenarios_questions_and_shows_the_reward_formula(tmp_path, monkeypatch):
    import gradio as gr

    from lab import Lab
    from ui.training import build_training, queue_run, reward_formula

    lab = Lab(tmp_path / "ws")
    with gr.Blocks():
        form = build_training(lab)
    values = {c: c.value for c in (form.method, form.preset, form.name, form.start_from, form.origins, form.prompts)}
    values |= {c: c.value for c in form.votes.inputs} | {form.data_file: None, form.method: "rloo"}
    values |= {control: control.value for control in form.fields["rloo"].values()}
    values |= {form.prompts: "Truthfulness", form.fields["rloo"]["reward"]: "0.5*length:200 - contains:sorry"}
    monkeypatch.setattr(jobs, "submit", lambda store, run: store.get_run(run.id))  # queued, never started here
    message, run_id = queue_run(lab, form, values)
    run = lab.store.get_run(run_id)
    assert run.provenance["data"]["source"] == "scenario Truthfulness's questions" and run_id in message
    assert run.config["reward"] == "0.5*length:200 - contains:sorry"
    assert reward_formula("0.5*length:200 - contains:sorry").startswith("Reward: `r = 0.5 × ")
    assert reward_formula("nonsense:1").startswith("⚠ ")
