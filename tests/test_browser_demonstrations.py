"""The Demonstrations tab in headless Chromium on the real app: the author remembered, bulk review, Stop."""

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
SHOTS = Path(os.environ.get("LAB_SCREENSHOTS", "/tmp"))

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium (apt-get install chromium)"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_served(url: str, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the app exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"{url} was not served within {timeout} s")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("browser-workspace")


@pytest.fixture(scope="module")
def app_url(workspace):
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    with open(workspace / "app.log", "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "ui", "--port", str(port), "--workspace", str(workspace)],
            cwd=Path(__file__).resolve().parent.parent,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "LAB_WORKSPACE": str(workspace)},
        )
        try:
            wait_until_served(url, process)
            yield url
        finally:
            process.terminate()
            process.wait(timeout=30)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        instance = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield instance
        instance.close()


@pytest.fixture
def page(browser, app_url):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(app_url)
    page.locator("#status-bar").get_by_text("Loaded smollm2").wait_for(timeout=180_000)
    page.get_by_role("tab", name="Demonstrations").click()
    yield page
    page.close()


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


def pick(page, dropdown_id: str, option: str) -> None:
    page.locator(f"#{dropdown_id} input").click()
    page.get_by_role("option", name=option, exact=True).click()


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
