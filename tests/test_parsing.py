"""Parsing the real payload's variations into typed records, and naming what is wrong."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import ulid
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.payloads import fixture_event
from exporter.parsing import InvalidInput, parse_body
from exporter.records import Cancellation, Ignored, Signal
from exporter.run_ids import ulid_int, ulid_ms

NOW = 1_732_570_030_000


def parse(value: Any, signals: frozenset[str] = frozenset(), max_events: int = 100) -> list[Any]:
    body = value if isinstance(value, bytes) else json.dumps(value).encode()
    return parse_body(body, evidence_names=signals, now_ms=NOW, max_events=max_events)


def test_documented_payload_becomes_a_cancellation_with_age_from_the_ulid() -> None:
    (record,) = parse(fixture_event("seed-cancelled-export.json"))
    assert isinstance(record, Cancellation)
    assert record.run_id == "01JDJKGTGDVV4DTXHY6XYB7BKK"
    assert record.function_id == "demo-app-export"
    assert record.scheduled_at_ms == 1732570016269  # the ULID's time, not the trigger's
    assert record.age_seconds == pytest.approx(7.448)
    assert record.trigger_name == "integrations/export.requested"
    assert record.trigger_id == "01JDJK451Y9KFGE5TTM2FHDEDN"


def test_current_servers_payload_without_error_and_with_inngest_status() -> None:
    event = fixture_event("seed-cancelled-import.json")
    del event["data"]["error"]
    event["data"]["_inngest"] = {"status": "Cancelled"}
    event["id"] = event["data"]["run_id"]
    (record,) = parse(event)
    assert isinstance(record, Cancellation) and record.event_id == record.run_id


def test_finished_event_counts_only_when_its_status_is_cancelled() -> None:
    event = fixture_event("seed-cancelled-import.json")
    event["name"] = "inngest/function.finished"
    assert isinstance(parse(event)[0], Ignored)
    event["data"]["_inngest"] = {"status": "Cancelled"}
    assert isinstance(parse(event)[0], Cancellation)


def test_non_ulid_run_id_falls_back_to_the_trigger_time() -> None:
    event = fixture_event("seed-cancelled-export.json")
    event["data"]["run_id"] = "run-123"
    (record,) = parse(event)
    assert record.age_seconds == pytest.approx((1732570023717 - 1732558407003) / 1000)


def test_negative_age_counts_as_zero_and_missing_time_as_no_age() -> None:
    event = fixture_event("seed-cancelled-export.json")
    event["ts"] = 1732570016269 - 5000
    assert parse(event)[0].age_seconds == 0.0
    del event["ts"]
    assert parse(event)[0].age_seconds is None


def test_configured_signal_is_evidence_and_others_are_ignored() -> None:
    signal = {"name": "contacts/import.cancelled", "data": {"importId": "x"}, "ts": 5}
    (record,) = parse(signal, frozenset({"contacts/import.cancelled"}))
    assert isinstance(record, Signal) and record.received_ms == 5  # no id: its `ts` stands for the receipt
    assert isinstance(parse(signal)[0], Ignored)


def test_a_signal_was_received_when_its_ulid_id_says_else_at_its_ts_else_now() -> None:
    """Inngest gives an event sent without an id a ULID made on receipt; a sender's `ts` is its own clock."""
    names = frozenset({"contacts/import.cancelled"})
    received = 1_732_570_016_269
    signal = {"name": "contacts/import.cancelled", "id": str(ulid.ULID.from_timestamp(received / 1000)), "ts": received + 60_000}
    assert parse(signal, names)[0].received_ms == received
    assert parse({**signal, "id": "order-7-cancelled"}, names)[0].received_ms == received + 60_000
    assert parse({"name": "contacts/import.cancelled"}, names)[0].received_ms == NOW


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "body is empty"),
        (b"{nope", "body is not valid JSON"),
        (b"\xff\xfe{}", "not valid"),
        (b"[]", "empty array"),
        (b"42", "body: expected an event object, got a number"),
        ({"data": {}}, "name: missing"),
        ({"name": "inngest/function.cancelled", "data": []}, "data: expected an object, got an array"),
        ({"name": "inngest/function.cancelled", "data": {"function_id": "f"}}, "data.run_id: missing"),
        ({"name": "inngest/function.cancelled", "data": {"run_id": "r", "function_id": 3}}, "data.function_id: expected a non-empty string"),
        ({"name": "inngest/function.cancelled", "data": {"run_id": "r", "function_id": "f"}, "ts": "soon"}, "ts: expected epoch milliseconds"),
        (b'{"name": "inngest/function.cancelled", "data": {"run_id": "r", "function_id": "f"}, "ts": NaN}',
         "ts: expected epoch milliseconds (a finite number), got NaN"),
        (b'{"name": "inngest/function.cancelled", "data": {"run_id": "r", "function_id": "f"}, "ts": -Infinity}',
         "ts: expected epoch milliseconds (a finite number), got -Infinity"),
        ({"name": "inngest/function.cancelled", "data": {"run_id": "r", "function_id": "f" * 600}}, "longer than 512"),
        ({"name": "inngest/function.cancelled", "data": {"run_id": "r", "function_id": "f", "event": "x"}}, "data.event: expected an object"),
        (b"[" * 50000, "nested too deeply"),
    ],
)
def test_invalid_input_names_the_problem(body: Any, message: str) -> None:
    with pytest.raises(InvalidInput, match=re.escape(message)):
        parse(body)


def test_batch_error_names_the_index_and_batch_limit_is_enforced() -> None:
    good = fixture_event("seed-cancelled-export.json")
    with pytest.raises(InvalidInput, match=r"events\[1\]\.data\.run_id"):
        parse([good, {"name": "inngest/function.cancelled", "data": {"function_id": "f"}}])
    with pytest.raises(InvalidInput, match="3 events, more than the limit of 2"):
        parse([good] * 3, max_events=2)


def test_lone_surrogate_is_refused_so_the_exposition_stays_valid() -> None:
    body = b'{"name":"inngest/function.cancelled","data":{"run_id":"r","function_id":"\\ud800"}}'
    with pytest.raises(InvalidInput, match="not valid Unicode"):
        parse(body)


@settings(max_examples=300)
@given(bits=st.integers(min_value=0, max_value=2**128 - 1), lower=st.booleans())
def test_a_ulid_run_id_gives_its_scheduled_time_as_python_ulid_reads_it(bits: int, lower: bool) -> None:
    run_id = str(ulid.ULID.from_int(bits))
    run_id = run_id.lower() if lower else run_id

    assert ulid_int(run_id) == bits
    assert ulid_ms(run_id) == ulid.ULID.from_int(bits).milliseconds


@pytest.mark.parametrize("run_id", ["8ZZZZZZZZZZZZZZZZZZZZZZZZZ", "01ARZ3NDEKTSV4RRFFQ69G5FAI", "01ARZ3NDEKTSV4RRFFQ69G5FA", "run-1"])
def test_a_run_id_that_is_not_a_ulid_has_no_scheduled_time(run_id: str) -> None:
    assert ulid_int(run_id) is None
    assert ulid_ms(run_id) is None
