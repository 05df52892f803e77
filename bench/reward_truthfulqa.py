"""A reward model on real data: TruthfulQA's best answers chosen over its incorrect ones, trained through the app's
API on the CPU, then scored on the questions it never saw.

The pairs come from the public CSV (../shared/data/truthfulqa/TruthfulQA.csv): per question, the best answer is
chosen and the first `--pairs-per-question` incorrect answers rejected. The reward method holds out whole prompts
(`split_by_prompt(rows, eval_fraction, seed)`), so every held-out pair is a question the model never trained on.
`inspect_reward` then gives the held-out accuracy with a Wilson 95% interval, the "always prefer the longer answer"
baseline and reward against length. The machine's load average is printed at the start and the end: other work on
the same cores stretches the minutes.

Usage:
    python bench/reward_truthfulqa.py [--pairs-per-question 1] [--epochs 1] [--max-steps -1]
                                      [--learning-rate 2e-4] [--out result.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script from anywhere: make `lab` importable
DATA = ROOT.parent / "shared" / "data" / "truthfulqa" / "TruthfulQA.csv"


def cpu_model() -> str:
    """The CPU's model name as /proc/cpuinfo gives it, and the number of cores this process may use."""
    name = "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    return f"{name} ({len(os.sched_getaffinity(0))} cores)"


def write_pairs(folder: Path, pairs_per_question: int) -> tuple[Path, int]:
    """TruthfulQA's preference pairs as a JSONL file in `folder`; returns (file, number of questions)."""
    from lab.truthfulqa import preference_rows, read_questions

    questions = read_questions(DATA)
    path = folder / "truthfulqa_pairs.jsonl"
    rows = preference_rows(questions, pairs_per_question)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path, len(questions)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs-per-question", type=int, default=1)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--max-steps", type=int, default=-1, help="-1 = run the epochs")
    parser.add_argument("--learning-rate", type=float, default=2e-4)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--max-minutes",
        type=float,
        default=0,
        help="stop the run after this long (the app's stop: the adapter learned so far is kept and inspected)",
    )
    parser.add_argument("--out", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args()

    from lab import Lab
    from lab.reward_report import inspect_reward
    from lab.train.common import native_bf16

    load_start = os.getloadavg()
    print(f"load average at start (1/5/15 min): {load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f}")
    with tempfile.TemporaryDirectory(prefix="reward-truthfulqa-") as tmp:
        pairs, n_questions = write_pairs(Path(tmp), args.pairs_per_question)
        lab = Lab(Path(tmp) / "workspace")
        settings = dict(
            epochs=args.epochs,
            max_steps=args.max_steps,
            batch_size=args.batch_size,
            learning_rate=args.learning_rate,
            warmup_ratio=0.1,
            lora_r=16,
            lora_alpha=32,
            eval_fraction=0.2,
            max_length=256,
            seed=args.seed,
            # TRL scores the held-out pairs every logging_steps: on 2 busy cores each pass costs minutes, and
            # inspect_reward scores them once more at the end.
            logging_steps=40,
            save_steps=100_000,  # no checkpoints: nothing resumes this run
        )
        start = time.monotonic()
        run = lab.train("reward", data=pairs, preset="cpu-default", name="truthfulqa", **settings)
        try:
            status = run.wait(timeout=args.max_minutes * 60 or None, poll_s=2.0)
        except TimeoutError:
            print(f"Stopping after {args.max_minutes:g} minutes; the adapter learned so far is inspected.", flush=True)
            run.stop()
            status = run.wait(poll_s=2.0)
        minutes = (time.monotonic() - start) / 60
        if status == "failed" or run.adapter is None:
            log = run.folder / "log.txt"
            tail = log.read_text(encoding="utf-8")[-3000:] if log.is_file() else ""
            sys.exit(f"The reward run ended {status}:\n{tail}")
        final = json.loads((run.folder / "final_metrics.json").read_text(encoding="utf-8"))
        steps, epochs = int(final.get("step", 0)), final.get("epoch", 0.0)
        report = inspect_reward(lab.store, run.id, device="cpu")
    load_end = os.getloadavg()

    low, high = report.accuracy_ci
    r = "undefined" if report.length_r is None else f"{report.length_r:.3f}"
    bf16 = native_bf16("cpu")
    print(f"TruthfulQA reward model, embedded SmolLM2-135M-Instruct, LoRA r16, lr {args.learning_rate:g},")
    print(f"  {n_questions} questions x {args.pairs_per_question} pair(s), 20% of the questions held out")
    print(f"held-out pairs:            {report.n_pairs}")
    print(f"held-out accuracy:         {report.accuracy:.3f} (95% CI {low:.3f} to {high:.3f})")
    print(f"'always longer' baseline:  {report.length_baseline:.3f}")
    print(f"reward vs length r:        {r}")
    print(f"training:                  {minutes:.1f} min ({status}, with the app's start and model load)")
    print(f"                           {steps} steps = {epochs:.2f} epochs")
    print(f"CPU:                       {cpu_model()}; bf16 native: {bf16}")
    print(f"load average at end (1/5/15 min): {load_end[0]:.2f} {load_end[1]:.2f} {load_end[2]:.2f}")
    if args.out:
        figures = {
            "questions": n_questions,
            "pairs_per_question": args.pairs_per_question,
            "settings": settings,
            "held_out_pairs": report.n_pairs,
            "accuracy": report.accuracy,
            "accuracy_ci": [low, high],
            "length_baseline": report.length_baseline,
            "length_r": report.length_r,
            "train_minutes": minutes,
            "steps": steps,
            "epochs": epochs,
            "status": status,
            "cpu": cpu_model(),
            "bf16_native": bf16,
            "load_average_start": load_start,
            "load_average_end": load_end,
        }
        args.out.write_text(json.dumps(figures, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
