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
    nothing = export_file(ctx, view, ["ann"], two, negatives=False)  # leaving the only annotator out: nothing left
    assert "No votes" in nothing[view.export_note] and nothing[view.downloads[False]]["value"] is None
    assert "both-bad" in export_file(ctx, view, [], one, negatives=True)[view.export_note]

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


def test_the_summary_the_annotators_and_position_bias_count_the_same_votes(store, fits):
    import dataclasses

    store.add_comparison(vote("m1", "m2"))
    store.add_comparison(vote("m2", "m1", annotator="bea"))
    store.add_comparison(dataclasses.replace(vote("m1", "m2"), ranks=None, verdict="skipped"))
    imported = [dataclasses.replace(vote("x", "y", annotator=""), source="import:prefs.jsonl") for _ in range(3)]
    store.add_comparisons(imported)
    report = arena.arena_report(store)
    assert (report.votes, report.skipped, report.imported) == (5, 1, 3)
    assert report.annotators["annotator"].tolist() == ["ann", "bea"]  # no nameless row for the imported file
    assert report.annotators["votes"].sum() + report.imported == report.votes
    assert report.position_bias["decisive"] == 2  # only the votes cast here, whose display order is known
    text = report.summary()
    assert "**5 votes**" in text and "1 skipped" in text and "3 of the votes are imported" in text
    assert report.win_rates["model"].tolist() == ["m1", "m2", "x", "y"]  # every row says which model it is


def test_an_empty_arena_names_the_columns_of_every_table(store):
    report = arena.arena_report(store)
    assert list(report.leaderboard.columns) == arena.LEADERBOARD_COLUMNS
    assert list(report.annotators.columns) == arena.ANNOTATOR_COLUMNS
    assert list(report.win_rates.columns) == ["model"]
    assert report.summary().startswith("**0 votes** (none yet)")


def test_right_after_an_import_the_summary_and_the_export_agree(store, tab, tmp_path):
    import json

    from ui.arena import export_file, import_file, refresh_arena

    ctx, view = tab
    session = SimpleNamespace(session_hash="session1")
    store.add_comparison(vote("m1", "m2"))
    before = export_file(ctx, view, [], session, negatives=False)[view.downloads[False]]["value"]
    assert Path(before).read_text().count("\n") == 1
    rows = [{"prompt": f"Q{i}?", "chosen": "yes", "rejected": "no"} for i in range(3)]
    upload = tmp_path / "prefs.jsonl"
    upload.write_text("".join(json.dumps(r) + "\n" for r in rows))

    shown = import_file(ctx, view, str(upload), [])
    assert "Imported 3 comparisons" in shown[view.preview]
    assert "**4 votes**" in shown[view.summary] and "**4 preference pairs**" in shown[view.summary]
    assert shown[view.export_note] == "The export holds 4 preference pairs from 4 votes."
    assert shown[view.downloads[False]]["value"] is None  # the export written before the import is withdrawn
    after = export_file(ctx, view, [], session, negatives=False)[view.downloads[False]]["value"]
    assert Path(after).read_text().count("\n") == 4
    assert refresh_arena(ctx, view, [])[view.summary] == shown[view.summary]
    assert "**Cannot import:**" in import_file(ctx, view, str(tmp_path / "missing.jsonl"), [])[view.preview]
