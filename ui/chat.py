"""Chat tab: talk to the loaded model (or one of its adapters), streaming token by token; optionally a reward
model scores each reply, shown under the conversation and never part of it."""

from __future__ import annotations

import time
from functools import partial

import gradio as gr

from lab import Lab
from lab.adapters import attach_adapter
from lab.generate import (
    GenerationSettings,
    PromptTooLongError,
    build_messages,
    encode_chat,
    plain_messages,
    stream_chat,
)
from lab.models import ModelError
from lab.preferences import score_replies
from lab.refs import BASE_VIEW, DEFAULT_MODEL, DEVICES, PRECISIONS, ModelRef
from lab.store import Conversation
from ui.errors import UserError
from ui.reward_models import NO_REWARD, reward_model_choices

WAIT_FOR_MODEL_S = 600


def list_models(ctx: Lab) -> list[str]:
    return list(dict.fromkeys([DEFAULT_MODEL, *(p.model for p in ctx.model_presets.values())]))


def list_conversations(ctx: Lab) -> list[tuple[str, int]]:
    return [(f"{c.updated_at[:16].replace('T', ' ')} · {c.title}", c.id) for c in ctx.store.list_conversations()]


def parse_settings(
    temperature: float, top_p: float, max_new_tokens: float, seed: float | None, stop: str
) -> GenerationSettings:
    stops = [line for line in stop.splitlines() if line]
    return GenerationSettings(
        float(temperature),
        float(top_p),
        int(max_new_tokens),
        None if seed in (None, "") or seed < 0 else int(seed),
        stops,
    )


def build_chat(ctx: Lab) -> None:
    conversation_id = gr.State(None)  # this browser's current conversation in the workspace
    rewards = gr.State({})  # {reward run id: {reply key: reward}}: what was scored, so a turn scores only its reply
    with gr.Row():
        with gr.Column(scale=3):
            chatbot = gr.Chatbot(
                label="Conversation",
                height=480,
                buttons=["copy"],
                feedback_options=None,
                elem_id="chatbot",
                placeholder="Ask the model anything.",
            )
            reward_line = gr.Markdown(elem_id="chat-rewards")  # each reply's reward; never in the conversation
            with gr.Row():
                message = gr.Textbox(
                    placeholder="Type a message and press Enter",
                    show_label=False,
                    scale=5,
                    elem_id="chat-input",
                    autofocus=True,
                )
                send = gr.Button("Send", variant="primary", scale=1, elem_id="chat-send")
            with gr.Row():
                stop_button = gr.Button("Stop", size="sm")
                retry = gr.Button("Retry", size="sm")
                clear = gr.Button("New chat", size="sm")
            with gr.Row():
                past = gr.Dropdown(
                    label="Reopen a saved conversation",
                    choices=list_conversations(ctx),
                    value=None,
                    info="Every chat is saved in the workspace as it goes",
                )
                scorer = gr.Dropdown(
                    reward_model_choices(ctx),
                    value=NO_REWARD,
                    label="Score replies with",
                    elem_id="chat-scorer",
                    info="A reward model trained in the Reward tab: rewards show under the chat",
                )
        with gr.Column(scale=2):
            system = gr.Textbox(label="System prompt", lines=3, placeholder="Optional, e.g. 'Answer in one sentence.'")
            with gr.Accordion("Sampling", open=True):
                temperature = gr.Slider(
                    0, 2, value=0.7, step=0.05, label="Temperature", info="0 = greedy: always the most likely token"
                )
                top_p = gr.Slider(0.05, 1, value=0.9, step=0.05, label="Top-p")
                max_new = gr.Slider(16, 1024, value=256, step=16, label="Max new tokens")
                seed = gr.Number(value=-1, precision=0, label="Seed", info="-1 = random")
                stop = gr.Textbox(label="Stop strings", lines=2, placeholder="one per line")
            with gr.Accordion("Model", open=True):
                # One base is loaded for everyone; on a shared app only the command line chooses it.
                with gr.Group(visible=not ctx.shared):
                    model = gr.Dropdown(
                        list_models(ctx),
                        value=DEFAULT_MODEL,
                        label="Base model",
                        allow_custom_value=True,
                        info="The embedded default, a local model folder, or a hub id. "
                        "Loading one changes the model for everyone using this app.",
                    )
                    with gr.Row():
                        precision = gr.Dropdown(list(PRECISIONS), value="fp32", label="Precision")
                        device = gr.Dropdown(list(DEVICES), value="auto", label="Device")
                    load = gr.Button("Load model (for everyone)")
                view = gr.Dropdown(
                    ctx.views(),
                    value=BASE_VIEW,
                    label="Adapter",
                    elem_id="chat-adapter",
                    info="'base' runs with every adapter disabled; the Training tab makes adapters",
                )

    sampling = [system, temperature, top_p, max_new, seed, stop, view]
    submitted = {
        "fn": partial(add_message, ctx),
        "inputs": [message, chatbot, system, conversation_id, max_new, view],
        "outputs": [message, chatbot, conversation_id],
    }
    reply = {"fn": partial(bot_reply, ctx), "inputs": [chatbot, conversation_id, *sampling], "outputs": chatbot}
    # Scored once a reply has finished (or was stopped), and again for whatever is shown when the scorer changes.
    scoring = {
        "fn": partial(show_rewards, ctx),
        "inputs": [chatbot, scorer, rewards],
        "outputs": [rewards, reward_line],
        "show_progress": "minimal",
    }
    events = [trigger(**submitted).success(**reply) for trigger in (message.submit, send.click)]
    retry_event = retry.click(drop_last_reply, chatbot, chatbot).then(**reply)
    for event in (*events, retry_event):
        event.then(**scoring)
    stop_button.click(None, cancels=[*events, retry_event]).then(**scoring)
    clear.click(lambda: ([], None, ""), outputs=[chatbot, conversation_id, message]).then(**scoring)
    # its trash icon starts a new saved conversation
    chatbot.clear(lambda: None, outputs=conversation_id).then(**scoring)
    past.focus(lambda: gr.update(choices=list_conversations(ctx)), outputs=past)
    past.select(partial(reopen, ctx), past, [chatbot, system, conversation_id]).then(**scoring)
    scorer.focus(lambda: gr.update(choices=reward_model_choices(ctx)), outputs=scorer)
    scorer.change(**scoring)
    load.click(partial(load_model, ctx), [model, precision, device], view)
    view.focus(lambda: gr.update(choices=ctx.views()), outputs=view)


def add_message(
    ctx: Lab, text: str, history: list, system: str, conversation_id: int | None, max_new: float, view: str
):
    """Append the user's turn and save it before the model answers; a message that cannot fit stays in the box.
    A refusal is a warning, so the conversation stays on screen."""
    if not text.strip():
        gr.Warning("Type a message first.")
        return gr.skip(), gr.skip(), gr.skip()
    turns = plain_messages(history)
    if ctx.models.loaded is not None:
        try:
            encode_chat(ctx.models.loaded, build_messages(text, system, turns), int(max_new))
        except ValueError as err:  # too long for the context, or over the lab's limits
            gr.Warning(str(err))
            return gr.skip(), gr.skip(), gr.skip()
    history = [*history, {"role": "user", "content": text}]
    try:
        saved = save(ctx, conversation_id, history, system, view)
    except ValueError as err:  # the workspace's disk is full: the message stays in the box, not sent
        gr.Warning(str(err))
        return gr.skip(), gr.skip(), gr.skip()
    return "", history, saved


def drop_last_reply(history: list) -> list:
    """Remove the last assistant turn so that the same user turn is answered again."""
    if history and history[-1]["role"] == "assistant":
        return history[:-1]
    return history


def save(ctx: Lab, conversation_id: int | None, history: list, system: str, view: str) -> int:
    """Store the conversation with the model view that answers it (the base, or one adapter)."""
    loaded = ctx.models.loaded
    turns = [m for m in plain_messages(history) if m["content"].strip()]  # never an empty reply
    model = str(ModelRef(loaded.base, view)) if loaded else ""
    conv = Conversation(turns, system or "", model, id=conversation_id)
    return ctx.store.save_conversation(conv)


def bot_reply(
    ctx: Lab,
    history: list,
    conversation_id: int | None,
    system: str,
    temperature: float,
    top_p: float,
    max_new: float,
    seed: float,
    stop: str,
    view: str,
):
    """Stream the model's reply into the chat; the conversation is saved before and after."""
    if not history or history[-1]["role"] != "user":
        yield history
        return
    turns = plain_messages(history)
    try:
        settings = parse_settings(temperature, top_p, max_new, seed, stop)
        messages = build_messages(turns[-1]["content"], system, turns[:-1])
    except ValueError as err:  # a setting out of range, a system prompt over the limit: said, nothing lost
        gr.Warning(str(err))
        yield history
        return
    history = [*history, {"role": "assistant", "content": ""}]
    deadline = time.monotonic() + WAIT_FOR_MODEL_S
    while ctx.models.loading and time.monotonic() < deadline:
        history[-1]["content"] = f"⏳ {ctx.models.status}"
        yield history
        time.sleep(0.5)
    why = ctx.models.waiting()
    waiting = f"⏳ {why}…" if why else ""
    history[-1]["content"] = waiting
    if history[-1]["content"]:
        yield history  # replaced by the reply as soon as its first token arrives
    try:
        attach_adapter(ctx.store, ctx.models, view)
        for text in stream_chat(partial(ctx.models.use, view), messages, settings):
            history[-1]["content"] = text
            yield history
    except (ModelError, PromptTooLongError) as err:
        gr.Warning(str(err))  # a warning, so the conversation stays on screen
    finally:
        if history[-1]["content"] == waiting:  # no token came: the wait is not part of the conversation
            history[-1]["content"] = ""
        try:
            save(ctx, conversation_id, history, system, view)
        except ValueError as err:  # the workspace's disk is full: the reply stays on screen, said so
            gr.Warning(str(err))
    yield [m for m in history if m["role"] != "assistant" or m["content"]]


def show_rewards(ctx: Lab, history: list, run_id: str | None, known: dict) -> tuple[dict, str]:
    """Score the replies on screen not yet scored by this reward run (after a turn: only the new one), each given
    the conversation before it (the system prompt is the model's instruction, not what the reply is judged on), and
    list every reply's reward in one line. The conversation itself is never changed."""
    if not run_id or run_id == NO_REWARD:
        return {}, ""

    def scorer(turns: list[dict], reply: str) -> float:
        return ctx.score(run_id, turns, [reply])[0]

    try:
        scored = score_replies(plain_messages(history), scorer, (known or {}).get(run_id))
    except ModelError as err:  # the run was deleted, or its base cannot be loaded
        gr.Warning(str(err))
        return {}, ""
    if scored.problem:
        gr.Warning(f"{scored.problem} That reply has no reward.")
    return {run_id: scored.known}, format_rewards(scored.rewards)


def format_rewards(rewards: list[float | None]) -> str:
    """Rewards: reply 1 +0.42 · reply 2 −1.10 · reply 3 — (higher is better by the reward model)."""
    if not rewards:
        return ""
    shown = [f"reply {n} **{r:+.2f}**" if r is not None else f"reply {n} —" for n, r in enumerate(rewards, 1)]
    return "**Rewards:** " + " · ".join(shown)


def reopen(ctx: Lab, conversation_id: int | None):
    if conversation_id is None:
        return [], "", None
    conv = ctx.store.get_conversation(conversation_id)
    return conv.messages, conv.system, conv.id


def load_model(ctx: Lab, model: str, precision: str, device: str):
    """Load another base for everyone (refused on a shared app, where only the command line chooses it)."""
    if ctx.shared:
        raise UserError("On a shared app only the command line chooses the base model.")
    try:
        ctx.models.load(model or DEFAULT_MODEL, precision, device)
    except ModelError as err:
        gr.Warning(str(err))
        return gr.skip()
    gr.Info(f"Loaded {ctx.models.loaded.describe()} for everyone using this app.")
    return gr.update(choices=ctx.views(), value=BASE_VIEW)
