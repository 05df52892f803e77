"""The real app in headless Chromium: the results screens (prompting grid, ranking name, Arena after an import).

The workspace is filled before the app starts (an answered experiment, votes between two models), so these tests
need no generation and no loaded model.
"""

import json
import os
import time
from pathlib import Path

import pytest
from browser import MARKS, app_page, pick, serve_app

WIDTH = 1400
SHOTS = Path(os.environ.get("LAB_SCREENSHOTS", "/tmp/lab-screenshots"))  # kept, to look at the screens

pytestmark = MARKS


def fill_workspace(workspace: Path) -> None:
    """The truthfulness starter answered in full with long answers, and two votes between two models."""
    from lab import experiments
    from lab.presets import experiment_presets
    from lab.store import Comparison, Result, Store

    store = Store(workspace)
    exp = experiments.from_preset(experiment_presets()["Truthfulness prompt vs plain"])
    eid = store.save_experiment(exp)
    for q in range(len(exp.questions)):
        for v, variant in enumerate(exp.variants):
            answer = f"{variant['name'].upper()}-{q} " + "a long answer that goes on and on " * 12
            store.save_result(Result(eid, v, q, answer, 20, 64, 1.5, model="smollm2-135m-instruct · base"))
    prompt = [{"role": "user", "content": "Name a color."}]
    for winner, loser in (("m1", "m2"), ("m1", "m2")):
        candidates = [{"text": f"{m} says blue", "model": m, "settings": {}} for m in (winner, loser)]
        store.add_comparison(Comparison(prompt, candidates, [0, 1], [1, 2], "ranked", "ann"))


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    workspace = tmp_path_factory.mktemp("browser-workspace")
    fill_workspace(workspace)
    with serve_app(workspace) as url:
        yield url


@pytest.fixture
def page(browser, app_url):
    SHOTS.mkdir(parents=True, exist_ok=True)
    with app_page(browser, app_url, model_loaded=False) as page:
        yield page


def test_the_second_variant_of_the_truthfulness_grid_is_on_screen_beside_the_first(page):
    page.get_by_role("tab", name="Prompting").click()
    pick(page, "experiment-picker", "#1 Truthfulness prompt vs plain")
    first = page.locator("#results-grid [role=gridcell]").filter(has_text="TRUTHFUL-0").first
    first.wait_for(state="attached", timeout=30_000)
    page.screenshot(path=str(SHOTS / "prompting-grid.png"), full_page=True)
    # Where the cell lies as the page opens it: nothing scrolled sideways, neither the page nor the table.
    box = first.bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= WIDTH, box
    assert page.evaluate("window.scrollX") == 0
    first.click()
    selected = page.locator("#selected-cell")
    selected.get_by_text("Selected: truthful").wait_for(timeout=10_000)
    assert "TRUTHFUL-0 a long answer" in selected.inner_text() and selected.inner_text().count("on and on") == 12


def test_the_name_typed_for_ranking_is_there_after_a_reload(page):
    page.get_by_role("tab", name="Ranking").click()
    name = page.locator("#annotator textarea, #annotator input").first
    name.fill("ann")
    name.press("Tab")
    time.sleep(1.0)  # the name goes to the browser's storage through an event
    page.reload()
    page.get_by_role("tab", name="Ranking").click()
    name = page.locator("#annotator textarea, #annotator input").first
    page.wait_for_function(
        "document.querySelector('#annotator textarea, #annotator input').value === 'ann'", timeout=30_000
    )
    assert name.input_value() == "ann"
    page.get_by_text("Feeds the model leaderboard").first.wait_for(timeout=10_000)  # what each mode feeds
    page.screenshot(path=str(SHOTS / "ranking.png"), full_page=True)


def test_the_arena_counts_agree_after_an_import(page, tmp_path):
    rows = [{"prompt": f"Question {i}?", "chosen": "A careful answer.", "rejected": "A myth."} for i in range(3)]
    upload = tmp_path / "prefs.jsonl"
    upload.write_text("".join(json.dumps(r) + "\n" for r in rows))
    page.get_by_role("tab", name="Arena").click()
    summary = page.locator("#arena-summary")
    summary.get_by_text("2 votes").wait_for(timeout=30_000)
    page.locator("input[type=file]").last.set_input_files(str(upload))
    page.get_by_text("3 comparisons (3 preference pairs)").wait_for(timeout=30_000)
    page.locator("#import-preferences").click()
    page.get_by_text("Imported 3 comparisons").wait_for(timeout=30_000)
    summary.get_by_text("5 votes").wait_for(timeout=30_000)
    assert "5 preference pairs" in summary.inner_text() and "3 of the votes are imported" in summary.inner_text()
    assert "5 preference pairs from 5 votes" in page.locator("#export-note").inner_text()
    rates = page.locator("#win-rates")
    assert rates.get_by_text("model", exact=True).count() >= 1
    labels = rates.locator("[role=gridcell]").all_inner_texts()
    assert {"m1", "m2"} <= {text.strip() for text in labels}
    assert "annotator" in page.locator("#annotators").inner_text()
    page.screenshot(path=str(SHOTS / "arena.png"), full_page=True)

    with page.expect_download() as download:
        page.locator("#export-preferences").click()
    path = tmp_path / "preferences.jsonl"
    download.value.save_as(path)
    assert len(path.read_text().splitlines()) == 5
