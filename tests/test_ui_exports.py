"""The Prompting and Demonstrations tabs' handlers, without a browser: exports per session, dict updates."""

from pathlib import Path

import gradio as gr
import pytest

from lab import Lab
from lab.store import ORIGINS, Demonstration, Experiment, Result, Store
from ui.demonstrations import build_demonstrations, export_accepted, refresh_table
from ui.prompting import build_prompting, export_results, open_experiment, save_experiment, show_results

HI = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]


@pytest.fixture
def tabs(tmp_path):
    ctx = Lab(Store(tmp_path / "workspace"))
    ctx.exports = tmp_path / "exports"
    ctx.exports.mkdir()
    with gr.Blocks() as app:
        demos = build_demonstrations(ctx, app)
        prompting = build_prompting(ctx)
    return ctx, demos, prompting


def exported(update: dict) -> str:
    assert update["visible"] is True
    return update["value"]


def files(ctx: Lab) -> list:
    return sorted(p for p in ctx.exports.rglob("*") if p.is_file())


def test_refreshing_writes_no_file_and_each_session_exports_its_own(tabs):
    ctx, demos, _ = tabs
    ctx.store.add_demonstrations([Demonstration(HI)])
    shown = refresh_table(ctx, demos, "", "", list(ORIGINS), "accepted")
    assert len(shown[demos.table]) == 1 and "1 accepted" in shown[demos.counts]
    assert files(ctx) == []
    first = exported(export_accepted(ctx, demos, gr.Request(session_hash="first-browser"))[demos.download])
    second = exported(export_accepted(ctx, demos, gr.Request(session_hash="second-browser"))[demos.download])
    assert first != second and [str(p) for p in files(ctx)] == sorted([first, second])
    assert Path(first).read_text() == Path(second).read_text() and '"Hello!"' in Path(first).read_text()


def test_a_session_id_never_becomes_a_path(tabs):
    ctx, demos, _ = tabs
    ctx.store.add_demonstrations([Demonstration(HI)])
    path = exported(export_accepted(ctx, demos, gr.Request(session_hash="../../escape"))[demos.download])
    assert files(ctx) == [ctx.exports / path.split("/")[-2] / "demonstrations.jsonl"]


def test_results_on_screen_write_no_file_and_each_session_exports_its_own_csv(tabs):
    ctx, _, ui = tabs
    exp = Experiment("e", [{"name": "plain", "system": "", "template": "{question}"}], ["q1"], {"temperature": 0})
    eid = ctx.store.save_experiment(exp)
    ctx.store.save_result(Result(eid, 0, 0, "an answer", 3, 2, 0.1, model="tiny · base"))
    shown = show_results(ctx, ui, eid)
    assert set(shown) == set(ui.results) and "1 of 1 cells answered" in shown[ui.status]
    assert files(ctx) == []
    first = exported(export_results(ctx, ui, eid, gr.Request(session_hash="first-browser"))[ui.download])
    second = exported(export_results(ctx, ui, eid, gr.Request(session_hash="second-browser"))[ui.download])
    assert first != second and len(files(ctx)) == 2
    assert "an answer" in Path(first).read_text()


def test_handlers_update_only_components_they_are_wired_to(tabs):
    ctx, _, ui = tabs
    preset = next(iter(ctx.experiment_presets))
    opened = open_experiment(ctx, ui, f"preset:{preset}")
    assert set(opened) == set(ui.form) and opened[ui.experiment_id] is None
    saved = save_experiment(ctx, ui, None, opened[ui.name], opened[ui.variants], opened[ui.questions], 0.0, 16, 0)
    assert set(saved) == set(ui.saved)  # exactly the outputs the Save button is wired to
    again = save_experiment(ctx, ui, None, opened[ui.name], opened[ui.variants], opened[ui.questions], 0.0, 16, 0)
    assert again[ui.experiment_id] == saved[ui.experiment_id] and "reopened" in again[ui.status]
