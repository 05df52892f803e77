"""A finished pipeline's results: its evaluation's report, the before/after table and the verdicts."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lab import jobs
from lab.pipeline.record import TITLES, load

if TYPE_CHECKING:
    import pandas as pd

    from lab.session import Lab


def report(lab: Lab, pipeline_id: str) -> dict | None:
    """The evaluation's report, once the pipeline is done (lab.train.evaluation)."""
    from lab.train.evaluation import read_report

    run_id = load(lab.store, pipeline_id).runs["eval"]
    return read_report(jobs.run_dir(lab.store, run_id)) if run_id else None


def table(lab: Lab, pipeline_id: str) -> pd.DataFrame | None:
    """Before against after, one row per model: the base, the base with the scenario's prompt, after SFT and
    after DPO (or RLOO), each metric with its 95% interval (lab.evaluate.summary_table); None until done."""
    from lab.evaluate import report_table, summary_table

    record, found = load(lab.store, pipeline_id), report(lab, pipeline_id)
    if found is None:
        return None
    stages = {
        "base": "before",
        "base+prompt": "before, with the prompt",
        record.runs["sft"]: "after SFT",
        record.runs["policy"]: f"after {TITLES[record.method]}",
    }
    summary = summary_table(report_table({record.runs["eval"]: found}))
    summary.insert(0, "stage", [stages.get(model, model) for model in summary["model"]])
    return summary


def verdicts(lab: Lab, pipeline_id: str) -> list[str]:
    """The evaluation's one-sentence verdicts ("prompt or fine-tune?"), once done."""
    found = report(lab, pipeline_id)
    return [v["sentence"] for v in found.get("verdicts", [])] if found else []
