"""Headless commands: `python -m lab <command> --help`.

Examples:
    python -m lab models
    python -m lab generate --prompt "Why is the sky blue?" --max-new-tokens 64
    python -m lab generate --prompt "Hi" --system "Answer like a pirate." --model ./my-model --precision 4bit
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path

from lab.generate import GenerationSettings, PromptTooLongError, build_messages, stream_chat
from lab.models import BASE_VIEW, DEFAULT_MODEL, DEVICES, PRECISIONS, ModelError, ModelManager, list_models


def cmd_models(args: argparse.Namespace) -> int:
    """List the models the lab can load here and whether each is already converted in the cache."""
    for row in list_models():
        state = "cached" if row["cached"] else ("available" if row["available"] else "missing")
        print(f"{row['name']:<28} {row['kind']:<24} {state:<10} {row['path']}")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    """Stream one reply to --prompt from --model (the embedded default unless given)."""
    settings = GenerationSettings(args.temperature, args.top_p, args.max_new_tokens, args.seed, args.stop or [])
    manager = ModelManager(on_status=lambda message: print(message, file=sys.stderr))
    manager.load(args.model, args.precision, args.device)
    view = BASE_VIEW
    if args.adapter:
        view = Path(args.adapter).name
        manager.add_adapter(view, args.adapter)
    printed = ""
    for text in stream_chat(partial(manager.use, view), build_messages(args.prompt, args.system), settings):
        print(text[len(printed) :], end="", flush=True)
        printed = text
    print()
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lab", description="Alignment Lab, headless.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    models = sub.add_parser("models", help=cmd_models.__doc__, description=cmd_models.__doc__)
    models.set_defaults(func=cmd_models)

    gen = sub.add_parser("generate", help=cmd_generate.__doc__, description=cmd_generate.__doc__)
    gen.add_argument("--prompt", required=True, help="the user message")
    gen.add_argument("--system", default=None, help="an optional system prompt")
    gen.add_argument("--model", default=DEFAULT_MODEL, help=f"model reference (default: {DEFAULT_MODEL})")
    gen.add_argument("--adapter", default=None, help="a LoRA adapter folder to apply")
    gen.add_argument("--precision", default="fp32", choices=PRECISIONS)
    gen.add_argument("--device", default="auto", choices=DEVICES)
    gen.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    gen.add_argument("--top-p", type=float, default=1.0)
    gen.add_argument("--max-new-tokens", type=int, default=256)
    gen.add_argument("--seed", type=int, default=None)
    gen.add_argument("--stop", action="append", help="stop string (repeatable)")
    gen.set_defaults(func=cmd_generate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except (ModelError, PromptTooLongError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
