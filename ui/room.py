"""What the tabs share in a workshop room: names that come from the login, and the instructor's live view."""

from __future__ import annotations

import inspect
from collections.abc import Callable

import gradio as gr
import pandas as pd

from lab import Lab
from lab.arena import arena_report
from lab.room import ROSTER_COLUMNS, roster

SIGNED_IN = "Signed in: what you save carries your login"
# Events of every tab that make answers share one concurrency group of this size; most of its requests wait their
# turn at the model (lab.room.Turns), which answers one at a time. Votes and saves have their own, unlimited group.
GENERATION = {"concurrency_id": "generation", "concurrency_limit": 16}
SAVES = {"concurrency_id": "saves", "concurrency_limit": None}


def login_of(request: gr.Request | None) -> str | None:
    """The login of the person behind a request, when the app asks for logins; None otherwise."""
    return getattr(request, "username", None) or None


def signed(fn: Callable, *bound, **fixed) -> Callable:
    """`fn(*bound, *inputs, **fixed, login=...)` as a Gradio handler that knows who is asking.

    Gradio hands the request only to a parameter annotated gr.Request, which a functools.partial hides; this
    handler takes it first and passes on the login (None without logins), so a vote is signed by the login whatever
    a client sends as the name.
    """
    if inspect.isgeneratorfunction(fn):  # Gradio streams only from a generator function

        def streaming(request: gr.Request, *values):
            yield from fn(*bound, *values, login=login_of(request), **fixed)

        return streaming

    def handler(request: gr.Request, *values):
        return fn(*bound, *values, login=login_of(request), **fixed)

    return handler


def bind_name(box: gr.Textbox, memory: gr.BrowserState) -> gr.events.Dependency:
    """The name box: with logins, the login, shown and locked; without, the name this browser remembers.
    Returns the event that restores it, for what should follow."""
    show_login(box)
    box.change(lambda name: name, box, memory, show_progress="hidden")
    # The browser's stored value arrives after the page loads, as a change of the BrowserState.
    return memory.change(signed(_restore_name), memory, box, show_progress="hidden")


def show_login(box: gr.Textbox) -> None:
    """With logins, the name box shows the login when the page loads, and cannot be edited."""
    gr.on(None, signed(_show_login), outputs=box, show_progress="hidden")  # no trigger and no inputs: page load


def _show_login(login: str | None) -> dict:
    return gr.update(value=login, interactive=False, info=SIGNED_IN) if login else gr.skip()


def _restore_name(name: str, login: str | None) -> str:
    return gr.skip() if login or not name else name


# the instructor's view


def build_room_view(ctx: Lab) -> None:
    """Who is doing what, live while open: per person votes, demonstrations, agreement and the flag."""
    with gr.Accordion("The room, live: who is doing what", open=False) as box:
        gr.Markdown(
            "For the instructor: refreshed every few seconds while this is open. **Flagged** raters agree with the "
            "others' majority far less than the rest do; training can leave their votes out."
        )
        line = gr.Markdown(elem_id="room-line")
        people = gr.Dataframe(
            pd.DataFrame(columns=ROSTER_COLUMNS), interactive=False, elem_id="room-roster", label="People"
        )
    timer = gr.Timer(3.0, active=False)
    box.expand(lambda: gr.Timer(active=True), outputs=timer).then(lambda: room_view(ctx), outputs=[line, people])
    box.collapse(lambda: gr.Timer(active=False), outputs=timer)
    timer.tick(lambda: room_view(ctx), outputs=[line, people], show_progress="hidden", concurrency_id="room-view")


def room_view(ctx: Lab) -> tuple[str, pd.DataFrame]:
    """One line on the room as a whole, and the table of people; what to do when nobody has done anything yet."""
    people = roster(ctx.store)
    if people.empty:
        return "Nobody has voted or written a demonstration yet: send people to the Ranking tab.", people
    stats = arena_report(ctx.store).agreement
    overlap = (
        f"agreement {stats['percent']:.0%} on {stats['items']} items voted by two or more"
        if stats["items"]
        else "no item has two votes yet, so no agreement (ask for 2 votes per item in the Ranking tab)"
    )
    flagged = people.loc[people["flagged"], "person"].tolist()
    who = f"; flagged: {', '.join(flagged)}" if flagged else ""
    line = (
        f"**{len(people)} people**, {int(people['votes'].sum())} votes, "
        f"{int(people['demonstrations'].sum())} demonstrations; {overlap}{who}."
    )
    return line, people
