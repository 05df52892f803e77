"""The real app in headless Chromium, on the tiny model: the Workshop tab (the first one) says what to do in an
empty workspace, loads the Truthfulness scenario into it, runs the whole recipe with two steps a training run, shows
every step done and ends with the before/after table."""

import os
from pathlib import Path

import pytest
from browser import MARKS, app_page, pick, serve_app
from conftest import wait_for

SHOTS = Path(os.environ.get("LAB_SCREENSHOTS", "/tmp/lab-screenshots"))

pytestmark = MARKS


@pytest.fixture
def page(browser, tmp_path, tiny_model_dir):
    SHOTS.mkdir(parents=True, exist_ok=True)
    with serve_app(tmp_path, "--model", str(tiny_model_dir)) as url, app_page(browser, url, model_loaded=False) as page:
        page.locator("#status-bar").get_by_text("Loaded").wait_for(timeout=120_000)
        yield page


def test_load_a_scenario_and_run_the_whole_recipe_to_its_table(page, tmp_path):
    status = page.locator("#workshop-status")
    status.get_by_text("Nothing has run yet").wait_for(timeout=30_000)
    assert "appears here once the evaluation step is done" in page.locator("#workshop-verdicts").inner_text()

    pick(page, "workshop-scenario", "Truthfulness")
    page.locator("#workshop-about").get_by_text("Guidelines for annotators").wait_for(timeout=30_000)
    page.locator("#workshop-load").click()
    page.locator("#workshop-loaded").get_by_text("Scenario Truthfulness: ").wait_for(timeout=60_000)
    page.get_by_label("Steps per training run").fill("2")
    page.locator("#workshop-run").click()
    page.locator("#workshop-message").get_by_text("Started").wait_for(timeout=60_000)
    status.get_by_text("Step 1 of 4 (SFT)").wait_for(timeout=60_000)

    table = page.locator("#workshop-table")
    try:
        wait_for(lambda: "after DPO" in table.inner_text(), timeout=600, what="the before/after table")
    finally:
        page.screenshot(path=str(SHOTS / "workshop.png"), full_page=True)
    assert "Done in" in status.inner_text()
    shown = table.inner_text()
    assert all(word in shown for word in ("before", "after SFT", "win rate", "check"))
    steps = page.locator("#workshop-steps").inner_text()
    assert steps.count("done") == 4 and "evaluation" in steps
