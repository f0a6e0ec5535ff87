"""The durable Datadog outbox: events wait here, in the state database, until Datadog has them.

Staging happens inside the ingest transaction, so a run is recorded and its event queued
together; the sender works the queue from its own thread with short reads and writes,
so a slow or unreachable Datadog never holds up ingestion, and a restart resumes where
the last process stopped.

A row holds the event's `EventFacts` as plain columns, not its payload: one INSERT of a
few values is all that staging costs the ingest transaction, and the payload is built
when the row is sent. Rows queued by earlier versions hold the whole JSON payload in
`payload` instead; the table is upgraded in place when the outbox opens (see
`_upgrade`) and those rows are sent as they were stored, so nothing queued is lost.
"""

from __future__ import annotations

import heapq
import itertools
import json
import sqlite3
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

from exporter import clock
from exporter.records import Classified
from exporter.run_links import RunLinks
from exporter.sinks.datadog_event import EventFacts, build_payload
from exporter.state import StateDB

_TABLE = "datadog_outbox"
_COLUMNS = """(
    id INTEGER PRIMARY KEY,
    run_id TEXT NOT NULL,
    function_id TEXT,
    source TEXT,
    age_seconds REAL,
    trigger_name TEXT,
    trigger_id TEXT,
    happened_ms INTEGER,
    payload TEXT,
    enqueued_at_ms INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at_ms INTEGER NOT NULL,
    last_error TEXT
)"""
"""`payload` is set only on rows queued by a version that stored the whole payload; the facts are NULL there."""
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {_TABLE} {_COLUMNS};
DROP INDEX IF EXISTS datadog_outbox_by_next_attempt;
CREATE INDEX IF NOT EXISTS datadog_outbox_retries ON {_TABLE} (next_attempt_at_ms, id) WHERE attempts > 0;
"""
"""Only retried rows are indexed by due time; the index of every row that earlier versions kept is dropped.

A row never tried is due from the moment it is staged (whatever the clock says later: a clock
set back must not make the sender scan a backlog for rows due "now"), and rows are staged in id
order, so those are read in id order straight from the table. An index of every row's due time cost
each ingest transaction one more page to write (the index's last page): in process, about a
tenth of the cost of a request of one event. Retried rows are few (a failing Datadog pauses
deliveries, see the sender) and are found through the partial index, which staging never touches.
"""
_FACTS = ", ".join(EventFacts._fields)
_PLACES = ", ".join("?" * (len(EventFacts._fields) + 2))
_STAGE = f"INSERT INTO {_TABLE} ({_FACTS}, enqueued_at_ms, next_attempt_at_ms) VALUES ({_PLACES})"
_SELECT = f"SELECT next_attempt_at_ms, id, run_id, enqueued_at_ms, attempts, payload, {_FACTS} FROM {_TABLE}"
_DUE_FRESH = f"{_SELECT} WHERE attempts = 0 ORDER BY id LIMIT ?"
_DUE_RETRIED = f"{_SELECT} WHERE attempts > 0 AND next_attempt_at_ms <= ? ORDER BY next_attempt_at_ms, id LIMIT ?"
_ANY_FRESH = f"SELECT 1 FROM {_TABLE} WHERE attempts = 0 LIMIT 1"
_FIRST_RETRIED = f"SELECT MIN(next_attempt_at_ms) FROM {_TABLE} WHERE attempts > 0"
_LEGACY_COLUMNS = "id, run_id, payload, enqueued_at_ms, attempts, next_attempt_at_ms, last_error"
"""The columns of the table as versions that stored whole payloads created it."""
ERROR_MAX_CHARS = 500
"""`last_error` is for an operator's eye, not a log: a huge response body is cut."""


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """One queued event, as the sender needs it."""

    id: int
    run_id: str
    """Kept beside the event so that a give-up can be logged by run."""
    enqueued_at_ms: int
    attempts: int
    event: EventFacts | str
    """The facts the payload is built from; or, in a row queued by an earlier version, its JSON payload,
    which the sender parses, so that a corrupt row fails alone."""


class DatadogOutbox:
    """A `DurableSink` that queues each cancellation's Datadog event, and the queue the sender drains.

    The constant labels are applied when an event is sent, not stored with it: they describe
    the deployment as it is configured now, the same labels this process puts on its Prometheus
    series, and staging would otherwise copy the same strings into every row of the ingest
    transaction. An event queued before a restart that changed them carries the new ones.
    Rows from earlier versions keep the labels their stored payload was built with. The link to
    the run's page (`links`, EXPORTER_INNGEST_DASHBOARD_URL) is made when the event is sent too.
    """

    def __init__(self, state: StateDB, labels: Mapping[str, str], links: RunLinks | None = None) -> None:
        self._state = state
        self._labels = dict(labels)
        self._links = links
        self._listeners: list[Callable[[], None]] = []
        _upgrade(state)
        state.ensure_schema(_SCHEMA)

    def on_stage(self, listener: Callable[[], None]) -> None:
        """Call `listener` whenever events are staged, so a sender can wake up instead of polling.

        The listener runs inside the ingest transaction: it must only signal, never block.
        """
        self._listeners.append(listener)

    def stage_all(self, tx: sqlite3.Connection, items: Iterable[Classified]) -> None:
        """Queue the items' events inside the caller's transaction: they commit (or not) with the runs' records.

        One statement for all of a request's items, and the listeners told once.
        """
        now_ms = clock.now_ms()
        times = (now_ms, now_ms)
        tx.executemany(_STAGE, [EventFacts.of(item) + times for item in items])
        for listener in self._listeners:
            listener()

    def due(self, now_ms: int, limit: int) -> list[OutboxRow]:
        """Rows whose next attempt is due at `now_ms` (rows never tried always are), in the order they fell due
        (then by id), at most `limit`."""
        with self._state.reading() as conn:
            fresh = conn.execute(_DUE_FRESH, (limit,)).fetchall()
            retried = conn.execute(_DUE_RETRIED, (now_ms, limit)).fetchall()
        rows = heapq.merge(fresh, retried, key=lambda row: (row[0], row[1]))
        return [
            OutboxRow(row[1], row[2], row[3], row[4], row[5] if row[5] is not None else EventFacts._make(row[6:]))
            for row in itertools.islice(rows, limit)
        ]

    def payload(self, row: OutboxRow) -> dict[str, Any]:
        """The Events API body for a row: built from its facts with the current labels and links, or parsed as stored.

        ValueError (a stored payload that is not JSON) concerns that row alone.
        """
        if isinstance(row.event, str):
            stored: dict[str, Any] = json.loads(row.event)
            return stored
        return build_payload(row.event, self._labels, self._links)

    def next_attempt_at_ms(self) -> int | None:
        """When the earliest row falls due (None when empty), so the sender can sleep until then.

        A row never tried is due at once (0), as `due` hands it out whatever the clock says: after
        the clock is set back, the sender must not sleep until the time the row was staged.
        """
        with self._state.reading() as conn:
            if conn.execute(_ANY_FRESH).fetchone() is not None:
                return 0
            (retried,) = conn.execute(_FIRST_RETRIED).fetchone()
        return retried  # type: ignore[no-any-return]

    def delete(self, row_ids: Sequence[int]) -> None:
        """Forget rows (delivered, or given up) in one transaction: a commit per row would cost more than its send."""
        if not row_ids:
            return
        with self._state.transaction() as tx:
            tx.executemany(f"DELETE FROM {_TABLE} WHERE id = ?", [(row_id,) for row_id in row_ids])

    def reschedule(self, row_id: int, next_attempt_at_ms: int, error: str) -> None:
        """Record a failed attempt and when to try again."""
        with self._state.transaction() as tx:
            tx.execute(
                f"UPDATE {_TABLE} SET attempts = attempts + 1, next_attempt_at_ms = ?, last_error = ? WHERE id = ?",
                (next_attempt_at_ms, error[:ERROR_MAX_CHARS], row_id),
            )

    def depth(self) -> int:
        """Events waiting for delivery (the outbox-depth gauge)."""
        return self._state.count(_TABLE)


def _upgrade(state: StateDB) -> None:
    """Rebuild a table created by a version that stored whole payloads, keeping every row.

    SQLite cannot relax the old `payload NOT NULL` in place, so the rows are copied into a
    table of the current layout (ids, attempts and due times unchanged, so the queue's order
    and retry state carry over) in one transaction: a crash leaves either table whole.
    """
    with state.reading() as conn:
        columns = {row[1] for row in conn.execute(f"PRAGMA table_info({_TABLE})")}
    if not columns or "function_id" in columns:
        return  # a new state file, or one already in the current layout
    with state.transaction() as tx:
        tx.execute(f"CREATE TABLE {_TABLE}_upgrade {_COLUMNS}")
        tx.execute(f"INSERT INTO {_TABLE}_upgrade ({_LEGACY_COLUMNS}) SELECT {_LEGACY_COLUMNS} FROM {_TABLE}")
        tx.execute(f"DROP TABLE {_TABLE}")  # and its index, created again by the schema
        tx.execute(f"ALTER TABLE {_TABLE}_upgrade RENAME TO {_TABLE}")
