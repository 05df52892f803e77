"""The real app in headless Chromium: the Reward tab trains a reward model of the default model on a few votes,
inspects it on its held-out pairs and scores two responses.

The votes are in the workspace before the app starts: one annotator on twelve prompts, the chosen answer always
the polite one, so the pair count and its warning are known.
"""

import os
from pathlib import Path

import pytest
from browser import MARKS, app_page, pick, serve_app
from conftest import wait_for

SHOTS = Path(os.environ.get("LAB_SCREENSHOTS", "/tmp/lab-screenshots"))
PAIRS = 12

pytestmark = MARKS


def fill_workspace(workspace: Path) -> None:
    from lab.store import Comparison, Store

    store = Store(workspace)
    for n in range(PAIRS):
        prompt = [{"role": "user", "content": f"Can you help me with task number {n}?"}]
        texts = ["Of course, I would be glad to help. What do you need?", "No. Figure it out yourself."]
        candidates = [{"text": t, "model": "smollm2-135m-instruct · base", "settings": {}} for t in texts]
        store.add_comparison(Comparison(prompt, candidates, [n % 2, 1 - n % 2], [1, 2], "ranked", "ann"))


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    folder = tmp_path_factory.mktemp("browser-reward")
    fill_workspace(folder)
    return folder


@pytest.fixture
def page(browser, workspace):
    SHOTS.mkdir(parents=True, exist_ok=True)
    with serve_app(workspace) as url, app_page(browser, url, model_loaded=False, tab="Reward") as page:
        yield page


def test_train_a_reward_model_inspect_it_and_score_two_responses(page, workspace):
    from lab.store import Store

    count = page.locator("#reward-count")
    page.locator("#reward-flagged input").check()  # nobody is flagged: the count stays, and now it is on screen
    count.get_by_text(f"{PAIRS} preference pairs from {PAIRS} votes").wait_for(timeout=30_000)
    assert "too few to learn from" in count.inner_text()

    page.locator("#reward-train").click()
    note = page.locator("#reward-train-note")
    note.get_by_text("Training tab").wait_for(timeout=30_000)
    run_id = note.locator("strong").inner_text()
    store = Store(workspace)
    wait_for(lambda: store.get_run(run_id).status in ("done", "failed"), timeout=600, what="the reward run")
    assert store.get_run(run_id).status == "done", store.get_run(run_id).error

    pick(page, "reward-run", run_id)
    page.locator("#reward-inspect").click()
    summary = page.locator("#reward-summary")
    summary.get_by_text("Held-out accuracy").wait_for(timeout=180_000)
    assert "always preferring the longer answer" in summary.inner_text()
    assert "not measured yet" in summary.inner_text()  # one annotator: no item has two votes
    assert page.locator("#worst-pairs tbody tr").count() >= 1

    page.locator("#score-prompt textarea").fill("Can you help me with my homework?")
    page.locator("#score-response-0 textarea").fill("Sure, happy to help! Which subject is it?")
    page.locator("#score-response-1 textarea").fill("No. Figure it out yourself.")
    page.locator("#score-run").click()
    page.locator("#score-note").get_by_text("scores highest").wait_for(timeout=120_000)
    scores = [page.locator(f"#score-value-{n} input").input_value() for n in (0, 1)]
    assert all(value not in ("", None) for value in scores)
    page.screenshot(path=str(SHOTS / "reward.png"), full_page=True)
