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
from typing import Collection, Iterable

from exporter.records import Cancellation
from exporter.state import StateDB

_SCHEMA = """
CREATE TABLE IF NOT EXISTS pending (
    run_id TEXT PRIMARY KEY,
    due_at_ms INTEGER NOT NULL,
    record TEXT NOT NULL,
    function_id TEXT
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS pending_by_due ON pending (due_at_ms);
"""
_FUNCTION_INDEX = "CREATE INDEX IF NOT EXISTS pending_by_function ON pending (function_id)"


class PendingStore:
    """Cancellations waiting for late evidence, keyed by run id."""

    def __init__(self, state: StateDB) -> None:
        self._state = state
        state.ensure_schema(_SCHEMA)
        with state.transaction() as tx:
            # state from versions that held runs without their function: rows held then have none, and wait their grace out
            if "function_id" not in {row[1] for row in tx.execute("PRAGMA table_info(pending)")}:
                tx.execute("ALTER TABLE pending ADD COLUMN function_id TEXT")
            tx.execute(_FUNCTION_INDEX)

    def hold(self, tx: sqlite3.Connection, cancellation: Cancellation, due_at_ms: int) -> None:
        # shallow on purpose: dataclasses.asdict would deep-copy the trigger event only to serialise it
        fields = {field.name: getattr(cancellation, field.name) for field in dataclasses.fields(cancellation)}
        record = json.dumps(fields, separators=(",", ":"))
        tx.execute(
            "INSERT OR REPLACE INTO pending (run_id, due_at_ms, record, function_id) VALUES (?, ?, ?, ?)",
            (cancellation.run_id, due_at_ms, record, cancellation.function_id),
        )

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

    def of_functions(self, tx: sqlite3.Connection, function_ids: Iterable[str], limit: int) -> list[Cancellation]:
        """Held cancellations of these functions, at most `limit`, soonest due first."""
        ids = sorted(function_ids)
        marks = ", ".join("?" * len(ids))
        rows = tx.execute(
            f"SELECT record FROM pending WHERE function_id IN ({marks}) ORDER BY due_at_ms LIMIT ?", (*ids, limit)
        ).fetchall()
        return [_load(record) for (record,) in rows]

    def held(self, tx: sqlite3.Connection, run_ids: Collection[str]) -> list[Cancellation]:
        """Those of `run_ids` still held."""
        marks = ",".join("?" * len(run_ids))
        rows = tx.execute(f"SELECT record FROM pending WHERE run_id IN ({marks})", tuple(run_ids)).fetchall()
        return [_load(record) for (record,) in rows]

    def release(self, tx: sqlite3.Connection, run_id: str) -> None:
        tx.execute("DELETE FROM pending WHERE run_id = ?", (run_id,))

    def size(self) -> int:
        return self._state.count("pending")

    def last_due(self) -> float:
        """When the last held cancellation's grace period ends, in epoch seconds; 0 when none is held.

        Tells a newcomer whose counts lag (`simulate` reads it) by when every held run will have been emitted.
        """
        with self._state.reading() as conn:
            (due_ms,) = conn.execute("SELECT MAX(due_at_ms) FROM pending").fetchone()
        return (due_ms or 0) / 1000


def _load(record: str) -> Cancellation:
    """A held cancellation as `hold` stored it."""
    return Cancellation(**json.loads(record))
