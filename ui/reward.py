"""Reward tab: train a reward model on the votes, see whether to trust it, and score any answers with it.

Inspect scores the run's held-out pairs (lab.reward_report): accuracy with its interval beside the longer-answer
baseline and the annotators' own agreement, the two figures, and the pairs it gets most wrong, whose votes can be
withdrawn here when the label was the mistake. Score anything calls the one scoring function (Lab.score).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import gradio as gr
import pandas as pd

from lab import Lab
from lab.models import ModelError
from lab.reward_report import ScoredPair, votes_behind
from lab.train import get_method
from ui.errors import UserError
from ui.reward_models import reward_model_choices
from ui.votes import VotePicker, build_vote_picker, pair_count

WORST_COLUMNS = ["#", "prompt", "chosen by the annotators", "rejected", "chosen reward", "rejected reward", "votes"]
RESPONSES = 4
NO_REWARD_MODEL = (
    "**No reward model yet:** vote in the Ranking tab (or import pairs in the Arena), then train one above, "
    "or in the Training tab with method *reward*."
)
PICK_AND_INSPECT = "Pick a reward model above and press **Inspect** to see whether to trust it."


@dataclass
class Inspection:
    summary: gr.Markdown
    histogram: gr.Plot
    lengths: gr.Plot
    worst: gr.Dataframe
    pick: gr.Dropdown
    pairs: gr.State  # the worst pairs on screen (ScoredPair), for withdrawing the votes behind one

    @property
    def outputs(self) -> list:
        return [self.summary, self.histogram, self.lengths, self.worst, self.pick, self.pairs]


def build_reward(ctx: Lab, tab: gr.Tab | None = None) -> None:
    runs = reward_model_choices(ctx, with_none=False)
    run = gr.Dropdown(
        runs,
        value=runs[0][1] if runs else None,
        label="Reward model",
        elem_id="reward-run",
        info="A finished or stopped reward run of this workspace",
    )
    with gr.Accordion("Train a reward model on the votes", open=not runs):
        with gr.Row():
            preset = gr.Dropdown(
                list(ctx.model_presets),
                value="cpu-default" if "cpu-default" in ctx.model_presets else next(iter(ctx.model_presets)),
                label="Model preset",
                info="Model, precision and the reward recipe for your hardware (learning rate, batch, epochs)",
            )
            train = gr.Button("Train reward model", variant="primary", elem_id="reward-train")
        votes = build_vote_picker(ctx, elem_prefix="reward")
        train_note = gr.Markdown(elem_id="reward-train-note")
        gr.Markdown("To train on a file or change hyperparameters, use the Training tab (method *reward*).")

    gr.Markdown("### Inspect")
    inspect = gr.Button("Inspect on its held-out pairs", elem_id="reward-inspect")
    summary = gr.Markdown(partial(inspect_hint, ctx), elem_id="reward-summary")  # on every page load
    with gr.Row():  # the figures show once a model is inspected
        histogram = gr.Plot(label="Rewards of chosen and rejected answers", visible=False)
        lengths = gr.Plot(label="Reward against length", visible=False)
    worst = gr.Dataframe(
        pd.DataFrame(columns=WORST_COLUMNS),
        label="Held-out pairs it gets most wrong (the rejected answer scored furthest above the chosen one)",
        interactive=False,
        wrap=True,
        elem_id="worst-pairs",
        column_widths=["4%", "22%", "25%", "25%", "8%", "8%", "8%"],
    )
    with gr.Row(equal_height=True):
        pick = gr.Dropdown([], label="Pair #", scale=1, info="A pair whose label looks wrong")
        withdraw = gr.Button("Withdraw the votes behind it", size="sm", scale=1, elem_id="reward-withdraw")
        fix_note = gr.Markdown(elem_id="reward-fix-note")
    view = Inspection(summary, histogram, lengths, worst, pick, gr.State([]))

    gr.Markdown("### Score anything")
    prompt = gr.Textbox(label="Prompt", lines=2, elem_id="score-prompt")
    responses, scores = [], []
    for n in range(RESPONSES):
        with gr.Row(equal_height=True):
            responses.append(gr.Textbox(label=f"Response {n + 1}", lines=2, scale=5, elem_id=f"score-response-{n}"))
            scores.append(gr.Number(label="Reward", interactive=False, scale=1, elem_id=f"score-value-{n}"))
    with gr.Row(equal_height=True):
        score_button = gr.Button("Score", variant="primary", elem_id="score-run", scale=1)
        score_note = gr.Markdown(elem_id="score-note")

    run.focus(lambda: gr.update(choices=reward_model_choices(ctx, with_none=False)), outputs=run)
    count = partial(count_for_preset, ctx, votes, preset)
    for trigger in (preset, *votes.inputs):
        trigger.change(count, {preset, *votes.inputs}, votes.count)
    if tab is not None:  # counted when the tab opens, so the votes cast since are in it
        tab.select(count, {preset, *votes.inputs}, votes.count)
    train.click(partial(start_training, ctx, votes, preset), {preset, *votes.inputs}, [train_note, run])
    inspect.click(partial(inspect_run, ctx, view), run, view.outputs)
    withdraw.click(partial(withdraw_votes, ctx), [view.pick, view.pairs], fix_note)
    rescore = partial(score_responses, ctx)
    score_button.click(rescore, [run, prompt, *responses], [*scores, score_note])
    for box in responses:
        box.blur(rescore, [run, prompt, *responses], [*scores, score_note], show_progress="hidden")


def count_for_preset(ctx: Lab, votes: VotePicker, preset: gr.Dropdown, values: dict) -> str:
    """The pair count at the held-out share the preset's reward recipe uses."""
    config = get_method("reward").config_for(ctx.model_presets[values[preset]])
    return pair_count(ctx, votes, values, None, config.eval_fraction)


def start_training(ctx: Lab, votes: VotePicker, preset: gr.Dropdown, values: dict):
    try:
        run = ctx.train("reward", preset=values[preset], **votes.options(values))
    except (ValueError, KeyError) as err:
        raise UserError(str(err).strip("'\"")) from err
    message = (
        f"Run **{run.id}** {run.status}: its curves are in the Training tab. When it is done, pick it above and "
        "inspect it."
    )
    return message, gr.update(choices=reward_model_choices(ctx, with_none=False))


def inspect_hint(ctx: Lab) -> str:
    """What the Inspect section says before anything is inspected: train a model first, or pick one."""
    return PICK_AND_INSPECT if reward_model_choices(ctx, with_none=False) else NO_REWARD_MODEL


def inspect_run(ctx: Lab, view: Inspection, run_id: str | None) -> dict:
    if not run_id:
        raise UserError("Pick a reward model first (train one above if there is none).")
    try:
        report = ctx.inspect_reward(run_id)
    except (ValueError, ModelError) as err:
        raise UserError(str(err)) from err
    votes = ctx.store.list_comparisons()
    behind = [len(votes_behind(votes, pair)) for pair in report.worst]
    rows = [
        {
            "#": n,
            "prompt": _prompt_text(pair),
            "chosen by the annotators": pair.chosen,
            "rejected": pair.rejected,
            "chosen reward": round(pair.chosen_reward, 3),
            "rejected reward": round(pair.rejected_reward, 3),
            "votes": votes,
        }
        for n, (pair, votes) in enumerate(zip(report.worst, behind, strict=True), 1)
    ]
    return {
        view.summary: report.summary(),
        view.histogram: gr.update(value=report.reward_histogram(), visible=True),
        view.lengths: gr.update(value=report.reward_vs_length(), visible=True),
        view.worst: pd.DataFrame(rows, columns=WORST_COLUMNS),
        view.pick: gr.update(choices=[str(n) for n in range(1, len(rows) + 1)], value=None),
        view.pairs: report.worst,
    }


def _prompt_text(pair: ScoredPair) -> str:
    return pair.prompt if isinstance(pair.prompt, str) else pair.prompt[-1]["content"]


def withdraw_votes(ctx: Lab, number: str | None, pairs: list[ScoredPair]) -> str:
    """Withdraw the workspace votes that made a wrongly labelled pair; a file's pair is fixed in the file."""
    if not number or not pairs:
        raise UserError("Inspect a reward model, then pick the number of a pair to fix.")
    pair = pairs[int(number) - 1]
    found = votes_behind(ctx.store.list_comparisons(), pair)
    if not found:
        return f"No live vote in this workspace made pair {number} (it came from a file, or was withdrawn already)."
    try:
        withdrawn = ctx.store.withdraw_comparisons([v.id for v in found])
    except ValueError as err:  # the workspace's disk is full: the votes stay
        raise UserError(str(err)) from err
    who = ", ".join(sorted({v.annotator or "an import" for v in found}))
    return (
        f"Withdrew {len(withdrawn)} vote(s) behind pair {number} (by {who}). Vote on the prompt again in the Ranking "
        "tab if you like, then train a new reward model: this one was trained before the change."
    )


def score_responses(ctx: Lab, run_id: str | None, prompt: str, *responses: str) -> list:
    """A reward for each non-empty response, blank for the empty ones, and which one scores highest."""
    filled = [(n, text) for n, text in enumerate(responses) if text and text.strip()]
    if not run_id or not (prompt or "").strip() or not filled:
        return [None] * RESPONSES + ["Pick a reward model, write a prompt and at least one response."]
    try:
        rewards = ctx.score(run_id, prompt, [text for _, text in filled])
    except (ValueError, ModelError) as err:
        raise UserError(str(err)) from err
    values: list = [None] * RESPONSES
    for (n, _), reward in zip(filled, rewards, strict=True):
        values[n] = round(reward, 4)
    best = max(range(len(filled)), key=rewards.__getitem__)
    note = f"Response {filled[best][0] + 1} scores highest." if len(filled) > 1 else ""
    return [*values, note]
