"""The real app in headless Chromium: a DPO run of the default model on the workspace's votes, started from the
Training tab's form, its curves on screen once done, then a chat with its adapter."""

import os
from pathlib import Path

import pytest
from browser import MARKS, app_page, pick, serve_app
from test_browser_reward import PAIRS, fill_workspace

SHOTS = Path(os.environ.get("LAB_SCREENSHOTS", "/tmp/lab-screenshots"))

pytestmark = MARKS


@pytest.fixture
def page(browser, tmp_path):
    SHOTS.mkdir(parents=True, exist_ok=True)
    fill_workspace(tmp_path)
    with serve_app(tmp_path) as url, app_page(browser, url, tab="Training") as page:
        yield page


def test_train_dpo_on_the_votes_from_the_form_and_chat_with_the_adapter(page):
    pick(page, "train-method", "dpo: Direct preference optimisation")
    page.locator("#train-count").get_by_text(f"{PAIRS} preference pairs from {PAIRS} votes").wait_for(timeout=30_000)
    page.get_by_text("Hyperparameters").click()
    page.get_by_label("max_steps").fill("2")
    page.get_by_label("beta").fill("0.2")
    page.locator("#start-run").click()
    message = page.locator("#start-message")
    message.get_by_text("started").wait_for(timeout=30_000)
    run_id = message.locator("strong").inner_text()
    assert run_id.startswith("dpo-")
    page.locator("#run-status").get_by_text("· done ·").wait_for(timeout=300_000)
    assert "step 2 / 2" in page.locator("#run-status").inner_text()
    plot = page.locator(".js-plotly-plot")
    plot.get_by_text("preference accuracy").wait_for(timeout=30_000)
    assert plot.get_by_text("reward margin", exact=True).count() == 1
    page.get_by_text("Config and log").click()
    page.get_by_text("beta: 0.2").wait_for(timeout=10_000)  # the form's value reached the run's config.yaml
    page.screenshot(path=str(SHOTS / "dpo-training.png"), full_page=True)

    page.get_by_role("tab", name="Chat").click()
    page.locator("#chat-adapter input").click()
    page.get_by_role("option", name=run_id).click()
    page.locator("#chat-input textarea").fill("Can you help me with my homework?")
    page.keyboard.press("Enter")
    page.locator("#status-bar").get_by_text(f"adapters: {run_id}").wait_for(timeout=60_000)
    page.locator("#chatbot [data-testid='bot']").last.wait_for(timeout=120_000)
    page.screenshot(path=str(SHOTS / "dpo-chat.png"), full_page=True)
