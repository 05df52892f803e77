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
from lab.generate import GenerationSettings
from lab.models import BASE_VIEW, ModelError
from lab.preferences import (
    MODELS_FEED,
    POOL_QUEUE,
    SAMPLES_FEED,
    TYPED_QUEUE,
    QueueStatus,
    Side,
    evaluation_queues,
    order_by_reward,
    queue_questions,
    queue_source,
    queue_status,
    shuffled_order,
    vote_ranks,
)
from lab.room import (
    AHEAD,
    ANSWER_TOKENS,
    annotator_name,
    coverage,
    next_item,
    ready_candidates,
    still_open,
    votes_asked,
)
from lab.scenarios import seeded
from lab.store import Comparison
from ui.reward_models import NO_REWARD, reward_model_choices
from ui.room import GENERATION, SAVES, bind_name, signed

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
      model B, system prompt B, longest answer (tokens; optional, 96). Hands this person the queue's next item
      (reserved for them a while, so people asking together get different ones), puts it with its shuffled answers
      in the session's state (gradio_client keeps one session per Client) and returns the screen.
    - `/ranking_vote`: choice ("A", "B", "tie", "both-bad", "skipped" or "ranking"), annotator, reason, queue, mode,
      rank of A, rank of B, rank of C, rank of D (each one of 1..K for the K answers shown, None beyond: for a
      pair, 1, 2, None, None). Votes on what the session's last `/ranking_next` showed; the vote is in the database
      when it returns, and its number is in the outcome ("vote #12").
    - `/ranking_undo`: annotator, queue, mode.

    With logins, the login is the annotator whatever the name says. Votes and undo never queue behind answers
    being made (their own concurrency group, no limit); making answers shares one group with the other tabs'
    generation, and people take turns at the model (lab.room.Turns), told how many are before them.
    """
    task = gr.State(None)  # the comparison on screen: prompt, candidates, shown order, queue source
    # A fixed secret, so the name is still there after the app restarts (it is a name, not a credential).
    annotator_memory = gr.BrowserState("", storage_key="alignment-lab-annotator", secret="alignment-lab-annotator")
    with gr.Row():
        with gr.Column(scale=3):
            with gr.Row():
                annotator = gr.Textbox(
                    label="Your name",
                    elem_id="annotator",
                    scale=2,
                    info="Remembered by this browser; votes are counted per person",
                )
                votes_wanted = gr.Number(
                    lambda: votes_asked(ctx.store, ctx.scenarios, first_queue(ctx)),
                    precision=0,
                    minimum=1,
                    maximum=20,
                    label="Votes per item",
                    scale=1,
                    elem_id="rank-votes-per-item",
                    info="For everyone in this queue",
                )
                scenario = gr.Dropdown(list(ctx.scenarios), value=lambda: first_queue(ctx), label="Scenario", scale=3)
                queue = gr.Dropdown(
                    queue_choices(ctx),
                    value=lambda: first_queue(ctx),
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
                max_tokens = gr.Slider(16, 512, value=ANSWER_TOKENS, step=16, label="Longest answer (tokens)")
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
            with gr.Group():
                with gr.Row():
                    prepare_count = gr.Number(20, precision=0, minimum=1, label="Items", min_width=80)
                    prepare_button = gr.Button("Prepare N items", size="sm", elem_id="rank-prepare")
                prepare_note = gr.Markdown(
                    "Makes the answers of the queue's next items in the background, before the session.",
                    elem_id="rank-prepare-note",
                )
            guidelines = gr.Markdown(lambda: guidelines_text(ctx, first_queue(ctx)), elem_id="guidelines")

    setup = [annotator, queue, typed, mode, k, temperature, view_a, system_a, view_b, system_b, max_tokens]
    screen = Screen(
        task, typed, note, progress, outcome, reason, panes, ranking_row, rank_boxes, [vote_a, vote_b], reward_note
    )
    app.load(None, js=SHORTCUTS)
    bind_name(annotator, annotator_memory).then(
        signed(show_progress, ctx), [annotator, queue, mode], progress, show_progress="hidden"
    )
    scenario.change(partial(guidelines_text, ctx), scenario, guidelines)
    scenario.change(lambda name: name, scenario, queue)
    gr.on([queue.change, mode.change, annotator.blur], signed(show_progress, ctx), [annotator, queue, mode], progress)
    queue.change(lambda name: votes_asked(ctx.store, ctx.scenarios, name), queue, votes_wanted, show_progress="hidden")
    votes_wanted.input(partial(set_votes_wanted, ctx), [queue, votes_wanted], progress)
    prepare_button.click(partial(prepare_items, ctx), [queue, prepare_count, k, temperature, max_tokens], prepare_note)
    mode.change(
        lambda m: (gr.update(visible=m == TWO_SIDES), gr.update(interactive=m == ONE_MODEL)), mode, [sides_row, k]
    )
    queue.focus(lambda: gr.update(choices=queue_choices(ctx)), outputs=queue)
    for dropdown in (view_a, view_b):
        dropdown.focus(lambda: gr.update(choices=ctx.views()), outputs=dropdown)
    # No overlay over the panes while answers are made: the note beside Next says what is happening.
    for button, use_queue, name in ((next_button, True, "ranking_next"), (generate_button, False, "ranking_generate")):
        button.click(
            signed(next_task, ctx, screen, use_queue=use_queue),
            setup,
            screen.task_view,
            show_progress="minimal",
            api_name=name,
            **GENERATION,
        )
    votes = ((vote_a, "A"), (vote_b, "B"), (tie, "tie"), (both_bad, "both-bad"), (skip, "skipped"))
    vote_inputs = [task, annotator, reason, queue, mode, *rank_boxes]
    for button, choice in (*votes, (submit_ranking, "ranking")):
        button.click(
            signed(cast_vote, ctx, screen, choice=choice),
            vote_inputs,
            [task, outcome, progress, reason],
            api_visibility="private",
            **SAVES,
        )
    # The same vote for clients (gradio_client, the load test): the choice is an input instead of a button.
    gr.on(
        [],
        signed(cast_chosen_vote, ctx, screen),
        [chosen, *vote_inputs],
        [task, outcome, progress, reason],
        api_name="ranking_vote",
        **SAVES,
    )
    undo.click(
        signed(undo_vote, ctx, screen),
        [annotator, queue, mode],
        [outcome, progress],
        api_name="ranking_undo",
        **SAVES,
    )
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
    return queue_status(ctx.store, ctx.scenarios, queue, annotator, between_models=_between(ctx, queue, mode))


def _between(ctx: Lab, queue: str, mode: str) -> bool | None:
    """Which votes count in this mode: votes on one model's samples never finish a queue for two models (an
    evaluation's queue holds answers made in advance, whatever the mode)."""
    return None if queue in evaluation_queues(ctx.store) else mode == TWO_SIDES


def first_queue(ctx: Lab) -> str:
    """The queue a page opens on: the scenario this workspace was seeded with, else the first scenario."""
    return next(iter(seeded(ctx.store)), None) or next(iter(ctx.scenarios))


def show_progress(ctx: Lab, annotator: str, queue: str, mode: str, login: str | None = None) -> str:
    """The person's progress through the queue in this mode, and how many of its items have their votes."""
    annotator = annotator_name(annotator, login)
    if not annotator:
        return ""
    status = _status(ctx, queue, annotator, mode)
    if not status.total:
        return status.text
    wanted = votes_asked(ctx.store, ctx.scenarios, queue)
    questions = queue_questions(ctx.store, ctx.scenarios, queue)
    complete, total = coverage(ctx.store, queue, questions, wanted, _between(ctx, queue, mode))
    return f"{status.text} · {complete} of {total} items have their {wanted} vote{'s' if wanted > 1 else ''}"


def set_votes_wanted(ctx: Lab, queue: str, votes: float | None) -> str:
    """Ask for this many votes per item of the queue, for everyone voting in it."""
    if queue == TYPED or not votes:
        return ""
    try:
        ctx.store.set_votes_per_item(queue, int(votes))
    except ValueError as err:
        return f"**{err}**"
    return f"Each item of '{queue}' now gets {int(votes)} vote(s) before it stops being handed out."


def _settings(temperature: float, max_tokens: float | None) -> GenerationSettings:
    return GenerationSettings(
        temperature=float(temperature), top_p=0.95, max_new_tokens=int(max_tokens or ANSWER_TOKENS)
    )


def prepare_items(ctx: Lab, queue: str, count: float | None, k: float, temperature: float, max_tokens: float | None):
    """Make the answers of the queue's next `count` open items in the background, saying how far it got."""
    if queue == TYPED or queue in evaluation_queues(ctx.store):
        yield "This queue needs no preparing: typed prompts are answered as they come, an evaluation's already were."
        return
    questions = queue_questions(ctx.store, ctx.scenarios, queue)
    wanted = votes_asked(ctx.store, ctx.scenarios, queue)
    open_items = still_open(ctx.store, queue, questions, wanted, False)[: int(count or 0)]
    if not open_items:
        yield f"Every item of '{queue}' has its votes: nothing to prepare."
        return
    progress = ctx.room.prepare(queue, open_items, int(k), _settings(temperature, max_tokens))
    while progress.done < progress.asked and not progress.problem:
        yield progress.text
        time.sleep(1.0)
    yield progress.text


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
    max_tokens: float | None = ANSWER_TOKENS,
    *,
    use_queue: bool,
    login: str | None = None,
) -> Iterator[dict]:
    """Hand this person the queue's next item (or take the typed prompt) and show its answers, shuffled.

    Answers made ahead (by the background worker, an earlier voter, the scenario or an evaluation) show at once;
    otherwise they stream into all panes together, in an order drawn before they start. The note beside Next says
    what is happening (waiting for the model, for others' answers) or, in one sentence, what went wrong.
    """
    annotator = annotator_name(annotator, login)
    if not annotator:
        yield {screen.note: "**Type your name first:** votes are counted per person."}
        return
    from_queue = use_queue and queue != TYPED
    question, source = (typed or "").strip(), "typed"
    count = 2 if mode == TWO_SIDES else int(k)
    settings = _settings(temperature, max_tokens)
    try:
        if from_queue:
            questions = queue_questions(ctx.store, ctx.scenarios, queue)
            wanted = votes_asked(ctx.store, ctx.scenarios, queue)
            question = next_item(ctx.store, queue, questions, annotator, wanted, _between(ctx, queue, mode))
            source = queue_source(queue)
        if not question:
            raise ValueError("Pick or type a prompt first.")
    except ValueError as err:
        yield {screen.note: f"**{err}**", screen.progress: show_progress(ctx, annotator, queue, mode)}
        return
    samples, evaluation = mode == ONE_MODEL, queue in evaluation_queues(ctx.store)
    if from_queue and samples and not evaluation:  # keep the next items ready
        upcoming = [q for q in still_open(ctx.store, queue, questions, wanted, False) if q != question]
        ctx.room.prepare(queue, upcoming[:AHEAD], count, settings)
    ready = None
    if from_queue and (samples or evaluation):  # answers made ahead need no model, even one still loading
        ready = ready_candidates(ctx.store, queue, question, count, ctx.models.base)
    if ready:
        yield show_task(ctx, screen, question, source, ready, annotator, queue, mode)
        return
    while ctx.models.loading:
        yield {screen.typed: question, screen.note: f"Waiting for the model to load: {ctx.models.status}"}
        time.sleep(1.0)
    sides = [Side(view_a, system_a or ""), Side(view_b, system_b or "")] if not samples else [Side(BASE_VIEW)]
    order = shuffled_order(count)
    candidates = None
    try:
        for step in ctx.room.answers(annotator, question, sides, count, settings):
            if isinstance(step, str):
                yield {screen.typed: question, screen.note: step}
            else:
                candidates = step
                yield {
                    screen.panes[p]: gr.update(value=pane_text(p, candidates[c]), visible=True)
                    for p, c in enumerate(order)
                }
    except (ModelError, ValueError) as err:
        yield {screen.note: f"**{err}**"}
        return
    if from_queue and samples:
        ctx.room.keep(queue, question, candidates)
    yield show_task(ctx, screen, question, source, candidates, annotator, queue, mode, order)


def show_task(
    ctx: Lab,
    screen: Screen,
    question: str,
    source: str,
    candidates: list[dict],
    annotator: str,
    queue: str,
    mode: str,
    order: list[int] | None = None,
) -> dict:
    """The candidates in a random order (or the one they streamed in), anonymous, with the vote buttons that fit
    how many there are."""
    count = len(candidates)
    order = order or shuffled_order(count)
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
        screen.progress: show_progress(ctx, annotator, queue, mode),
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
    login: str | None = None,
) -> dict:
    """Store the vote, signed by the login where there is one (it is in the database before the screen moves on),
    then reveal the models."""
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
            annotator_name(annotator, login),
            (reason or "").strip(),
            task["source"],
        )
        ctx.store.add_comparison(comparison)
        if task["source"] == queue_source(queue):
            ctx.store.release(queue, comparison.annotator)
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
    ctx: Lab,
    screen: Screen,
    choice: str,
    task: dict | None,
    annotator: str,
    reason: str,
    queue: str,
    mode: str,
    *ranks,
    login: str | None = None,
) -> dict:
    """A vote whose choice comes as a value (from a client) rather than from the button pressed."""
    if choice not in VOTE_CHOICES:
        return {screen.outcome: f"**Vote one of {', '.join(VOTE_CHOICES)}.**"}
    return cast_vote(ctx, screen, task, annotator, reason, queue, mode, *ranks, choice=choice, login=login)


def undo_vote(ctx: Lab, screen: Screen, annotator: str, queue: str, mode: str, login: str | None = None) -> dict:
    """Withdraw this annotator's latest vote (kept in the database, marked withdrawn): with logins, only one's own."""
    try:
        withdrawn = ctx.store.undo_last_comparison(annotator_name(annotator, login))
    except ValueError as err:  # the workspace's disk is full: the vote stays
        return {screen.outcome: f"**{err}**"}
    if withdrawn is None:
        return {screen.outcome: "**You have no vote to undo.**"}
    return {
        screen.outcome: f"Withdrew vote #{withdrawn.id} on “{withdrawn.prompt[-1]['content'][:60]}”.",
        screen.progress: show_progress(ctx, withdrawn.annotator, queue, mode),
    }
