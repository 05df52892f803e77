"""The SQLite workspace: schema and migrations (schema), typed rows (rows), and the Store that reads and writes them.

Every name other code imports from `lab.store` is re-exported here.
"""

from lab.store.database import WorkspaceFullError
from lab.store.rows import (
    CATEGORIES,
    JSON_COLUMNS,
    LABELS,
    ORIGINS,
    RUN_STATES,
    STATUSES,
    VERDICTS,
    Comparison,
    Conversation,
    Demonstration,
    Experiment,
    Prompt,
    Result,
    Run,
    UnpairedRating,
    check_messages,
    fingerprint,
    now,
    workspace_dir,
)
from lab.store.schema import MIGRATIONS
from lab.store.workspace import Store

__all__ = [
    "CATEGORIES",
    "JSON_COLUMNS",
    "LABELS",
    "MIGRATIONS",
    "ORIGINS",
    "RUN_STATES",
    "STATUSES",
    "VERDICTS",
    "Comparison",
    "Conversation",
    "Demonstration",
    "Experiment",
    "Prompt",
    "Result",
    "Run",
    "Store",
    "UnpairedRating",
    "WorkspaceFullError",
    "check_messages",
    "fingerprint",
    "now",
    "workspace_dir",
]
