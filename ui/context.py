"""What every tab shares: the workspace, the loaded model and the presets."""

from __future__ import annotations

import contextlib
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

from lab.models import ModelError, ModelManager
from lab.presets import (
    ExperimentPreset,
    ModelPreset,
    ScenarioPreset,
    experiment_presets,
    model_presets,
    scenario_presets,
)
from lab.store import Store


@dataclass
class AppContext:
    store: Store
    models: ModelManager = field(default_factory=ModelManager)
    model_presets: dict[str, ModelPreset] = field(default_factory=model_presets)
    experiment_presets: dict[str, ExperimentPreset] = field(default_factory=experiment_presets)
    scenarios: dict[str, ScenarioPreset] = field(default_factory=scenario_presets)
    # Where downloads are written: private to this process (mode 0700), one file per kind, overwritten in place.
    exports: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="alignment-lab-exports-")))
    _loader: threading.Thread | None = None

    def load_in_background(self, model: str, precision: str, device: str) -> None:
        """Start loading a model without blocking the page; progress shows in models.status."""

        def work() -> None:
            # The manager's status already holds the one-sentence reason, which the UI shows.
            with contextlib.suppress(ModelError):
                self.models.load(model, precision, device)

        self.models.loading = True
        self._loader = threading.Thread(target=work, name="model-loader", daemon=True)
        self._loader.start()

    def wait_for_model(self, timeout: float | None = None) -> None:
        if self._loader is not None:
            self._loader.join(timeout)
