"""Demonstrations tab: write ideal responses (or correct a model draft), distil from a teacher, import, export."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import gradio as gr
import pandas as pd

from lab import Lab, data, demonstrations
from lab.distill import TEACHER_SYSTEM, Teacher, distill
from lab.generate import GenerationSettings, generate
from lab.models import BASE_VIEW, ModelError
from lab.presets import demonstration_sets, load_question_set, question_sets
from lab.store import CATEGORIES, ORIGINS
from ui.downloads import DOWNLOAD_JS, session_folder

TABLE_COLUMNS = ["id", "prompt", "response", "category", "origin", "status", "author", "tags"]
TURN_COLUMNS = ["role", "content"]


def demonstrations_table(ctx: Lab, search: str, category: str | None, origins: list[str], status: str):
    demos = ctx.store.list_demonstrations(
        search or "", category or None, origins or None, None if status == "all" else status
    )
    rows = []
    for d in demos:
        turns = [m for m in d.messages if m["role"] != "system"]
        rows.append(
            {
                "id": d.id,
                "prompt": turns[-2]["content"],
                "response": turns[-1]["content"],
                "category": d.category,
                "origin": d.origin,
                "status": d.status,
                "author": d.author,
                "tags": ", ".join(d.tags),
            }
        )
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


@dataclass
class DemonstrationsView:
    """The components handlers fill, so a handler returns {component: value} instead of a positional tuple."""

    editing: gr.State  # id of the demonstration in the editor, None for a new one
    draft: gr.State  # the model's draft of the response, kept to record what the person changed
    system: gr.Textbox
    earlier: gr.Dataframe
    prompt: gr.Textbox
    response: gr.Textbox
    category: gr.Dropdown
    tags: gr.Textbox
    title: gr.Markdown
    message: gr.Markdown
    table: gr.Dataframe
    counts: gr.Markdown
    download: gr.DownloadButton
    preview_text: gr.Markdown
    preview_table: gr.Dataframe
    do_import: gr.Button

    @property
    def editor(self) -> list:
        return [
            self.editing,
            self.draft,
            self.system,
            self.earlier,
            self.prompt,
            self.response,
            self.category,
            self.tags,
            self.title,
        ]

    @property
    def listing(self) -> list:
        return [self.table, self.counts, self.download]

    @property
    def importing(self) -> list:
        return [self.preview_text, self.preview_table, self.do_import]


def build_demonstrations(ctx: Lab, app: gr.Blocks) -> DemonstrationsView:
    """Lay out the tab and wire its events; returns its components."""
    deleted = gr.State([])  # ids of the last deletion, for undo
    author_memory = gr.BrowserState("", storage_key="alignment-lab-author")

    with gr.Row():
        with gr.Column(scale=3):
            editor_title = gr.Markdown("### New demonstration")
            system = gr.Textbox(label="System prompt (optional)", lines=1)
            with gr.Accordion("Earlier turns (for a multi-turn demonstration)", open=False):
                earlier = gr.Dataframe(
                    pd.DataFrame(columns=TURN_COLUMNS),
                    headers=TURN_COLUMNS,
                    interactive=True,
                    wrap=True,
                    label="user / assistant turns before the prompt, in order",
                    column_widths=["15%", "85%"],
                )
            prompt = gr.Textbox(label="Prompt", lines=3, elem_id="demo-prompt")
            response = gr.Textbox(
                label="Ideal response",
                lines=6,
                elem_id="demo-response",
                info="Write it yourself, or draft it with the model and correct it",
            )
            with gr.Row():
                category = gr.Dropdown(list(CATEGORIES), value="open QA", label="Category")
                tags = gr.Textbox(label="Tags", placeholder="comma, separated")
                author = gr.Textbox(label="Author", elem_id="demo-author")
            with gr.Row():
                draft_button = gr.Button("Draft with the model")
                save = gr.Button("Save", variant="primary", elem_id="demo-save")
                clear = gr.Button("New")
            message = gr.Markdown(elem_id="demo-message")
        with gr.Column(scale=4):
            with gr.Row():
                search = gr.Textbox(label="Search", scale=3)
                category_filter = gr.Dropdown(["", *CATEGORIES], value="", label="Category", scale=2)
                status_filter = gr.Dropdown(
                    ["accepted", "pending", "rejected", "all"], value="accepted", label="Status", scale=2
                )
            origin_filter = gr.CheckboxGroup(list(ORIGINS), value=list(ORIGINS), label="Origin")
            table = gr.Dataframe(
                demonstrations_table(ctx, "", None, list(ORIGINS), "accepted"),
                interactive=False,
                wrap=True,
                max_height=420,
                elem_id="demo-table",
                label="Click a row to edit it; select several ids below for bulk actions",
            )
            with gr.Row():
                selected = gr.Textbox(label="Selected ids", placeholder="e.g. 3, 5, 8", scale=3)
                accept = gr.Button("Accept", size="sm")
                reject = gr.Button("Reject", size="sm")
                delete = gr.Button("Delete", size="sm", variant="stop")
                undo = gr.Button("Undo delete", size="sm")
            counts = gr.Markdown()

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
            max_new = gr.Slider(16, 512, value=128, step=16, label="Max new tokens")
        teacher_system = gr.Textbox(TEACHER_SYSTEM, label="Teacher system prompt", lines=2)
        with gr.Row():
            run_distill = gr.Button("Generate answers", variant="primary")
            stop_distill = gr.Button("Stop")
            accept_pending = gr.Button("Accept all pending")
            reject_pending = gr.Button("Reject all pending")
        distill_status = gr.Markdown()

    with gr.Accordion("Import and export", open=False):
        with gr.Row():
            upload = gr.File(
                label="JSONL, JSON, CSV or Parquet: TRL `messages`, instruction/input/output, or prompt/completion",
                file_types=[".jsonl", ".json", ".csv", ".parquet"],
            )
            with gr.Column():
                preview_text = gr.Markdown()
                do_import = gr.Button("Import", variant="primary", interactive=False)
                export = gr.Button("Export accepted as JSONL (TRL format)", elem_id="export-demonstrations")
                # Holds the file Export wrote; shown too, in case the browser blocks the automatic download.
                download = gr.DownloadButton("Download demonstrations.jsonl", visible=False)
        preview_table = gr.Dataframe(interactive=False, wrap=True, visible=False)
        with gr.Row():
            starter = gr.Dropdown(
                list(demonstration_sets()),
                value="signoff",
                label="Starter set",
                info="signoff teaches a fixed sign-off; truthful and polite fit the starter experiments",
            )
            add_starter = gr.Button("Add the starter set")

    view = DemonstrationsView(
        editing=gr.State(None),
        draft=gr.State(None),
        system=system,
        earlier=earlier,
        prompt=prompt,
        response=response,
        category=category,
        tags=tags,
        title=editor_title,
        message=message,
        table=table,
        counts=counts,
        download=download,
        preview_text=preview_text,
        preview_table=preview_table,
        do_import=do_import,
    )
    filters = [search, category_filter, origin_filter, status_filter]
    refresh = partial(refresh_table, ctx, view)
    for control in filters:
        control.change(refresh, filters, view.listing)

    def on_select(frame: pd.DataFrame, evt: gr.SelectData) -> dict:  # Gradio injects evt by this annotation
        return open_row(ctx, view, frame, evt)

    def on_export(request: gr.Request) -> dict:  # and the session's request by this one
        return export_accepted(ctx, view, request)

    table.select(on_select, table, view.editor)
    clear.click(partial(blank_editor, view), outputs=view.editor)
    draft_button.click(partial(draft_response, ctx), [system, earlier, prompt], [response, view.draft])
    save.click(
        partial(save_demonstration, ctx, view),
        [view.editing, view.draft, system, earlier, prompt, response, category, tags, author],
        [message, view.editing, editor_title],
    ).then(refresh, filters, view.listing)
    author.change(lambda name: name, author, author_memory)
    for button, status in ((accept, "accepted"), (reject, "rejected")):
        button.click(partial(set_status, ctx, status=status), selected, message).then(refresh, filters, view.listing)
    delete.click(partial(delete_rows, ctx), selected, [message, deleted]).then(refresh, filters, view.listing)
    undo.click(partial(undo_delete, ctx), deleted, [message, deleted]).then(refresh, filters, view.listing)
    distill_event = run_distill.click(
        partial(run_distillation, ctx),
        [teacher_model, prompt_set, few_shot, max_new, teacher_system, author],
        distill_status,
    ).then(refresh, filters, view.listing)
    stop_distill.click(None, cancels=[distill_event]).then(refresh, filters, view.listing)
    for button, status in ((accept_pending, "accepted"), (reject_pending, "rejected")):
        button.click(partial(review_pending, ctx, status=status), outputs=distill_status).then(
            refresh, filters, view.listing
        )
    upload.change(partial(preview, ctx, view), upload, view.importing)
    do_import.click(partial(import_file, ctx, view), upload, view.importing).then(refresh, filters, view.listing)
    add_starter.click(partial(import_starter, ctx), starter, preview_text).then(refresh, filters, view.listing)
    export.click(on_export, outputs=download).success(None, download, js=DOWNLOAD_JS)
    app.load(lambda name: name, author_memory, author)  # the annotator's name, remembered by this browser
    app.load(refresh, filters, view.listing)
    return view


def refresh_table(
    ctx: Lab, view: DemonstrationsView, search: str, category: str, origins: list[str], status: str
) -> dict:
    """The filtered table and the counts; the last export's download goes away, since it may no longer match."""
    frame = demonstrations_table(ctx, search, category, origins, status)
    live = ctx.store.list_demonstrations(status=None)
    by_status = {s: sum(d.status == s for d in live) for s in ("accepted", "pending", "rejected")}
    counts = f"{len(frame)} shown · {by_status['accepted']} accepted · {by_status['pending']} pending review"
    return {view.table: frame, view.counts: counts, view.download: gr.update(value=None, visible=False)}


def blank_editor(view: DemonstrationsView) -> dict:
    """An empty editor for a new demonstration."""
    return {
        view.editing: None,
        view.draft: None,
        view.system: "",
        view.earlier: pd.DataFrame(columns=TURN_COLUMNS),
        view.prompt: "",
        view.response: "",
        view.category: "open QA",
        view.tags: "",
        view.title: "### New demonstration",
    }


def open_row(ctx: Lab, view: DemonstrationsView, frame: pd.DataFrame, evt: gr.SelectData) -> dict:
    """Fill the editor with the demonstration on the clicked row."""
    demo = ctx.store.get_demonstration(int(frame.iloc[evt.index[0]]["id"]))
    system = demo.messages[0]["content"] if demo.messages[0]["role"] == "system" else ""
    turns = [m for m in demo.messages if m["role"] != "system"]
    return {
        view.editing: demo.id,
        view.draft: demo.draft,
        view.system: system,
        view.earlier: pd.DataFrame(turns[:-2], columns=TURN_COLUMNS),
        view.prompt: turns[-2]["content"],
        view.response: turns[-1]["content"],
        view.category: demo.category,
        view.tags: ", ".join(demo.tags),
        view.title: f"### Editing #{demo.id} ({demo.origin}, {demo.status})",
    }


def conversation(system: str, earlier: pd.DataFrame | None, prompt: str) -> list[dict]:
    """The messages up to and including the prompt, from the editor's fields."""
    messages = [{"role": "system", "content": system}] if system.strip() else []
    if earlier is not None and len(earlier):
        for row in earlier.fillna("").to_dict("records"):
            if str(row["content"]).strip():
                messages.append({"role": str(row["role"]).strip(), "content": str(row["content"])})
    return [*messages, {"role": "user", "content": prompt}]


def draft_response(ctx: Lab, system: str, earlier: pd.DataFrame, prompt: str):
    if not prompt.strip():
        raise gr.Error("Write the prompt first.")
    ctx.wait_for_model()
    try:
        with ctx.models.use(BASE_VIEW) as lm:
            reply = generate(lm, conversation(system, earlier, prompt), GenerationSettings(temperature=0.7, seed=None))
    except (ModelError, ValueError) as err:
        raise gr.Error(str(err)) from err
    return reply.text, reply.text


def save_demonstration(
    ctx: Lab,
    view: DemonstrationsView,
    demo_id: int | None,
    draft: str | None,
    system: str,
    earlier: pd.DataFrame,
    prompt: str,
    response: str,
    category: str,
    tags: str,
    author: str,
) -> dict:
    """Save the editor through lab.demonstrations, which refuses a conversation that already exists."""
    if not (prompt or "").strip():
        raise gr.Error("Write the prompt first.")
    if not (response or "").strip():
        raise gr.Error("Write the ideal response first, or draft it with the model.")
    messages = [*conversation(system, earlier, prompt), {"role": "assistant", "content": response}]
    try:
        demo = demonstrations.save_demonstration(
            ctx.store, messages, demo_id=demo_id, draft=draft, category=category, tags=tags.split(","), author=author
        )
    except ValueError as err:
        raise gr.Error(str(err)) from err
    return {
        view.message: f"Saved demonstration #{demo.id} ({demo.origin}, {demo.status}).",
        view.editing: demo.id,
        view.title: f"### Editing #{demo.id} ({demo.origin}, {demo.status})",
    }


def _ids(text: str) -> list[int]:
    try:
        ids = [int(part) for part in text.replace(",", " ").split()]
    except ValueError as err:
        raise gr.Error("Selected ids must be numbers, e.g. 3, 5, 8.") from err
    if not ids:
        raise gr.Error("Type the ids of the demonstrations first (the id column).")
    return ids


def set_status(ctx: Lab, text: str, status: str) -> str:
    ids = _ids(text)
    ctx.store.set_demonstration_status(ids, status)
    return f"Marked {len(ids)} as {status}."


def delete_rows(ctx: Lab, text: str):
    ids = _ids(text)
    ctx.store.delete_demonstrations(ids)
    return f"Deleted {len(ids)} demonstration(s). Undo brings them back.", ids


def undo_delete(ctx: Lab, ids: list[int]):
    if not ids:
        raise gr.Error("Nothing to undo.")
    ctx.store.restore_demonstrations(ids)
    return f"Restored {len(ids)} demonstration(s).", []


def run_distillation(
    ctx: Lab,
    model: str,
    prompt_set: str,
    few_shot: float,
    max_new: float,
    system: str,
    author: str,
    progress=gr.Progress(),
):
    if ctx.shared and model.strip():
        raise gr.Error("On a shared app the teacher is the loaded model; only the command line chooses models.")
    teacher = Teacher(model=model.strip(), system=system, few_shot=int(few_shot))
    settings = GenerationSettings(temperature=0.3, top_p=0.95, max_new_tokens=int(max_new), seed=0)
    ctx.wait_for_model()
    try:  # a generator, so that Stop closes it and the teacher stops at the next prompt
        for step in distill(ctx.store, ctx.models, teacher, load_question_set(prompt_set), settings, author):
            progress((step.done, step.total), desc=step.prompt[:60])
            yield f"Answered {step.done} of {step.total} prompts; each waits in **pending** for review."
    except (ModelError, ValueError) as err:
        raise gr.Error(str(err)) from err
    yield "Done: review the pending answers (Status: pending), then accept, edit or reject them."


def review_pending(ctx: Lab, status: str) -> str:
    ids = [d.id for d in ctx.store.list_demonstrations(status="pending")]
    ctx.store.set_demonstration_status(ids, status)
    return f"Marked {len(ids)} pending answers as {status}."


def preview(ctx: Lab, view: DemonstrationsView, path: str | None) -> dict:
    """Say what importing the uploaded file would add; writes nothing."""
    if not path:
        return {
            view.preview_text: "",
            view.preview_table: gr.update(visible=False),
            view.do_import: gr.update(interactive=False),
        }
    try:
        result = data.preview_import(ctx.store, path)
    except data.DataFileError as err:
        return {
            view.preview_text: f"**Cannot import:** {err}",
            view.preview_table: gr.update(visible=False),
            view.do_import: gr.update(interactive=False),
        }
    return {
        view.preview_text: f"**Preview:** {result.summary()}",
        view.preview_table: gr.update(value=result.table(), visible=True),
        view.do_import: gr.update(interactive=bool(result.demonstrations)),
    }


def import_file(ctx: Lab, view: DemonstrationsView, path: str | None) -> dict:
    """Import every row of the uploaded file, or none of them."""
    if not path:
        raise gr.Error("Choose a file first.")
    try:
        report = data.import_demonstrations(ctx.store, path)
    except data.DataFileError as err:
        raise gr.Error(str(err)) from err
    return {
        view.preview_text: report.summary(),
        view.preview_table: gr.update(visible=False),
        view.do_import: gr.update(interactive=False),
    }


def import_starter(ctx: Lab, name: str) -> str:
    return data.import_demonstrations(ctx.store, demonstration_sets()[name]).summary()


def export_accepted(ctx: Lab, view: DemonstrationsView, request: gr.Request | None) -> dict:
    """Write the accepted demonstrations into this browser session's own folder, for its download button."""
    path = session_folder(ctx, request) / "demonstrations.jsonl"
    try:
        data.export_demonstrations(ctx.store, path)
    except data.DataFileError as err:
        raise gr.Error(str(err)) from err
    return {view.download: gr.update(value=str(path), visible=True)}
