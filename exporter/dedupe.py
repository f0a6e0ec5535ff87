"""Dedupe by run id: a redelivery, or the `function.finished` twin of a cancellation, counts once.

The record is bounded in size and age so that a long-lived exporter's state stays small;
a run id forgotten after `max_age` is far older than any Inngest redelivery.
"""

from __future__ import annotations

import sqlite3

from exporter.state import StateDB

_SCHEMA = """
CREATE TABLE IF NOT EXISTS seen_runs (
    run_id TEXT PRIMARY KEY,
    seen_at_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS seen_runs_by_time ON seen_runs (seen_at_ms);
"""


class Dedupe:
    """Remembers run ids already counted, under the state database."""

    def __init__(self, state: StateDB, *, max_entries: int, max_age_seconds: float) -> None:
        self._state = state
        self._max_entries = max_entries
        self._max_age_ms = int(max_age_seconds * 1000)
        state.ensure_schema(_SCHEMA)

    def claim(self, tx: sqlite3.Connection, run_id: str, now_ms: int) -> bool:
        """Record `run_id` inside the caller's transaction; False when it was already counted."""
        cursor = tx.execute("INSERT OR IGNORE INTO seen_runs VALUES (?, ?)", (run_id, now_ms))
        return cursor.rowcount == 1

    def prune(self, now_ms: int) -> int:
        """Forget entries past the age bound, then the oldest past the size bound; returns how many."""
        return self._state.prune(
            "seen_runs", "run_id", "seen_at_ms", older_than_ms=now_ms - self._max_age_ms, max_rows=self._max_entries
        )

    def size(self) -> int:
        return self._state.count("seen_runs")
