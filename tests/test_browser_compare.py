"""The real app in headless Chromium: the Compare tab answers one message in three columns (the default model, the
same with a system prompt, a chat run's adapter), "This one is better" saves a vote, and the chat exports."""

import os
from pathlib import Path

import pytest
from browser import MARKS, app_page, pick, serve_app
from test_adapters import save_adapter

SHOTS = Path(os.environ.get("LAB_SCREENSHOTS", "/tmp/lab-screenshots"))
RUN = "sft-compare"
SYSTEM = "Answer in one short sentence."

pytestmark = MARKS


@pytest.fixture
def workspace(tmp_path):
    """A workspace with one finished chat run on the default model (random LoRA weights: what a run leaves)."""
    from lab.models import convert_default_model
    from lab.refs import DEFAULT_MODEL
    from lab.store import Run, Store

    store = Store(tmp_path)
    store.add_run(Run(RUN, "sft", {"model": DEFAULT_MODEL}, status="done"))
    save_adapter(convert_default_model(lambda _: None), store.runs_dir / RUN / "adapter", seed=1)
    return tmp_path


@pytest.fixture
def page(browser, workspace):
    SHOTS.mkdir(parents=True, exist_ok=True)
    with serve_app(workspace) as url, app_page(browser, url, tab="Compare") as page:
        yield page


def test_three_columns_answer_one_message_and_the_better_one_is_a_vote(page, workspace):
    from lab.store import Store

    page.locator("#compare-system-2 textarea").fill(SYSTEM)
    pick(page, "compare-view-3", RUN)
    page.locator("#compare-annotator textarea").fill("ada")
    page.get_by_text("Sampling (the same for every column").click()
    page.locator("#compare-temperature input[type='number']").fill("0")
    page.locator("#compare-max-new input[type='number']").fill("32")
    page.locator("#compare-input textarea").fill("Do mirrors bring bad luck?")
    page.keyboard.press("Enter")

    page.locator("#status-bar").get_by_text(f"adapters: {RUN}").wait_for(timeout=60_000)
    for n in (1, 2, 3):
        page.locator(f"#compare-chat-{n} [data-testid='bot']").last.wait_for(timeout=120_000)
    better = page.locator("#compare-better-2")
    page.wait_for_function("() => !document.querySelector('#compare-better-2').disabled", timeout=120_000)
    replies = [page.locator(f"#compare-chat-{n} [data-testid='bot']").last.inner_text() for n in (1, 2, 3)]
    assert all(replies) and len(set(replies)) == 3, replies
    page.screenshot(path=str(SHOTS / "compare.png"), full_page=True)

    better.click()
    outcome = page.locator("#compare-outcome")
    outcome.get_by_text("Saved vote #1: column 2").wait_for(timeout=30_000)
    assert "is better than column 1, column 3" in outcome.inner_text()
    [vote] = Store(workspace).list_comparisons(source="compare")
    assert vote.ranks == [2, 1, 2] and vote.annotator == "ada"
    assert [c["model"] for c in vote.candidates] == [
        "smollm2-135m-instruct · base",
        "smollm2-135m-instruct · base + system prompt",
        f"smollm2-135m-instruct · {RUN}",
    ]
    assert vote.candidates[1]["settings"]["system"] == SYSTEM
    better.click()
    outcome.get_by_text("already voted").wait_for(timeout=30_000)

    with page.expect_download() as download:
        page.locator("#compare-export").click()
    exported = Path(download.value.path()).read_text()
    assert "## Column 3" in exported and f"*System prompt:* {SYSTEM}" in exported
