"""The durable Datadog outbox: events wait here, in the state database, until Datadog has them.

Staging happens inside the ingest transaction, so a run is recorded and its event queued
together; the sender works the queue from its own thread with short reads and writes,
so a slow or unreachable Datadog never holds up ingestion, and a restart resumes where
the last process stopped.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from typing import Callable, Mapping

from exporter.records import Classified
from exporter.sinks.datadog_event import build_payload
from exporter.state import StateDB

_SCHEMA = """
CREATE TABLE IF NOT EXISTS datadog_outbox (
    id INTEGER PRIMARY KEY,
    run_id TEXT NOT NULL,
    payload TEXT NOT NULL,
    enqueued_at_ms INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at_ms INTEGER NOT NULL,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS datadog_outbox_by_next_attempt ON datadog_outbox (next_attempt_at_ms);
"""
ERROR_MAX_CHARS = 500
"""`last_error` is for an operator's eye, not a log: a huge response body is cut."""


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """One queued event, as the sender needs it."""

    id: int
    run_id: str
    """Kept beside the payload so that a give-up can be logged by run."""
    payload: str
    """The JSON of `build_payload`; parsed by the sender, so a corrupt row fails alone."""
    enqueued_at_ms: int
    attempts: int


class DatadogOutbox:
    """A `DurableSink` that queues each cancellation's Datadog event, and the queue the sender drains."""

    def __init__(self, state: StateDB, labels: Mapping[str, str]) -> None:
        self._state = state
        self._labels = dict(labels)
        self._listeners: list[Callable[[], None]] = []
        state.ensure_schema(_SCHEMA)

    def on_stage(self, listener: Callable[[], None]) -> None:
        """Call `listener` whenever an event is staged, so a sender can wake up instead of polling.

        The listener runs inside the ingest transaction: it must only signal, never block.
        """
        self._listeners.append(listener)

    def stage(self, tx: sqlite3.Connection, item: Classified) -> None:
        """Queue the event inside the caller's transaction: it commits (or not) with the run's record."""
        now_ms = int(time.time() * 1000)
        tx.execute(
            "INSERT INTO datadog_outbox (run_id, payload, enqueued_at_ms, next_attempt_at_ms) VALUES (?, ?, ?, ?)",
            (item.cancellation.run_id, json.dumps(build_payload(item, self._labels)), now_ms, now_ms),
        )
        for listener in self._listeners:
            listener()

    def due(self, now_ms: int, limit: int) -> list[OutboxRow]:
        """Rows whose next attempt is due at `now_ms`, oldest first."""
        with self._state.reading() as conn:
            rows = conn.execute(
                "SELECT id, run_id, payload, enqueued_at_ms, attempts FROM datadog_outbox"
                " WHERE next_attempt_at_ms <= ? ORDER BY next_attempt_at_ms, id LIMIT ?",
                (now_ms, limit),
            ).fetchall()
        return [OutboxRow(*row) for row in rows]

    def next_attempt_at_ms(self) -> int | None:
        """When the earliest row falls due (None when empty), so the sender can sleep until then."""
        with self._state.reading() as conn:
            (next_ms,) = conn.execute("SELECT MIN(next_attempt_at_ms) FROM datadog_outbox").fetchone()
        return next_ms

    def delete(self, row_id: int) -> None:
        """Forget a row: delivered, or given up."""
        with self._state.transaction() as tx:
            tx.execute("DELETE FROM datadog_outbox WHERE id = ?", (row_id,))

    def reschedule(self, row_id: int, next_attempt_at_ms: int, error: str) -> None:
        """Record a failed attempt and when to try again."""
        with self._state.transaction() as tx:
            tx.execute(
                "UPDATE datadog_outbox SET attempts = attempts + 1, next_attempt_at_ms = ?, last_error = ? WHERE id = ?",
                (next_attempt_at_ms, error[:ERROR_MAX_CHARS], row_id),
            )

    def depth(self) -> int:
        """Events waiting for delivery (the outbox-depth gauge)."""
        with self._state.reading() as conn:
            (count,) = conn.execute("SELECT COUNT(*) FROM datadog_outbox").fetchone()
        return int(count)
