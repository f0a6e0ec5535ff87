"""Cancel-signal evidence: events named in `cancel_on` rules, kept for a while to explain cancellations.

Bounded in count and age; a signal only matters for runs cancelled around the time it arrived.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any, Mapping

from exporter.records import Signal
from exporter.state import StateDB

_SCHEMA = """
CREATE TABLE IF NOT EXISTS signals (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    ts_ms INTEGER NOT NULL,
    event TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS signals_by_name_time ON signals (name, ts_ms);
"""

MAX_CANDIDATES = 1000
"""Most signals examined for one cancellation, newest first: bounds the work of a signal storm."""


class SignalStore:
    """Recorded cancel signals, under the state database."""

    def __init__(self, state: StateDB, *, max_entries: int, max_age_seconds: float) -> None:
        self._state = state
        self._max_entries = max_entries
        self._max_age_ms = int(max_age_seconds * 1000)
        state.ensure_schema(_SCHEMA)

    def record(self, tx: sqlite3.Connection, signal: Signal) -> None:
        tx.execute(
            "INSERT INTO signals (name, ts_ms, event) VALUES (?, ?, ?)",
            (signal.name, signal.ts_ms, json.dumps(signal.event, separators=(",", ":"))),
        )

    def between(self, tx: sqlite3.Connection, name: str, start_ms: int, end_ms: int) -> tuple[list[Mapping[str, Any]], bool]:
        """Signals named `name` with `start_ms <= ts <= end_ms`, newest first, at most MAX_CANDIDATES;
        and whether more were left out (then a missing match proves nothing)."""
        rows = tx.execute(
            "SELECT event FROM signals WHERE name = ? AND ts_ms BETWEEN ? AND ? ORDER BY ts_ms DESC LIMIT ?",
            (name, start_ms, end_ms, MAX_CANDIDATES + 1),
        ).fetchall()
        return [json.loads(event) for (event,) in rows[:MAX_CANDIDATES]], len(rows) > MAX_CANDIDATES

    def prune(self, now_ms: int) -> int:
        """Forget signals past the age bound, then the oldest past the count bound."""
        return self._state.prune(
            "signals", "id", "ts_ms", older_than_ms=now_ms - self._max_age_ms, max_rows=self._max_entries
        )
