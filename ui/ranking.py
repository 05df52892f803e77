"""Ranking tab: answers side by side, shuffled and anonymous, voted with the mouse or the keyboard.

Keys (when not typing in a box): 1 = A better, 2 = B better, 3 = tie, 4 = both bad, S = skip,
U = undo the last vote, N = next prompt. A trained reward model can sort the answers on screen best-first, each
showing its reward; the vote records the order shown.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial

import gradio as gr

from lab import Lab
from lab.adapters import attach_adapter
from lab.generate import GenerationSettings
from lab.models import BASE_VIEW, ModelError
from lab.preferences import (
    MODELS_FEED,
    POOL_QUEUE,
    SAMPLES_FEED,
    TYPED_QUEUE,
    QueueStatus,
    Side,
    candidate_steps,
    evaluation_queues,
    next_question,
    order_by_reward,
    prepared_candidates,
    queue_status,
    shuffled_order,
    vote_ranks,
)
from lab.store import Comparison
from ui.reward_models import NO_REWARD, reward_model_choices

LETTERS = "ABCD"
VOTE_CHOICES = ["A", "B", "tie", "both-bad", "skipped", "ranking"]
ONE_MODEL = "one model, different samples"
TWO_SIDES = "two model references"
TYPED = TYPED_QUEUE
POOL = POOL_QUEUE
MODE_INFO = f"One model: {SAMPLES_FEED} Two model references: {MODELS_FEED}"

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
    note: gr.Markdown  # beside Next: what is being generated, or why it cannot be
    progress: gr.Markdown
    outcome: gr.Markdown
    reason: gr.Textbox
    panes: list[gr.Markdown]
    ranking_row: gr.Row
    rank_boxes: list[gr.Dropdown]
    pair_votes: list[gr.Button]  # "A is better" and "B is better": only for two answers
    reward_note: gr.Markdown  # under Sort by reward: what the sort did, or why it could not

    @property
    def task_view(self) -> list:
        """What showing a new task updates (the outputs of Next and Generate)."""
        parts = [self.task, self.typed, self.note, self.progress, self.outcome, self.ranking_row]
        return [*parts, *self.panes, *self.rank_boxes, *self.pair_votes, self.reward_note]


def build_ranking(ctx: Lab, app: gr.Blocks) -> None:
    """The Ranking tab. Its events for clients (gradio_client), stable names:

    - `/ranking_next` (Next prompt): annotator, queue, prompt, mode, how many, temperature, model A, system prompt A,
      model B, system prompt B. Puts the queue's next question with its shuffled answers in the session's state
      (gradio_client keeps one session per Client) and returns the screen.
    - `/ranking_vote`: choice ("A", "B", "tie", "both-bad", "skipped" or "ranking"), annotator, reason, queue, mode,
      rank of A, rank of B, rank of C, rank of D. Votes on what the session's last `/ranking_next` showed; the
      vote is in the database when it returns, and its number is in the outcome ("vote #12").
    - `/ranking_undo`: annotator, queue, mode.
    """
    task = gr.State(None)  # the comparison on screen: prompt, candidates, shown order, queue source
    # A fixed secret, so the name is still there after the app restarts (it is a name, not a credential).
    annotator_memory = gr.BrowserState("", storage_key="alignment-lab-annotator", secret="alignment-lab-annotator")
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
                    queue_choices(ctx),
                    value=scenario_names[0],
                    label="Prompt queue",
                    scale=3,
                    info="A scenario's question set, every prompt in the workspace, an evaluation's pairs, or typed",
                    elem_id="rank-queue",
                )
            typed = gr.Textbox(
                label="Prompt",
                lines=2,
                elem_id="rank-prompt",
                info="Filled from the queue by Next; edit or type your own",
            )
            with gr.Row():
                mode = gr.Radio(
                    [ONE_MODEL, TWO_SIDES], value=ONE_MODEL, label="Candidates from", info=MODE_INFO, scale=2
                )
                k = gr.Slider(2, 4, value=2, step=1, label="How many (one model)")
                temperature = gr.Slider(0.1, 1.5, value=0.9, step=0.05, label="Temperature")
            with gr.Row(visible=False) as sides_row:
                view_a = gr.Dropdown(ctx.views(), value=BASE_VIEW, label="Model A")
                system_a = gr.Textbox(label="System prompt A", placeholder="optional")
                view_b = gr.Dropdown(ctx.views(), value=BASE_VIEW, label="Model B")
                system_b = gr.Textbox(label="System prompt B", placeholder="e.g. Answer truthfully and briefly.")
            with gr.Row(equal_height=True):
                next_button = gr.Button("Next prompt (N)", variant="primary", elem_id="vote-next")
                generate_button = gr.Button("Generate for this prompt")
                note = gr.Markdown(elem_id="rank-note")
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
            chosen = gr.Radio(VOTE_CHOICES, value="A", visible=False)  # the vote of a client calling ranking_vote
        with gr.Column(scale=1):
            with gr.Group():
                reward_model = gr.Dropdown(
                    reward_model_choices(ctx),
                    value=NO_REWARD,
                    label="Reward model",
                    elem_id="rank-reward-model",
                    info="A trained reward run, to sort the answers on screen best-first",
                )
                sort_button = gr.Button("Sort by reward", size="sm", elem_id="rank-sort")
            reward_note = gr.Markdown(elem_id="rank-reward-note")
            guidelines = gr.Markdown(guidelines_text(ctx, scenario_names[0]), elem_id="guidelines")

    setup = [annotator, queue, typed, mode, k, temperature, view_a, system_a, view_b, system_b]
    screen = Screen(
        task, typed, note, progress, outcome, reason, panes, ranking_row, rank_boxes, [vote_a, vote_b], reward_note
    )
    app.load(None, js=SHORTCUTS)
    # The browser's stored value arrives after the page loads, as a change of the BrowserState: restore it then.
    annotator.change(lambda name: name, annotator, annotator_memory)
    annotator_memory.change(lambda name: name or gr.skip(), annotator_memory, annotator).then(
        partial(show_progress, ctx), [annotator, queue, mode], progress
    )
    scenario.change(partial(guidelines_text, ctx), scenario, guidelines)
    scenario.change(lambda name: name, scenario, queue)
    gr.on([queue.change, mode.change, annotator.blur], partial(show_progress, ctx), [annotator, queue, mode], progress)
    mode.change(
        lambda m: (gr.update(visible=m == TWO_SIDES), gr.update(interactive=m == ONE_MODEL)), mode, [sides_row, k]
    )
    queue.focus(lambda: gr.update(choices=queue_choices(ctx)), outputs=queue)
    for dropdown in (view_a, view_b):
        dropdown.focus(lambda: gr.update(choices=ctx.views()), outputs=dropdown)
    # No overlay over the panes while answers are made: the note beside Next says what is happening.
    for button, use_queue, name in ((next_button, True, "ranking_next"), (generate_button, False, "ranking_generate")):
        button.click(
            partial(next_task, ctx, screen, use_queue=use_queue),
            setup,
            screen.task_view,
            show_progress="minimal",
            api_name=name,
        )
    votes = ((vote_a, "A"), (vote_b, "B"), (tie, "tie"), (both_bad, "both-bad"), (skip, "skipped"))
    vote_inputs = [task, annotator, reason, queue, mode, *rank_boxes]
    for button, choice in (*votes, (submit_ranking, "ranking")):
        button.click(
            partial(cast_vote, ctx, screen, choice=choice),
            vote_inputs,
            [task, outcome, progress, reason],
            api_visibility="private",
        )
    # The same vote for clients (gradio_client, the load test): the choice is an input instead of a button.
    gr.on(
        [],
        partial(cast_chosen_vote, ctx, screen),
        [chosen, *vote_inputs],
        [task, outcome, progress, reason],
        api_name="ranking_vote",
    )
    undo.click(partial(undo_vote, ctx, screen), [annotator, queue, mode], [outcome, progress], api_name="ranking_undo")
    reward_model.focus(lambda: gr.update(choices=reward_model_choices(ctx)), outputs=reward_model)
    sort_button.click(
        partial(sort_by_reward, ctx, screen),
        [task, reward_model],
        [task, reward_note, *panes, *rank_boxes],
        show_progress="minimal",
    )


def guidelines_text(ctx: Lab, scenario: str) -> str:
    preset = ctx.scenarios[scenario]
    return f"### Guidelines: {preset.name}\n\n{preset.description}\n\n{preset.guidelines}"


def queue_choices(ctx: Lab) -> list[str]:
    return [*ctx.scenarios, POOL, *evaluation_queues(ctx.store), TYPED]


def _status(ctx: Lab, queue: str, annotator: str, mode: str) -> QueueStatus:
    """Progress through the queue counts per mode: votes on one model's samples never finish it for two models
    (an evaluation's queue holds answers made in advance, whatever the mode)."""
    between = None if queue in evaluation_queues(ctx.store) else mode == TWO_SIDES
    return queue_status(ctx.store, ctx.scenarios, queue, annotator, between_models=between)


def show_progress(ctx: Lab, annotator: str, queue: str, mode: str) -> str:
    """The annotator's progress through the queue in this mode, once they have typed their name."""
    annotator = (annotator or "").strip()
    return _status(ctx, queue, annotator, mode).text if annotator else ""


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
) -> Iterator[dict]:
    """Generate the candidates for the next queued prompt (or the typed one) and show them shuffled.

    Says in the note beside Next what it is doing (waiting for the model, generating answer 2 of 2), and puts
    any problem there in one sentence; the answers appear together, since one arriving before the other would
    tell which side it came from.
    """
    annotator = (annotator or "").strip()
    if not annotator:
        yield {screen.note: "**Type your name first:** votes are counted per person."}
        return
    status = _status(ctx, queue, annotator, mode)
    try:
        question, source = next_question(status, typed, use_queue)
    except ValueError as err:
        yield {screen.note: f"**{err}**", screen.progress: status.text}
        return
    prepared = prepared_candidates(ctx.store, queue, question) if use_queue else None
    if prepared:  # an evaluation's pair: both answers exist already
        yield show_task(screen, question, source, prepared, status)
        return
    sides = [Side(view_a, system_a or ""), Side(view_b, system_b or "")] if mode == TWO_SIDES else [Side(BASE_VIEW)]
    count = 2 if mode == TWO_SIDES else int(k)
    candidates = None
    try:
        while ctx.models.loading:
            yield {screen.note: f"Waiting for the model to load: {ctx.models.status}"}
            time.sleep(1.0)
        for side in sides:
            attach_adapter(ctx.store, ctx.models, side.view)
        settings = GenerationSettings(temperature=float(temperature), top_p=0.95, max_new_tokens=128)
        for step in candidate_steps(ctx.models, question, sides, count, settings):  # yields before each generation
            while (why := ctx.models.waiting()) is not None:
                yield {screen.note: f"{why[:1].upper()}{why[1:]}…"}
                time.sleep(0.5)
            if step.candidates:
                candidates = step.candidates
            else:
                yield {screen.note: step.text[:1].upper() + step.text[1:]}
    except (ModelError, ValueError) as err:
        yield {screen.note: f"**{err}**"}
        return
    yield show_task(screen, question, source, candidates, status)


def show_task(screen: Screen, question: str, source: str, candidates: list[dict], status: QueueStatus) -> dict:
    """The candidates in a random order, anonymous, with the vote buttons that fit how many there are."""
    count = len(candidates)
    order = shuffled_order(count)
    state = {
        "prompt": [{"role": "user", "content": question}],
        "candidates": candidates,
        "shown": order,
        "source": source,
    }
    shown = {screen.panes[p]: gr.update(value=pane_text(p, candidates[c]), visible=True) for p, c in enumerate(order)}
    hidden = {pane: gr.update(value="", visible=False) for pane in screen.panes[count:]}
    boxes = {
        box: gr.update(visible=n < count, choices=list(range(1, count + 1)), value=n + 1 if n < count else None)
        for n, box in enumerate(screen.rank_boxes)
    }
    pair = {button: gr.update(visible=count == 2) for button in screen.pair_votes}  # more answers: rank them
    return {
        screen.task: state,
        screen.typed: question,
        screen.note: "",
        screen.progress: status.text,
        screen.outcome: "Which answer is better?",
        screen.ranking_row: gr.update(visible=count > 2),
        screen.reward_note: "",
        **shown,
        **hidden,
        **boxes,
        **pair,
    }


def pane_text(position: int, candidate: dict, reward: float | None = None) -> str:
    """One answer pane: its letter (with its reward, once sorted by a reward model), then the answer."""
    head = f"**{LETTERS[position]}**" if reward is None else f"**{LETTERS[position]}** · reward {reward:+.2f}"
    return f"{head}\n\n{candidate['text']}"


def sort_by_reward(ctx: Lab, screen: Screen, task: dict | None, run_id: str | None) -> dict:
    """Score the answers on screen with a reward run and show them best-first, each with its reward.

    The new order is the task's `shown`, so the vote records what the voter saw: ranks stay the candidates' own and
    position-bias counts follow the screen. The rank boxes reset to the reward's order.
    """
    if not run_id or run_id == NO_REWARD:
        return {screen.reward_note: "**Pick a reward model first.**"}
    if not task:
        return {screen.reward_note: "**Press Next prompt first:** there are no answers to sort yet."}
    candidates = task["candidates"]
    try:
        rewards = ctx.score(run_id, task["prompt"], [c["text"] for c in candidates])
        shown = order_by_reward(task["shown"], rewards)
    except (ModelError, ValueError) as err:  # no such reward run any more, an answer longer than the model reads
        return {screen.reward_note: f"**{err}**"}
    panes = {screen.panes[p]: pane_text(p, candidates[c], rewards[c]) for p, c in enumerate(shown)}
    boxes = {box: n + 1 for n, box in enumerate(screen.rank_boxes[: len(shown)])}
    return {
        screen.task: {**task, "shown": shown, "rewards": rewards},
        screen.reward_note: "Sorted best-first by reward; your vote records this order.",
        **panes,
        **boxes,
    }


def cast_vote(
    ctx: Lab,
    screen: Screen,
    task: dict | None,
    annotator: str,
    reason: str,
    queue: str,
    mode: str,
    *positions,
    choice: str,
) -> dict:
    """Store the vote (it is in the database before the screen moves on), then reveal the models."""
    if not task:
        return {screen.outcome: "**Press Next prompt first.**"}
    try:
        ranks, verdict = vote_ranks(choice, task["shown"], [int(p) for p in positions if p is not None])
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
        ctx.store.add_comparison(comparison)
    except ValueError as err:
        return {screen.outcome: f"**{err}**"}
    reveal = ", ".join(f"{LETTERS[p]} was **{task['candidates'][c]['model']}**" for p, c in enumerate(task["shown"]))
    said = {"skipped": "Skipped", "both-bad": "Saved: both bad", "tie": "Saved: tie"}.get(verdict, "Saved")
    return {
        screen.task: None,
        screen.outcome: f"{said} (vote #{comparison.id}). {reveal}. Press **N** for the next prompt.",
        screen.progress: show_progress(ctx, comparison.annotator, queue, mode),
        screen.reason: "",
    }


def cast_chosen_vote(
    ctx: Lab, screen: Screen, choice: str, task: dict | None, annotator: str, reason: str, queue: str, mode: str, *ranks
) -> dict:
    """A vote whose choice comes as a value (from a client) rather than from the button pressed."""
    if choice not in VOTE_CHOICES:
        return {screen.outcome: f"**Vote one of {', '.join(VOTE_CHOICES)}.**"}
    return cast_vote(ctx, screen, task, annotator, reason, queue, mode, *ranks, choice=choice)


def undo_vote(ctx: Lab, screen: Screen, annotator: str, queue: str, mode: str) -> dict:
    """Withdraw this annotator's latest vote (kept in the database, marked withdrawn)."""
    withdrawn = ctx.store.undo_last_comparison((annotator or "").strip())
    if withdrawn is None:
        return {screen.outcome: "**You have no vote to undo.**"}
    return {
        screen.outcome: f"Withdrew vote #{withdrawn.id} on “{withdrawn.prompt[-1]['content'][:60]}”.",
        screen.progress: show_progress(ctx, withdrawn.annotator, queue, mode),
    }
