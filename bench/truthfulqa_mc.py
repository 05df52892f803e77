"""TruthfulQA multiple choice on the embedded default model: every question, plain and with the paper's helpful
prompt, MC1 and MC2 with 95% intervals, the time each pass took and the throughput in answers per second (every
answer of the CSV counted, the best answer twice as the paper lists it), with the CPU, its threads, the load average
and whether the scoring ran in bf16.

Usage: python bench/truthfulqa_mc.py [--csv ../shared/data/truthfulqa/TruthfulQA.csv] [--limit N] [--batch-size 64]
                                     [--fp32] [--adapter RUN_DIR/adapter] [--out result.json]

The target (issue 14) is all 817 questions in under 5 minutes on 2 CPU cores, per pass.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script from anywhere: make `lab` importable
CSV = ROOT.parent / "shared" / "data" / "truthfulqa" / "TruthfulQA.csv"


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def load() -> str:
    """The 1- and 5-minute load averages: other work on a shared machine slows a pass down."""
    one, five, _ = os.getloadavg()
    return f"{one:.2f}/{five:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--csv", default=str(CSV))
    parser.add_argument("--limit", type=int, default=0, help="only the first N questions (0 = all)")
    parser.add_argument("--batch-size", type=int, default=64, help="answers scored in one forward pass")
    parser.add_argument("--fp32", action="store_true", help="score in fp32 even on a CPU with native bf16")
    parser.add_argument("--adapter", default="", help="also score the base with this adapter folder")
    parser.add_argument("--out", default="")
    args = parser.parse_args()

    import torch

    from lab.evaluate import HELPFUL_PROMPT, paired_difference, scores_in_bf16, truthfulqa_mc
    from lab.models import ModelManager
    from lab.refs import BASE_VIEW, DEFAULT_MODEL
    from lab.truthfulqa import read_questions

    questions = read_questions(args.csv)
    questions = questions[: args.limit] if args.limit else questions
    answers = sum(1 + len(q.correct) + len(q.incorrect) for q in questions)
    print(f"{cpu_name()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, load {load()}")
    print(f"{len(questions)} questions, {answers} answers to score per pass, batch {args.batch_size}")
    manager = ModelManager(on_status=lambda _: None)
    manager.load(DEFAULT_MODEL, "fp32", "cpu")
    passes = [("plain", None, BASE_VIEW), ("helpful prompt", HELPFUL_PROMPT, BASE_VIEW)]
    if args.adapter:
        manager.add_adapter("tuned", args.adapter)
        passes.append(("tuned adapter", None, "tuned"))
    with manager.use(BASE_VIEW) as lm:
        bf16 = scores_in_bf16(lm) and not args.fp32
    print(f"scoring in {'bf16 (autocast)' if bf16 else 'fp32'}")
    results, report = {}, {}
    for label, system, view in passes:
        start = time.perf_counter()
        with manager.use(view) as lm:
            results[label] = truthfulqa_mc(lm, questions, system, label, args.batch_size, bf16)
        seconds = time.perf_counter() - start
        print(
            f"{results[label].summary()}; {seconds:.1f} s ({answers / seconds:.1f} answers/s, 817 questions in "
            f"{seconds * 817 / len(questions) / 60:.1f} min at this rate; load {load()})"
        )
        report[label] = {"mc1": results[label].mc1, "mc2": results[label].mc2, "seconds": seconds, "bf16": bf16}
    for label in list(results)[1:]:
        for metric in ("mc1", "mc2"):
            print(f"{label} vs plain: {paired_difference(results['plain'], results[label], metric).summary()}")
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
