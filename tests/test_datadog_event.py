"""The Datadog event a cancelled run becomes: what users see and filter on in Datadog."""

from __future__ import annotations

import json
from typing import Any, Mapping

from datadog_api_client.v1.model.event_create_request import EventCreateRequest

from exporter.records import Classified, Source
from exporter.sinks.datadog_event import AGGREGATION_KEY_MAX, TEXT_MAX, EventFacts, build_payload, request_body
from tests.support.classified import CANCELLED_AT_MS, TRIGGER, make_classified

LABELS = {"environment": "production", "region": "eu"}


def payload(item: Classified, labels: Mapping[str, str] = LABELS) -> dict[str, Any]:
    return build_payload(EventFacts.of(item), labels)


def test_tags_name_function_source_age_bucket_and_constant_labels_but_not_the_run() -> None:
    built = payload(make_classified(source=Source.TIMEOUT))
    assert sorted(built["tags"]) == sorted(
        [
            "function_id:newsletter-app-import-all-contacts",
            "cancellation_source:timeout",
            "run_age:1m_to_1h",
            "environment:production",
            "region:eu",
        ]
    )
    assert built["title"] == "Inngest run cancelled: newsletter-app-import-all-contacts (timeout)"
    assert built["alert_type"] == "warning"


def test_text_names_the_run_the_trigger_and_the_exact_age() -> None:
    text = payload(make_classified("01JRUNID"))["text"]
    assert "01JRUNID" in text
    assert f"{TRIGGER['name']} (id {TRIGGER['id']})" in text
    assert "90.500 s" in text


def test_unknown_age_and_trigger_are_said_so_and_tagged_unknown() -> None:
    built = payload(make_classified(scheduled_at_ms=None, trigger=None), {})
    assert "Run age: unknown" in built["text"]
    assert "Triggering event: unknown" in built["text"]
    assert "run_age:unknown" in built["tags"]


def test_date_happened_is_the_cancellation_time_else_the_received_time() -> None:
    assert payload(make_classified(), {})["date_happened"] == CANCELLED_AT_MS // 1000
    received = make_classified(cancelled_at_ms=None, received_at_ms=CANCELLED_AT_MS + 5_000)
    assert payload(received, {})["date_happened"] == (CANCELLED_AT_MS + 5_000) // 1000


def test_aggregation_key_groups_by_function_within_datadogs_limit() -> None:
    def key(run_id: str, function_id: str) -> str:
        return str(payload(make_classified(run_id, function_id=function_id), {})["aggregation_key"])

    assert key("run-a", "app-a") == key("run-b", "app-a")
    assert key("run-a", "app-a") != key("run-a", "app-b")
    long_a, long_b = "app-" + "a" * 200, "app-" + "a" * 199 + "b"
    assert len(key("run-a", long_a)) <= AGGREGATION_KEY_MAX
    assert key("run-a", long_a) != key("run-a", long_b)


def test_the_facts_are_the_runs_values() -> None:
    facts = EventFacts.of(make_classified("01JRUNID", source=Source.BULK))
    assert facts == EventFacts(
        run_id="01JRUNID",
        function_id="newsletter-app-import-all-contacts",
        source="bulk",
        age_seconds=90.5,
        trigger_name=str(TRIGGER["name"]),
        trigger_id=str(TRIGGER["id"]),
        happened_ms=CANCELLED_AT_MS,
    )


def test_the_body_is_json_the_clients_event_model_accepts() -> None:
    body = request_body(json.loads(json.dumps(payload(make_classified()))), now_s=CANCELLED_AT_MS / 1000 + 60)
    assert EventCreateRequest(**body).to_dict() == body


def test_an_event_too_old_for_datadogs_date_window_is_sent_without_a_date() -> None:
    body = request_body(payload(make_classified(), {}), now_s=CANCELLED_AT_MS / 1000 + 3 * 86400)
    assert "date_happened" not in body
    assert "2024-11-25T21:27:10.000+00:00" in body["text"]  # the real time stays in the text


def test_a_huge_trigger_name_still_makes_a_valid_event_and_is_not_queued_whole() -> None:
    item = make_classified(trigger={"name": "x" * 10_000, "id": "y" * 10_000})
    assert len(EventFacts.of(item).trigger_name or "") == len(EventFacts.of(item).trigger_id or "") == TEXT_MAX
    built = payload(item, {})
    assert len(built["text"]) <= TEXT_MAX
    EventCreateRequest(**request_body(built, now_s=CANCELLED_AT_MS / 1000))
