"""Start the app: `python -m ui [--host H] [--port P] [--workspace DIR] [--share --auth-file FILE]`."""

from __future__ import annotations

import argparse
import logging
import os
import sys

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # nothing leaves the machine; read when gradio loads
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

from starlette.middleware import Middleware

from lab import Lab, jobs, limits
from lab.experiments import seed_prompt_pool
from lab.models import DEFAULT_MODEL, DEVICES, PRECISIONS
from lab.pipeline import drive_running
from lab.presets import question_sets
from lab.scenarios import describe, open_scenario
from lab.store import Store
from ui.app import CSS, build_app
from ui.guard import HideApiInfo, check_login, logins, stay_offline

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m ui", description="Alignment Lab in the browser.")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--workspace", default=None, help="workspace folder (default $LAB_WORKSPACE or ./workspace)")
    parser.add_argument(
        "--scenario", default=None, metavar="NAME", help="start on a fresh workspace seeded with this workshop scenario"
    )
    parser.add_argument("--truthfulqa", default=None, metavar="CSV", help="--scenario truthfulqa: TruthfulQA's CSV")
    parser.add_argument("--mix", action="store_true", help="--scenario into a --workspace that already holds work")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="model to load at start")
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS)
    parser.add_argument("--device", default="auto", choices=DEVICES)
    parser.add_argument("--share", action="store_true", help="open a public Gradio link (needs --auth)")
    parser.add_argument(
        "--auth",
        default=None,
        metavar="USER:PASS",
        help="require this login (visible in the process list: prefer --auth-file or $LAB_AUTH)",
    )
    parser.add_argument("--auth-file", default=None, metavar="FILE", help="require a login: one USER:PASS per line")
    args = parser.parse_args(argv)
    try:
        args.logins = logins(args.auth, args.auth_file, os.environ.get("LAB_AUTH"))
    except (OSError, ValueError) as err:
        parser.error(str(err))
    if (args.share or args.host not in LOCAL_HOSTS) and not args.logins:
        parser.error("--share and a non-local --host expose the lab to others: add --auth-file FILE (or $LAB_AUTH)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # One line per refused request on the terminal (ui.errors.UserError); tracebacks only for real faults.
    log = logging.getLogger("alignment_lab")
    log.setLevel(logging.INFO)
    log.addHandler(logging.StreamHandler())
    if args.scenario:
        try:
            store, counts = open_scenario(args.scenario, args.workspace, args.truthfulqa, args.mix)
        except ValueError as err:  # an unknown scenario, a bad file, a workspace that holds work: one sentence
            print(f"error: {err}", file=sys.stderr)
            return 2
        print(describe(args.scenario, counts), file=sys.stderr)
    else:
        store = Store(args.workspace)
        seed_prompt_pool(store, question_sets())
    ctx = Lab(store, shared=args.share or args.host not in LOCAL_HOSTS)
    if ctx.shared:
        stay_offline()
    ctx.models.loading, ctx.models.status = True, f"Loading {args.model} once the page is up…"
    app = build_app(ctx)
    print(f"Workspace: {store.root}", file=sys.stderr)
    app.queue(default_concurrency_limit=4).launch(
        server_name=args.host,
        server_port=args.port,
        share=args.share,
        auth=check_login(args.logins) if args.logins else None,
        css=CSS,
        footer_links=[],
        show_error=False,  # a fault's text stays in the log; what a user can fix arrives as one sentence anyway
        max_file_size=f"{limits.UPLOAD_MB}mb",
        prevent_thread_lock=True,
        # Behind a login, Gradio would still embed the whole API description in the login page.
        app_kwargs={"middleware": [Middleware(HideApiInfo)]} if args.logins else None,
    )
    # The model (and torch with it) loads once the page is served, so it does not compete with the start-up;
    # the status bar says what is loading meanwhile. The watcher starts then too.
    ctx.load_in_background(args.model, args.precision, args.device)
    jobs.watch(store)  # repairs runs left "running" by a previous app, then keeps the queue moving
    drive_running(ctx)  # a workshop pipeline left running goes on to its next step without a page open
    app.block_thread()
    return 0


if __name__ == "__main__":
    sys.exit(main())
