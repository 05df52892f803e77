"""REINFORCE with a baseline, the whole method in this file: sample, score, weight the log-probabilities, stay near
the reference.

One step, for P = batch_size / K prompts x, so B = P·K completions:

    1. sample K completions per prompt from the policy π    y_i ~ π(· | x)
    2. score each with the run's reward                     r_i = r(x, y_i)
    3. charge the KL to the reference π_ref                 R_i = r_i − β Σ_t [log π(y_it) − log π_ref(y_it)]
    4. subtract a baseline b_i that does not look at y_i    w_i = R_i − b_i
    5. step on the loss                                     L = −1/B Σ_i w_i Σ_t log π(y_it)

The policy π is the base with a LoRA adapter; the reference π_ref is the same base with the adapter disabled (PEFT's
`disable_adapter()`), never a second copy of the weights. A continued adapter (init_adapter) is held near the base.

∇L is the REINFORCE estimate of −∇ E[R] (Williams, 1992). A baseline that does not depend on y_i leaves it
unbiased; a good one makes the weights w_i small, and with them the variance of the estimate (the score
∇ log π has mean zero, so the estimate's spread grows with E[w²], logged as weights/mean_square). Three baselines:

    none            b_i = 0
    running-mean    b_i = an exponential moving average of the mean R of earlier batches
    leave-one-out   b_i = the mean R of the K − 1 other completions of the same prompt (RLOO: Kool et al. 2019,
                    Ahmadian et al. 2024)

With leave-one-out this is TRL's RLOOTrainer (a sequence-level KL penalty in the reward, no normalisation of the
weights, one gradient step per batch) written out; bench/reinforce_vs_rloo.py runs the two side by side. It is a
transformers Trainer, so the lab's metrics, stop, checkpoints, resume and adapter saving work as for every method.

    python -m lab train reinforce --preset cpu-default --data prompts.jsonl --set baseline=running-mean
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lab.decoding import decoding
from lab.train.config import RolloutSettings, TrainConfig, help_field

if TYPE_CHECKING:
    import torch

BASELINES = ("none", "running-mean", "leave-one-out")

# The curves of a run: metric key in metrics.jsonl → panel title (TRL's keys where TRL logs the same thing).
PANELS = (
    ("reward", "mean reward"),
    ("reward_std", "reward spread (std over the batch)"),
    ("kl", "KL to the reference (per token)"),
    ("completions/mean_length", "completion length (tokens)"),
    ("weights/mean_square", "mean (reward − baseline)²: the gradient's variance grows with it"),
    ("weights/std", "spread of the weights (reward − baseline)"),
    ("baseline", "baseline (mean over the batch)"),
    ("loss", "training loss"),
)


@dataclass
class ReinforceRunConfig(RolloutSettings, TrainConfig):
    """Everything a REINFORCE run needs; saved as the run's config.yaml (model, LoRA, optimisation, data, then the
    rollouts, then the fields below). batch_size counts completions, as TRL's RL trainers do: batch_size / K
    prompts per step."""

    baseline: str = help_field(
        "leave-one-out",
        "What each completion's reward is compared with: none (plain REINFORCE, the noisiest), running-mean (a "
        "moving average of past rewards) or leave-one-out (the mean reward of the other K − 1 completions of the "
        "same prompt: RLOO).",
        choices=BASELINES,
    )
    baseline_decay: float = help_field(
        0.9, "running-mean only: the moving average keeps this share of itself each step.", low=0, high=0.999
    )

    def check(self) -> None:
        super().check()
        if self.batch_size % self.num_generations:
            raise ValueError(
                f"key 'batch_size': {self.batch_size} completions per step must hold whole groups of "
                f"num_generations = {self.num_generations} completions of one prompt: make it a multiple of "
                f"{self.num_generations}."
            )


# The math, as small pure functions.


def completion_mask(completion_ids: torch.Tensor, eos_ids: list[int]) -> torch.Tensor:
    """(B, T) sampled ids → (B, T) 1.0 up to and including each row's first end-of-sequence token, 0.0 after."""
    import torch

    is_eos = torch.isin(completion_ids, torch.tensor(eos_ids, device=completion_ids.device))  # (B, T)
    T = completion_ids.shape[1]
    first = torch.where(is_eos.any(1), is_eos.int().argmax(1), T)  # (B,) index of the first EOS, or T
    return (torch.arange(T, device=completion_ids.device) <= first[:, None]).float()  # (B, T)


def token_logps(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, n: int, temperature: float):
    """log π(y_t | x, y_<t) of the last n tokens of each row, under the sampling temperature: (B, T) → (B, n)."""
    position_ids = (attention_mask.cumsum(1) - 1).clamp(min=0)  # (B, T): left padding does not shift positions
    logits = model(
        input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, logits_to_keep=n + 1
    ).logits  # (B, n + 1, V)
    logits = logits[:, :-1].float() / temperature  # (B, n, V): the logits that predicted each completion token
    targets = input_ids[:, -n:].unsqueeze(-1)  # (B, n, 1)
    return logits.gather(-1, targets).squeeze(-1) - logits.logsumexp(-1)  # (B, n)


def leave_one_out(returns: torch.Tensor, k: int) -> torch.Tensor:
    """(B,) returns, K consecutive ones per prompt → (B,) the mean of the other K − 1 of each one's group."""
    grouped = returns.view(-1, k)  # (P, K)
    return ((grouped.sum(1, keepdim=True) - grouped) / (k - 1)).view(-1)  # (B,)


def reinforce_loss(logps: torch.Tensor, mask: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """−1/B Σ_i w_i Σ_t log π(y_it): (B, T) log-probs, (B, T) mask, (B,) weights → a scalar."""
    return -(weights * (logps * mask).sum(1)).mean()


# The trainer: transformers' Trainer whose step first samples (rollout), then takes the gradient (compute_loss).
# Written as a mixin that build() puts in front of Trainer, so that importing this module (the registry does, on
# the app's way to its first page) loads no torch.


class Reinforce:
    def __init__(self, *, config: ReinforceRunConfig, reward: Any, samples_path: Path, **kwargs: Any) -> None:
        super().__init__(data_collator=lambda rows: rows, **kwargs)  # a batch is the list of its prompt rows
        self.config, self.reward, self.samples_path = config, reward, samples_path
        self.running_mean: float | None = None  # the running-mean baseline; saved with every checkpoint
        self.metrics: dict[str, list[float]] = defaultdict(list)  # averaged into the next metrics row
        self.sampled_at = -1  # the last step whose completions went to samples.jsonl
        self.num_tokens = 0  # prompt and completion tokens sampled in this session, for the tokens / s curve

    def training_step(self, model, inputs, num_items_in_batch=None):
        import torch

        with torch.no_grad():
            batch = self.rollout(model, inputs)  # steps 1-4: sample, score, weigh
        return super().training_step(model, batch, num_items_in_batch)  # step 5: compute_loss, backward

    def rollout(self, model, rows: list[dict]) -> dict[str, torch.Tensor]:
        """Sample K completions for each prompt of `rows`, score them, and weigh them: the batch compute_loss reads.
        Runs without gradient."""
        import torch

        cfg, tokenizer, K = self.config, self.processing_class, self.config.num_generations
        policy = self.accelerator.unwrap_model(model)
        prompts = [row["prompt"] for row in rows for _ in range(K)]  # B = P·K, each prompt K times in a row
        texts = [tokenizer.apply_chat_template(p, add_generation_prompt=True, tokenize=False) for p in prompts]
        encoded = tokenizer(texts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
        prompt_ids = encoded["input_ids"].to(self.args.device)  # (B, Tp), left-padded
        prompt_mask = encoded["attention_mask"].to(self.args.device)  # (B, Tp)

        # 1. sample: y ~ π(· | x), the policy in eval mode (no dropout) as a user would sample it
        policy.eval()
        with decoding(policy, len(prompts)):
            out = policy.generate(
                input_ids=prompt_ids,
                attention_mask=prompt_mask,
                do_sample=True,
                temperature=cfg.temperature,
                top_k=0,
                top_p=1.0,  # the plain distribution, so that log π below is the one sampled from
                max_new_tokens=cfg.max_completion_length,
                pad_token_id=tokenizer.pad_token_id,
            )  # (B, Tp + Tc)
        completion_ids = out[:, prompt_ids.shape[1] :]  # (B, Tc)
        mask = completion_mask(completion_ids, self.eos_ids(policy))  # (B, Tc)
        lengths = mask.sum(1).long()  # (B,)
        sampled = [ids[:n] for ids, n in zip(completion_ids, lengths, strict=True)]  # B token lists, EOS included
        completions = tokenizer.batch_decode(sampled, skip_special_tokens=True)

        # 2. score: r_i
        rewards = self.reward(
            prompts=prompts,
            completions=[[{"role": "assistant", "content": text}] for text in completions],
            completion_ids=[ids.tolist() for ids in sampled],
            log_metric=lambda name, value: self.metrics[name].append(value),
        )
        rewards = torch.tensor(rewards, dtype=torch.float32, device=prompt_ids.device)  # (B,)

        # 3. KL to the reference, per sampled token: log π(y_t) − log π_ref(y_t), the adapter off for π_ref
        input_ids = torch.cat([prompt_ids, completion_ids], 1)  # (B, Tp + Tc)
        attention_mask = torch.cat([prompt_mask, mask.long()], 1)  # (B, Tp + Tc)
        Tc = completion_ids.shape[1]
        logps = token_logps(policy, input_ids, attention_mask, Tc, cfg.temperature)  # (B, Tc)
        with policy.disable_adapter():
            ref_logps = token_logps(policy, input_ids, attention_mask, Tc, cfg.temperature)  # (B, Tc)
        kl = (logps - ref_logps) * mask  # (B, Tc)
        returns = rewards - cfg.kl_coef * kl.sum(1)  # (B,) R_i

        # 4. baseline and weights: w_i = R_i − b_i
        baseline = self.baseline(returns)  # (B,)
        weights = returns - baseline  # (B,)

        self.log_rollout(rewards, kl, mask, weights, baseline, completion_ids, prompt_mask)
        self.write_samples(prompts[:K], completions[:K], rewards[:K].tolist())
        return {"input_ids": input_ids, "attention_mask": attention_mask, "completion_mask": mask, "weights": weights}

    def baseline(self, returns: torch.Tensor) -> torch.Tensor:
        """(B,) returns → (B,) baselines, by the config's kind."""
        import torch

        kind = self.config.baseline
        if kind == "leave-one-out":
            return leave_one_out(returns, self.config.num_generations)
        if kind == "running-mean":
            # The average of earlier batches only, so b_i does not depend on y_i (the first batch has no history:
            # its own mean stands in, once).
            mean = returns.mean().item()
            b = mean if self.running_mean is None else self.running_mean
            d = self.config.baseline_decay
            self.running_mean = mean if self.running_mean is None else d * self.running_mean + (1 - d) * mean
            return torch.full_like(returns, b)
        return torch.zeros_like(returns)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """5. the REINFORCE loss on the sampled batch, now with gradient (the policy in train mode, as trained)."""
        mask = inputs["completion_mask"]  # (B, Tc)
        T = self.config.temperature
        logps = token_logps(model, inputs["input_ids"], inputs["attention_mask"], mask.shape[1], T)  # (B, Tc)
        return reinforce_loss(logps, mask, inputs["weights"])

    def eos_ids(self, policy) -> list[int]:
        ids = policy.generation_config.eos_token_id
        ids = [ids] if isinstance(ids, int) else list(ids or [])
        return sorted({*ids, self.processing_class.eos_token_id} - {None})

    # Metrics, samples and the baseline's state around the Trainer's own logging and checkpoints.

    def log_rollout(self, rewards, kl, mask, weights, baseline, completion_ids, prompt_mask) -> None:
        m = self.metrics
        m["reward"].append(rewards.mean().item())
        m["reward_std"].append(rewards.std().item() if len(rewards) > 1 else 0.0)
        m["kl"].append((kl.sum() / mask.sum().clamp(min=1)).item())  # per completion token
        m["completions/mean_length"].append(mask.sum(1).mean().item())
        m["completions/clipped_ratio"].append((mask[:, -1] > 0).float().mean().item())  # no EOS before the limit
        m["weights/mean_square"].append(weights.pow(2).mean().item())
        m["weights/std"].append(weights.std().item() if len(weights) > 1 else 0.0)
        m["baseline"].append(baseline.mean().item())
        self.num_tokens += int(prompt_mask.sum() + mask.sum())
        m["num_tokens"] = [self.num_tokens]  # a running total (for tokens / s): the latest value, not an average

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:  # a training row: add the rollout metrics of the steps since the last row
            logs = {**logs, **{key: sum(values) / len(values) for key, values in self.metrics.items() if values}}
            self.metrics.clear()
        super().log(logs, start_time)

    def write_samples(self, prompts: list, completions: list[str], rewards: list[float]) -> None:
        """The K completions of one prompt, best first, on the first micro-batch of every sample_every-th step."""
        step, every = self.state.global_step + 1, self.config.sample_every  # the step these completions train
        due = every > 0 and (step == 1 or step % every == 0 or step == self.state.max_steps)
        if not due or step == self.sampled_at or not self.is_world_process_zero():  # the first process writes
            return
        self.sampled_at = step
        prompt = prompts[0] if isinstance(prompts[0], str) else prompts[0][-1]["content"]
        with self.samples_path.open("a", encoding="utf-8") as f:
            for text, reward in sorted(zip(completions, rewards, strict=True), key=lambda pair: -pair[1]):
                f.write(json.dumps({"step": step, "prompt": prompt, "completion": text, "reward": reward}) + "\n")

    def _save_checkpoint(self, model, trial) -> None:
        super()._save_checkpoint(model, trial)
        folder = Path(self._get_output_dir(trial=trial)) / f"checkpoint-{self.state.global_step}"
        (folder / "baseline.json").write_text(json.dumps({"running_mean": self.running_mean}), encoding="utf-8")

    def train(self, resume_from_checkpoint=None, **kwargs):
        saved = Path(resume_from_checkpoint or "") / "baseline.json"
        if resume_from_checkpoint and saved.is_file():
            self.running_mean = json.loads(saved.read_text(encoding="utf-8"))["running_mean"]
        return super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)


def make_reward(spec: str, run_dir: Path, device: str):
    """The run's reward as one callable with TRL's reward_funcs signature (lab.rewards); a `model:RUN_ID` term
    finds its reward run in the workspace that holds this run (workspace/runs/<run_id>)."""
    from lab.rewards import build_reward

    return build_reward(spec, Path(run_dir).resolve().parent.parent, device)


def build(config: ReinforceRunConfig, run_dir: Path):
    """The REINFORCE trainer for this config: the prompts of data.jsonl, the base (maybe 4-bit) with a LoRA adapter,
    the run's reward."""
    from datasets import Dataset
    from peft import get_peft_model, prepare_model_for_kbit_training
    from transformers import Trainer, TrainingArguments

    from lab.train.common import load_for_training, training_args
    from lab.train.snapshot import read_rows

    rows = read_rows(config.data)
    if not rows:
        raise ValueError("The training data is empty: add prompts, pick a scenario or give a file of prompts.")
    lm, model, peft_config = load_for_training(config, kind="chat")
    args = training_args(
        TrainingArguments,
        config,
        run_dir,
        lm.device,
        has_eval=False,  # no held-out evaluation: the reward curve is measured on fresh samples every step
        per_device_train_batch_size=config.batch_size // config.num_generations,  # prompts; K completions each
        remove_unused_columns=False,  # the rows' `prompt` is not a model input: keep it for the rollout
    )
    if peft_config is not None:  # a new adapter (init_adapter loads a trainable one instead)
        if config.precision == "4bit":
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=args.gradient_checkpointing)
        model = get_peft_model(model, peft_config)
    reward = make_reward(config.reward, run_dir, lm.device)
    trainer_cls = type("ReinforceTrainer", (Reinforce, Trainer), {})
    return trainer_cls(
        config=config,
        reward=reward,
        samples_path=Path(run_dir) / "samples.jsonl",
        model=model,
        args=args,
        train_dataset=Dataset.from_list([{"prompt": row["prompt"]} for row in rows]),
        processing_class=lm.tokenizer,
    )
