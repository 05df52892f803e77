"""Saving a demonstration typed or corrected by a person: who wrote the response, its review status, no duplicates.

The Demonstrations tab, the CLI and notebooks all save through `save_demonstration`, so these rules hold
whatever the front end.
"""

from __future__ import annotations

from lab.store import Demonstration, Store


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
