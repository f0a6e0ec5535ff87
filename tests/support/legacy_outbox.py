"""A state file as the versions that stored whole Datadog payloads left it, for the upgrade tests.

The schema and the payload are copied from that version's output, not built with today's
code: the test must prove that what is already on disk is delivered.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from exporter.state import STATE_FILE

SCHEMA = """
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
RUN_ID = "01JDJKGTGDVV4DTXHY6XYB7BKK"
PAYLOAD: dict[str, Any] = {
    "title": "Inngest run cancelled: newsletter-app-import-all-contacts (event)",
    "text": (
        f"Run {RUN_ID} of newsletter-app-import-all-contacts was cancelled.\n"
        "Cancellation source: event\n"
        "Triggering event: contacts/import.requested (id 01JDJK451Y9KFGE5TTM2FHDEDN)\n"
        "Run age: 90.500 s\n"
        "Cancelled at: 2024-11-25T21:27:10.000+00:00"
    ),
    "tags": [
        "function_id:newsletter-app-import-all-contacts",
        "cancellation_source:event",
        "run_age:1m_to_1h",
        "environment:legacy",
    ],
    "aggregation_key": "inngest.function.cancelled:newsletter-app-import-all-contacts",
    "date_happened": 1732570030,
    "alert_type": "warning",
}
"""The JSON that version stored for tests.support.classified's default run, with the label environment=legacy."""


def write_legacy_outbox(state_dir: Path, rows: list[tuple[str, str, int, int, int]]) -> None:
    """A state file holding only the old outbox and `rows`, each made by `legacy_row` or alike."""
    state_dir.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(state_dir / STATE_FILE) as conn:
        conn.execute("PRAGMA journal_mode=WAL")  # as that version's StateDB kept it
        conn.executescript(SCHEMA)
        conn.executemany(
            "INSERT INTO datadog_outbox (run_id, payload, enqueued_at_ms, attempts, next_attempt_at_ms)"
            " VALUES (?, ?, ?, ?, ?)",
            rows,
        )
    conn.close()


def legacy_row(
    run_id: str = RUN_ID, *, enqueued_at_ms: int, attempts: int = 0, next_attempt_at_ms: int | None = None
) -> tuple[str, str, int, int, int]:
    """(run_id, payload, enqueued_at_ms, attempts, next_attempt_at_ms): PAYLOAD, made `run_id`'s."""
    payload = dict(PAYLOAD, text=PAYLOAD["text"].replace(RUN_ID, run_id))
    due = enqueued_at_ms if next_attempt_at_ms is None else next_attempt_at_ms
    return (run_id, json.dumps(payload), enqueued_at_ms, attempts, due)
