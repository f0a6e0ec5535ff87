"""The durable outbox: events are queued with the run's record and wait, across restarts, until delivered."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Iterator

import pytest

from exporter.records import Classified
from exporter.sinks.datadog_event import build_payload
from exporter.sinks.datadog_outbox import DatadogOutbox
from exporter.state import StateDB
from tests.support.classified import make_classified

LABELS = {"environment": "test"}


@pytest.fixture
def state(tmp_path: Path) -> Iterator[StateDB]:
    db = StateDB(tmp_path / "state")
    yield db
    db.close()


def stage(state: StateDB, outbox: DatadogOutbox, *items: Classified) -> None:
    with state.transaction() as tx:
        for item in items:
            outbox.stage(tx, item)


def far_future() -> int:
    return int(time.time() * 1000) + 3_600_000


def test_a_staged_event_is_due_at_once_with_its_payload(state: StateDB) -> None:
    outbox = DatadogOutbox(state, LABELS)
    item = make_classified("run-1")
    stage(state, outbox, item)
    (row,) = outbox.due(far_future(), limit=10)
    assert row.run_id == "run-1"
    assert row.attempts == 0
    assert json.loads(row.payload) == build_payload(item, LABELS)
    assert outbox.depth() == 1


def test_nothing_is_queued_when_the_ingest_transaction_rolls_back(state: StateDB) -> None:
    outbox = DatadogOutbox(state, LABELS)
    with pytest.raises(RuntimeError):
        with state.transaction() as tx:
            outbox.stage(tx, make_classified())
            raise RuntimeError("ingest failed")
    assert outbox.depth() == 0


def test_rows_survive_closing_and_reopening_the_state(tmp_path: Path) -> None:
    first = StateDB(tmp_path / "state")
    outbox = DatadogOutbox(first, LABELS)
    stage(first, outbox, make_classified("run-1"), make_classified("run-2"))
    (row, _) = outbox.due(far_future(), limit=10)
    outbox.reschedule(row.id, far_future(), "HTTP 500")
    first.close()

    reopened = StateDB(tmp_path / "state")
    try:
        outbox = DatadogOutbox(reopened, LABELS)
        assert outbox.depth() == 2
        assert {(r.run_id, r.attempts) for r in outbox.due(far_future() + 1, limit=10)} == {("run-1", 1), ("run-2", 0)}
    finally:
        reopened.close()


def test_a_rescheduled_row_waits_until_its_next_attempt(state: StateDB) -> None:
    outbox = DatadogOutbox(state, LABELS)
    stage(state, outbox, make_classified("run-1"))
    now_ms = int(time.time() * 1000) + 1
    (row,) = outbox.due(now_ms, limit=10)
    outbox.reschedule(row.id, now_ms + 5_000, "timeout")
    assert outbox.due(now_ms, limit=10) == []
    assert outbox.next_attempt_at_ms() == now_ms + 5_000
    (again,) = outbox.due(now_ms + 5_000, limit=10)
    assert again.attempts == 1


def test_due_rows_come_oldest_first_up_to_the_limit_and_delete_forgets_them(state: StateDB) -> None:
    outbox = DatadogOutbox(state, LABELS)
    stage(state, outbox, *(make_classified(f"run-{n}") for n in range(3)))
    first_two = outbox.due(far_future(), limit=2)
    assert [r.run_id for r in first_two] == ["run-0", "run-1"]
    for row in first_two:
        outbox.delete(row.id)
    assert [r.run_id for r in outbox.due(far_future(), limit=10)] == ["run-2"]
    assert outbox.depth() == 1


def test_staging_wakes_the_listeners(state: StateDB) -> None:
    outbox = DatadogOutbox(state, LABELS)
    calls: list[None] = []
    outbox.on_stage(lambda: calls.append(None))
    assert outbox.next_attempt_at_ms() is None
    stage(state, outbox, make_classified("run-1"), make_classified("run-2"))
    assert len(calls) == 2
