"""The Demonstrations tab's "Distil from a teacher" section: answers arrive as pending, Stop ends them within one."""

from __future__ import annotations

from functools import partial

import gradio as gr
import pandas as pd

from lab import Lab, demonstrations
from lab.distill import TEACHER_SYSTEM, StopFlag, Teacher, distill
from lab.generate import GenerationSettings
from lab.models import ModelError
from lab.presets import load_question_set, question_sets
from ui.errors import UserError


def build_distill(ctx: Lab, author: gr.Textbox, table: gr.Dataframe) -> list:
    """Lay out the accordion and wire it; returns the events after which the table should be refreshed."""
    # Per browser session: Stop sets it, the running distillation checks it at every token. Gradio's
    # `cancels=` cannot do this: it cannot interrupt a generator step running in a worker thread.
    stop = gr.State(StopFlag)
    with gr.Accordion("Distil from a teacher", open=False):
        gr.Markdown("A teacher answers a prompt set; answers arrive as **pending** for you to accept, edit or reject.")
        with gr.Row():
            teacher_model = gr.Textbox(
                label="Teacher model",
                placeholder="empty = the loaded model",
                info="A larger local model folder, or empty for the loaded model",
                visible=not ctx.shared,  # on a shared app, no one types server paths
            )
            prompt_set = gr.Dropdown(question_sets(), value="starter", label="Prompt set")
            few_shot = gr.Slider(0, 8, value=3, step=1, label="Worked examples from your demonstrations")
            max_new = gr.Slider(16, 512, value=128, step=16, label="Max new tokens", elem_id="distill-max-new")
        teacher_system = gr.Textbox(TEACHER_SYSTEM, label="Teacher system prompt", lines=2)
        with gr.Row():
            run = gr.Button("Generate answers", variant="primary", elem_id="distill-run")
            stop_button = gr.Button("Stop", elem_id="distill-stop")
            accept = gr.Button("Accept pending shown", elem_id="accept-pending")
            reject = gr.Button("Reject pending shown", elem_id="reject-pending")
        status = gr.Markdown(elem_id="distill-status")

    inputs = [teacher_model, prompt_set, few_shot, max_new, teacher_system, author, stop]
    events = [run.click(partial(run_distillation, ctx), inputs, status)]
    stop_button.click(lambda flag: flag.set(), stop, queue=False)
    for button, verdict in ((accept, "accepted"), (reject, "rejected")):
        events.append(button.click(partial(review_shown, ctx, status=verdict), table, status))
    return events


def run_distillation(
    ctx: Lab,
    model: str,
    prompt_set: str,
    few_shot: float,
    max_new: float,
    system: str,
    author: str,
    stop: StopFlag | None = None,
    progress=gr.Progress(),
):
    """Have the teacher answer the prompt set, saying after each answer how many are saved; Stop ends it."""
    if ctx.shared and model.strip():
        raise UserError("On a shared app the teacher is the loaded model; only the command line chooses models.")
    stop = stop if stop is not None else StopFlag()
    stop.clear()  # a Stop pressed before this run is not meant for it
    teacher = Teacher(model=model.strip(), system=system, few_shot=int(few_shot))
    settings = GenerationSettings(temperature=0.3, top_p=0.95, max_new_tokens=int(max_new), seed=0)
    ctx.wait_for_model()
    saved, total = 0, 0
    try:
        for step in distill(ctx.store, ctx.models, teacher, load_question_set(prompt_set), settings, author, stop):
            saved, total = step.saved, step.total
            progress((step.done, step.total), desc=step.prompt[:60])
            yield f"Answered {step.done} of {step.total} prompts; {saved} saved, each **pending** review."
    except (ModelError, ValueError) as err:
        yield f"**Stopped:** {err}"
        return
    if stop.is_set():
        yield f"Stopped: {saved} answer(s) saved, pending review; the answer being written was dropped."
    else:
        yield f"Done: {saved} of {total} answers saved. Set Status to pending to review them, then accept or reject."


def review_shown(ctx: Lab, frame: pd.DataFrame | None, status: str) -> str:
    """Accept or reject the pending rows the table shows now, and only those."""
    shown = [] if frame is None or frame.empty else [int(i) for i in frame["id"]]
    return demonstrations.review_shown(ctx.store, shown, status)
