"""Signal evidence: events that can cancel runs (named in `cancel_on` rules, or triggering a singleton function in
`cancel` mode), kept for a while to explain cancellations.

Each is kept with when Inngest received it, since that is what the server compares with a run's
scheduling, not the sender's `ts`. Bounded in count and age; a signal only matters for runs
cancelled around the time it arrived.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any, Mapping

from exporter.records import Signal
from exporter.run_ids import received_ms
from exporter.state import StateDB

_COLUMNS = "(id INTEGER PRIMARY KEY, name TEXT NOT NULL, received_ms INTEGER NOT NULL, event TEXT NOT NULL)"
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS signals {_COLUMNS};
CREATE INDEX IF NOT EXISTS signals_by_name_receipt ON signals (name, received_ms);
"""

MAX_CANDIDATES = 1000
"""Most signals examined for one cancellation, newest first: bounds the work of a signal storm."""


class SignalStore:
    """Recorded signals, under the state database."""

    def __init__(self, state: StateDB, *, max_entries: int, max_age_seconds: float) -> None:
        self._state = state
        self._max_entries = max_entries
        self._max_age_ms = int(max_age_seconds * 1000)
        _upgrade(state)
        state.ensure_schema(_SCHEMA)

    def record(self, tx: sqlite3.Connection, signal: Signal) -> None:
        tx.execute(
            "INSERT INTO signals (name, received_ms, event) VALUES (?, ?, ?)",
            (signal.name, signal.received_ms, json.dumps(signal.event, separators=(",", ":"))),
        )

    def received(
        self, tx: sqlite3.Connection, name: str, after_ms: int, until_ms: int
    ) -> tuple[list[Mapping[str, Any]], bool]:
        """Signals named `name` received after `after_ms` and at or before `until_ms`, newest first, at most
        MAX_CANDIDATES; and whether more were left out (then a missing match proves nothing)."""
        rows = tx.execute(
            "SELECT event FROM signals WHERE name = ? AND received_ms > ? AND received_ms <= ?"
            " ORDER BY received_ms DESC LIMIT ?",
            (name, after_ms, until_ms, MAX_CANDIDATES + 1),
        ).fetchall()
        return [json.loads(event) for (event,) in rows[:MAX_CANDIDATES]], len(rows) > MAX_CANDIDATES

    def prune(self, now_ms: int) -> int:
        """Forget signals past the age bound, then the oldest past the count bound."""
        return self._state.prune(
            "signals", "id", "received_ms", older_than_ms=now_ms - self._max_age_ms, max_rows=self._max_entries
        )


def _upgrade(state: StateDB) -> None:
    """Rebuild a table kept by versions that stored each signal's `ts` (`ts_ms`), with its receipt time instead.

    A signal's receipt time is read from its stored event as on ingestion (the stored `ts_ms`
    standing in for the event's `ts`), ids kept, in one transaction: a crash leaves either table whole.
    """
    with state.reading() as conn:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(signals)")}
    if "ts_ms" not in columns:
        return  # a new state file, or one already in the current layout
    with state.transaction() as tx:
        rows = tx.execute("SELECT id, name, ts_ms, event FROM signals").fetchall()
        tx.execute(f"CREATE TABLE signals_upgrade {_COLUMNS}")
        tx.executemany(
            "INSERT INTO signals_upgrade VALUES (?, ?, ?, ?)",
            [(ident, name, received_ms(json.loads(event).get("id"), ts_ms, ts_ms), event) for ident, name, ts_ms, event in rows],
        )
        tx.execute("DROP TABLE signals")  # and its index by `ts`
        tx.execute("ALTER TABLE signals_upgrade RENAME TO signals")
