"""The workspace: one SQLite database (WAL) and a folder of run artifacts, behind one typed Store."""

from __future__ import annotations

from lab.store.annotations import AnnotationTables
from lab.store.prompting import PromptingTables
from lab.store.room import RoomTables
from lab.store.runs import RunTables


class Store(PromptingTables, AnnotationTables, RunTables, RoomTables):
    """Typed rows in and out of the workspace database.

    Each group of tables has its own module; every method opens a fresh connection, so one
    Store may be shared by threads, and several processes may open the same workspace.
    """
