"""The Demonstrations tab in headless Chromium on the real app: the author remembered, bulk review, Stop."""

import os
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
