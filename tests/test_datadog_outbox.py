"""The durable outbox: events are queued with the run's record and wait, across restarts, until delivered."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Iterator

import pytest

from exporter.records import Classified
from exporter.sinks.datadog_event import EventFacts, build_payload
from exporter.sinks.datadog_outbox import DatadogOutbox
from exporter.state import StateDB
from tests.support.classified import make_classified
from tests.support.legacy_outbox import PAYLOAD, legacy_row, write_legacy_outbox

LABELS = {"environment": "test"}


@pytest.fixture
def state(tmp_path: Path) -> Iterator[StateDB]:
    db = StateDB(tmp_path / "state")
    yield db
    db.close()


def stage(state: StateDB, outbox: DatadogOutbox, *items: Classified) -> None:
    with state.transaction() as tx:
        outbox.stage_all(tx, items)


def far_future() -> int:
    return int(time.time() * 1000) + 3_600_000


def test_a_staged_event_is_due_at_once_with_its_facts_and_payload(state: StateDB) -> None:
    outbox = DatadogOutbox(state, LABELS)
    item = make_classified("run-1")
    stage(state, outbox, item)
    (row,) = outbox.due(far_future(), limit=10)
    assert row.run_id == "run-1"
    assert row.attempts == 0
    assert row.event == EventFacts.of(item)
    assert outbox.payload(row) == build_payload(EventFacts.of(item), LABELS)
    assert outbox.depth() == 1


def test_unknown_age_and_trigger_survive_the_row(state: StateDB) -> None:
    outbox = DatadogOutbox(state, LABELS)
    item = make_classified(scheduled_at_ms=None, trigger=None, cancelled_at_ms=None)
    stage(state, outbox, item)
    (row,) = outbox.due(far_future(), limit=10)
    assert row.event == EventFacts.of(item)


def test_the_labels_are_the_delivering_processs(tmp_path: Path) -> None:
    first = StateDB(tmp_path / "state")
    stage(first, DatadogOutbox(first, {"environment": "staging"}), make_classified("run-1"))
    first.close()

    reopened = StateDB(tmp_path / "state")
    try:
        outbox = DatadogOutbox(reopened, {"environment": "production"})
        (row,) = outbox.due(far_future(), limit=10)
        assert "environment:production" in outbox.payload(row)["tags"]
        assert "environment:staging" not in outbox.payload(row)["tags"]
    finally:
        reopened.close()


def test_a_requests_items_are_queued_in_order_and_wake_the_listeners_once(state: StateDB) -> None:
    outbox = DatadogOutbox(state, LABELS)
    calls: list[None] = []
    outbox.on_stage(lambda: calls.append(None))
    items = [make_classified(f"run-{n}") for n in range(3)]
    with state.transaction() as tx:
        outbox.stage_all(tx, items)
    assert [row.event for row in outbox.due(far_future(), limit=10)] == [EventFacts.of(item) for item in items]
    assert len(calls) == 1


def test_nothing_is_queued_when_the_ingest_transaction_rolls_back(state: StateDB) -> None:
    outbox = DatadogOutbox(state, LABELS)
    with pytest.raises(RuntimeError):
        with state.transaction() as tx:
            outbox.stage_all(tx, [make_classified()])
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
    outbox.delete([row.id for row in first_two])
    assert [r.run_id for r in outbox.due(far_future(), limit=10)] == ["run-2"]
    assert outbox.depth() == 1


def test_retried_and_fresh_rows_come_in_the_order_they_fell_due_up_to_the_limit(state: StateDB) -> None:
    outbox = DatadogOutbox(state, LABELS)
    stage(state, outbox, *(make_classified(f"run-{n}") for n in range(3)))
    (last,) = [row for row in outbox.due(far_future(), limit=10) if row.run_id == "run-2"]
    staged_at_ms = last.enqueued_at_ms
    outbox.reschedule(last.id, staged_at_ms - 10_000, "HTTP 503")  # due before the rows never tried
    assert [(r.run_id, r.attempts) for r in outbox.due(far_future(), limit=2)] == [("run-2", 1), ("run-0", 0)]
    later = far_future()
    outbox.reschedule(last.id, later, "HTTP 503")  # now due after them
    assert [r.run_id for r in outbox.due(far_future(), limit=10)] == ["run-0", "run-1", "run-2"]
    assert [r.run_id for r in outbox.due(staged_at_ms, limit=10)] == ["run-0", "run-1"]
    assert outbox.next_attempt_at_ms() == 0  # the rows never tried: due at once
    outbox.delete([row.id for row in outbox.due(staged_at_ms, limit=10)])
    assert outbox.next_attempt_at_ms() == later


def test_rows_never_tried_stay_due_when_the_clock_is_set_back(state: StateDB) -> None:
    outbox = DatadogOutbox(state, LABELS)
    stage(state, outbox, make_classified("run-1"))
    (row,) = outbox.due(far_future(), limit=10)
    assert [r.run_id for r in outbox.due(row.enqueued_at_ms - 60_000, limit=10)] == ["run-1"]
    assert outbox.next_attempt_at_ms() <= row.enqueued_at_ms - 60_000  # so the sender does not sleep first


def test_rows_queued_by_a_version_that_stored_payloads_keep_their_place_retries_and_payload(tmp_path: Path) -> None:
    now_ms = int(time.time() * 1000)
    rows = [
        legacy_row("01JOLDA", enqueued_at_ms=now_ms - 60_000, attempts=3, next_attempt_at_ms=now_ms - 1_000),
        legacy_row("01JOLDB", enqueued_at_ms=now_ms - 50_000),
    ]
    write_legacy_outbox(tmp_path / "state", rows)
    state = StateDB(tmp_path / "state")
    try:
        outbox = DatadogOutbox(state, LABELS)
        stage(state, outbox, make_classified("01JNEW"))
        assert outbox.depth() == 3
        old_b, old_a, new = outbox.due(far_future(), limit=10)
        assert [(r.run_id, r.attempts, r.enqueued_at_ms) for r in (old_b, old_a)] == [
            ("01JOLDB", 0, now_ms - 50_000),
            ("01JOLDA", 3, now_ms - 60_000),
        ]
        assert outbox.payload(old_a) == json.loads(rows[0][1])
        assert outbox.payload(old_b)["tags"] == PAYLOAD["tags"]  # as stored, with the labels of then
        assert new.run_id == "01JNEW" and new.id > old_a.id
        assert outbox.payload(new) == build_payload(EventFacts.of(make_classified("01JNEW")), LABELS)
    finally:
        state.close()


def test_the_upgraded_table_keeps_its_rows_across_a_restart_and_indexes_only_retries(tmp_path: Path) -> None:
    write_legacy_outbox(tmp_path / "state", [legacy_row("01JOLD", enqueued_at_ms=int(time.time() * 1000))])
    for _ in range(2):
        state = StateDB(tmp_path / "state")
        try:
            outbox = DatadogOutbox(state, LABELS)
            (row,) = outbox.due(far_future(), limit=10)
            assert isinstance(row.event, str) and outbox.payload(row)["tags"] == PAYLOAD["tags"]
            with state.reading() as conn:
                plan = " ".join(
                    str(step)
                    for step in conn.execute(
                        "EXPLAIN QUERY PLAN SELECT id FROM datadog_outbox WHERE attempts > 0 AND next_attempt_at_ms <= 0"
                    )
                )
                indexes = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
            assert "datadog_outbox_retries" in plan
            assert "datadog_outbox_by_next_attempt" not in indexes  # the index of every row is gone
        finally:
            state.close()
