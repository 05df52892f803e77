"""The real app in headless Chromium: chat with the default model, run a prompt experiment, export it."""

import json
import re
import time
from pathlib import Path

import pytest
from browser import MARKS, app_page, pick, serve_app

pytestmark = MARKS


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    with serve_app(tmp_path_factory.mktemp("browser-workspace")) as url:
        yield url


@pytest.fixture
def page(browser, app_url):
    with app_page(browser, app_url) as page:
        yield page


def test_chat_streams_a_reply(page):
    page.get_by_role("tab", name="Chat").click()  # the app opens on the Workshop
    page.locator("#chat-input textarea").fill("Write a 200-word story about a dragon who learns to bake bread.")
    page.keyboard.press("Enter")
    reply = page.locator("#chatbot [data-testid='bot']").last
    reply.wait_for(timeout=60_000)
    seen = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        text = reply.inner_text().strip()
        if text and (not seen or text != seen[-1]):
            seen.append(text)
        if len(seen) >= 3 and page.locator("#chat-send").is_enabled():
            break
        time.sleep(0.05)
    assert len(seen) >= 3, f"expected the reply to grow token by token, saw {seen}"
    assert max(seen, key=len) == seen[-1], "the reply only grows while it streams"


def test_run_a_starter_experiment_and_export_it(page, tmp_path):
    page.get_by_role("tab", name="Prompting").click()
    pick(page, "experiment-picker", "starter: Few-shot vs zero-shot")
    page.wait_for_function("document.querySelector('#experiment-name textarea, #experiment-name input').value !== ''")
    page.locator("#questions textarea").fill("Broke after one day.\nWorks great, very happy.")
    page.locator("#run-experiment").click()
    status = page.locator("#experiment-status")
    try:
        status.get_by_text(re.compile(r"^Done:")).wait_for(timeout=120_000)
    finally:
        page.screenshot(path=str(tmp_path / "after-run.png"), full_page=True)
    grid = page.locator("#results-grid")
    assert "Broke after one day." in grid.inner_text()
    assert grid.inner_text().count(" tok") == 4  # 2 questions × 2 variants, each with its token count

    grid.locator("[role=gridcell]").filter(has_text=" tok]").nth(3).click()  # second question, few-shot
    page.get_by_text("Selected: few-shot").wait_for()
    page.locator("#mark-good").click()
    page.locator("#variant-summary").get_by_text("few-shot").wait_for()
    page.wait_for_function("document.querySelector('#results-grid').innerText.includes('good')")

    with page.expect_download() as download:
        page.locator("#export-csv").click()
    path = tmp_path / "experiment.csv"
    download.value.save_as(path)
    text = path.read_text()
    assert text.splitlines()[0].startswith("question,variant,system,template,response")
    assert len(text.strip().splitlines()) >= 5
    page.screenshot(path=str(tmp_path / "prompting.png"), full_page=True)


def test_import_demonstrations_train_and_chat_with_the_adapter(page):
    signoff = Path(__file__).resolve().parent.parent / "assets" / "demonstrations" / "signoff.jsonl"
    page.get_by_role("tab", name="Demonstrations").click()
    page.get_by_role("button", name=re.compile("^Import and export")).click()
    page.locator("input[type=file][accept*=jsonl]").set_input_files(str(signoff))
    page.get_by_text("24 rows: 24 new demonstrations").wait_for(timeout=30_000)
    page.get_by_role("button", name="Import", exact=True).click()
    page.get_by_text("Imported 24 demonstrations").wait_for(timeout=30_000)
    page.get_by_text("24 accepted").wait_for(timeout=10_000)

    page.get_by_role("tab", name="Training").click()
    page.get_by_text("Hyperparameters").click()
    page.get_by_label("max_steps").fill("2")
    page.get_by_label("eval_fraction").fill("0")
    page.locator("#start-run").click()
    message = page.locator("#start-message")
    message.get_by_text("started").wait_for(timeout=30_000)
    run_id = message.locator("strong").inner_text()
    page.locator("#run-status").get_by_text("· done ·").wait_for(timeout=240_000)
    assert "step 2 / 2" in page.locator("#run-status").inner_text()

    page.get_by_role("tab", name="Chat").click()
    page.locator("#chat-adapter input").click()
    page.get_by_role("option", name=run_id).click()
    page.locator("#chat-input textarea").fill("Hello!")
    page.keyboard.press("Enter")
    page.locator("#status-bar").get_by_text(f"adapters: {run_id}").wait_for(timeout=60_000)


def test_rank_two_answers_with_the_keyboard_and_export_the_pairs(page, tmp_path):
    page.get_by_role("tab", name="Ranking").click()
    page.locator("#annotator textarea, #annotator input").first.fill("ann")
    progress = page.locator("#rank-progress")
    for expected in ("1 of 10 done", "2 of 10 done"):
        page.locator("#vote-next").click()
        page.locator("#vote-outcome").get_by_text("Which answer is better?").wait_for(timeout=120_000)
        assert page.locator("#answer-a").inner_text().strip() != "A"
        page.locator("#guidelines").click()  # focus off the text boxes, as a voter would
        page.keyboard.press("2")
        page.locator("#vote-outcome").get_by_text("Saved").wait_for(timeout=30_000)
        assert expected in progress.inner_text()
    assert "B was" in page.locator("#vote-outcome").inner_text()  # the models are revealed after the vote

    page.keyboard.press("u")
    page.locator("#vote-outcome").get_by_text("Withdrew vote").wait_for(timeout=30_000)
    assert "1 of 10 done" in progress.inner_text()

    page.get_by_role("tab", name="Arena").click()
    page.locator("#arena-summary").get_by_text("1 votes").wait_for(timeout=30_000)
    with page.expect_download() as download:
        page.locator("#export-preferences").click()
    path = tmp_path / "preferences.jsonl"
    download.value.save_as(path)
    [row] = [json.loads(line) for line in path.read_text().splitlines()]
    assert set(row) == {"prompt", "chosen", "rejected"} and row["prompt"][0]["role"] == "user"
