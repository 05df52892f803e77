"""What stop strings at the lab's limit add to a request, the lab's way against transformers' `stop_strings`.

A request holds the one model while it generates, so everything it spends before its first token delays
everyone behind it. transformers' `stop_strings` builds tables over the whole vocabulary for each stop
string; the lab matches the decoded tail of the reply instead. Both generate the same greedy reply on the
embedded default model; the figure is the median wall time of `generate` with the limit's stop strings
minus without any, over interleaved rounds.

Usage:
    python bench/stop_strings.py [--rounds 3] [--new-tokens 16]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

import torch  # noqa: E402

from lab import limits  # noqa: E402
from lab.generate import GenerationSettings, build_messages, encode_chat, generate  # noqa: E402
from lab.models import DEFAULT_MODEL, load_model  # noqa: E402


def stops(round_: int) -> list[str]:
    """The limit's stop strings, never met, new each round: transformers caches its tables per set of strings,
    and a request with strings of its own pays for them in full."""
    return [f"{round_}-{n}-".ljust(limits.STOP_STRING_CHARS, chr(ord("A") + n)) for n in range(limits.STOP_STRINGS)]


def timed(call) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=16)
    args = parser.parse_args(argv)
    lm = load_model(DEFAULT_MODEL, "fp32", "cpu", progress=lambda _: None)
    messages = build_messages("Write a short poem about the sea.")
    ids = encode_chat(lm, messages, args.new_tokens)

    def lab(stop: list[str]) -> float:
        return timed(lambda: generate(lm, messages, GenerationSettings(0.0, 1.0, args.new_tokens, None, stop)))

    def plain(stop: list[str]) -> float:
        extra = {"stop_strings": stop, "tokenizer": lm.tokenizer} if stop else {}
        kwargs = dict(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, do_sample=False, **extra)
        return timed(lambda: lm.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **kwargs))

    lab([]), plain([])  # warm-up
    times: dict[str, list[float]] = {"lab": [], "lab+stops": [], "plain": [], "plain+stops": []}
    for round_ in range(args.rounds):
        times["lab"].append(lab([]))
        times["lab+stops"].append(lab(stops(round_)))
        times["plain"].append(plain([]))
        times["plain+stops"].append(plain(stops(round_)))
    med = {k: statistics.median(v) for k, v in times.items()}
    print(
        f"{limits.STOP_STRINGS} stop strings of {limits.STOP_STRING_CHARS} characters, {DEFAULT_MODEL}, cpu, "
        f"{args.new_tokens} new tokens, {args.rounds} rounds, {os.cpu_count()} cores"
    )
    print(f"  lab (decoded-tail matching): +{med['lab+stops'] - med['lab']:.2f} s per request")
    print(f"  transformers stop_strings:   +{med['plain+stops'] - med['plain']:.2f} s per request")
    print(f"  target: at most 1 s -> {'PASS' if med['lab+stops'] - med['lab'] <= 1.0 else 'FAIL'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
