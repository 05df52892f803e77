"""`Lab`: the whole recipe as a Python object, the one way in that the app, the CLI and notebooks share.

    from lab import Lab

    lab = Lab("workspace")                      # the SQLite workspace and its runs folder
    lab.load()                                  # the embedded default model (or a folder, a hub id)
    print(lab.generate("Why is the sky blue?", max_new_tokens=32))
    lab.import_file("demos.jsonl")              # demonstrations, preferences or ratings, detected; all or nothing
    run = lab.train("sft", max_steps=20)        # a child process on the job engine
    run.wait()
    run.metrics                                 # a pandas DataFrame, one row per logged step
    print(lab.generate("Hi", adapter=run.id))   # chat with what it learned

Heavy libraries (torch, transformers, TRL) load when first needed, not on import.
"""

from __future__ import annotations

import contextlib
import functools
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab.models import ModelError, ModelManager
from lab.presets import (
    ExperimentPreset,
    ModelPreset,
    ScenarioPreset,
    experiment_presets,
    model_presets,
    scenario_presets,
)
from lab.refs import BASE_VIEW, DEFAULT_MODEL
from lab.store import Store

DATA_OPTIONS = ("origins", "exclude_annotators", "exclude_flagged", "scenario")  # Lab.train: the data, not the config


@dataclass
class TrainingRun:
    """A run on the job engine, as a notebook sees it: status, metrics, curves, wait and stop."""

    lab: Lab
    id: str

    def __repr__(self) -> str:
        return f"TrainingRun({self.id!r}, method={self.record.method!r}, status={self.status!r})"

    @property
    def record(self):
        """The run's row in the workspace (lab.store.Run)."""
        return self.lab.store.get_run(self.id)

    @property
    def status(self) -> str:
        from lab import jobs

        jobs.refresh(self.lab.store)
        return self.record.status

    @property
    def folder(self) -> Path:
        return self.lab.store.runs_dir / self.id

    @property
    def adapter(self) -> Path | None:
        """The saved adapter folder, once the run is done or stopped."""
        path = self.folder / "adapter"
        return path if (path / "adapter_config.json").is_file() else None

    @property
    def metrics(self):
        """One row per logged step (step, loss, learning_rate, …) as a pandas DataFrame."""
        import pandas as pd

        from lab.train.runs import read_metrics

        return pd.DataFrame(read_metrics(self.folder))

    def figure(self):
        """The method's curve panels as a plotly figure; for an evaluation with its report, the report's chart."""
        from lab.curves import curves
        from lab.evaluate import report_figure, report_table
        from lab.train import get_method
        from lab.train.runs import read_metrics

        report = self.report()
        if report is not None:
            return report_figure(report_table({self.id: report}))
        panels = get_method(self.record.method).panels
        return curves({self.record.name or self.id: read_metrics(self.folder)}, panels)

    def wait(self, timeout: float | None = None, poll_s: float = 1.0) -> str:
        """Block until the run has finished (driving the queue, so it needs no app); returns its final status.

        A progress bar shows the steps (a widget in a notebook, where the curves also redraw as steps arrive). An
        interrupt (Ctrl-C, the notebook's stop button) stops the run, waits until its adapter is saved, then raises
        KeyboardInterrupt again: the run ends 'stopped', and the cells after this one do not run."""
        from lab.notebook import follow

        return follow(self, timeout, poll_s)

    def report(self) -> dict | None:
        """An evaluation run's report (lab.train.evaluation), once it is done; None before or for a training run."""
        from lab.train.evaluation import read_report

        return read_report(self.folder)

    def stop(self) -> None:
        """Stop at the end of the current step; the adapter learned so far is saved."""
        from lab import jobs

        jobs.stop(self.lab.store, self.id)

    def resume(self) -> TrainingRun:
        """Queue a stopped or failed run again; it continues from its last checkpoint."""
        from lab import jobs

        jobs.resume(self.lab.store, self.id)
        return self

    def _repr_html_(self) -> str:
        """In a notebook: status and progress, key settings, last metrics (or the evaluation report)."""
        from lab.notebook import run_html

        return run_html(self)

    def _ipython_display_(self) -> None:
        """In a notebook: the summary, then the curves (or the evaluation's chart)."""
        from lab.notebook import show_run

        show_run(self)


class Lab:
    """One workspace and the one loaded model, with the presets; everything else is a method on it.

    `shared=True` (the app behind --share or a non-local host) means only the command line chooses the base model.
    """

    def __init__(self, workspace: str | Path | Store | None = None, *, shared: bool = False) -> None:
        self.store = workspace if isinstance(workspace, Store) else Store(workspace)
        self.models = ModelManager()
        self.model_presets: dict[str, ModelPreset] = model_presets()
        self.experiment_presets: dict[str, ExperimentPreset] = experiment_presets()
        self.scenarios: dict[str, ScenarioPreset] = scenario_presets()
        self.shared = shared
        self._loader: threading.Thread | None = None
        self._reward_model: tuple | None = None  # (key, LoadedModel) of the reward model Lab.score last used
        self._reward_lock = threading.Lock()  # one load at a time: Ranking and Chat may score at once
        self._app = None  # the app `app()` serves in a notebook (lab.notebook.InlineApp)
        self._room = None  # lab.room.Room, made when first asked for
        self._room_lock = threading.Lock()

    @classmethod
    def from_scenario(
        cls,
        name: str,
        workspace: str | Path | None = None,
        truthfulqa: str | Path | None = None,
        mix: bool = False,
    ) -> Lab:
        """A lab on a workspace seeded with a workshop scenario (lab.scenarios): a fresh folder under workspaces/,
        or `workspace` if it is empty (or `mix=True` adds the scenario to its work); `truthfulqa` is the CSV the
        TruthfulQA scenario is built from. `lab.seeded` holds how many prompts, demonstrations… were added."""
        from lab.scenarios import open_scenario

        store, counts = open_scenario(name, workspace, truthfulqa, mix)
        lab = cls(store)
        lab.seeded = counts
        return lab

    @functools.cached_property
    def exports(self) -> Path:
        """Where the app writes downloads: private to this process (mode 0700), one subfolder per browser
        session; made when first needed, so a notebook's Lab leaves no empty folder behind."""
        return Path(tempfile.mkdtemp(prefix="alignment-lab-exports-"))

    def __repr__(self) -> str:
        return f"Lab({str(self.store.root)!r}, model={self.models.status!r})"

    # the model

    def load(self, model: str = DEFAULT_MODEL, precision: str = "fp32", device: str = "auto"):
        """Load a base model (freeing the previous one) and return it; every view of it shares these weights."""
        return self.models.load(model, precision, device)

    def load_in_background(self, model: str, precision: str, device: str) -> None:
        """Start loading without blocking (the app serves its page meanwhile); progress is in `models.status`."""

        def work() -> None:
            # The manager's status holds the one-sentence reason, which the UI shows.
            with contextlib.suppress(ModelError):
                self.models.load(model, precision, device)

        self.models.loading = True
        self._loader = threading.Thread(target=work, name="model-loader", daemon=True)
        self._loader.start()

    def wait_for_model(self, timeout: float | None = None) -> None:
        if self._loader is not None:
            self._loader.join(timeout)

    def views(self) -> list[tuple[str, str]]:
        """(label, view) pairs that fit the loaded base: 'base' and its chat adapters."""
        from lab.adapters import list_views

        return list_views(self.store, self.models)

    def adapters(self, kind: str | None = "chat", base: str | None = None) -> dict:
        """Trained adapters by run id ({run id: lab.adapters.Adapter}), of a kind and fitting a base."""
        from lab.adapters import list_adapters

        return list_adapters(self.store, base=base, kind=kind)

    def generate(
        self,
        prompt: str,
        *,
        system: str | None = None,
        adapter: str = BASE_VIEW,
        history: list | None = None,
        **sampling,
    ) -> str:
        """One reply from the loaded model (the default one is loaded first if none is), as text.

        `adapter` is 'base' or a trained run's id; `sampling` are GenerationSettings fields
        (temperature, top_p, max_new_tokens, seed, stop). Greedy unless a temperature is given.
        """
        from lab.adapters import attach_adapter
        from lab.generate import GenerationSettings, build_messages
        from lab.generate import generate as run_generate

        self._model_ready()
        settings = GenerationSettings(**{"temperature": 0.0, **sampling})
        attach_adapter(self.store, self.models, adapter)
        with self.models.use(adapter) as lm:
            return run_generate(lm, build_messages(prompt, system, history), settings).text

    def compare(self, message: str, columns: list, *, histories: list[list] | None = None, **sampling) -> list[str]:
        """One message answered side by side by two or three columns in one batched pass; returns their replies.

        A column is a view ('base' or a trained run's id) or a (view, system prompt) pair; `histories` holds each
        column's earlier turns. `sampling` as in `generate`, one seed for every column. The Compare tab streams the
        same path (lab.compare.stream_compare)."""
        from lab.compare import stream_compare
        from lab.generate import GenerationSettings
        from lab.preferences import Side

        self._model_ready()
        sides = [Side(column) if isinstance(column, str) else Side(*column) for column in columns]
        settings = GenerationSettings(**{"temperature": 0.0, **sampling})
        replies = [""] * len(sides)
        for replies in stream_compare(self.store, self.models, message, sides, histories, settings):  # noqa: B007
            pass  # each yield holds every reply so far: the last one holds them whole
        return [reply.strip() for reply in replies]

    def _model_ready(self) -> None:
        """Wait for a model loading in the background, or load the default one if none is loaded."""
        if self.models.loaded is None:
            self.wait_for_model()
            if self.models.loaded is None:
                self.load()

    # the app in a notebook

    def app(self, port: int | None = None, height: int = 900):
        """Show the whole app in this notebook cell (Jupyter, JupyterLab, VS Code, Colab) over this workspace and this
        loaded model (no second copy; the default model starts loading if none is); returns the running app
        (lab.notebook.InlineApp: `.url`). Calling it again shows the running app again instead of starting another.

        It listens on 127.0.0.1 only, on `port` or the first free one from 7860; in Colab it shows through Colab's
        own proxy, which only this notebook's user reaches, never a public link. `close()` stops it."""
        from lab.notebook import start_app

        if self._app is not None and self._app.running:
            self._app.show()
            return self._app
        self._close_app()  # one whose server or watcher died: free what is left of it
        self._app = start_app(self, port, height)
        return self._app

    def _close_app(self) -> None:
        """Stop the app `app()` started, if any: its port is free once this returns, and its job watcher has ended."""
        if self._app is not None:
            self._app.close()
            self._app = None

    @property
    def room(self):
        """The workshop room (lab.room.Room): turns at the model for everyone the app serves, and the worker that
        makes Ranking's answers ahead. One per Lab, so every tab and person queues in one line."""
        from lab.room import Room

        with self._room_lock:
            if self._room is None:
                self._room = Room(self.store, self.models)
            return self._room

    def close(self) -> None:
        """Stop the app `app()` started and free the loaded model (and the reward model `score` keeps).
        Runs training now go on in their own processes; `load()` or the next generation loads a model again."""
        from lab.models import free_memory

        self._close_app()
        if self._room is not None:
            self._room.close()  # answers being made ahead stop; those kept in the workspace stay
        self.wait_for_model()  # a load in the background would set the model again after this
        self._reward_model = None
        self.models.loaded = None
        self.models.status = "No model loaded."
        free_memory()

    # data

    def import_file(self, path: str | Path, form: str | None = None, good_as_demonstrations: bool = False):
        """Import a file where its shape says (demonstrations, comparisons or unpaired ratings); all or nothing.

        `form` forces a shape (lab.formats.FORMATS), else it is detected. Completions labelled good or bad
        become unpaired ratings, never demonstrations, unless `good_as_demonstrations` takes the good ones as
        demonstrations. Returns a report whose summary() says what was recognised and imported.
        """
        from lab.formats import import_file

        return import_file(self.store, path, form, good_as_demonstrations)

    def demonstrations(self, status: str | None = "accepted", origins: list[str] | None = None) -> list:
        """The workspace's demonstrations (lab.store.Demonstration), newest first."""
        return self.store.list_demonstrations(origins=origins, status=status)

    def export_demonstrations(self, path: str | Path, origins: list[str] | None = None) -> int:
        """Write accepted demonstrations as TRL conversational JSONL; returns how many."""
        from lab.data import export_demonstrations

        return export_demonstrations(self.store, path, origins)

    def comparisons(self, exclude_annotators: tuple[str, ...] = ()) -> list:
        """The votes (lab.store.Comparison), oldest first, as a list that a notebook shows with its counts per
        annotator and the preference pairs they make (lab.notebook.PreferenceSet)."""
        from lab.notebook import PreferenceSet

        return PreferenceSet(self.store.list_comparisons(tuple(exclude_annotators)))

    def export_preferences(self, path: str | Path, exclude_annotators: tuple[str, ...] = (), negatives=False) -> int:
        """Write TRL's prompt/chosen/rejected pairs (or the both-bad answers) as JSONL; returns how many rows."""
        from lab.preferences import export_preferences

        return export_preferences(self.store, path, tuple(exclude_annotators), negatives=negatives)

    def count_pairs(
        self,
        data: str | Path = "",
        *,
        exclude_annotators: tuple[str, ...] = (),
        exclude_flagged: bool = False,
        scenario: str = "",
        eval_fraction: float = 0.1,
    ):
        """What a reward or DPO run on this data would train on (lab.train.snapshot.PairCount): pairs, votes,
        prompts, the prompts held out, and a warning when the pairs are too few. `data` is a file, else the
        workspace's votes less the annotators excluded or flagged, or only those of `scenario`'s queue."""
        from lab.train.snapshot import count_pairs, preference_votes

        votes, _ = preference_votes(self.store, str(data or ""), exclude_annotators, exclude_flagged, scenario)
        return count_pairs(votes, eval_fraction)

    def inspect_reward(self, run_id: str, batch_size: int = 8):
        """A reward run on its held-out pairs (lab.reward_report.RewardReport): accuracy with a 95% interval,
        the longer-answer baseline, the annotators' agreement, reward against length, the worst pairs."""
        from lab.reward_report import inspect_reward

        return inspect_reward(self.store, run_id, batch_size)

    def leaderboard(self):
        """Bradley-Terry scores of the model references that were compared, with 95% bootstrap intervals: a
        DataFrame (lab.arena.Leaderboard) that a notebook shows with its chart; `.figure()` is the chart."""
        from lab import arena

        return arena.Leaderboard(arena.leaderboard(arena.battles(self.comparisons())))

    def experiment(self, experiment_id: int):
        """A prompt experiment as answered so far (lab.notebook.ExperimentResults): `.grid`, questions down and one
        column per variant, and `.summary` per variant; a notebook shows both."""
        from lab import experiments
        from lab.notebook import ExperimentResults

        exp = self.store.get_experiment(experiment_id)
        results = self.store.list_results(experiment_id)
        return ExperimentResults(
            exp.name, experiments.results_grid(exp, results), experiments.variant_summary(exp, results)
        )

    def run_experiment(self, experiment_id: int, view: str = BASE_VIEW):
        """Fill an experiment's missing cells with the loaded model; returns the experiment (see `experiment`)."""
        from lab import experiments

        for _ in experiments.run_experiment(self.store, self.models, experiment_id, view=view):
            pass
        return self.experiment(experiment_id)

    def score(
        self,
        run_id: str,
        prompt: str | list[dict],
        responses: list[str],
        *,
        precision: str | None = None,
        device: str = "auto",
        batch_size: int = 8,
    ) -> list[float]:
        """One reward per response to `prompt` (a user message, or the conversation so far) from reward run
        `run_id`. The reward model is loaded beside the chat model on first use and kept for the next call."""
        from lab.rewards import load_reward_model, score

        adapter = self.store.runs_dir / run_id / "adapter" / "adapter_model.safetensors"
        # A resumed run rewrites its adapter: the file's time tells a stale copy from a current one.
        key = (run_id, precision, device, adapter.stat().st_mtime if adapter.is_file() else None)
        with self._reward_lock:
            if self._reward_model is None or self._reward_model[0] != key:
                self._reward_model = None  # free the previous one before loading the next
                loaded = load_reward_model(self.store, run_id, precision, device, progress=lambda _: None)
                self._reward_model = (key, loaded)
            lm = self._reward_model[1]
        return score(lm, [(prompt, response) for response in responses], batch_size)

    # training

    def config(self, method: str, preset: str = "cpu-default", **overrides: Any):
        """The method's config from a model preset and overrides, checked (a bad key or value names the key)."""
        from lab.train import get_method

        if preset not in self.model_presets:
            raise ValueError(f"preset '{preset}': choose one of {', '.join(self.model_presets)}")
        return get_method(method).config_for(self.model_presets[preset], overrides, where=method)

    def estimate_memory(self, method: str, preset: str = "cpu-default", **overrides: Any):
        """The estimated peak memory of training `method` with this preset and overrides (lab.train.memory),
        against the device's free memory: .summary(), .lines(), .fits."""
        from lab.train.memory import estimate_memory

        return estimate_memory(method, self.config(method, preset, **overrides))

    def train(
        self,
        method: str,
        *,
        data: str | Path = "",
        preset: str = "cpu-default",
        name: str = "",
        config=None,
        **overrides,
    ) -> TrainingRun:
        """Queue a training run of `method` on the workspace's data (or the file `data`) and start it when the
        device is free; returns the run at once. `config` is a ready config object; else `preset` + overrides.

        Keywords that choose the workspace's data go to it, not to the config: `origins` for demonstrations;
        `exclude_annotators`, `exclude_flagged` and `scenario` for preferences (see Lab.count_pairs)."""
        from lab import jobs

        options = {key: overrides.pop(key) for key in DATA_OPTIONS if key in overrides}
        config = config if config is not None else self.config(method, preset, **overrides)
        run = jobs.prepare(self.store, method, config, name=name, data_file=str(data or ""), **options)
        jobs.submit(self.store, run)
        return TrainingRun(self, run.id)

    def evaluate(
        self,
        models: str | list[str] = "base",
        *,
        prompts: str | Path = "",
        scenario: str = "",
        experiment: int | None = None,
        preset: str = "cpu-default",
        name: str = "",
        start: bool = True,
        **overrides: Any,
    ) -> TrainingRun:
        """Queue an evaluation (lab.train.evaluation) of `models` ('base' or chat run ids, each optionally
        '+prompt') on the prompts of a file, a scenario's questions or the workspace's pool; `.wait()`, then
        `.report()`. `experiment` asks the '+prompt' models with that prompt experiment's best variant (and adds
        them when none is listed): "prompt or fine-tune?". Overrides set the config (judge, truthfulqa, system…).

        A model or judge that does not exist is refused before anything is queued."""
        from lab import jobs
        from lab.experiments import best_prompt
        from lab.train.evaluation import check_references, with_prompt

        models = models if isinstance(models, str) else ",".join(models)
        if overrides.get("truthfulqa"):  # the run reads the workspace's copy: an upload or a moved file stays valid
            from lab.truthfulqa import read_questions

            read_questions(overrides["truthfulqa"])  # a file that is not of TruthfulQA's shape is refused here
            overrides["truthfulqa"] = str(self._keep(overrides["truthfulqa"]))
        config = self.config("eval", preset, models=models, **overrides)
        if experiment is not None:
            config = with_prompt(config, best_prompt(self.store, experiment))
        check_references(self.store, config)
        run = jobs.prepare(self.store, "eval", config, name=name, data_file=str(prompts or ""), scenario=scenario)
        if start:
            jobs.submit(self.store, run)
        return TrainingRun(self, run.id)

    def _keep(self, path: str | Path) -> Path:
        """A copy of a data file in the workspace's datasets/ folder, named by its content, so runs can rely on it."""
        import hashlib
        import shutil

        source = Path(path)
        digest = hashlib.sha256(source.read_bytes()).hexdigest()[:12]
        kept = self.store.root / "datasets" / f"{digest}-{source.name}"
        if not kept.is_file():
            kept.parent.mkdir(exist_ok=True)
            shutil.copyfile(source, kept)
        return kept

    def pipeline(self, scenario: str, method: str = "dpo", **options: Any):
        """Run the whole recipe on a scenario's data in this workspace: SFT → reward model → DPO on the SFT adapter
        (or `method="rloo"`, rewarded by the reward model) → before/after evaluation, each step a run on the job
        engine; returns the pipeline (lab.pipeline.Pipeline: `.wait()`, `.stop()`, `.resume()`, `.status`,
        `.table()`). Options: preset, model, steps (of every training step), system (a prompt the evaluation also
        asks the base with), and sft / reward / policy / eval (dicts of config overrides). The evaluation asks the
        scenario's held-out questions (MC1/MC2 too for TruthfulQA). Everything is checked before the first step."""
        from lab.pipeline import begin

        return begin(self, scenario, method, **options)

    def run(self, run_id: str) -> TrainingRun:
        self.store.get_run(run_id)  # KeyError naming the id if there is none
        return TrainingRun(self, run_id)

    def runs(self) -> list[TrainingRun]:
        """Every run in the workspace, newest first."""
        return [TrainingRun(self, run.id) for run in self.store.list_runs()]

    def export(self, run_id: str, kind: str, out: str | Path, *, dtype: str = "f16", overwrite: bool = False) -> Path:
        """Export a run into the folder `out`: its `adapter` with a model card, the adapter `merged` into its base
        (plain transformers loads it), or `gguf` for llama.cpp and Ollama (see lab.export); returns the folder."""
        from lab.export import export_run

        return export_run(self.store, run_id, kind, out, dtype=dtype, overwrite=overwrite)
