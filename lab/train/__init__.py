"""Training methods, one module each; METHODS maps a method name to its config, runner and data snapshot."""

from collections.abc import Callable
from dataclasses import dataclass

from lab.train.sft import SFTRunConfig, run_sft, snapshot_data


@dataclass(frozen=True)
class Method:
    config: type
    run: Callable  # (config, run_dir, resume) -> adapter folder
    snapshot: Callable  # (store, run_dir, data_file, origins) -> data file in the run folder


METHODS = {"sft": Method(SFTRunConfig, run_sft, snapshot_data)}
