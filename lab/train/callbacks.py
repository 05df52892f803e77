"""TRL/transformers callbacks: metrics rows for the UI, stop at a step boundary, samples while training.

Imported only by the training process, never on the app's path to its first page.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

from lab.decoding import decoding
from lab.train.runs import StopSignal


def peak_memory_mb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / (2**20 if sys.platform == "darwin" else 2**10)


class MetricsCallback(TrainerCallback):
    """Appends one JSON row per log step to metrics.jsonl: what the UI's curves and progress bar read."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / "metrics.jsonl"
        self.start = time.monotonic()
        self.first_step = 0

    def on_train_begin(self, args, state, control, **kwargs):
        self.start, self.first_step = time.monotonic(), state.global_step  # a resumed run starts mid-way

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero:  # one row per step under `accelerate launch`, from the first process
            return
        elapsed = time.monotonic() - self.start
        row = {"step": state.global_step, "max_steps": state.max_steps, "epoch": state.epoch, "time": elapsed}
        row.update({k: v for k, v in (logs or {}).items() if isinstance(v, int | float)})
        if "num_tokens" in row and elapsed > 0:
            row["tokens_per_second"] = row["num_tokens"] / elapsed
        steps_done = state.global_step - self.first_step
        if steps_done > 0:
            row["seconds_per_step"] = elapsed / steps_done
        row["memory_mb"] = peak_memory_mb()
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")


def any_process(flag: bool, device) -> bool:
    """Is `flag` set in any process of a data-parallel run? All of them stop at the same step, or the others
    would wait for the stopped one forever. A single process answers its own flag."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return flag
    votes = torch.tensor([float(flag)], device=device)
    torch.distributed.all_reduce(votes, op=torch.distributed.ReduceOp.MAX)
    return bool(votes.item())


class StopCallback(TrainerCallback):
    """Ends training at the next step boundary once this run's stop is set; the caller then saves the adapter."""

    def __init__(self, stop: StopSignal) -> None:
        self.stop = stop

    def on_step_end(self, args, state, control, **kwargs):
        if any_process(self.stop.is_set(), args.device) and not control.should_training_stop:
            print("Stop requested: the adapter learned so far is being saved.", flush=True)
            control.should_training_stop = True
            control.should_save = True  # a checkpoint to resume from


class SamplesCallback(TrainerCallback):
    """Every `every` steps (and at the end), write the model's greedy answer to a few held-out prompts
    to samples.jsonl, so the taught behaviour can be watched as it appears."""

    def __init__(self, run_dir: Path, prompts: list[list[dict]], every: int, max_new_tokens: int = 48) -> None:
        self.path = run_dir / "samples.jsonl"
        self.prompts, self.every, self.max_new_tokens = prompts, every, max_new_tokens

    def on_step_end(self, args, state, control, model=None, processing_class=None, **kwargs):
        last = state.global_step >= state.max_steps or control.should_training_stop
        if not state.is_world_process_zero:  # under accelerate launch, one process writes the samples
            return
        if self.every > 0 and self.prompts and (state.global_step % self.every == 0 or last):
            self.sample(state.global_step, model, processing_class)

    def sample(self, step: int, model, tokenizer) -> None:
        was_training = model.training
        model.eval()
        with torch.inference_mode(), self.path.open("a", encoding="utf-8") as f:
            for messages in self.prompts:
                ids = tokenizer.apply_chat_template(
                    messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
                )["input_ids"].to(model.device)
                with decoding(model, 1):
                    out = model.generate(
                        input_ids=ids,
                        attention_mask=torch.ones_like(ids),
                        do_sample=False,
                        max_new_tokens=self.max_new_tokens,
                        pad_token_id=tokenizer.pad_token_id,
                    )
                text = tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip()
                f.write(json.dumps({"step": step, "prompt": messages[-1]["content"], "completion": text}) + "\n")
        model.train(was_training)
