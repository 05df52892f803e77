"""The Arena's report is refitted only when the votes change, and its exports are written per browser session."""

from pathlib import Path
from types import SimpleNamespace

import pytest

from lab import arena
from lab.store import Comparison, Store

PROMPT = [{"role": "user", "content": "Name a color."}]


def vote(winner: str, loser: str, annotator: str = "ann") -> Comparison:
    candidates = [{"text": f"{m} says hi", "model": m, "settings": {}} for m in (winner, loser)]
    return Comparison(PROMPT, candidates, [0, 1], [1, 2], "ranked", annotator)


@pytest.fixture
def store(tmp_path):
    return Store(tmp_path / "workspace")


@pytest.fixture
def fits(monkeypatch) -> list[int]:
    """Counts the leaderboard fits (the bootstrap, the slow part of the report)."""
    calls: list[int] = []
    fit = arena.leaderboard

    def counting(frame, *args, **kwargs):
        calls.append(len(frame))
        return fit(frame, *args, rounds=5, **kwargs)

    monkeypatch.setattr(arena, "leaderboard", counting)
    return calls


def test_the_report_is_not_refitted_until_a_vote_is_added_or_withdrawn(store, fits):
    store.add_comparison(vote("m1", "m2"))
    first = arena.arena_report(store)
    assert arena.arena_report(store) is first
    assert fits == [1]

    store.add_comparison(vote("m2", "m1", annotator="bea"))
    second = arena.arena_report(store)
    assert (second.votes, len(second.battles), fits) == (2, 2, [1, 2])

    store.undo_last_comparison("bea")
    third = arena.arena_report(store)
    assert (third.votes, len(third.battles), fits) == (1, 1, [1, 2, 1])
    assert third.leaderboard["model"].tolist()[0] == "m1"


def test_two_undos_within_one_second_both_refit(store, fits):
    for _ in range(3):
        store.add_comparison(vote("m1", "m2"))
    counts = []
    for _ in range(2):
        store.undo_last_comparison("ann")
        counts.append(arena.arena_report(store).votes)
    assert counts == [2, 1]


def test_each_workspace_has_its_own_report(tmp_path, fits):
    one, two = Store(tmp_path / "one"), Store(tmp_path / "two")
    one.add_comparison(vote("m1", "m2"))
    assert (arena.arena_report(one).votes, arena.arena_report(two).votes) == (1, 0)
    assert arena.arena_report(two).leaderboard.empty


# the Arena tab's handlers, without a browser


@pytest.fixture
def tab(store, tmp_path):
    from lab import Lab
    from ui.arena import ArenaView

    ctx = Lab(store)
    ctx.exports = tmp_path / "exports"  # a fresh folder, so the test sees every file written
    ctx.exports.mkdir()
    names = [f.name for f in ArenaView.__dataclass_fields__.values() if f.name != "downloads"]
    view = ArenaView(**{name: object() for name in names}, downloads={False: object(), True: object()})
    return ctx, view


def test_a_refresh_writes_no_file_and_two_sessions_get_their_own(store, tab):
    import gradio as gr

    from ui.arena import describe_export, export_file, show_arena

    ctx, view = tab
    one, two = SimpleNamespace(session_hash="session1"), SimpleNamespace(session_hash="session2")
    store.add_comparison(vote("m1", "m2"))
    shown = show_arena(ctx, view)
    note = describe_export(ctx, view, [])
    assert "1 votes" in shown[view.summary] and "1 preference pairs" in note[view.export_note]
    assert list(ctx.exports.rglob("*")) == []

    mine = export_file(ctx, view, [], one, negatives=False)[view.downloads[False]]["value"]
    ours_before = Path(mine).read_text()
    assert mine.endswith("/preferences.jsonl") and ours_before.count("\n") == 1
    with pytest.raises(gr.Error, match="No votes"):  # leaving the only annotator out leaves nothing to export
        export_file(ctx, view, ["ann"], two, negatives=False)
    with pytest.raises(gr.Error, match="both-bad"):
        export_file(ctx, view, [], one, negatives=True)

    store.add_comparison(vote("m2", "m1", annotator="bea"))
    theirs = export_file(ctx, view, ["ann"], two, negatives=False)
    other = theirs[view.downloads[False]]["value"]
    assert other.endswith("/preferences.jsonl") and other != mine
    assert "leaving out ann" in theirs[view.export_note]
    assert '"chosen": [{"role": "assistant", "content": "m2 says hi"}]' in Path(other).read_text()
    assert Path(mine).read_text() == ours_before  # the other session's export left ours alone


def test_a_session_hash_that_is_not_a_plain_name_never_becomes_a_path(store, tab):
    from ui.downloads import session_folder

    ctx, _ = tab
    folder = session_folder(ctx, SimpleNamespace(session_hash="../../etc"))
    assert folder.parent == ctx.exports
    assert session_folder(ctx, None).parent == ctx.exports
