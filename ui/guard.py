"""What guards an app shared with others: logins, slow guessing, no API description before login, no hub."""

from __future__ import annotations

import hmac
import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

API_INFO = re.compile(rb"window\.gradio_api_info = .*?;(\s*</script>)", re.S)


def logins(auth: str | None, auth_file: str | None, env: str | None) -> dict[str, str]:
    """user → password from --auth, each line of --auth-file, and $LAB_AUTH (each USER:PASS)."""
    entries = [("--auth", auth)] if auth else []
    if auth_file:
        lines = Path(auth_file).read_text(encoding="utf-8").splitlines()
        entries += [(f"{auth_file} line {n}", line.strip()) for n, line in enumerate(lines, 1) if line.strip()]
    if env:
        entries.append(("$LAB_AUTH", env))
    found = {}
    for where, entry in entries:
        user, sep, password = entry.partition(":")
        if not (sep and user and password):
            raise ValueError(f"{where} must look like USER:PASS")
        found[user] = password
    return found


def check_login(accounts: dict[str, str], delay_s: float = 1.0) -> Callable[[str, str], bool]:
    """Gradio's auth function: compared in constant time; each failure costs `delay_s`, one at a time, so
    guessing passwords is slow however many requests arrive at once."""
    failures = threading.Lock()

    def check(user: str, password: str) -> bool:
        expected = accounts.get(user, "")
        if expected and hmac.compare_digest(expected.encode(), password.encode()):
            return True
        with failures:
            time.sleep(delay_s)
        return False

    return check


def stay_offline() -> None:
    """A shared app never reaches the model hub on a remote user's behalf. gradio has already imported
    huggingface_hub, which read the environment then, so its setting is changed in place too."""
    import huggingface_hub.constants

    os.environ["HF_HUB_OFFLINE"] = "1"
    huggingface_hub.constants.HF_HUB_OFFLINE = True


class HideApiInfo:
    """ASGI middleware: pages carry an empty API description. Gradio embeds every endpoint and its choices in
    the HTML of every page, the login page included; a logged-in client still reads them from the API."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] != "GET" or scope["path"].startswith("/gradio_api"):
            await self.app(scope, receive, send)
            return
        start: dict = {}
        body: list[bytes] = []

        async def rewrite(message) -> None:
            if message["type"] == "http.response.start":
                if dict(message.get("headers", [])).get(b"content-type", b"").startswith(b"text/html"):
                    start.update(message)  # held until the whole page is in, to rewrite it
                else:
                    await send(message)
                return
            if message["type"] != "http.response.body" or not start:
                await send(message)
                return
            body.append(message.get("body", b""))
            if message.get("more_body"):
                return
            content = API_INFO.sub(rb"window.gradio_api_info = {};\1", b"".join(body))
            headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
            await send({**start, "headers": [*headers, (b"content-length", str(len(content)).encode())]})
            await send({"type": "http.response.body", "body": content})

        await self.app(scope, receive, rewrite)
