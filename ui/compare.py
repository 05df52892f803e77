"""Compare tab: one message answered by two or three model views side by side, streaming from one batched pass
over the loaded base; each column has its own system prompt and history. A reward model can score each column's
last reply, "This one is better" writes a vote to the workspace, and the compare chat exports as Markdown or JSON.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial

import gradio as gr

from lab import Lab
from lab.compare import (
    MAX_COLUMNS,
    MIN_COLUMNS,
    ColumnLog,
    answer_for,
    comparison,
    score_last_replies,
    stream_compare,
    to_json,
    to_markdown,
)
from lab.generate import GenerationSettings, plain_messages
from lab.models import ModelError
from lab.preferences import Side
from lab.refs import BASE_VIEW
from lab.room import annotator_name
from ui.downloads import DOWNLOAD_JS, session_folder
from ui.reward_models import NO_REWARD, reward_model_choices
from ui.room import GENERATION, SAVES, show_login, signed

WAIT_FOR_MODEL_S = 600
EXPORTS = {"Markdown": ("compare-chat.md", to_markdown), "JSON": ("compare-chat.json", to_json)}


@dataclass
class Pane:
    """One column: the view that answers, its system prompt, its conversation, its reward and its vote button."""

    box: gr.Column
    view: gr.Dropdown
    system: gr.Textbox
    chatbot: gr.Chatbot
    reward: gr.Markdown
    better: gr.Button


@dataclass
class CompareView:
    """The components the handlers read and update; they take one {component: value} dict and return another."""

    panes: list[Pane]
    count: gr.Radio
    message: gr.Textbox
    note: gr.Markdown  # beside Send: waiting, or why the message was not sent
    outcome: gr.Markdown  # under the columns: the vote saved, or why not
    answers: gr.State  # per column, one lab.compare.Answer per reply on screen
    voted: gr.State  # (item, vote id) of the last vote, so one pair of replies is not voted twice
    scorer: gr.Dropdown
    annotator: gr.Textbox
    sampling: list  # temperature, top_p, max new tokens, seed
    export_format: gr.Radio
    download: gr.DownloadButton

    def columns(self, values: dict) -> list[ColumnLog]:
        """The columns in use, as lab.compare reads them."""
        shown = self.panes[: int(values[self.count])]
        return [
            ColumnLog(plain_messages(values[p.chatbot] or []), values[self.answers][n]) for n, p in enumerate(shown)
        ]


def build_compare(ctx: Lab) -> None:
    answers = gr.State([[] for _ in range(MAX_COLUMNS)])
    voted = gr.State(None)
    with gr.Row():
        count = gr.Radio(
            [MIN_COLUMNS, MAX_COLUMNS], value=MAX_COLUMNS, label="Columns", elem_id="compare-count", scale=1
        )
        scorer = gr.Dropdown(
            reward_model_choices(ctx),
            value=NO_REWARD,
            label="Score replies with",
            elem_id="compare-scorer",
            info="A reward model trained in the Reward tab: each column's last reply shows its reward",
            scale=2,
        )
        annotator = gr.Textbox(
            label="Your name", elem_id="compare-annotator", info="Votes are counted per person", scale=2
        )
    panes = []
    with gr.Row(equal_height=True):
        for n in range(1, MAX_COLUMNS + 1):
            with gr.Column(min_width=300) as box:
                view = gr.Dropdown(ctx.views(), value=BASE_VIEW, label=f"Model {n}", elem_id=f"compare-view-{n}")
                system = gr.Textbox(
                    label=f"System prompt {n}",
                    lines=2,
                    placeholder="Optional, e.g. 'Answer truthfully and briefly.'",
                    elem_id=f"compare-system-{n}",
                )
                chatbot = gr.Chatbot(
                    label=f"Column {n}",
                    height=380,
                    buttons=["copy"],
                    feedback_options=None,
                    elem_id=f"compare-chat-{n}",
                    placeholder="Pick a model and an optional system prompt above, then send a message below.",
                )
                reward = gr.Markdown(elem_id=f"compare-reward-{n}")
                better = gr.Button("This one is better", size="sm", elem_id=f"compare-better-{n}")
            panes.append(Pane(box, view, system, chatbot, reward, better))
    outcome = gr.Markdown(elem_id="compare-outcome")
    with gr.Row(equal_height=True):
        message = gr.Textbox(
            placeholder="One message for every column: type it and press Enter",
            show_label=False,
            scale=6,
            elem_id="compare-input",
        )
        send = gr.Button("Send", variant="primary", scale=1, elem_id="compare-send")
        stop = gr.Button("Stop", scale=1)
    note = gr.Markdown(elem_id="compare-note")
    with gr.Accordion("Sampling (the same for every column, one seed for the batch)", open=False), gr.Row():
        temperature = gr.Slider(
            0,
            2,
            value=0.7,
            step=0.05,
            label="Temperature",
            info="0 = greedy: always the most likely token",
            elem_id="compare-temperature",
        )
        top_p = gr.Slider(0.05, 1, value=0.9, step=0.05, label="Top-p")
        max_new = gr.Slider(16, 1024, value=256, step=16, label="Max new tokens", elem_id="compare-max-new")
        seed = gr.Number(value=-1, precision=0, label="Seed", info="-1 = random")
    with gr.Row():
        clear = gr.Button("New compare chat", size="sm")
        export_format = gr.Radio(list(EXPORTS), value="Markdown", show_label=False, container=False)
        export = gr.Button("Export the compare chat", size="sm", elem_id="compare-export")
        download = gr.DownloadButton("Download", visible=False, size="sm")

    sampling = [temperature, top_p, max_new, seed]
    ui = CompareView(
        panes, count, message, note, outcome, answers, voted, scorer, annotator, sampling, export_format, download
    )
    chats = [p.chatbot for p in panes]
    votes = [p.better for p in panes]  # off while replies stream: a vote records whole replies
    everything = {count, message, answers, voted, scorer, annotator, export_format, *ui.sampling}
    everything |= {c for p in panes for c in (p.view, p.system, p.chatbot)}
    scoring = {
        "fn": partial(show_rewards, ctx, ui),
        "inputs": everything,
        "outputs": [answers, note, *(p.reward for p in panes)],
        "show_progress": "minimal",
    }
    sends = [
        trigger(
            partial(send_message, ctx, ui), everything, [message, note, outcome, answers, *chats, *votes], **GENERATION
        )
        for trigger in (message.submit, send.click)
    ]
    for event in sends:
        event.then(**scoring)
    stop.click(None, cancels=sends).then(partial(tidy, ui), everything, [answers, *chats, *votes]).then(**scoring)
    clear.click(partial(start_over, ui), outputs=[answers, voted, outcome, note, *chats, *(p.reward for p in panes)])
    for n, pane in enumerate(panes):
        pane.better.click(signed(vote, ctx, ui, n), everything, [voted, outcome], **SAVES)
        pane.view.focus(lambda: gr.update(choices=ctx.views()), outputs=pane.view)
        pane.chatbot.clear(partial(forget_column, n), answers, [answers, pane.reward])
    count.change(lambda c: gr.update(visible=int(c) == MAX_COLUMNS), count, panes[-1].box)
    show_login(annotator)
    scorer.focus(lambda: gr.update(choices=reward_model_choices(ctx)), outputs=scorer)
    scorer.change(**scoring)
    export.click(exporter(ctx, ui), everything, [note, download]).success(None, download, js=DOWNLOAD_JS)


def send_message(ctx: Lab, ui: CompareView, values: dict) -> Iterator[dict]:
    """Send the message to every column and stream their replies together. A refusal (an empty or over-long
    message, a setting out of range, an adapter that does not fit) is said beside Send and the message stays."""
    text = values[ui.message] or ""
    panes = ui.panes[: int(values[ui.count])]
    temperature, top_p, max_new, seed = (values[c] for c in ui.sampling)
    deadline = time.monotonic() + WAIT_FOR_MODEL_S
    while ctx.models.loading and time.monotonic() < deadline:
        yield {ui.note: f"⏳ {ctx.models.status}"}
        time.sleep(0.5)
    try:
        settings = GenerationSettings(
            float(temperature), float(top_p), int(max_new), None if seed is None or seed < 0 else int(seed)
        )
        sides = [Side(values[p.view] or BASE_VIEW, values[p.system] or "") for p in panes]
        histories = [plain_messages(values[p.chatbot] or []) for p in panes]
        stream = stream_compare(ctx.store, ctx.models, text, sides, histories, settings)
    except (ValueError, ModelError) as err:
        yield {ui.note: f"**{err}**"}
        return
    turn = [{"role": "user", "content": text}, {"role": "assistant", "content": ""}]
    chats = [[*(values[p.chatbot] or []), *(dict(m) for m in turn)] for p in panes]
    answers = [list(column) for column in values[ui.answers]]
    base = ctx.models.loaded.base
    for n, side in enumerate(sides):
        answers[n].append(answer_for(base, side, settings))
    shown = {p.chatbot: chat for p, chat in zip(panes, chats, strict=True)}
    why = ctx.models.waiting()
    yield {
        ui.message: "",
        ui.note: f"⏳ {why}…" if why else "",
        ui.outcome: "",
        ui.answers: answers,
        **{p.better: gr.update(interactive=False) for p in ui.panes},
        **shown,
    }
    try:
        for texts in stream:
            for chat, reply in zip(chats, texts, strict=True):
                chat[-1]["content"] = reply
            yield {ui.note: "", **shown}
    except (ModelError, ValueError) as err:  # the model was replaced meanwhile, an adapter was removed
        yield {ui.note: f"**{err}**"}
    yield tidy(ui, {**values, ui.answers: answers, **shown})


def tidy(ui: CompareView, values: dict) -> dict:
    """Once replies stop streaming: drop those that got no text (stopped before the first token) with their
    records, and let votes in again."""
    columns = ui.columns(values)
    for column in columns:
        column.drop_empty_reply()  # its answers are the state's own list
    shown = {p.chatbot: c.messages for p, c in zip(ui.panes, columns, strict=False)}
    return {ui.answers: values[ui.answers], **shown, **{p.better: gr.update(interactive=True) for p in ui.panes}}


def show_rewards(ctx: Lab, ui: CompareView, values: dict) -> dict:
    """Score each column's last reply with the picked reward run (once per reply) and show it under the column;
    the rewards are kept in the replies' records (the state's Answers), for the export."""
    run_id = values[ui.scorer]
    if not run_id or run_id == NO_REWARD:
        return {p.reward: "" for p in ui.panes}
    columns = ui.columns(values)
    try:
        problem = score_last_replies(columns, run_id, lambda turns, reply: ctx.score(run_id, turns, [reply])[0])
    except ModelError as err:  # the run was deleted, or its base cannot be loaded
        return {ui.note: f"**{err}**"}
    shown = {p.reward: reward_line(column, run_id) for p, column in zip(ui.panes, columns, strict=False)}
    note = f"**{problem}** That reply has no reward." if problem else ""
    return {ui.answers: values[ui.answers], ui.note: note, **shown}


def reward_line(column: ColumnLog, run_id: str) -> str:
    answer = column.answers[-1] if column.answered else None
    if answer is None or answer.reward_model != run_id:
        return ""
    return "Reward —" if answer.reward is None else f"Reward **{answer.reward:+.2f}**"


def vote(ctx: Lab, ui: CompareView, picked: int, values: dict, login: str | None = None) -> dict:
    """Store "column `picked` is better" (in the database before the screen says so), at most once per replies;
    with logins, signed by the login."""
    annotator = annotator_name(values[ui.annotator], login)
    if not annotator:
        return {ui.outcome: "**Type your name first:** votes are counted per person."}
    try:
        choice = comparison(ui.columns(values), picked, annotator)
    except ValueError as err:
        return {ui.outcome: f"**{err}**"}
    if values[ui.voted] and values[ui.voted][0] == choice.item:
        return {ui.outcome: f"**You already voted on these replies** (vote #{values[ui.voted][1]})."}
    try:
        ctx.store.add_comparison(choice)
    except ValueError as err:  # a name over the limit
        return {ui.outcome: f"**{err}**"}
    others = ", ".join(f"column {n + 1}" for n in range(len(choice.candidates)) if n != picked)
    model = choice.candidates[picked]["model"]
    return {
        ui.voted: (choice.item, choice.id),
        ui.outcome: f"Saved vote #{choice.id}: column {picked + 1} ({model}) is better than {others}.",
    }


def start_over(ui: CompareView) -> dict:
    cleared = {p.chatbot: [] for p in ui.panes} | {p.reward: "" for p in ui.panes}
    return {ui.answers: [[] for _ in ui.panes], ui.voted: None, ui.outcome: "", ui.note: "", **cleared}


def forget_column(n: int, answers: list[list]) -> tuple[list[list], str]:
    """A column's trash icon empties its conversation: its replies' records and reward go with it."""
    return [[] if index == n else column for index, column in enumerate(answers)], ""


def exporter(ctx: Lab, ui: CompareView) -> Callable[..., dict]:
    def export(values: dict, request: gr.Request) -> dict:  # not a partial: Gradio finds gr.Request by its hint
        """Write the compare chat into this browser session's own folder and put it in the download button."""
        columns = ui.columns(values)
        if not any(column.messages for column in columns):
            return {ui.note: "**Nothing to export yet:** send a message first.", ui.download: gr.update(visible=False)}
        name, render = EXPORTS[values[ui.export_format]]
        path = session_folder(ctx, request) / name
        path.write_text(render(columns), encoding="utf-8")
        return {ui.note: "", ui.download: gr.update(value=str(path), visible=True, label=f"Download {name}")}

    return export
