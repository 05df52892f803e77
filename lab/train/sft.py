"""Supervised fine-tuning with a LoRA adapter (optionally on a 4-bit base: QLoRA), through TRL's SFTTrainer.

The data is the run's own data.jsonl (TRL's conversational `messages` format),
written when the run is prepared, so config.yaml alone reproduces the run:

    python -m lab train sft --preset cpu-default --data demos.jsonl --set max_steps=30
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from lab.models import DEFAULT_MODEL, DEVICES, PRECISIONS
from lab.train.common import LoraSettings, help_field, latest_checkpoint


@dataclass
class SFTRunConfig(LoraSettings):
    """Everything an SFT run needs; saved as the run's config.yaml."""

    # model
    model: str = help_field(DEFAULT_MODEL, "Base model: the embedded default, a local folder, or a hub id.")
    precision: str = help_field("fp32", "fp32 / bf16 / fp16, or 4bit for QLoRA (NF4 base, LoRA in full precision).")
    device: str = help_field("auto", "Where to train: auto, cpu, cuda or mps.")
    mixed_precision: bool = help_field(
        True,
        "Compute in bf16 where the hardware does it natively (recent GPUs; CPUs with AVX512-BF16 or AMX), "
        "keeping the weights in their precision: faster and lighter, as TRL does by default.",
    )
    init_adapter: str = help_field("", "Continue training this adapter folder instead of starting a new one.")
    # data
    data: str = help_field("", "JSONL file of conversations in TRL's `messages` format.")
    eval_fraction: float = help_field(0.1, "Share of the conversations held out for the validation loss.")
    max_length: int = help_field(512, "Longest training sequence in tokens; longer ones are truncated.")
    # optimisation
    learning_rate: float = help_field(2e-4, "Peak learning rate (LoRA tolerates higher rates than full tuning).")
    epochs: float = help_field(3.0, "Passes over the data (ignored when max_steps > 0).")
    max_steps: int = help_field(-1, "Stop after this many optimizer steps; -1 = run the epochs.")
    batch_size: int = help_field(4, "Conversations per step on the device.")
    grad_accum: int = help_field(1, "Steps whose gradients add up before one optimizer update.")
    warmup_ratio: float = help_field(0.0, "Share of the steps spent ramping the learning rate up.")
    seed: int = help_field(42, "Random seed for the split, the adapter's initialisation and shuffling.")
    logging_steps: int = help_field(1, "Write a metrics row every this many steps.")
    save_steps: int = help_field(25, "Write a checkpoint (for resume) every this many steps.")
    sample_every: int = help_field(
        20, "Every this many steps, write the model's answer to two held-out prompts to samples.jsonl (0 = never)."
    )

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS or self.precision == "8bit":
            raise ValueError(f"precision: '{self.precision}' is not trainable here; use fp32, bf16, fp16 or 4bit")
        if self.device not in DEVICES:
            raise ValueError(f"device: '{self.device}' is not one of {', '.join(DEVICES)}")
        if not 0 <= self.eval_fraction < 0.5:
            raise ValueError(f"eval_fraction: {self.eval_fraction} should be in [0, 0.5)")
        for name in ("lora_r", "lora_alpha", "batch_size", "grad_accum", "max_length", "logging_steps", "save_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be at least 1, got {getattr(self, name)}")
        if self.sample_every < 0:
            raise ValueError(f"sample_every: must be 0 (never) or more, got {self.sample_every}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate: must be positive, got {self.learning_rate}")
        if self.max_steps == 0 or (self.max_steps < 0 and self.epochs <= 0):
            raise ValueError("max_steps: set max_steps > 0 or epochs > 0")


def snapshot_data(store, run_dir: Path, data_file: str = "", origins: list[str] | None = None) -> Path:
    """Freeze the training data into the run folder: a validated copy of a file, or the workspace's demonstrations."""
    from lab.data import DataFileError, export_demonstrations, read_records, to_demonstrations

    run_dir.mkdir(parents=True, exist_ok=True)
    target = run_dir / "data.jsonl"
    if not data_file:
        export_demonstrations(store, target, origins)
        return target
    try:
        demos = to_demonstrations(read_records(data_file), source=str(data_file))
    except DataFileError as err:
        raise DataFileError(f"{Path(data_file).name}, {err}") from err
    target.write_text("".join(json.dumps({"messages": d.messages}) + "\n" for d in demos), encoding="utf-8")
    return target


def load_examples(path: str | Path, eval_fraction: float, seed: int):
    """data.jsonl → (train, eval) datasets of prompt/completion pairs, split by conversation."""
    from datasets import Dataset

    from lab.data import sft_examples
    from lab.store import Demonstration

    lines = Path(path).read_text(encoding="utf-8").splitlines()
    demos = [Demonstration(json.loads(line)["messages"]) for line in lines if line.strip()]
    if not demos:
        raise ValueError("The training data is empty: add demonstrations first.")
    conversations = Dataset.from_list([{"index": i} for i in range(len(demos))])
    n_eval = int(len(demos) * eval_fraction)
    if n_eval == 0:
        return Dataset.from_list(sft_examples(demos)), None
    split = conversations.train_test_split(test_size=n_eval, seed=seed)
    pick = lambda part: Dataset.from_list(sft_examples([demos[i] for i in split[part]["index"]]))  # noqa: E731
    return pick("train"), pick("test")


def sample_prompts(examples, count: int = 2) -> list[list[dict]]:
    """The conversations (up to the answer) of the first few validation examples, or training ones if none."""
    return [row["prompt"] for row in examples.select(range(min(count, len(examples))))]


def native_bf16(device: str) -> bool:
    """Does this device compute in bf16 natively (so autocast speeds training up instead of emulating it)?"""
    import torch

    if device == "cuda":
        return torch.cuda.is_bf16_supported()
    if device == "cpu":
        probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)
    return False


def build_trainer(config: SFTRunConfig, run_dir: Path):
    """The TRL SFTTrainer for this config: base model (maybe 4-bit), LoRA adapter, callbacks."""
    from peft import PeftModel
    from trl import SFTConfig, SFTTrainer

    from lab.models import load_model
    from lab.train.callbacks import MetricsCallback, SamplesCallback, StopCallback

    lm = load_model(config.model, config.precision, config.device, progress=lambda m: print(m, flush=True))
    train, evaluation = load_examples(config.data, config.eval_fraction, config.seed)
    cuda = lm.device == "cuda"
    quantized = config.precision == "4bit"
    peft_config = None
    model = lm.model
    if config.init_adapter:
        model = PeftModel.from_pretrained(model, config.init_adapter, is_trainable=True)
    else:
        peft_config = config.lora_config()
    steps_between_evals = max(config.logging_steps, 5)
    args = SFTConfig(
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
        max_length=config.max_length,
        completion_only_loss=True,  # loss on the assistant turns only
        logging_steps=config.logging_steps,
        logging_first_step=True,
        eval_strategy="steps" if evaluation is not None else "no",
        eval_steps=steps_between_evals,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=2,
        report_to="none",
        disable_tqdm=False,  # a terminal progress bar on the CLI and in log.txt
        use_cpu=lm.device == "cpu",
        bf16=config.mixed_precision and config.precision != "fp16" and native_bf16(lm.device),
        fp16=config.precision == "fp16",
        # QLoRA on a GPU: recompute activations and page the optimizer state to fit in memory.
        gradient_checkpointing=cuda and quantized,
        optim="paged_adamw_8bit" if cuda and quantized else "adamw_torch",
        dataloader_pin_memory=cuda,
    )
    return SFTTrainer(
        model=model,
        args=args,
        train_dataset=train,
        eval_dataset=evaluation,
        processing_class=lm.tokenizer,
        peft_config=peft_config,
        callbacks=[
            MetricsCallback(run_dir),
            StopCallback(),
            SamplesCallback(
                run_dir, sample_prompts(evaluation if evaluation is not None else train), config.sample_every
            ),
        ],
    )


def run_sft(config: SFTRunConfig, run_dir: Path, resume: bool = False) -> Path:
    """Train, then save the adapter (also when stopped early); returns the adapter folder."""
    trainer = build_trainer(config, run_dir)
    checkpoint = latest_checkpoint(run_dir) if resume else None
    trainer.train(resume_from_checkpoint=checkpoint)
    adapter = run_dir / "adapter"
    trainer.model.save_pretrained(adapter, safe_serialization=True)
    return adapter
