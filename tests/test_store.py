"""The workspace database: migrations, restarts, concurrent writers."""

import multiprocessing
import sqlite3
import threading

import pytest

from lab.store import MIGRATIONS, Conversation, Experiment, Prompt, Result, Run, Store, schema


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


def test_migrations_run_as_whole_scripts(tmp_path, monkeypatch):
    """A trigger body and a string literal may hold ';': the script is not cut there."""
    Store(tmp_path)
    extra = """
    CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT NOT NULL DEFAULT 'a; b');
    CREATE TRIGGER notes_stamp AFTER INSERT ON notes BEGIN
        UPDATE notes SET text = text || '; seen' WHERE id = new.id;
    END;
    """
    monkeypatch.setattr(schema, "MIGRATIONS", [*MIGRATIONS, extra])
    store = Store(tmp_path)
    assert store.schema_version == len(MIGRATIONS) + 1
    with sqlite3.connect(store.path) as db:
        db.execute("INSERT INTO notes DEFAULT VALUES")
        assert db.execute("SELECT text FROM notes").fetchone()[0] == "a; b; seen"


def test_a_migration_failing_half_way_changes_nothing(tmp_path, monkeypatch):
    store = Store(tmp_path)
    store.add_prompts([Prompt("kept", "chat")])
    broken = "CREATE TABLE half (a); INSERT INTO half VALUES (1); INSERT INTO no_such_table VALUES (1);"
    monkeypatch.setattr(schema, "MIGRATIONS", [*MIGRATIONS, broken])
    with pytest.raises(sqlite3.OperationalError, match="no_such_table"):
        Store(tmp_path)
    assert store.schema_version == len(MIGRATIONS)
    with sqlite3.connect(store.path) as db:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "half" not in tables and [p.text for p in store.list_prompts()] == ["kept"]


def old_workspace(path, version: int) -> None:
    """A workspace as an older lab left it: only the first `version` migrations."""
    path.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path / "lab.sqlite", isolation_level=None)
    for script in MIGRATIONS[:version]:
        db.executescript(script)
    db.execute(f"PRAGMA user_version = {version}")
    db.execute(
        "INSERT INTO experiments (name, variants, questions, settings, created_at, updated_at)"
        """ VALUES ('old', '[{"name": "plain", "system": "", "template": "{question}"}]', '["q"]', '{}', 't', 't')"""
    )
    db.execute(
        "INSERT INTO experiment_results (experiment_id, variant, question, response, prompt_tokens, new_tokens,"
        " seconds, rating, created_at) VALUES (1, 0, 0, 'old answer', 3, 2, 0.1, 1, 't')"
    )
    db.execute("INSERT INTO runs (id, method, config, status, created_at) VALUES ('r1', 'sft', '{}', 'done', 't')")
    db.close()


def test_a_workspace_of_schema_3_upgrades_and_keeps_its_rows(tmp_path):
    old_workspace(tmp_path, 3)
    store = Store(tmp_path)
    assert store.schema_version == len(MIGRATIONS)
    [old] = store.list_results(1)
    assert (old.response, old.rating, old.model) == ("old answer", 1, "")
    assert store.get_run("r1").provenance == {}
    store.save_result(Result(1, 0, 0, "new answer", 3, 2, 0.1, model="other · base"))
    assert sorted(r.model for r in store.list_results(1)) == ["", "other · base"]
    store.delete_experiment(1)  # the rebuilt table keeps its ON DELETE CASCADE
    assert store.list_results(1) == []


def test_run_provenance_is_stored_and_updated(tmp_path):
    store = Store(tmp_path)
    store.add_run(Run("r1", "sft", {"lr": 1e-4}, provenance={"data": "abc"}))
    assert store.get_run("r1").provenance == {"data": "abc"}
    assert store.update_run("r1", provenance={"data": "abc", "parent": "r0"})
    assert store.get_run("r1").provenance == {"data": "abc", "parent": "r0"}


def test_a_run_is_claimed_only_while_no_other_runs(tmp_path):
    store = Store(tmp_path)
    for run_id in ("a", "b"):
        store.add_run(Run(run_id, "sft", {}))
    store.update_run("b", pid=123, error="old", exit_code=1)
    assert store.claim_run("b")
    claimed = store.get_run("b")
    assert (claimed.status, claimed.pid, claimed.error, claimed.exit_code) == ("running", None, "", None)
    assert claimed.started_at
    assert not store.claim_run("b")  # no longer queued
    assert not store.claim_run("a")  # b is running
    store.update_run("b", status="stopping")
    assert not store.claim_run("a")
    store.update_run("b", status="done")
    assert store.claim_run("a")


def claim_after(root: str, run_id: str, start, results) -> None:
    start.wait()
    results.put((run_id, Store(root).claim_run(run_id)))


def test_two_processes_claiming_two_queued_runs_start_exactly_one(tmp_path):
    store = Store(tmp_path)
    context = multiprocessing.get_context("fork")
    for attempt in range(5):
        ids = [f"{attempt}-a", f"{attempt}-b"]
        for run_id in ids:
            store.add_run(Run(run_id, "sft", {}))
        start, results = context.Event(), context.Queue()
        workers = [context.Process(target=claim_after, args=(str(tmp_path), i, start, results)) for i in ids]
        for worker in workers:
            worker.start()
        start.set()
        for worker in workers:
            worker.join(timeout=60)
        outcome = dict(results.get(timeout=5) for _ in ids)
        assert sorted(outcome.values()) == [False, True]
        assert [r.id for r in store.list_runs(("running",))] == [i for i in ids if outcome[i]]
        for run_id in ids:
            store.update_run(run_id, status="done")


def test_batch_reads_use_one_connection(tmp_path, monkeypatch):
    store = Store(tmp_path)
    for number in range(5):
        make_experiment(store)
        store.save_conversation(Conversation([{"role": "user", "content": f"hello {number}"}]))
    opened = []
    connect = store._connect
    monkeypatch.setattr(store, "_connect", lambda: opened.append(1) or connect())
    assert len(store.list_experiments()) == 5 and len(opened) == 1
    assert len(store.list_conversations()) == 5 and len(opened) == 2
