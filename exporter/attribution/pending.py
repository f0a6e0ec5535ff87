"""Held cancellations: runs with no evidence yet, kept durably for a grace period.

Cancel signals and bulk windows reach the exporter asynchronously, sometimes
after the cancellation itself. An unexplained cancellation therefore waits here
(under the state dir, so a restart loses nothing) and is emitted once, to every
sink, when its grace period ends, with the source the evidence then supports.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3

from exporter.records import Cancellation
from exporter.state import StateDB

_SCHEMA = """
CREATE TABLE IF NOT EXISTS pending (
    run_id TEXT PRIMARY KEY,
    due_at_ms INTEGER NOT NULL,
    record TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS pending_by_due ON pending (due_at_ms);
"""


class PendingStore:
    """Cancellations waiting for late evidence, keyed by run id."""

    def __init__(self, state: StateDB) -> None:
        self._state = state
        state.ensure_schema(_SCHEMA)

    def hold(self, tx: sqlite3.Connection, cancellation: Cancellation, due_at_ms: int) -> None:
        # shallow on purpose: dataclasses.asdict would deep-copy the trigger event only to serialise it
        fields = {field.name: getattr(cancellation, field.name) for field in dataclasses.fields(cancellation)}
        record = json.dumps(fields, separators=(",", ":"))
        tx.execute("INSERT OR REPLACE INTO pending VALUES (?, ?, ?)", (cancellation.run_id, due_at_ms, record))

    def due(self, tx: sqlite3.Connection, now_ms: int, limit: int) -> list[Cancellation]:
        """Held cancellations whose grace period has ended, oldest first."""
        rows = tx.execute(
            "SELECT record FROM pending WHERE due_at_ms <= ? ORDER BY due_at_ms LIMIT ?", (now_ms, limit)
        ).fetchall()
        return [_load(record) for (record,) in rows]

    def after(self, tx: sqlite3.Connection, key: tuple[int, str], limit: int) -> list[tuple[tuple[int, str], Cancellation]]:
        """Held cancellations after `key` (due time, run id) in that order: pages through all of them."""
        rows = tx.execute(
            "SELECT due_at_ms, run_id, record FROM pending WHERE (due_at_ms, run_id) > (?, ?)"
            " ORDER BY due_at_ms, run_id LIMIT ?",
            (*key, limit),
        ).fetchall()
        return [((due, run_id), _load(record)) for due, run_id, record in rows]

    def release(self, tx: sqlite3.Connection, run_id: str) -> None:
        tx.execute("DELETE FROM pending WHERE run_id = ?", (run_id,))

    def size(self) -> int:
        return self._state.count("pending")


def _load(record: str) -> Cancellation:
    """A held cancellation as `hold` stored it."""
    return Cancellation(**json.loads(record))
