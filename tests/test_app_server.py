"""The running app keeps to itself: no analytics, a cap on uploads, logins kept out of the process list and
slow to guess."""

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest

from lab import limits
from ui.__main__ import parse_args
from ui.guard import check_login, logins

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_config_shows_analytics_off_and_an_upload_cap(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "GRADIO_ANALYTICS_ENABLED"}
    app = subprocess.Popen(
        # No model to load: the page and its configuration are what is tested.
        [sys.executable, "-m", "ui", "--port", str(port), "--workspace", str(tmp_path / "ws"), "--model", "/no/model"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline, config = time.monotonic() + 90, None
        while config is None and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/config", timeout=2) as response:
                    config = json.loads(response.read())
            except OSError:
                time.sleep(0.3)
        assert config is not None, "the app did not serve /config"
        assert config["analytics_enabled"] is False
        assert config["max_file_size"] == limits.UPLOAD_MB * 1024 * 1024
    finally:
        app.terminate()
        app.wait(timeout=30)


def test_logins_come_from_a_file_or_the_environment(tmp_path):
    accounts = tmp_path / "logins"
    accounts.write_text("ann:first secret\n\nbea:second:with:colons\n")
    assert logins(None, str(accounts), "cy:third") == {
        "ann": "first secret",
        "bea": "second:with:colons",
        "cy": "third",
    }
    args = parse_args(["--share", "--auth-file", str(accounts)])
    assert set(args.logins) == {"ann", "bea"}
    accounts.write_text("no-colon-here\n")
    with pytest.raises(ValueError, match="line 1 must look like USER:PASS"):
        logins(None, str(accounts), None)


def test_a_wrong_login_is_slow_and_a_right_one_is_not():
    check = check_login({"ann": "secret"}, delay_s=0.2)
    start = time.monotonic()
    assert check("ann", "secret") and time.monotonic() - start < 0.1
    start = time.monotonic()
    assert not check("ann", "guess") and not check("nobody", "secret")
    assert time.monotonic() - start >= 0.4


def test_a_shared_app_stays_off_the_model_hub():
    code = textwrap.dedent(
        """
        import time
        from ui.guard import stay_offline
        from lab.models import ModelError, load_model
        stay_offline()
        start = time.monotonic()
        try:
            load_model("someone/some-model", "fp32", "cpu", progress=lambda _: None)
        except ModelError as err:
            print(round(time.monotonic() - start, 1), err)
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    seconds, message = out.stdout.split(" ", 1)
    assert float(seconds) < 5 and "someone/some-model" in message


def test_the_login_page_carries_no_api_description(tmp_path):
    import http.cookiejar
    import urllib.parse

    accounts = tmp_path / "logins"
    accounts.write_text("ann:secret\n")
    port = free_port()
    app = subprocess.Popen(
        [sys.executable, "-m", "ui", "--port", str(port), "--workspace", str(tmp_path / "ws"), "--model", "/no/model"]
        + ["--auth-file", str(accounts)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline, page = time.monotonic() + 90, None
        while page is None and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{url}/?all_endpoints=true", timeout=2) as response:
                    page = response.read().decode()
            except OSError:
                time.sleep(0.3)
        assert page is not None and "auth_required" in page
        assert "window.gradio_api_info = {};" in page and "model_status" not in page

        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
        form = urllib.parse.urlencode({"username": "ann", "password": "secret"}).encode()
        assert opener.open(f"{url}/login", data=form, timeout=10).status == 200
        with opener.open(f"{url}/gradio_api/info", timeout=10) as response:  # a logged-in client still has the API
            assert "/model_status" in json.loads(response.read())["named_endpoints"]
    finally:
        app.terminate()
        app.wait(timeout=30)
