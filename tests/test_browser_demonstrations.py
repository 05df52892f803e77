"""The Demonstrations tab in headless Chromium on the real app: the author remembered, bulk review, Stop."""

import os
import re
import time
from pathlib import Path

import pytest
from browser import MARKS, app_page, pick, serve_app

SHOTS = Path(os.environ.get("LAB_SCREENSHOTS", "/tmp"))

pytestmark = MARKS


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("browser-workspace")


@pytest.fixture(scope="module")
def app_url(workspace):
    with serve_app(workspace) as url:
        yield url


@pytest.fixture
def page(browser, app_url):
    with app_page(browser, app_url, tab="Demonstrations") as page:
        yield page


def test_the_author_name_is_restored_after_a_reload(page):
    author = page.locator("#demo-author textarea, #demo-author input").first
    author.fill("ann")
    author.press("Tab")
    page.wait_for_function("Object.keys(localStorage).includes('alignment-lab-author')")
    time.sleep(1)  # the browser's storage is written as the value settles
    page.reload()
    page.locator("#status-bar").get_by_text("Loaded smollm2").wait_for(timeout=60_000)
    page.get_by_role("tab", name="Demonstrations").click()
    author = page.locator("#demo-author textarea, #demo-author input").first
    page.wait_for_function(
        "document.querySelector('#demo-author textarea, #demo-author input').value === 'ann'", timeout=15_000
    )
    page.screenshot(path=str(SHOTS / "demonstrations-author.png"), full_page=True)
    assert author.input_value() == "ann"


def pending(workspace: Path) -> list[int]:
    from lab.store import Store

    return [d.id for d in Store(workspace).list_demonstrations(status="pending")]


def test_accepting_pending_answers_acts_only_on_the_rows_shown(page, workspace):
    from lab.store import Demonstration, Store

    topics = ["zebra", "zebra"] + ["otter"] * 6
    Store(workspace).add_demonstrations(
        [
            Demonstration(
                [{"role": "user", "content": f"About the {t} #{i}?"}, {"role": "assistant", "content": f"A {t}."}],
                origin="teacher",
                status="pending",
            )
            for i, t in enumerate(topics)
        ]
    )
    pick(page, "demo-status", "pending")
    page.locator("#demo-search textarea, #demo-search input").first.fill("zebra")
    page.locator("#demo-counts").get_by_text("2 shown").wait_for(timeout=15_000)
    page.get_by_text("Distil from a teacher").click()
    page.locator("#accept-pending").click()
    status = page.locator("#distill-status")
    status.get_by_text("Marked the 2 pending answer(s) shown as accepted").wait_for(timeout=15_000)
    assert "6 more pending are not shown and stay pending" in status.inner_text()
    page.locator("#demo-counts").get_by_text("6 pending review").wait_for(timeout=15_000)
    page.screenshot(path=str(SHOTS / "demonstrations-bulk.png"), full_page=True)
    assert len(pending(workspace)) == 6


def test_stop_ends_distillation_within_one_answer(page, workspace):
    before = set(pending(workspace))
    page.get_by_text("Distil from a teacher").click()
    max_new = page.locator("#distill-max-new input[type=number]")
    max_new.fill("16")
    max_new.press("Enter")
    page.locator("#distill-run").click()
    status = page.locator("#distill-status")
    status.get_by_text(re.compile(r"Answered 1 of \d+ prompts")).wait_for(timeout=60_000)
    page.locator("#distill-stop").click()
    status.get_by_text("Stopped:").wait_for(timeout=20_000)
    saved = int(re.search(r"Stopped: (\d+) answer", status.inner_text()).group(1))
    time.sleep(3)  # long enough for another answer, had the teacher gone on
    page.screenshot(path=str(SHOTS / "demonstrations-stop.png"), full_page=True)
    new = set(pending(workspace)) - before
    assert 1 <= saved <= 2 and len(new) == saved
