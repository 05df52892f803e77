"""The real app in headless Chromium: the Evaluation tab evaluates the default model plain and with a prompt on two
of a scenario's questions, with a rule check and a TruthfulQA file; the table and chart appear, and the pairs go
to the Ranking tab, whose queue shows them without generating anything."""

import os
from pathlib import Path

import pytest
from browser import MARKS, app_page, pick, serve_app
from conftest import wait_for

SHOTS = Path(os.environ.get("LAB_SCREENSHOTS", "/tmp/lab-screenshots"))
SAMPLE = Path(__file__).parent / "fixtures" / "truthfulqa" / "sample.csv"

pytestmark = MARKS


@pytest.fixture
def page(browser, tmp_path):
    SHOTS.mkdir(parents=True, exist_ok=True)
    with serve_app(tmp_path) as url, app_page(browser, url, tab="Evaluation") as page:
        yield page


def test_evaluate_with_a_prompt_see_the_chart_and_rank_the_pairs(page, tmp_path):
    from lab.preferences import evaluation_pairs
    from lab.store import Store

    pick(page, "eval-models", "base + prompt")
    page.locator("#eval-system textarea").fill("Answer truthfully in one short sentence.")
    pick(page, "eval-prompts", "Truthfulness")
    page.locator("#eval-checks textarea").fill("scenario:Truthfulness")
    page.locator("#eval-truthfulqa input[type=file]").set_input_files(str(SAMPLE))
    page.locator("#eval-max-prompts input").fill("2")
    page.locator("#eval-max-new-tokens input").fill("12")
    page.locator("#eval-start").click()
    message = page.locator("#eval-message")
    message.get_by_text("Queued").wait_for(timeout=30_000)
    run_id = message.locator("strong").inner_text()
    store = Store(tmp_path)
    wait_for(lambda: store.get_run(run_id).status in ("done", "failed"), timeout=600, what="the evaluation")
    assert store.get_run(run_id).status == "done", store.get_run(run_id).error

    table = page.locator("#eval-table")
    try:
        wait_for(lambda: "base+prompt" in table.inner_text(), timeout=30, what="the report's table")
    finally:
        page.screenshot(path=str(SHOTS / "evaluation.png"), full_page=True)
    shown = table.inner_text()
    assert all(column in shown for column in ("MC1", "MC2", "KL", "tokens", "check")) and "win rate" not in shown
    page.locator("#eval-chart .main-svg").first.wait_for(timeout=30_000)

    page.locator("#eval-send").click()
    page.locator("#eval-sent").get_by_text("Ranking tab").wait_for(timeout=30_000)
    queue = page.locator("#eval-sent strong").inner_text()
    pairs = evaluation_pairs(store, queue)
    if not pairs:
        pytest.skip("both models gave the same answers: there is no pair to rank")
    page.get_by_role("tab", name="Ranking").click()
    page.locator("#annotator textarea, #annotator input").first.fill("ann")
    pick(page, "rank-queue", queue)
    page.locator("#vote-next").click()
    prompt = page.locator("#rank-prompt textarea")
    wait_for(lambda: prompt.input_value() in pairs, timeout=30, what="the evaluation's first pair")
    shown = page.locator("#answer-a").inner_text() + page.locator("#answer-b").inner_text()
    assert all(" ".join(c["text"].split())[:20] in " ".join(shown.split()) for c in pairs[prompt.input_value()])
