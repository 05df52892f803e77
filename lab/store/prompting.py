"""The prompting tables: the prompt pool, prompt experiments with their result cells, and chats as typed."""

from __future__ import annotations

from lab.store.database import Database
from lab.store.rows import CATEGORIES, Conversation, Experiment, Prompt, Result, from_row, now, to_json


class PromptingTables(Database):
    """Prompts, experiments, experiment results and conversations."""

    # prompts

    def add_prompts(self, prompts: list[Prompt]) -> int:
        """Insert prompts, skipping any already there with the same text and source; returns how many were new."""
        for p in prompts:
            if p.category not in CATEGORIES:
                raise ValueError(f"Unknown category '{p.category}': use one of {', '.join(CATEGORIES)}.")
            if not p.text.strip():
                raise ValueError("A prompt cannot be empty.")
        with self._write() as db:
            before = db.total_changes
            db.executemany(
                "INSERT OR IGNORE INTO prompts (text, category, tags, source, created_at) VALUES (?, ?, ?, ?, ?)",
                [(p.text, p.category, to_json(p.tags), p.source, now()) for p in prompts],
            )
            return db.total_changes - before

    def list_prompts(self, category: str | None = None, source: str | None = None) -> list[Prompt]:
        """The pool, oldest first, optionally of one category or one source."""
        query, args = "SELECT * FROM prompts WHERE 1=1", []
        if category:
            query, args = query + " AND category = ?", args + [category]
        if source:
            query, args = query + " AND source = ?", args + [source]
        with self._read() as db:
            rows = db.execute(query + " ORDER BY id", args).fetchall()
        return [from_row(Prompt, r) for r in rows]

    # experiments

    def save_experiment(self, exp: Experiment) -> int:
        """Insert a new experiment or update an existing one (by id); returns its id."""
        columns = {
            "name": exp.name,
            "description": exp.description,
            "variants": to_json(exp.variants),
            "questions": to_json(exp.questions),
            "settings": to_json(exp.settings),
            "model": exp.model,
        }
        return self._save("experiments", exp, columns)

    def get_experiment(self, experiment_id: int) -> Experiment:
        """One experiment; KeyError if there is none with that id."""
        return self._get(Experiment, "experiments", experiment_id, "experiment")

    def list_experiments(self) -> list[Experiment]:
        """Every experiment, the most recently changed first."""
        with self._read() as db:
            rows = db.execute("SELECT * FROM experiments ORDER BY updated_at DESC, id DESC").fetchall()
        return [from_row(Experiment, r) for r in rows]

    def save_result(self, result: Result) -> None:
        """Store one cell of an experiment, replacing an earlier answer by the same model (and its rating)."""
        with self._write() as db:
            db.execute(
                "INSERT OR REPLACE INTO experiment_results (experiment_id, variant, question, model, response,"
                " prompt_tokens, new_tokens, seconds, rating, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    result.experiment_id,
                    result.variant,
                    result.question,
                    result.model,
                    result.response,
                    result.prompt_tokens,
                    result.new_tokens,
                    result.seconds,
                    result.rating,
                    now(),
                ),
            )
            db.execute("UPDATE experiments SET updated_at = ? WHERE id = ?", (now(), result.experiment_id))

    def list_results(self, experiment_id: int) -> list[Result]:
        """The cells answered so far, by question, then variant, then in the order the models answered."""
        with self._read() as db:
            rows = db.execute(
                "SELECT * FROM experiment_results WHERE experiment_id = ? ORDER BY question, variant, id",
                (experiment_id,),
            ).fetchall()
        return [from_row(Result, r) for r in rows]

    def rate_result(
        self, experiment_id: int, variant: int, question: int, rating: int | None, *, model: str = ""
    ) -> None:
        """Mark the cell (experiment, variant, question, model) good (1), bad (-1) or unrated (None)."""
        if rating not in (1, -1, None):
            raise ValueError(f"rating must be 1, -1 or None, got {rating}")
        with self._write() as db:
            cur = db.execute(
                "UPDATE experiment_results SET rating = ?"
                " WHERE experiment_id = ? AND variant = ? AND question = ? AND model = ?",
                (rating, experiment_id, variant, question, model),
            )
            if cur.rowcount == 0:
                raise KeyError("That cell has no response yet: run the experiment first.")

    def delete_experiment(self, experiment_id: int) -> None:
        """Delete an experiment and its results."""
        with self._write() as db:
            db.execute("DELETE FROM experiments WHERE id = ?", (experiment_id,))

    # conversations

    def save_conversation(self, conv: Conversation) -> int:
        """Insert or update a chat; its title is its first user message."""
        first = next((m["content"] for m in conv.messages if m["role"] == "user"), "")
        conv.title = conv.title or " ".join(first.split())[:60] or "(empty)"
        columns = {
            "title": conv.title,
            "system": conv.system,
            "messages": to_json(conv.messages),
            "model": conv.model,
        }
        return self._save("conversations", conv, columns)

    def get_conversation(self, conversation_id: int) -> Conversation:
        """One chat; KeyError if there is none with that id."""
        return self._get(Conversation, "conversations", conversation_id, "conversation")

    def list_conversations(self, limit: int = 50) -> list[Conversation]:
        """The latest chats, the most recently changed first."""
        with self._read() as db:
            rows = db.execute(
                "SELECT * FROM conversations ORDER BY updated_at DESC, id DESC LIMIT ?", (limit,)
            ).fetchall()
        return [from_row(Conversation, r) for r in rows]
