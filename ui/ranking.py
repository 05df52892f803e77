"""Ranking tab: answers side by side, shuffled and anonymous, voted with the mouse or the keyboard.

Keys (when not typing in a box): 1 = A better, 2 = B better, 3 = tie, 4 = both bad, S = skip,
U = undo the last vote, N = next prompt.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import gradio as gr

from lab import Lab
from lab.adapters import attach_adapter
from lab.generate import GenerationSettings
from lab.models import BASE_VIEW, ModelError
from lab.preferences import (
    POOL_QUEUE,
    TYPED_QUEUE,
    Side,
    make_candidates,
    next_question,
    queue_status,
    shuffled_order,
    vote_ranks,
)
from lab.store import Comparison

LETTERS = "ABCD"
ONE_MODEL = "one model, different samples"
TWO_SIDES = "two model references"
TYPED = TYPED_QUEUE
POOL = POOL_QUEUE

SHORTCUTS = """
() => {
  document.addEventListener("keydown", (event) => {
    const target = event.target;
    if (target && (target.tagName === "TEXTAREA" || target.tagName === "INPUT")) return;
    const ids = {"1": "vote-a", "2": "vote-b", "3": "vote-tie", "4": "vote-bad", "s": "vote-skip",
                 "u": "vote-undo", "n": "vote-next"};
    const id = ids[event.key.toLowerCase()];
    const button = id && document.getElementById(id);
    if (button) { event.preventDefault(); button.click(); }
  });
}
"""


@dataclass
class Screen:
    """The components the vote handlers update; they return {component: value}, never long positional tuples."""

    task: gr.State  # the comparison on screen: prompt, candidates, shown order, queue source
    typed: gr.Textbox
    progress: gr.Markdown
    outcome: gr.Markdown
    reason: gr.Textbox
    panes: list[gr.Markdown]
    ranking_row: gr.Row
    rank_boxes: list[gr.Dropdown]
    pair_votes: list[gr.Button]  # "A is better" and "B is better": only for two answers

    @property
    def task_view(self) -> list:
        """What showing a new task updates (the outputs of Next and Generate)."""
        parts = [self.task, self.typed, self.progress, self.outcome, self.ranking_row]
        return [*parts, *self.panes, *self.rank_boxes, *self.pair_votes]


def build_ranking(ctx: Lab, app: gr.Blocks) -> None:
    task = gr.State(None)  # the comparison on screen: prompt, candidates, shown order, queue source
    annotator_memory = gr.BrowserState("", storage_key="alignment-lab-annotator")
    scenario_names = list(ctx.scenarios)
    with gr.Row():
        with gr.Column(scale=3):
            with gr.Row():
                annotator = gr.Textbox(
                    label="Your name",
                    elem_id="annotator",
                    scale=2,
                    info="Remembered by this browser; votes are counted per person",
                )
                scenario = gr.Dropdown(scenario_names, value=scenario_names[0], label="Scenario", scale=3)
                queue = gr.Dropdown(
                    [*scenario_names, POOL, TYPED],
                    value=scenario_names[0],
                    label="Prompt queue",
                    scale=3,
                    info="A scenario's question set, every prompt in the workspace, or typed",
                )
            typed = gr.Textbox(
                label="Prompt",
                lines=2,
                elem_id="rank-prompt",
                info="Filled from the queue by Next; edit or type your own",
            )
            with gr.Row():
                mode = gr.Radio([ONE_MODEL, TWO_SIDES], value=ONE_MODEL, label="Candidates from")
                k = gr.Slider(2, 4, value=2, step=1, label="How many (one model)")
                temperature = gr.Slider(0.1, 1.5, value=0.9, step=0.05, label="Temperature")
            with gr.Row(visible=False) as sides_row:
                view_a = gr.Dropdown(ctx.views(), value=BASE_VIEW, label="Model A")
                system_a = gr.Textbox(label="System prompt A", placeholder="optional")
                view_b = gr.Dropdown(ctx.views(), value=BASE_VIEW, label="Model B")
                system_b = gr.Textbox(label="System prompt B", placeholder="e.g. Answer truthfully and briefly.")
            with gr.Row():
                next_button = gr.Button("Next prompt (N)", variant="primary", elem_id="vote-next")
                generate_button = gr.Button("Generate for this prompt")
            progress = gr.Markdown(elem_id="rank-progress")
            with gr.Row(equal_height=True):
                panes = [
                    gr.Markdown(
                        f"**{letter}**",
                        elem_id=f"answer-{letter.lower()}",
                        container=True,
                        visible=n < 2,
                        min_height=120,
                    )
                    for n, letter in enumerate(LETTERS)
                ]
            with gr.Row():
                vote_a = gr.Button("A is better (1)", elem_id="vote-a")
                vote_b = gr.Button("B is better (2)", elem_id="vote-b")
                tie = gr.Button("Tie (3)", elem_id="vote-tie")
                both_bad = gr.Button("Both bad (4)", elem_id="vote-bad")
            with gr.Row(visible=False) as ranking_row:
                rank_boxes = [
                    gr.Dropdown([1, 2, 3, 4], value=n + 1, label=f"Rank of {letter}", visible=n < 4)
                    for n, letter in enumerate(LETTERS)
                ]
                submit_ranking = gr.Button("Submit ranking", variant="primary", elem_id="vote-rank")
            reason = gr.Textbox(label="Reason (optional)", lines=1, elem_id="vote-reason")
            with gr.Row():
                skip = gr.Button("Skip (S)", size="sm", elem_id="vote-skip")
                undo = gr.Button("Undo last vote (U)", size="sm", elem_id="vote-undo")
            outcome = gr.Markdown(elem_id="vote-outcome")
        with gr.Column(scale=1):
            guidelines = gr.Markdown(guidelines_text(ctx, scenario_names[0]), elem_id="guidelines")

    setup = [annotator, queue, typed, mode, k, temperature, view_a, system_a, view_b, system_b]
    screen = Screen(task, typed, progress, outcome, reason, panes, ranking_row, rank_boxes, [vote_a, vote_b])
    app.load(lambda name: name, annotator_memory, annotator, js=SHORTCUTS)
    annotator.change(lambda name: name, annotator, annotator_memory)
    scenario.change(partial(guidelines_text, ctx), scenario, guidelines)
    scenario.change(lambda name: name, scenario, queue)
    queue.change(partial(show_progress, ctx), [annotator, queue], progress)
    mode.change(
        lambda m: (gr.update(visible=m == TWO_SIDES), gr.update(interactive=m == ONE_MODEL)), mode, [sides_row, k]
    )
    for dropdown in (view_a, view_b):
        dropdown.focus(lambda: gr.update(choices=ctx.views()), outputs=dropdown)
    next_button.click(partial(next_task, ctx, screen, use_queue=True), setup, screen.task_view)
    generate_button.click(partial(next_task, ctx, screen, use_queue=False), setup, screen.task_view)
    votes = ((vote_a, "A"), (vote_b, "B"), (tie, "tie"), (both_bad, "both-bad"), (skip, "skipped"))
    for button, choice in (*votes, (submit_ranking, "ranking")):
        button.click(
            partial(cast_vote, ctx, screen, choice=choice),
            [task, annotator, reason, queue, *rank_boxes],
            [task, outcome, progress, reason],
        )
    undo.click(partial(undo_vote, ctx, screen), [annotator, queue], [outcome, progress])


def guidelines_text(ctx: Lab, scenario: str) -> str:
    preset = ctx.scenarios[scenario]
    return f"### Guidelines: {preset.name}\n\n{preset.description}\n\n{preset.guidelines}"


def show_progress(ctx: Lab, annotator: str, queue: str) -> str:
    """The annotator's progress through the queue, once they have typed their name."""
    annotator = (annotator or "").strip()
    return queue_status(ctx.store, ctx.scenarios, queue, annotator).text if annotator else ""


def next_task(
    ctx: Lab,
    screen: Screen,
    annotator: str,
    queue: str,
    typed: str,
    mode: str,
    k: float,
    temperature: float,
    view_a: str,
    system_a: str,
    view_b: str,
    system_b: str,
    use_queue: bool,
) -> dict:
    """Generate the candidates for the next queued prompt (or the typed one) and show them shuffled."""
    annotator = (annotator or "").strip()
    if not annotator:
        raise gr.Error("Type your name first: votes are counted per person.")
    status = queue_status(ctx.store, ctx.scenarios, queue, annotator)
    try:
        question, source = next_question(status, typed, use_queue)
    except ValueError as err:
        raise gr.Error(str(err)) from err
    sides = [Side(view_a, system_a or ""), Side(view_b, system_b or "")] if mode == TWO_SIDES else [Side(BASE_VIEW)]
    count = 2 if mode == TWO_SIDES else int(k)
    ctx.wait_for_model()
    try:
        for side in sides:
            attach_adapter(ctx.store, ctx.models, side.view)
        settings = GenerationSettings(temperature=float(temperature), top_p=0.95, max_new_tokens=128)
        candidates = make_candidates(ctx.models, question, sides, count, settings)
    except (ModelError, ValueError) as err:
        raise gr.Error(str(err)) from err
    order = shuffled_order(count)
    state = {
        "prompt": [{"role": "user", "content": question}],
        "candidates": candidates,
        "shown": order,
        "source": source,
    }
    shown = {
        screen.panes[p]: gr.update(value=f"**{LETTERS[p]}**\n\n{candidates[c]['text']}", visible=True)
        for p, c in enumerate(order)
    }
    hidden = {pane: gr.update(value="", visible=False) for pane in screen.panes[count:]}
    boxes = {
        box: gr.update(visible=n < count, choices=list(range(1, count + 1)), value=n + 1 if n < count else None)
        for n, box in enumerate(screen.rank_boxes)
    }
    pair = {button: gr.update(visible=count == 2) for button in screen.pair_votes}  # more answers: rank them
    return {
        screen.task: state,
        screen.typed: question,
        screen.progress: status.text,
        screen.outcome: "Which answer is better?",
        screen.ranking_row: gr.update(visible=count > 2),
        **shown,
        **hidden,
        **boxes,
        **pair,
    }


def cast_vote(
    ctx: Lab, screen: Screen, task: dict | None, annotator: str, reason: str, queue: str, *positions, choice: str
) -> dict:
    """Store the vote (it is in the database before the screen moves on), then reveal the models."""
    if not task:
        raise gr.Error("Press Next prompt first.")
    try:
        ranks, verdict = vote_ranks(choice, task["shown"], [int(p) for p in positions if p is not None])
    except ValueError as err:
        raise gr.Error(str(err)) from err
    comparison = Comparison(
        task["prompt"],
        task["candidates"],
        task["shown"],
        ranks,
        verdict,
        (annotator or "").strip(),
        (reason or "").strip(),
        task["source"],
    )
    try:
        ctx.store.add_comparison(comparison)
    except ValueError as err:
        raise gr.Error(str(err)) from err
    reveal = ", ".join(f"{LETTERS[p]} was **{task['candidates'][c]['model']}**" for p, c in enumerate(task["shown"]))
    said = {"skipped": "Skipped", "both-bad": "Saved: both bad", "tie": "Saved: tie"}.get(verdict, "Saved")
    return {
        screen.task: None,
        screen.outcome: f"{said} (vote #{comparison.id}). {reveal}. Press **N** for the next prompt.",
        screen.progress: queue_status(ctx.store, ctx.scenarios, queue, comparison.annotator).text,
        screen.reason: "",
    }


def undo_vote(ctx: Lab, screen: Screen, annotator: str, queue: str) -> dict:
    """Withdraw this annotator's latest vote (kept in the database, marked withdrawn)."""
    withdrawn = ctx.store.undo_last_comparison((annotator or "").strip())
    if withdrawn is None:
        raise gr.Error("You have no vote to undo.")
    return {
        screen.outcome: f"Withdrew vote #{withdrawn.id} on “{withdrawn.prompt[-1]['content'][:60]}”.",
        screen.progress: queue_status(ctx.store, ctx.scenarios, queue, withdrawn.annotator).text,
    }
