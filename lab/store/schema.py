"""The workspace schema: versioned migration scripts, applied in order, each in one transaction.

The schema version is SQLite's PRAGMA user_version. A migration is never edited once
released (existing workspaces have already run it); a change is a new script at the end.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

MIGRATIONS: list[str] = [
    # 1: prompts and prompt experiments
    """
    CREATE TABLE prompts (
        id INTEGER PRIMARY KEY,
        text TEXT NOT NULL,
        category TEXT NOT NULL DEFAULT 'other',
        tags TEXT NOT NULL DEFAULT '[]',
        source TEXT NOT NULL DEFAULT 'typed',
        created_at TEXT NOT NULL,
        UNIQUE (text, source)
    );
    CREATE TABLE experiments (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        description TEXT NOT NULL DEFAULT '',
        variants TEXT NOT NULL,
        questions TEXT NOT NULL,
        settings TEXT NOT NULL,
        model TEXT NOT NULL DEFAULT '',
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE TABLE experiment_results (
        id INTEGER PRIMARY KEY,
        experiment_id INTEGER NOT NULL REFERENCES experiments(id) ON DELETE CASCADE,
        variant INTEGER NOT NULL,
        question INTEGER NOT NULL,
        response TEXT NOT NULL,
        prompt_tokens INTEGER NOT NULL,
        new_tokens INTEGER NOT NULL,
        seconds REAL NOT NULL,
        rating INTEGER CHECK (rating IN (-1, 1)),
        created_at TEXT NOT NULL,
        UNIQUE (experiment_id, variant, question)
    );
    CREATE TABLE conversations (
        id INTEGER PRIMARY KEY,
        title TEXT NOT NULL,
        system TEXT NOT NULL DEFAULT '',
        messages TEXT NOT NULL,
        model TEXT NOT NULL DEFAULT '',
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    """,
    # 2: demonstrations and training runs
    """
    CREATE TABLE demonstrations (
        id INTEGER PRIMARY KEY,
        messages TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        category TEXT NOT NULL DEFAULT 'other',
        tags TEXT NOT NULL DEFAULT '[]',
        author TEXT NOT NULL DEFAULT '',
        origin TEXT NOT NULL DEFAULT 'human' CHECK (origin IN ('human', 'model-edited', 'model', 'teacher')),
        draft TEXT,
        teacher TEXT NOT NULL DEFAULT '',
        status TEXT NOT NULL DEFAULT 'accepted' CHECK (status IN ('accepted', 'pending', 'rejected')),
        source TEXT NOT NULL DEFAULT 'typed',
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        deleted_at TEXT
    );
    CREATE INDEX demonstrations_fingerprint ON demonstrations (fingerprint);
    CREATE TABLE runs (
        id TEXT PRIMARY KEY,
        method TEXT NOT NULL,
        name TEXT NOT NULL DEFAULT '',
        config TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'queued'
            CHECK (status IN ('queued', 'running', 'stopping', 'done', 'failed', 'stopped')),
        device TEXT NOT NULL DEFAULT 'cpu',
        pid INTEGER,
        exit_code INTEGER,
        error TEXT NOT NULL DEFAULT '',
        created_at TEXT NOT NULL,
        started_at TEXT,
        finished_at TEXT
    );
    """,
    # 3: comparisons (preference votes)
    """
    CREATE TABLE comparisons (
        id INTEGER PRIMARY KEY,
        prompt TEXT NOT NULL,
        item TEXT NOT NULL,
        candidates TEXT NOT NULL,
        shown TEXT NOT NULL,
        ranks TEXT,
        verdict TEXT NOT NULL CHECK (verdict IN ('ranked', 'tie', 'both-bad', 'skipped')),
        annotator TEXT NOT NULL DEFAULT '',
        reason TEXT NOT NULL DEFAULT '',
        source TEXT NOT NULL DEFAULT 'typed',
        created_at TEXT NOT NULL,
        deleted_at TEXT
    );
    CREATE INDEX comparisons_item ON comparisons (item);
    CREATE INDEX comparisons_annotator ON comparisons (annotator, created_at);
    """,
    # 4: which model answered each experiment cell (so a second model adds cells), and run provenance
    """
    CREATE TABLE experiment_results_new (
        id INTEGER PRIMARY KEY,
        experiment_id INTEGER NOT NULL REFERENCES experiments(id) ON DELETE CASCADE,
        variant INTEGER NOT NULL,
        question INTEGER NOT NULL,
        model TEXT NOT NULL DEFAULT '',
        response TEXT NOT NULL,
        prompt_tokens INTEGER NOT NULL,
        new_tokens INTEGER NOT NULL,
        seconds REAL NOT NULL,
        rating INTEGER CHECK (rating IN (-1, 1)),
        created_at TEXT NOT NULL,
        UNIQUE (experiment_id, variant, question, model)
    );
    INSERT INTO experiment_results_new (id, experiment_id, variant, question, response, prompt_tokens, new_tokens,
        seconds, rating, created_at)
        SELECT id, experiment_id, variant, question, response, prompt_tokens, new_tokens, seconds, rating, created_at
        FROM experiment_results;
    DROP TABLE experiment_results;
    ALTER TABLE experiment_results_new RENAME TO experiment_results;
    ALTER TABLE runs ADD COLUMN provenance TEXT NOT NULL DEFAULT '{}';
    """,
    # 5: unpaired ratings (one completion labelled good or bad, as KTO trains on), never demonstrations
    """
    CREATE TABLE unpaired_ratings (
        id INTEGER PRIMARY KEY,
        prompt TEXT NOT NULL,
        completion TEXT NOT NULL,
        label TEXT NOT NULL CHECK (label IN ('good', 'bad')),
        source TEXT NOT NULL DEFAULT 'typed',
        created_at TEXT NOT NULL,
        deleted_at TEXT
    );
    CREATE INDEX unpaired_ratings_label ON unpaired_ratings (label, id);
    """,
    # 6: a workshop room: how many votes each item of a queue wants, who holds which item now, and candidates
    # made ahead of the voters (one set per question, shown to everyone who votes on it)
    """
    CREATE TABLE queue_settings (
        queue TEXT PRIMARY KEY,
        votes_per_item INTEGER NOT NULL CHECK (votes_per_item >= 1)
    );
    CREATE TABLE reservations (
        queue TEXT NOT NULL,
        question TEXT NOT NULL,
        annotator TEXT NOT NULL,
        until REAL NOT NULL,
        PRIMARY KEY (queue, question, annotator)
    );
    CREATE TABLE prepared_candidates (
        queue TEXT NOT NULL,
        question TEXT NOT NULL,
        base TEXT NOT NULL,
        candidates TEXT NOT NULL,
        created_at TEXT NOT NULL,
        PRIMARY KEY (queue, question, base)
    );
    """,
]


def migrate(db: sqlite3.Connection, path: Path) -> None:
    """Bring the database forward to the latest schema, one whole script per transaction.

    `db` must be in autocommit mode (isolation_level=None). Scripts run whole through executescript,
    not split on ';' (a trigger body or a string literal may hold one). Each first checks, under the
    write lock, that the version is still the one read before, so when two processes open the same
    old workspace at once, the second sees the first one's work instead of applying a script twice.
    """
    while (version := _version(db)) < len(MIGRATIONS):
        try:
            db.executescript(
                f"""BEGIN IMMEDIATE;
                CREATE TEMP TABLE migration_guard (version INTEGER CHECK (version = {version}));
                INSERT INTO migration_guard SELECT user_version FROM pragma_user_version;
                DROP TABLE temp.migration_guard;
                {MIGRATIONS[version]};
                PRAGMA user_version = {version + 1};
                COMMIT;"""
            )
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            if _version(db) == version:  # not overtaken by another process: the script itself failed
                raise
    if version > len(MIGRATIONS):
        raise RuntimeError(f"{path} was written by a newer Alignment Lab (schema {version}); upgrade the lab.")


def _version(db: sqlite3.Connection) -> int:
    return db.execute("PRAGMA user_version").fetchone()[0]
