"""The workspace's trained adapters: which fit a base, which are chat views and which score answers.

A finished (or stopped) run that saved an adapter lists under its run id, with
the kind its method produces ('chat' or 'reward') and the base it was trained
on, so a reward model is never offered as a chat view and a view is only
offered on the base it fits.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lab.models import ModelError, ModelManager
from lab.refs import BASE_VIEW, normalise_base
from lab.store import Store
from lab.train import METHODS


@dataclass(frozen=True)
class Adapter:
    run_id: str
    name: str  # the run's name, or ""
    kind: str  # "chat" or "reward"
    base: str  # normalised base model it was trained on
    path: Path

    @property
    def label(self) -> str:
        return f"{self.name} · {self.run_id}" if self.name else self.run_id


def list_adapters(store: Store, base: str | None = None, kind: str | None = "chat") -> dict[str, Adapter]:
    """Trained adapters by run id, newest first, of this kind (None: any) and fitting this base (None: any)."""
    adapters = {}
    for run in store.list_runs(("done", "stopped")):
        method = METHODS.get(run.method)
        folder = store.runs_dir / run.id / "adapter"
        if method is None or method.adapter_kind is None or not (folder / "adapter_config.json").is_file():
            continue
        found = Adapter(run.id, run.name, method.adapter_kind, normalise_base(run.config.get("model", "")), folder)
        if (kind is None or found.kind == kind) and (base is None or found.base == normalise_base(base)):
            adapters[run.id] = found
    return adapters


def list_views(store: Store, models: ModelManager) -> list[tuple[str, str]]:
    """(label, view) choices for chatting: 'base', then the chat adapters that fit the loaded base."""
    loaded = models.loaded
    if loaded is None:
        return [(BASE_VIEW, BASE_VIEW)]
    fitting = list_adapters(store, base=loaded.base, kind="chat")
    attached = [name for name in loaded.adapters if name not in fitting]  # attached by path (CLI, notebook)
    return [(BASE_VIEW, BASE_VIEW)] + [(a.label, a.run_id) for a in fitting.values()] + [(n, n) for n in attached]


def attach_adapter(store: Store, models: ModelManager, view: str) -> None:
    """Make a view usable on the loaded model: attach the run's chat adapter by its id (a retrained one reloads)."""
    loaded = models.require()
    if view == BASE_VIEW or (view in loaded.adapters and view not in _runs(store)):
        return
    chat = list_adapters(store, kind="chat")
    if view not in chat:
        kinds = list_adapters(store, kind=None)
        what = f"a {kinds[view].kind} model, not a chat adapter" if view in kinds else "no trained adapter"
        raise ModelError(f"Run {view} has {what}.")
    if chat[view].base != normalise_base(loaded.base):
        raise ModelError(f"The adapter of {view} was trained on {chat[view].base}; load that base model first.")
    models.add_adapter(view, chat[view].path)


def _runs(store: Store) -> set[str]:
    return {run.id for run in store.list_runs()}
