"""The workspace a pipeline runs in: a fresh one seeded with its scenario, or one the scenario was loaded into
before; a workspace holding other work is refused, never mixed."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from lab.pipeline.record import PipelineError
from lab.store import Store

if TYPE_CHECKING:
    from lab.session import Lab


def open_workspace(scenario: str, workspace: str | Path | None = None, truthfulqa: str | Path | None = None) -> Lab:
    """The lab a headless pipeline runs in: a fresh workspace seeded with the scenario (no `workspace`), or
    `workspace`, seeded when it holds no work yet, as it is when the scenario was loaded into it before (its
    votes since then are what the recipe trains on). A workspace holding other work is refused, never mixed."""
    from lab import Lab
    from lab.scenarios import find, holds_work

    if workspace is not None and holds_work(Path(workspace)):
        store = Store(workspace)
        if not loaded(store, scenario):
            raise PipelineError(
                f"Workspace {store.root} holds other work: leave --workspace out for a fresh one, or mix the scenario "
                f"into it first with: python -m lab scenario {find(scenario)[0]} --workspace {store.root} --mix"
            )
        return Lab(store)
    return Lab.from_scenario(scenario, workspace, truthfulqa)


def loaded(store: Store, scenario: str) -> bool:
    """Was the scenario seeded into this workspace (lab.scenarios writes its folder there)?"""
    from lab.scenarios import scenario_folder

    return (scenario_folder(store, scenario) / "scenario.json").is_file()


def load_scenario(lab: Lab, scenario: str, truthfulqa: str | Path | None = None, mix: bool = False) -> str:
    """Seed the lab's own workspace with a scenario (the Workshop tab's Load): only when nobody has worked in it
    yet (the bundled prompt pool the app starts with is no one's work), when the scenario is there already, or
    when `mix` asks to add it to the work there. Returns what was added, in one sentence."""
    from lab.scenarios import describe, seed

    if not (mix or loaded(lab.store, scenario) or not holds_own_work(lab.store)):
        raise PipelineError(
            "This workspace already holds work: tick 'mix with existing work', or start the app on a fresh "
            f"workspace of the scenario with: python -m ui --scenario {scenario!r}"
        )
    return describe(scenario, seed(lab.store, scenario, truthfulqa))


def holds_own_work(store: Store) -> bool:
    """Has anyone worked in this workspace: demonstrations, votes, experiments, runs, or prompts beyond the
    bundled question sets?"""
    return bool(
        store.list_demonstrations(status=None)
        or store.list_comparisons()
        or store.list_experiments()
        or store.list_runs()
        or any(not p.source.startswith("bundled:") for p in store.list_prompts())
    )
