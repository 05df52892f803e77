"""Direct preference optimisation: a LoRA adapter (optionally on a 4-bit base) trained by TRL's DPOTrainer to
raise the chosen answer's likelihood over the rejected one's, relative to a reference model.

The data is the run's own data.jsonl (TRL's conversational prompt / chosen / rejected rows), frozen when the run
is prepared; whole prompts are held out, as for a reward model. The reference is the base with the adapter
disabled (TRL does this when it gets a LoRA config and no reference model), never a second copy of the weights;
continuing an adapter (an SFT run's, through `init_adapter`) makes TRL keep a frozen copy of that adapter, the
SFT policy, as the reference.

    python -m lab train dpo --preset cpu-default --data pairs.jsonl --max-steps 30 --beta 0.1
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lab.train.config import TrainConfig, help_field

LOSS_TYPES = ("sigmoid", "ipo", "robust")
REFERENCE_COLUMNS = ("ref_chosen_logps", "ref_rejected_logps")


@dataclass
class DPORunConfig(TrainConfig):
    """Everything a DPO run needs; saved as the run's config.yaml."""

    beta: float = help_field(
        0.1,
        "How far the policy may move from the reference: the implicit reward is beta x the log-probability ratio "
        "to the reference. Higher keeps the model closer to where it started; lower lets the preferences pull it "
        "further (DPO papers use 0.01-0.5). For ipo it is the regulariser tau.",
        low=0.001,
        high=10,
    )
    loss_type: str = help_field(
        "sigmoid",
        "sigmoid: DPO's logistic loss on the reward margin (Rafailov et al. 2023). ipo: a squared loss that aims "
        "the margin at 1/(2 beta) instead of pushing it without end, so it overfits small data sets less "
        "(Azar et al. 2023). robust: the logistic loss corrected for a share of flipped votes, set by "
        "label_smoothing (Chowdhury et al. 2024).",
        choices=LOSS_TYPES,
    )
    label_smoothing: float = help_field(
        0.0,
        "robust only: the share of preference votes assumed to be wrong (flipped), e.g. 0.1 for noisy annotators; "
        "0 is plain DPO.",
        low=0,
        high=0.5,
        high_open=True,
    )
    reference_free: bool = help_field(
        False,
        "Compare the chosen and rejected answers' log-probabilities directly, with no reference model: the margin "
        "is not measured against where the model started, so nothing holds the policy near it.",
    )

    def check(self) -> None:
        super().check()
        if self.label_smoothing and self.loss_type != "robust":
            raise ValueError(
                f"key 'label_smoothing' applies to loss_type robust only; set it to 0 for {self.loss_type}"
            )


def with_reference(rows: list[dict], reference_free: bool) -> list[dict]:
    """Reference-free rows carry reference log-probabilities of 0, so the margin is the policy's own."""
    if not reference_free:
        return rows
    return [{**row, **dict.fromkeys(REFERENCE_COLUMNS, 0.0)} for row in rows]


def given_reference(trainer_cls: type) -> type:
    """`trainer_cls` (TRL's DPOTrainer) that uses reference log-probabilities a dataset already carries.

    TRL 1.16 reads precomputed ones from the batch (`precompute_ref_log_probs=True`) but computes them for every
    dataset, and a dataset that has the columns already then fails on duplicated columns.
    """

    class GivenReferenceTrainer(trainer_cls):
        def _precompute_ref_logps(self, dataset, name: str, batch_size: int):
            if set(REFERENCE_COLUMNS) <= set(dataset.column_names):
                return dataset
            return super()._precompute_ref_logps(dataset, name, batch_size)

    return GivenReferenceTrainer


def drop_reference_adapter():
    """A callback that removes TRL's frozen copy of a continued adapter (named "ref") when training ends, so the
    run's adapter folder holds the trained adapter alone."""
    from transformers import TrainerCallback

    class DropReferenceAdapter(TrainerCallback):
        def on_train_end(self, args, state, control, model=None, **kwargs):
            if model is not None and "ref" in getattr(model, "peft_config", {}):
                model.delete_adapter("ref")

    return DropReferenceAdapter()


def build(config: DPORunConfig, run_dir: Path):
    """TRL's DPOTrainer for this config: the base (maybe 4-bit) with a LoRA adapter, its reference the adapter off."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from lab.train.common import load_for_training, training_args
    from lab.train.reward import split_by_prompt
    from lab.train.snapshot import read_rows

    rows = read_rows(config.data)
    if not rows:
        raise ValueError("The training data is empty: vote in the Ranking tab or import preferences first.")
    train, held_out = split_by_prompt(with_reference(rows, config.reference_free), config.eval_fraction, config.seed)
    lm, model, peft_config = load_for_training(config, kind="chat")
    args = training_args(
        DPOConfig,
        config,
        run_dir,
        lm.device,
        has_eval=bool(held_out),
        max_length=config.max_length,
        beta=config.beta,
        loss_type=[config.loss_type],
        label_smoothing=config.label_smoothing,
        precompute_ref_log_probs=config.reference_free,  # read from the rows' zero columns, see given_reference
    )
    trainer_cls = given_reference(DPOTrainer) if config.reference_free else DPOTrainer
    trainer = trainer_cls(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(train),
        eval_dataset=Dataset.from_list(held_out) if held_out else None,
        processing_class=lm.tokenizer,
        peft_config=peft_config,
        callbacks=[drop_reference_adapter()],
    )
    if len(trainer.train_dataset) == 0:
        raise ValueError(f"Every training prompt is longer than max_length={config.max_length} tokens: raise it.")
    return trainer
