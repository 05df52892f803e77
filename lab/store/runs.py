"""Training runs in the workspace: queued, claimed one at a time across processes, finished with their outcome."""

from __future__ import annotations

from lab.store.database import Database
from lab.store.rows import RUN_STATES, Run, from_row, now, to_json

UPDATABLE = {"status", "pid", "exit_code", "error", "started_at", "finished_at", "provenance"}


class RunTables(Database):
    """The runs table; artifacts live beside it in runs/<id>/."""

    def add_run(self, run: Run) -> None:
        """Queue a run (or record one in whatever status it carries)."""
        run.created_at = run.created_at or now()
        with self._write() as db:
            db.execute(
                "INSERT INTO runs (id, method, name, config, status, device, created_at, provenance)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    run.id,
                    run.method,
                    run.name,
                    to_json(run.config),
                    run.status,
                    run.device,
                    run.created_at,
                    to_json(run.provenance),
                ),
            )

    def update_run(self, run_id: str, expect: tuple[str, ...] = (), **fields) -> bool:
        """Set some columns of a run (status, pid, exit_code, error, started_at, finished_at, provenance).

        With `expect`, only while the run's status is one of those (compare-and-set, so a late writer
        cannot overwrite a newer status); returns whether the row changed.
        """
        if set(fields) - UPDATABLE:
            raise ValueError(f"cannot update {sorted(set(fields) - UPDATABLE)} of a run")
        if fields.get("status", "queued") not in RUN_STATES:
            raise ValueError(f"unknown run status '{fields['status']}'")
        values = [to_json(v) if isinstance(v, dict) else v for v in fields.values()]
        guard = f" AND status IN ({', '.join('?' * len(expect))})" if expect else ""
        with self._write() as db:
            cur = db.execute(
                f"UPDATE runs SET {', '.join(f'{k}=?' for k in fields)} WHERE id=?{guard}",
                (*values, run_id, *expect),
            )
            return cur.rowcount > 0

    def claim_run(self, run_id: str) -> bool:
        """Mark a queued run as running, only while no other run is running or stopping; returns whether it did.

        One statement in one write transaction, so of several processes claiming at once exactly one wins.
        """
        with self._write() as db:
            cur = db.execute(
                "UPDATE runs SET status='running', started_at=?, pid=NULL, error='', exit_code=NULL"
                " WHERE id=? AND status='queued'"
                " AND NOT EXISTS (SELECT 1 FROM runs WHERE status IN ('running', 'stopping'))",
                (now(), run_id),
            )
            return cur.rowcount > 0

    def get_run(self, run_id: str) -> Run:
        """One run; KeyError if there is none with that id."""
        return self._get(Run, "runs", run_id, "run")

    def list_runs(self, statuses: tuple[str, ...] = ()) -> list[Run]:
        """Runs, newest first (runs added in the same second: the last added first), optionally only those in some
        statuses."""
        query, args = "SELECT * FROM runs", []
        if statuses:
            query += f" WHERE status IN ({', '.join('?' * len(statuses))})"
            args = list(statuses)
        with self._read() as db:
            return [from_row(Run, r) for r in db.execute(query + " ORDER BY created_at DESC, rowid DESC", args)]
