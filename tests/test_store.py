"""The workspace database: migrations, restarts, concurrent writers."""

import sqlite3
import threading

import pytest

from lab.store import MIGRATIONS, Conversation, Experiment, Prompt, Result, Store


def make_experiment(store: Store) -> int:
    exp = Experiment("e", [{"name": "plain", "system": "", "template": "{question}"}], ["q1", "q2"], {"temperature": 0})
    return store.save_experiment(exp)


def test_new_workspace_is_wal_and_at_the_latest_schema(tmp_path):
    store = Store(tmp_path / "ws")
    assert store.schema_version == len(MIGRATIONS)
    with sqlite3.connect(store.path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_newer_schema_is_refused_not_damaged(tmp_path):
    store = Store(tmp_path)
    with sqlite3.connect(store.path) as db:
        db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    with pytest.raises(RuntimeError, match="newer Alignment Lab"):
        Store(tmp_path)


def test_everything_survives_a_restart(tmp_path):
    store = Store(tmp_path)
    store.add_prompts([Prompt("Why is the sky blue?", "open QA", ["science"])])
    eid = make_experiment(store)
    store.save_result(Result(eid, 0, 1, "Because of scattering.", 10, 5, 0.5))
    store.rate_result(eid, 0, 1, 1)
    cid = store.save_conversation(Conversation([{"role": "user", "content": "hello there"}], system="Be brief."))

    reopened = Store(tmp_path)
    assert [p.tags for p in reopened.list_prompts()] == [["science"]]
    assert reopened.get_experiment(eid).questions == ["q1", "q2"]
    [result] = reopened.list_results(eid)
    assert (result.response, result.rating) == ("Because of scattering.", 1)
    conv = reopened.get_conversation(cid)
    assert (conv.title, conv.system) == ("hello there", "Be brief.")


def test_prompts_are_deduplicated_per_source_and_validated(tmp_path):
    store = Store(tmp_path)
    assert store.add_prompts([Prompt("a", "chat"), Prompt("a", "chat")]) == 1
    assert store.add_prompts([Prompt("a", "chat", source="bundled:x")]) == 1
    with pytest.raises(ValueError, match="Unknown category"):
        store.add_prompts([Prompt("b", "poetry")])
    with pytest.raises(ValueError, match="empty"):
        store.add_prompts([Prompt("  ", "chat")])
    assert len(store.list_prompts(source="bundled:x")) == 1


def test_rating_a_missing_cell_is_an_error(tmp_path):
    store = Store(tmp_path)
    eid = make_experiment(store)
    with pytest.raises(KeyError, match="no response yet"):
        store.rate_result(eid, 0, 0, 1)
    with pytest.raises(ValueError):
        store.rate_result(eid, 0, 0, 5)


def test_concurrent_writers_lose_nothing(tmp_path):
    """Eight browser tabs saving at once: every row lands."""
    store = Store(tmp_path)
    eid = make_experiment(store)
    errors = []

    def writer(worker: int) -> None:
        try:
            tab = Store(tmp_path)  # each tab/thread opens the workspace itself
            for i in range(50):
                tab.add_prompts([Prompt(f"prompt {worker}-{i}", "chat")])
                tab.save_conversation(Conversation([{"role": "user", "content": f"{worker}-{i}"}]))
                tab.save_result(Result(eid, worker, i, "x", 1, 1, 0.1))
        except Exception as err:  # collected so the assertion below reports it
            errors.append(err)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(store.list_prompts()) == 400
    assert len(store.list_conversations(limit=1000)) == 400
    assert len(store.list_results(eid)) == 400
