"""Dedupe by run id: a redelivery, or the `function.finished` twin of a cancellation, counts once.

The record is bounded in size and age so that a long-lived exporter's state stays small;
a run id forgotten after `max_age` is far older than any Inngest redelivery.

Run ids are kept in two generations: `seen_runs`, which new runs join, and
`seen_runs_previous`. When the current generation holds `max_entries` run ids or began
`max_age` ago, the previous one is forgotten whole and the current one takes its place.
So the newest `max_entries` run ids and every run id younger than `max_age` are
remembered, and at most twice as many and twice as old. The price of forgetting whole
generations is that headroom; what it buys is a record with no index by time, which every
ingest transaction would otherwise write one more page of: in process, about a tenth of
the cost of a request of one event. Forgetting a generation of a million run ids holds the
state for about 0.2 s on the benchmark's machine, once per million runs or per `max_age`.
"""

from __future__ import annotations

import sqlite3
from typing import Callable

from exporter import clock
from exporter.state import StateDB, count_rows

_CURRENT = "seen_runs"
_PREVIOUS = "seen_runs_previous"
_COLUMNS = "(run_id TEXT PRIMARY KEY, seen_at_ms INTEGER NOT NULL) WITHOUT ROWID"
"""`seen_at_ms` is read only to date a generation upgraded from a version that kept one table (see `_upgrade`)."""
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {_CURRENT} {_COLUMNS};
CREATE TABLE IF NOT EXISTS {_PREVIOUS} {_COLUMNS};
CREATE TABLE IF NOT EXISTS seen_runs_generation (started_at_ms INTEGER NOT NULL);
"""
_CLAIM = (
    f"INSERT OR IGNORE INTO {_CURRENT} SELECT ?1, ?2"
    f" WHERE NOT EXISTS (SELECT 1 FROM {_PREVIOUS} WHERE run_id = ?1)"
)


class Dedupe:
    """Remembers run ids already counted, under the state database."""

    def __init__(
        self, state: StateDB, *, max_entries: int, max_age_seconds: float, now_ms: Callable[[], int] = clock.now_ms
    ) -> None:
        self._state = state
        self._max_entries = max_entries
        self._max_age_ms = int(max_age_seconds * 1000)
        state.ensure_schema(_SCHEMA)
        _upgrade(state, now_ms())

    def claim(self, tx: sqlite3.Connection, run_id: str, now_ms: int) -> bool:
        """Record `run_id` inside the caller's transaction; False when it was already counted."""
        return tx.execute(_CLAIM, (run_id, now_ms)).rowcount == 1

    def prune(self, now_ms: int) -> int:
        """Start a new generation when the current one is full or `max_age` old; how many run ids were forgotten."""
        with self._state.transaction() as tx:
            (started_at_ms,) = tx.execute("SELECT started_at_ms FROM seen_runs_generation").fetchone()
            if started_at_ms > now_ms - self._max_age_ms and count_rows(tx, _CURRENT) < self._max_entries:
                return 0
            forgotten = count_rows(tx, _PREVIOUS)
            tx.execute(f"DROP TABLE {_PREVIOUS}")
            tx.execute(f"ALTER TABLE {_CURRENT} RENAME TO {_PREVIOUS}")
            tx.execute(f"CREATE TABLE {_CURRENT} {_COLUMNS}")
            tx.execute("UPDATE seen_runs_generation SET started_at_ms = ?", (now_ms,))
        return forgotten

    def size(self) -> int:
        return self._state.count(_CURRENT) + self._state.count(_PREVIOUS)


def _upgrade(state: StateDB, now_ms: int) -> None:
    """Date the current generation, and drop the time index that versions with one table kept.

    A state file from such a version has its run ids in `seen_runs`, which becomes the current
    generation, dated by its oldest run id (read through the old index before it is dropped): its
    run ids are kept at least as long as that version kept them, and at most twice `max_age`.
    A new file's generation begins `now_ms`.
    """
    with state.transaction() as tx:
        if tx.execute("SELECT 1 FROM seen_runs_generation").fetchone() is None:
            (oldest_ms,) = tx.execute(f"SELECT MIN(seen_at_ms) FROM {_CURRENT}").fetchone()
            tx.execute("INSERT INTO seen_runs_generation VALUES (?)", (now_ms if oldest_ms is None else oldest_ms,))
    state.ensure_schema("DROP INDEX IF EXISTS seen_runs_by_time;")
