"""Demonstrations tab: write ideal responses (or correct a model draft), distil from a teacher, import, export."""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial

import gradio as gr
import pandas as pd

from lab import Lab, data, demonstrations
from lab.formats import NotDemonstrationsError
from lab.generate import GenerationSettings, stream_chat
from lab.models import BASE_VIEW, ModelError
from lab.presets import demonstration_sets
from lab.room import annotator_name
from lab.store import CATEGORIES, ORIGINS, WorkspaceFullError
from ui.distill import build_distill, run_distillation  # noqa: F401  (run_distillation: tests import it from here)
from ui.downloads import DOWNLOAD_JS, session_folder
from ui.errors import UserError
from ui.room import GENERATION, SAVES, bind_name, signed

# The name is no secret, and a fixed key lets the browser read it back after the app restarts (Gradio's
# default key is new at each start, so the stored name could no longer be decrypted).
AUTHOR_MEMORY = {"storage_key": "alignment-lab-author", "secret": "alignment-lab-author"}
DRAFT_TOKENS = 256  # how long a model draft may grow
PRESET = "cpu-default"  # the training preset whose max_length a saved demonstration is checked against
TABLE_COLUMNS = ["id", "prompt", "response", "category", "origin", "status", "author", "tags"]
TURN_COLUMNS = ["role", "content"]
NO_DEMONSTRATIONS = (
    "**No demonstrations yet:** write a prompt and its ideal response on the left and press **Save**, draft one "
    "with the model, or add a starter set under **Import and export** below. Accepted demonstrations are what the "
    "Training tab's **sft** method trains on."
)


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
                "prompt": demonstrations.preview(turns[-2]["content"]),  # the editor shows the whole text
                "response": demonstrations.preview(turns[-1]["content"]),
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
    selected: gr.Dropdown  # ids of rows shown in the table, for the bulk actions
    bulk_message: gr.Markdown
    download: gr.DownloadButton
    preview_text: gr.Markdown
    preview_table: gr.Dataframe
    do_import: gr.Button
    import_good: gr.Button  # offered only for a file of completions labelled good or bad

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
        return [self.table, self.counts, self.selected, self.download]

    @property
    def importing(self) -> list:
        return [self.preview_text, self.preview_table, self.do_import, self.import_good]


def build_demonstrations(ctx: Lab, app: gr.Blocks) -> DemonstrationsView:
    """Lay out the tab and wire its events; returns its components."""
    deleted = gr.State([])  # ids of the last deletion, for undo
    author_memory = gr.BrowserState("", **AUTHOR_MEMORY)

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
                search = gr.Textbox(label="Search", scale=3, elem_id="demo-search")
                category_filter = gr.Dropdown(["", *CATEGORIES], value="", label="Category", scale=2)
                status_filter = gr.Dropdown(
                    ["accepted", "pending", "rejected", "all"],
                    value="accepted",
                    label="Status",
                    scale=2,
                    elem_id="demo-status",
                )
            origin_filter = gr.CheckboxGroup(list(ORIGINS), value=list(ORIGINS), label="Origin")
            table = gr.Dataframe(
                demonstrations_table(ctx, "", None, list(ORIGINS), "accepted"),
                interactive=False,
                wrap=True,
                max_height=420,
                elem_id="demo-table",
                label="Click a row to open it in the editor; long texts are cut here, not there",
            )
            selected = gr.Dropdown([], value=[], multiselect=True, label="Selected rows", elem_id="demo-selected")
            with gr.Row():
                accept = gr.Button("Accept", size="sm", min_width=80)
                reject = gr.Button("Reject", size="sm", min_width=80)
                delete = gr.Button("Delete", size="sm", variant="stop", min_width=80)
                undo = gr.Button("Undo delete", size="sm", min_width=80)
            bulk_message = gr.Markdown(elem_id="demo-bulk-message")
            counts = gr.Markdown(elem_id="demo-counts")

    distill_events = build_distill(ctx, author, table)

    with gr.Accordion("Import and export", open=False):
        with gr.Row():
            upload = gr.File(
                label="JSONL, JSON, CSV or Parquet: TRL `messages` or prompt/completion, OpenAI chat, ShareGPT, "
                "alpaca (input, system, history), Human:/Assistant: transcripts",
                file_types=[".jsonl", ".json", ".csv", ".parquet"],
            )
            with gr.Column():
                preview_text = gr.Markdown()
                do_import = gr.Button("Import", variant="primary", interactive=False)
                # Completions labelled good or bad are ratings, not demonstrations: taking the good ones is a choice.
                import_good = gr.Button("Import the good completions as demonstrations", visible=False)
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
        selected=selected,
        bulk_message=bulk_message,
        download=download,
        preview_text=preview_text,
        preview_table=preview_table,
        do_import=do_import,
        import_good=import_good,
    )
    filters = [search, category_filter, origin_filter, status_filter]
    refresh = partial(refresh_table, ctx, view)

    def refreshed(event):
        """Refresh the table and counts after `event`."""
        return event.then(refresh, filters, view.listing)

    for event in distill_events:
        refreshed(event)
    for control in filters:
        control.change(refresh, filters, view.listing)

    def on_select(frame: pd.DataFrame, evt: gr.SelectData) -> dict:  # Gradio injects evt by this annotation
        return open_row(ctx, view, frame, evt)

    def on_export(request: gr.Request) -> dict:  # and the session's request by this one
        return export_accepted(ctx, view, request)

    table.select(on_select, table, view.editor)
    clear.click(partial(blank_editor, view), outputs=view.editor)
    draft_button.click(
        partial(draft_response, ctx, view), [system, earlier, prompt], [response, view.draft, message], **GENERATION
    )
    refreshed(
        save.click(
            signed(save_demonstration, ctx, view),
            [view.editing, view.draft, system, earlier, prompt, response, category, tags, author],
            [message, view.editing, editor_title],
            **SAVES,
        )
    )
    bind_name(author, author_memory)
    for button, status in ((accept, "accepted"), (reject, "rejected")):
        refreshed(button.click(partial(set_status, ctx, status=status), selected, bulk_message))
    refreshed(delete.click(partial(delete_rows, ctx), selected, [bulk_message, deleted]))
    refreshed(undo.click(partial(undo_delete, ctx), deleted, [bulk_message, deleted]))
    upload.change(partial(preview, ctx, view), upload, view.importing)
    do_import.click(partial(import_file, ctx, view), upload, view.importing).then(refresh, filters, view.listing)
    import_good.click(partial(import_file, ctx, view, good_only=True), upload, view.importing).then(
        refresh, filters, view.listing
    )
    add_starter.click(partial(import_starter, ctx), starter, preview_text).then(refresh, filters, view.listing)
    export.click(on_export, outputs=download).success(None, download, js=DOWNLOAD_JS)
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
    counts = counts if live else NO_DEMONSTRATIONS
    rows = [(f"#{r.id} · {r.prompt[:40]}", int(r.id)) for r in frame.itertuples()]
    return {
        view.table: frame,
        view.counts: counts,
        view.selected: gr.update(choices=rows, value=[]),  # only rows the person can see can be picked
        view.download: gr.update(value=None, visible=False),
    }


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


def draft_response(ctx: Lab, view: DemonstrationsView, system: str, earlier: pd.DataFrame, prompt: str):
    """Stream the model's draft into the response box, saying while it waits for the model."""
    if not prompt.strip():
        yield {view.message: "Write the prompt first."}
        return
    while ctx.models.loading:
        yield {view.message: f"⏳ Waiting for the model: {ctx.models.status}"}
        time.sleep(0.5)
    # The first token arrives once the model is free: another tab's generation may be holding it.
    yield {view.message: "⏳ Waiting for the model (another request may be using it)…"}
    settings = GenerationSettings(temperature=0.7, max_new_tokens=DRAFT_TOKENS, seed=None)
    text = ""
    try:
        for text in stream_chat(partial(ctx.models.use, BASE_VIEW), conversation(system, earlier, prompt), settings):
            yield {view.response: text, view.message: "Drafting…"}
    except (ModelError, ValueError) as err:  # ValueError: the prompt does not fit the model's context
        yield {view.message: str(err)}
        return
    yield {view.response: text.strip(), view.draft: text.strip(), view.message: "Draft ready: correct it, then Save."}


def length_check(ctx: Lab, messages: list[dict]) -> str | None:
    """A warning when the demonstration is longer than training keeps; None when it fits or no model is loaded."""
    loaded = ctx.models.loaded
    preset = ctx.model_presets.get(PRESET)
    if loaded is None or preset is None:  # nothing to count tokens with: skip the check
        return None
    return demonstrations.length_warning(loaded.tokenizer, messages, preset.max_length)


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
    login: str | None = None,
) -> dict:
    """Save the editor through lab.demonstrations, which refuses a conversation that already exists; with logins,
    the login is the author.

    A refusal replaces the message beside Save, so no earlier "Saved" stays next to it.
    """
    if not (prompt or "").strip():
        return {view.message: "Not saved: write the prompt first."}
    if not (response or "").strip():
        return {view.message: "Not saved: write the ideal response first, or draft it with the model."}
    messages = [*conversation(system, earlier, prompt), {"role": "assistant", "content": response}]
    try:
        demo = demonstrations.save_demonstration(
            ctx.store,
            messages,
            demo_id=demo_id,
            draft=draft,
            category=category,
            tags=tags.split(","),
            author=annotator_name(author, login),
        )
    except ValueError as err:
        return {view.message: str(err)}
    saved = f"Saved demonstration #{demo.id} ({demo.origin}, {demo.status})."
    warning = length_check(ctx, messages)
    if warning:
        gr.Warning(warning)
    return {
        view.message: f"{saved} **Warning:** {warning}" if warning else saved,
        view.editing: demo.id,
        view.title: f"### Editing #{demo.id} ({demo.origin}, {demo.status})",
    }


def _picked(ids: list | None) -> list[int]:
    return [int(i) for i in ids or []]


def set_status(ctx: Lab, ids: list | None, status: str) -> str:
    """Accept or reject the rows picked in the table."""
    if not ids:
        return "Pick rows first (Selected rows)."
    return demonstrations.set_status(ctx.store, _picked(ids), status).describe(status.capitalize())


def delete_rows(ctx: Lab, ids: list | None):
    """Move the picked rows to the bin; Undo brings back those that were deleted."""
    if not ids:
        return "Pick rows first (Selected rows).", gr.skip()
    change = demonstrations.delete(ctx.store, _picked(ids))
    undo = " Undo delete brings them back." if change.changed else ""
    return change.describe("Deleted") + undo, change.changed


def undo_delete(ctx: Lab, ids: list[int]):
    """Bring back the rows of the last deletion."""
    if not ids:
        return "Nothing to undo.", []
    return demonstrations.restore(ctx.store, ids).describe("Restored"), []


def _no_import(view: DemonstrationsView, text: str) -> dict:
    return {
        view.preview_text: text,
        view.preview_table: gr.update(visible=False),
        view.do_import: gr.update(interactive=False),
        view.import_good: gr.update(visible=False),
    }


def preview(ctx: Lab, view: DemonstrationsView, path: str | None) -> dict:
    """Say what the uploaded file holds and what importing it would add; writes nothing."""
    if not path:
        return _no_import(view, "")
    try:
        result = data.preview_import(ctx.store, path)
    except NotDemonstrationsError as err:  # labelled completions: offer their good ones, with the count
        return {
            **_no_import(view, f"**Not demonstrations:** {err}"),
            view.import_good: gr.update(
                value=f"Import the {err.good} good completions as demonstrations",
                visible=True,
                interactive=err.good > 0,
            ),
        }
    except data.DataFileError as err:
        return _no_import(view, f"**Cannot import:** {err}")
    return {
        view.preview_text: f"**Preview:** {result.summary()}",
        view.preview_table: gr.update(value=result.table(), visible=True),
        view.do_import: gr.update(interactive=bool(result.demonstrations)),
        view.import_good: gr.update(visible=False),
    }


def import_file(ctx: Lab, view: DemonstrationsView, path: str | None, good_only: bool = False) -> dict:
    """Import every row of the uploaded file, or none of them; `good_only` takes the good completions of a file of
    labelled ones."""
    if not path:
        raise UserError("Choose a file first.")
    try:
        report = data.import_demonstrations(ctx.store, path, good_as_demonstrations=good_only)
    except (data.DataFileError, WorkspaceFullError) as err:
        raise UserError(str(err)) from err
    return _no_import(view, report.summary())


def import_starter(ctx: Lab, name: str) -> str:
    return data.import_demonstrations(ctx.store, demonstration_sets()[name]).summary()


def export_accepted(ctx: Lab, view: DemonstrationsView, request: gr.Request | None) -> dict:
    """Write the accepted demonstrations into this browser session's own folder, for its download button."""
    path = session_folder(ctx, request) / "demonstrations.jsonl"
    try:
        data.export_demonstrations(ctx.store, path)
    except data.DataFileError as err:
        raise UserError(str(err)) from err
    return {view.download: gr.update(value=str(path), visible=True)}
