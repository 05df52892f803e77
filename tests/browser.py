"""What the browser tests share: the real app served from a workspace, and Debian's Chromium driving it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
MARKS = [
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


@contextmanager
def serve_app(workspace: Path, *args: str) -> Iterator[str]:
    """`python -m ui` on a free port over this workspace, with more of its flags if given (e.g. --model DIR), its
    output in app.log there; yields the page's URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    with open(workspace / "app.log", "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "ui", "--port", str(port), "--workspace", str(workspace), *args],
            cwd=ROOT,
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


@contextmanager
def app_page(browser, url: str, *, model_loaded: bool = True, tab: str | None = None) -> Iterator:
    """A 1400 px wide page of the app, once its status bar shows (and says the default model is loaded)."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    try:
        page.goto(url)
        status = page.locator("#status-bar")
        (status.get_by_text("Loaded smollm2") if model_loaded else status).wait_for(timeout=180_000)
        if tab:
            page.get_by_role("tab", name=tab).click()
        yield page
    finally:
        page.close()


def pick(page, dropdown_id: str, option: str) -> None:
    """Choose an option of the dropdown with this element id."""
    page.locator(f"#{dropdown_id} input").click()
    page.get_by_role("option", name=option).click()
