"""Saving a demonstration typed or corrected by a person: who wrote the response, its review status, no duplicates.

The Demonstrations tab, the CLI and notebooks all save through `save_demonstration`, so these rules hold
whatever the front end.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lab.store import Demonstration, Store

PREVIEW_CHARS = 300


def origin_of(response: str, draft: str | None) -> str:
    """Who wrote the response: a person ("human"), the model untouched ("model"), or a person editing its draft."""
    if draft is None:
        return "human"
    return "model" if response.strip() == draft.strip() else "model-edited"


def save_demonstration(
    store: Store,
    messages: list[dict],
    *,
    demo_id: int | None = None,
    draft: str | None = None,
    category: str,
    tags: list[str],
    author: str,
) -> Demonstration:
    """Add a new demonstration (demo_id None) or rewrite one; returns it as saved.

    A new one is accepted: a person wrote or approved it. An edit keeps the review status it had
    (a pending or rejected one stays so until someone accepts it explicitly), and a teacher's answer
    stays the teacher's, with its teacher and draft. Raises ValueError, in one sentence, for an invalid
    conversation or one that is already in the workspace.
    """
    old = None if demo_id is None else store.get_demonstration(demo_id)
    if old is not None and draft is None:
        draft = old.draft  # an edit that did not redraft keeps the model's draft it started from
    demo = Demonstration(
        messages, category, [t.strip() for t in tags if t.strip()], author.strip(), id=demo_id, draft=draft
    )
    try:
        demo.check()
    except ValueError as err:
        raise ValueError(f"Not saved: {err}.") from err
    demo.origin = origin_of(messages[-1]["content"], draft)
    if old is not None:
        demo.status = old.status
        if old.origin == "teacher":
            demo.origin, demo.teacher, demo.draft = "teacher", old.teacher, old.draft
    duplicate = store.find_duplicate(messages, exclude=demo_id)
    if duplicate is not None:
        raise ValueError(f"Not saved: demonstration #{duplicate} is the same conversation.")
    if old is None:
        store.add_demonstrations([demo])
    else:
        store.update_demonstration(demo)
    return demo


def preview(text: str, limit: int = PREVIEW_CHARS) -> str:
    """The start of a long text, cut at a word where one is near, with an ellipsis; short texts whole."""
    if len(text) <= limit:
        return text
    cut = text[:limit]
    space = cut.rfind(" ")
    return (cut[:space] if space > limit * 0.8 else cut).rstrip() + "…"


def token_count(tokenizer: Any, messages: list[dict]) -> int:
    """How many tokens the conversation takes in training, with the model's chat template."""
    ids = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
    return len(ids)


def length_warning(tokenizer: Any, messages: list[dict], max_length: int) -> str | None:
    """One sentence when the conversation is longer than training keeps (it would be cut), else None."""
    count = token_count(tokenizer, messages)
    if count <= max_length:
        return None
    return (
        f"This demonstration is {count} tokens, longer than the {max_length} that training keeps: "
        "its end will be cut off unless you shorten it."
    )


def _ids(ids: list[int]) -> str:
    return ", ".join(f"#{i}" for i in ids)


@dataclass
class Change:
    """What a bulk action did: the ids it changed, those already so, and those not found (or in the bin)."""

    changed: list[int]
    unchanged: list[int]
    missing: list[int]

    def describe(self, done: str) -> str:
        """One line, e.g. 'Accepted 2 (#1, #2); not found: #9999.', where `done` is the verb ('Accepted')."""
        parts = [f"{done} {len(self.changed)}" + (f" ({_ids(self.changed)})" if self.changed else "")]
        if self.unchanged:
            parts.append(f"already so: {_ids(self.unchanged)}")
        if self.missing:
            parts.append(f"not found: {_ids(self.missing)}")
        return "; ".join(parts) + "."


def _outcome(asked: list[int], changed: list[int], present: set[int]) -> Change:
    asked = list(dict.fromkeys(asked))
    rest = [i for i in asked if i not in changed]
    return Change(changed, [i for i in rest if i in present], [i for i in rest if i not in present])


def _live_ids(store: Store) -> set[int]:
    return {d.id for d in store.list_demonstrations(status=None)}


def set_status(store: Store, ids: list[int], status: str) -> Change:
    """Give these demonstrations a review status; says which changed, which had it already, which are not there."""
    return _outcome(ids, store.set_demonstration_status(ids, status), _live_ids(store))


def delete(store: Store, ids: list[int]) -> Change:
    """Move these demonstrations to the bin; an id not found (or already in the bin) is named, not counted."""
    return _outcome(ids, store.delete_demonstrations(ids), set())


def restore(store: Store, ids: list[int]) -> Change:
    """Bring these demonstrations back from the bin; one that is live again or gone is named as not found."""
    return _outcome(ids, store.restore_demonstrations(ids), set())


def review_shown(store: Store, shown: list[int], status: str) -> str:
    """Accept or reject the pending demonstrations among `shown` (the rows a person sees), and only those.

    Answers nobody looked at must not become training data, so pending rows hidden by the filters are
    counted in the message but left pending.
    """
    pending = {d.id for d in store.list_demonstrations(status="pending")}
    visible = [i for i in shown if i in pending]
    hidden = len(pending) - len(visible)
    more = f" {hidden} more pending {'is' if hidden == 1 else 'are'} not shown and stay pending." if hidden else ""
    if not visible:
        return f"No pending answers are shown in the table: set Status to pending to review them first.{more}"
    changed = store.set_demonstration_status(visible, status)
    return f"Marked the {len(changed)} pending answer(s) shown as {status} ({_ids(changed)}).{more}"
