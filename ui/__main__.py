"""Start the app: `python -m ui [--host H] [--port P] [--workspace DIR] [--share --auth user:pass]`."""

from __future__ import annotations

import argparse
import logging
import sys

from lab import Lab, jobs
from lab.experiments import seed_prompt_pool
from lab.models import DEFAULT_MODEL, DEVICES, PRECISIONS
from lab.presets import question_sets
from lab.store import Store
from ui.app import CSS, build_app

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m ui", description="Alignment Lab in the browser.")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--workspace", default=None, help="workspace folder (default $LAB_WORKSPACE or ./workspace)")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="model to load at start")
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS)
    parser.add_argument("--device", default="auto", choices=DEVICES)
    parser.add_argument("--share", action="store_true", help="open a public Gradio link (needs --auth)")
    parser.add_argument("--auth", default=None, metavar="USER:PASS", help="require this login")
    args = parser.parse_args(argv)
    if (args.share or args.host not in LOCAL_HOSTS) and not args.auth:
        parser.error("--share and a non-local --host expose the lab to others: add --auth USER:PASS")
    if args.auth and ":" not in args.auth:
        parser.error("--auth must look like USER:PASS")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # One line per refused request on the terminal (ui.errors.UserError); tracebacks only for real faults.
    log = logging.getLogger("alignment_lab")
    log.setLevel(logging.INFO)
    log.addHandler(logging.StreamHandler())
    store = Store(args.workspace)
    seed_prompt_pool(store, question_sets())
    jobs.watch(store)  # repairs runs left "running" by a previous app, then keeps the queue moving
    ctx = Lab(store, shared=args.share or args.host not in LOCAL_HOSTS)
    ctx.load_in_background(args.model, args.precision, args.device)
    app = build_app(ctx)
    auth = tuple(args.auth.split(":", 1)) if args.auth else None
    print(f"Workspace: {store.root}", file=sys.stderr)
    app.queue(default_concurrency_limit=4).launch(
        server_name=args.host,
        server_port=args.port,
        share=args.share,
        auth=auth,
        css=CSS,
        footer_links=[],
        show_error=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
