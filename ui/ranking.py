"""Ranking tab: answers side by side, shuffled and anonymous, voted with the mouse or the keyboard.

Keys (when not typing in a box): 1 = A better, 2 = B better, 3 = tie, 4 = both bad, S = skip,
U = undo the last vote, N = next prompt.
"""

from __future__ import annotations

from functools import partial

import gradio as gr

from lab import jobs
from lab.generate import GenerationSettings
from lab.models import BASE_VIEW, ModelError
from lab.preferences import Side, make_candidates, queue_progress, shuffled_order, vote_ranks
from lab.presets import load_question_set
from lab.store import Comparison
from ui.chat import list_views
from ui.context import AppContext

LETTERS = "ABCD"
ONE_MODEL = "one model, different samples"
TWO_SIDES = "two model references"
TYPED = "(type your own below)"
POOL = "workspace prompt pool"

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


def build_ranking(ctx: AppContext, app: gr.Blocks) -> None:
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
                view_a = gr.Dropdown(list_views(ctx), value=BASE_VIEW, label="Model A")
                system_a = gr.Textbox(label="System prompt A", placeholder="optional")
                view_b = gr.Dropdown(list_views(ctx), value=BASE_VIEW, label="Model B")
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
    shown = [task, typed, progress, outcome, *panes, ranking_row, *rank_boxes, vote_a, vote_b]
    app.load(lambda name: name, annotator_memory, annotator, js=SHORTCUTS)
    annotator.change(lambda name: name, annotator, annotator_memory)
    scenario.change(partial(guidelines_text, ctx), scenario, guidelines)
    scenario.change(lambda name: name, scenario, queue)
    queue.change(partial(show_progress, ctx), [annotator, queue], progress)
    mode.change(
        lambda m: (gr.update(visible=m == TWO_SIDES), gr.update(interactive=m == ONE_MODEL)), mode, [sides_row, k]
    )
    for dropdown in (view_a, view_b):
        dropdown.focus(lambda: gr.update(choices=list_views(ctx)), outputs=dropdown)
    next_button.click(partial(next_task, ctx, use_queue=True), setup, shown)
    generate_button.click(partial(next_task, ctx, use_queue=False), setup, shown)
    cast = partial(cast_vote, ctx)
    for button, choice in ((vote_a, "A"), (vote_b, "B"), (tie, "tie"), (both_bad, "both-bad"), (skip, "skipped")):
        button.click(
            partial(cast, choice=choice),
            [task, annotator, reason, queue, *rank_boxes],
            [task, outcome, progress, reason],
        )
    submit_ranking.click(
        partial(cast, choice="ranking"),
        [task, annotator, reason, queue, *rank_boxes],
        [task, outcome, progress, reason],
    )
    undo.click(partial(undo_vote, ctx), [annotator, queue], [outcome, progress])


def guidelines_text(ctx: AppContext, scenario: str) -> str:
    preset = ctx.scenarios[scenario]
    return f"### Guidelines: {preset.name}\n\n{preset.description}\n\n{preset.guidelines}"


def _questions(ctx: AppContext, queue: str) -> list[str]:
    if queue == TYPED:
        return []
    if queue == POOL:
        return [p.text for p in ctx.store.list_prompts()]
    return [p.text for p in load_question_set(ctx.scenarios[queue].questions)]


def show_progress(ctx: AppContext, annotator: str, queue: str) -> str:
    return _progress_text(ctx, (annotator or "").strip(), queue)[0] if (annotator or "").strip() else ""


def _progress_text(ctx: AppContext, annotator: str, queue: str) -> tuple[str, str | None]:
    questions = _questions(ctx, queue)
    if not questions:
        return "", None
    done, upcoming = queue_progress(ctx.store, questions, annotator, source=f"queue:{queue}")
    return f"**{done} of {len(questions)} done** in '{queue}' by {annotator}", upcoming


def next_task(
    ctx: AppContext,
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
):
    """Generate the candidates for the next queued prompt (or the typed one) and show them shuffled."""
    annotator = (annotator or "").strip()
    if not annotator:
        raise gr.Error("Type your name first: votes are counted per person.")
    progress, upcoming = _progress_text(ctx, annotator, queue)
    question = upcoming if use_queue and queue != TYPED else (typed or "").strip()
    if use_queue and queue != TYPED and upcoming is None:
        raise gr.Error(f"You have voted on every prompt in '{queue}': pick another queue or type a prompt.")
    sides = [Side(view_a, system_a or ""), Side(view_b, system_b or "")] if mode == TWO_SIDES else [Side(BASE_VIEW)]
    count = 2 if mode == TWO_SIDES else int(k)
    ctx.wait_for_model()
    try:
        for side in sides:
            jobs.attach_adapter(ctx.store, ctx.models, side.view)
        settings = GenerationSettings(temperature=float(temperature), top_p=0.95, max_new_tokens=128)
        candidates = make_candidates(ctx.models, question, sides, count, settings)
    except (ModelError, ValueError) as err:
        raise gr.Error(str(err)) from err
    order = shuffled_order(count)
    source = f"queue:{queue}" if use_queue and queue != TYPED and question == upcoming else "typed"
    state = {
        "prompt": [{"role": "user", "content": question}],
        "candidates": candidates,
        "shown": order,
        "source": source,
    }
    panes = [gr.update(value=f"**{LETTERS[p]}**\n\n{candidates[c]['text']}", visible=True) for p, c in enumerate(order)]
    panes += [gr.update(value="", visible=False)] * (len(LETTERS) - count)
    boxes = [
        gr.update(visible=n < count, choices=list(range(1, count + 1)), value=n + 1 if n < count else None)
        for n in range(len(LETTERS))
    ]
    pair = gr.update(visible=count == 2)  # with more answers, rank them instead
    return (
        state,
        question,
        progress,
        "Which answer is better?",
        *panes,
        gr.update(visible=count > 2),
        *boxes,
        pair,
        pair,
    )


def cast_vote(ctx: AppContext, task: dict | None, annotator: str, reason: str, queue: str, *positions, choice: str):
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
    progress, _ = _progress_text(ctx, comparison.annotator, queue)
    return None, f"{said} (vote #{comparison.id}). {reveal}. Press **N** for the next prompt.", progress, ""


def undo_vote(ctx: AppContext, annotator: str, queue: str):
    withdrawn = ctx.store.undo_last_comparison((annotator or "").strip())
    if withdrawn is None:
        raise gr.Error("You have no vote to undo.")
    progress, _ = _progress_text(ctx, withdrawn.annotator, queue)
    return f"Withdrew vote #{withdrawn.id} on “{withdrawn.prompt[-1]['content'][:60]}”.", progress
