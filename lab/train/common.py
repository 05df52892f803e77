"""What every method's trainer shares: the base and its LoRA adapter, TRL's arguments, and `fit`.

A method module builds its TRL trainer from these, so it holds only what is its
own (the data it reads, the trainer class, its extra arguments):

    lm, model, peft_config = load_for_training(config, kind="chat")
    args = training_args(SFTConfig, config, run_dir, lm.device, has_eval=True, completion_only_loss=True)
    trainer = SFTTrainer(model=model, args=args, ..., peft_config=peft_config)

and `fit` trains it, honouring the run's stop, then saves the adapter with its
model card and the final metrics.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lab.train.runs import StopSignal, latest_checkpoint


def native_bf16(device: str) -> bool:
    """Does this device compute in bf16 natively (so autocast speeds training up instead of emulating it)?"""
    import torch

    if device == "cuda":
        return torch.cuda.is_bf16_supported()
    if device == "cpu":
        probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)
    return False


def load_for_training(config: Any, kind: str = "chat") -> tuple[Any, Any, Any]:
    """(the loaded base, the model to train, the LoRA config for the trainer or None).

    A new adapter is created by the trainer from the LoRA config; continuing an adapter loads it trainable.
    `kind` is "chat" (a causal LM) or "reward" (a one-score sequence classifier whose head trains with it).
    """
    from peft import PeftModel
    from transformers import set_seed

    from lab.models import load_model

    # A new head (a reward model's score layer) and a new adapter are initialised from the global generator
    # before the trainer seeds it: seeding here makes the run depend on its config alone, not on what ran before.
    set_seed(config.seed)
    lm = load_model(config.model, config.precision, config.device, kind=kind, progress=lambda m: print(m, flush=True))
    if config.init_adapter:
        return lm, PeftModel.from_pretrained(lm.model, config.init_adapter, is_trainable=True), None
    return lm, lm.model, config.lora_config("SEQ_CLS" if kind == "reward" else "CAUSAL_LM")


def training_args(args_cls: type, config: Any, run_dir: Path, device: str, has_eval: bool, **extra: Any) -> Any:
    """A TRL config (SFTConfig, DPOConfig, RewardConfig, …) from the shared groups, plus the method's own `extra`."""
    cuda, quantized = device == "cuda", config.precision == "4bit"
    values = dict(
        output_dir=str(run_dir / "checkpoints"),
        learning_rate=config.learning_rate,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum,
        warmup_steps=config.warmup_ratio,  # a float in [0, 1) is a share of the steps
        lr_scheduler_type="cosine",
        seed=config.seed,
        logging_steps=config.logging_steps,
        logging_first_step=True,
        eval_strategy="steps" if has_eval else "no",
        eval_steps=max(config.logging_steps, 5),
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=2,
        report_to="none",
        disable_tqdm=False,  # a terminal progress bar on the CLI and in log.txt
        use_cpu=device == "cpu",
        # Only where bf16 is native: TRL's default bf16=True is emulated, many times slower, on AVX2-only CPUs.
        bf16=config.mixed_precision and config.precision != "fp16" and native_bf16(device),
        fp16=config.precision == "fp16",
        # QLoRA on a GPU: recompute activations and page the optimizer state to fit in memory.
        gradient_checkpointing=cuda and quantized,
        optim="paged_adamw_8bit" if cuda and quantized else "adamw_torch",
        dataloader_pin_memory=cuda,
    )
    return args_cls(**{**values, **extra})


def fit(trainer: Any, run_dir: Path, stop: StopSignal, resume: bool = False, card: str = "") -> Path:
    """Train (from the last checkpoint when resuming) until done or stopped, then save the adapter, its model
    card and final_metrics.json; returns the adapter folder. A stopped run keeps what it learned."""
    from lab.train.callbacks import MetricsCallback, StopCallback

    trainer.add_callback(MetricsCallback(run_dir))
    trainer.add_callback(StopCallback(stop))
    checkpoint = latest_checkpoint(run_dir) if resume else None
    trainer.train(resume_from_checkpoint=checkpoint)
    adapter = run_dir / "adapter"
    if trainer.is_world_process_zero():  # under `accelerate launch`, the first process writes the results
        trainer.model.save_pretrained(adapter, safe_serialization=True)
        if card:
            (adapter / "README.md").write_text(card, encoding="utf-8")
        final = final_metrics(trainer.state.log_history)
        (run_dir / "final_metrics.json").write_text(json.dumps(final, indent=1), encoding="utf-8")
    leave_process_group(trainer)
    return adapter


def leave_process_group(trainer: Any) -> None:
    """Under `accelerate launch`, wait for the first process to save, then leave the process group together: a
    process that exits with its group still up can abort ("terminate called without an active exception")."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        trainer.accelerator.wait_for_everyone()
        dist.destroy_process_group()


def final_metrics(log_history: list[dict]) -> dict:
    """The last value of every number the trainer logged (training loss, eval metrics, runtime …)."""
    final: dict = {}
    for row in log_history:
        final.update({k: v for k, v in row.items() if isinstance(v, int | float)})
    return final
