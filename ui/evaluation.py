"""Evaluation tab: queue an evaluation of several models on held-out prompts, watch it, and compare reports.

The models are views of one base ('base' or a chat run), each optionally asked with a prompt ('+ prompt'); the
first is the reference. Picking a prompt experiment fills that prompt with its best-rated variant, so "would a
better prompt do, or do I need to fine-tune?" is one click. Results: one table and one chart for the runs
picked, the verdict, TruthfulQA per category, and the pairs sent to the Ranking tab for human judgement.
"""

from __future__ import annotations

from functools import partial

import gradio as gr
import pandas as pd

from lab import Lab, jobs
from lab.evaluate import HELPFUL_PROMPT, report_figure, report_table, summary_table
from lab.experiments import best_prompt
from lab.preferences import send_to_ranking
from lab.refs import BASE_VIEW, DEFAULT_MODEL
from lab.train.evaluation import CHAT_JUDGE, PROMPTED, read_report
from lab.train.runs import log_tail
from ui.reward_models import NO_REWARD, reward_model_choices

POOL = "the workspace's prompt pool"
NO_EXPERIMENT = "(none: type the prompt)"
NO_EVALUATION = (
    "**No evaluation yet:** pick the models and the held-out prompts on the left and press **Run evaluation**; "
    "its table and chart show here. To have an *after* to compare, train an adapter in the Training tab first."
)
PICK_EVALUATION = "Pick an evaluation above to see its table and chart."


def build_evaluation(ctx: Lab, tab: gr.Tab | None = None) -> None:
    with gr.Row():
        with gr.Column(scale=2):
            gr.Markdown("### New evaluation")
            models = gr.Dropdown(
                model_choices(ctx),
                value=[BASE_VIEW],
                multiselect=True,
                label="Models",
                info="The first is the reference for the win rates; '+ prompt' asks a model with the prompt below",
                elem_id="eval-models",
            )
            experiment = gr.Dropdown(
                experiment_choices(ctx),
                value=NO_EXPERIMENT,
                label="Prompt or fine-tune? Use the best prompt of a prompt experiment",
                info="Fills the prompt below with its best-rated variant and compares every model with it and without",
                elem_id="eval-experiment",
            )
            with gr.Row():
                system = gr.Textbox(label="System prompt of the '+ prompt' models", lines=2, elem_id="eval-system")
                template = gr.Textbox("{question}", label="User turn of the '+ prompt' models", lines=2)
            helpful = gr.Button("Use the TruthfulQA paper's 'helpful' prompt", size="sm")
            with gr.Row():
                prompts = gr.Dropdown(
                    [POOL, *ctx.scenarios], value=POOL, label="Held-out prompts", scale=2, elem_id="eval-prompts"
                )
                prompts_file = gr.File(
                    label="…or a file of prompts (a 'prompt' column)",
                    file_types=[".jsonl", ".json", ".csv", ".parquet"],
                    scale=2,
                )
            with gr.Row():
                judge = gr.Dropdown(
                    judge_choices(ctx),
                    value=NO_REWARD,
                    label="Judge",
                    info="A reward model (win rates, mean reward), or a chat model reading both answers",
                    elem_id="eval-judge",
                )
                checks = gr.Textbox(
                    label="Rule check",
                    placeholder="e.g. scenario:Truthfulness",
                    info="A rule spec (lab.rewards)",
                    elem_id="eval-checks",
                )
            with gr.Row():
                truthfulqa = gr.File(
                    label="TruthfulQA CSV (optional): MC1 and MC2", file_types=[".csv"], elem_id="eval-truthfulqa"
                )
                mc_limit = gr.Number(0, label="MC questions (0 = all)", precision=0, minimum=0)
            with gr.Row():
                max_prompts = gr.Number(
                    20, label="Prompts (0 = all)", precision=0, minimum=0, elem_id="eval-max-prompts"
                )
                max_new_tokens = gr.Number(
                    96, label="Max new tokens", precision=0, minimum=1, elem_id="eval-max-new-tokens"
                )
            start = gr.Button("Run evaluation", variant="primary", elem_id="eval-start")
            message = gr.Markdown(elem_id="eval-message")
        with gr.Column(scale=3):
            gr.Markdown("### Results")
            runs = gr.Dropdown(
                run_choices(ctx),
                multiselect=True,
                label="Evaluations to show",
                info="Pick one, or several to compare",
                elem_id="eval-runs",
            )
            status = gr.Markdown(elem_id="eval-status")
            verdicts = gr.Markdown(partial(empty_results, ctx, None), elem_id="eval-verdict")  # on every page load
            table = gr.Dataframe(interactive=False, wrap=True, elem_id="eval-table", visible=False)
            chart = gr.Plot(elem_id="eval-chart", visible=False)
            categories = gr.Dataframe(interactive=False, label="TruthfulQA by category (first run)", visible=False)
            with gr.Row(equal_height=True):
                send_model = gr.Dropdown([], label="Send a model's pairs to the Ranking tab", scale=2)
                send = gr.Button("Send to Ranking", scale=1, elem_id="eval-send")
            sent = gr.Markdown(elem_id="eval-sent")

    form = [models, experiment, system, template, prompts, prompts_file, judge, checks, truthfulqa, mc_limit]
    form += [max_prompts, max_new_tokens]
    shown = [table, chart, verdicts, categories, send_model]
    experiment.change(partial(fill_prompt, ctx), experiment, [system, template, message])
    helpful.click(lambda: (HELPFUL_PROMPT, "{question}"), outputs=[system, template])
    start.click(partial(start_evaluation, ctx), form, [message, runs])
    runs.change(partial(show_reports, ctx), runs, shown)
    send.click(partial(send_pairs, ctx), [runs, send_model], sent)
    finished = gr.State([])  # the picked runs that have finished: when it grows, their reports show
    gr.Timer(2.0).tick(partial(watch, ctx), runs, [status, finished], show_progress="hidden")
    finished.change(partial(show_reports, ctx), runs, shown)
    models.focus(lambda: gr.update(choices=model_choices(ctx)), outputs=models)
    experiment.focus(lambda: gr.update(choices=experiment_choices(ctx)), outputs=experiment)
    judge.focus(lambda: gr.update(choices=judge_choices(ctx)), outputs=judge)
    if tab is not None:
        tab.select(lambda: gr.update(choices=run_choices(ctx)), outputs=runs)


def _base(ctx: Lab) -> tuple[str, str]:
    """The base to evaluate on, and its precision: the loaded model's, else the embedded default."""
    loaded = ctx.models.loaded
    return (loaded.base, loaded.precision) if loaded else (DEFAULT_MODEL, "fp32")


def _views(ctx: Lab) -> list[tuple[str, str]]:
    """(label, view): 'base' and every chat run trained on the base."""
    return [(BASE_VIEW, BASE_VIEW)] + [(a.label, i) for i, a in ctx.adapters(kind="chat", base=_base(ctx)[0]).items()]


def model_choices(ctx: Lab) -> list[tuple[str, str]]:
    """Every view of the base, each plain and with the prompt."""
    views = _views(ctx)
    return [
        (f"{label}{suffix}", f"{view}{tag}")
        for label, view in views
        for suffix, tag in (("", ""), (" + prompt", PROMPTED))
    ]


def judge_choices(ctx: Lab) -> list[tuple[str, str]]:
    """The reward runs, then every chat view of the base as a judge that reads both answers (chat:VIEW)."""
    return reward_model_choices(ctx) + [(f"chat model: {label}", f"{CHAT_JUDGE}{view}") for label, view in _views(ctx)]


def experiment_choices(ctx: Lab) -> list[tuple[str, str]]:
    return [(NO_EXPERIMENT, NO_EXPERIMENT)] + [(e.name, str(e.id)) for e in ctx.store.list_experiments()]


def run_choices(ctx: Lab) -> list[tuple[str, str]]:
    """Every evaluation run, newest first."""
    return [(f"{r.name or r.id} · {r.status}", r.id) for r in ctx.store.list_runs() if r.method == "eval"]


def fill_prompt(ctx: Lab, experiment: str):
    if experiment == NO_EXPERIMENT:
        return gr.skip(), gr.skip(), ""
    try:
        variant = best_prompt(ctx.store, int(experiment))
    except ValueError as err:
        return gr.skip(), gr.skip(), f"**{err}**"
    return variant.get("system") or "", variant["template"], f"Best prompt: variant **{variant['name']}**."


def start_evaluation(
    ctx: Lab,
    models,
    experiment,
    system,
    template,
    prompts,
    prompts_file,
    judge,
    checks,
    truthfulqa,
    mc_limit,
    max_prompts,
    max_new_tokens,
):
    """Queue the evaluation; a problem comes back as one sentence beside the button and queues nothing."""
    base, precision = _base(ctx)
    try:
        if not models:
            raise ValueError("Pick at least one model: the first is the reference.")
        run = ctx.evaluate(
            list(models),
            prompts=prompts_file or "",
            scenario="" if prompts_file or prompts == POOL else prompts,
            experiment=None if experiment == NO_EXPERIMENT else int(experiment),
            model=base,
            precision=precision,
            system=system or "",
            template=template or "{question}",
            judge="" if judge in (None, NO_REWARD) else judge,
            checks=(checks or "").strip(),
            truthfulqa=truthfulqa or "",
            mc_limit=int(mc_limit or 0),
            max_prompts=int(max_prompts or 0),
            max_new_tokens=int(max_new_tokens or 96),
        )
    except (ValueError, KeyError, OSError) as err:
        return f"**{err}**", gr.skip()
    return (
        f"Queued **{run.id}**: it runs when the device is free; its progress shows on the right.",
        gr.update(choices=run_choices(ctx), value=[run.id]),
    )


def show_reports(ctx: Lab, run_ids: list[str] | None):
    """The table and chart of the reports picked, the verdicts, and the first's TruthfulQA per category."""
    reports = {i: r for i in run_ids or [] if (r := read_report(ctx.store.runs_dir / i)) is not None}
    if not reports:
        hidden = gr.update(value=None, visible=False)
        return hidden, hidden, empty_results(ctx, run_ids), hidden, gr.update(choices=[], value=None)
    table = report_table(reports)
    verdicts = [f"- {v['sentence']}" for r in reports.values() for v in r.get("verdicts", [])]
    first = next(iter(reports.values()))
    frames = [pd.DataFrame(rows).assign(model=name) for name, rows in first.get("mc_by_category", {}).items()]
    by_category = pd.concat(frames) if frames else pd.DataFrame()
    models = [row["model"] for row in first["models"][1:]]
    return (
        gr.update(value=summary_table(table), visible=True),
        gr.update(value=report_figure(table), visible=True),
        "\n".join(verdicts),
        gr.update(value=by_category, visible=not by_category.empty),
        gr.update(choices=models, value=models[0] if models else None),
    )


def empty_results(ctx: Lab, picked: list[str] | None) -> str:
    """What the results say with no report to show: how to get one, or nothing while a picked one runs (its status
    line says how far it is)."""
    if picked:
        return ""
    return PICK_EVALUATION if run_choices(ctx) else NO_EVALUATION


def watch(ctx: Lab, picked: list[str] | None):
    """The progress of the picked evaluations still running (their log's last line), and which have finished."""
    lines, finished = [], []
    for run_id in picked or []:
        run = ctx.store.get_run(run_id)
        if run.status in jobs.FINISHED:
            finished.append(run_id)
            if run.status == "failed":
                lines.append(f"**{run_id} failed:** {run.error}")
            continue
        last = log_tail(ctx.store.runs_dir / run_id, 1)
        lines.append(f"**{run_id}** {run.status}: {last or 'waiting to start'}")
    return "\n\n".join(lines), finished


def send_pairs(ctx: Lab, run_ids: list[str] | None, model: str | None) -> str:
    if not run_ids or not model:
        return "**Pick an evaluation and a model first.**"
    try:
        queue = send_to_ranking(ctx.store, run_ids[0], model)
    except ValueError as err:
        return f"**{err}**"
    return f"Sent: in the Ranking tab, pick the prompt queue **{queue}** and vote on its pairs."
