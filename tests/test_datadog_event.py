"""The Datadog event a cancelled run becomes: what users see and filter on in Datadog."""

from __future__ import annotations

import json

from datadog_api_client.v1.model.event_create_request import EventCreateRequest

from exporter.records import Source
from exporter.sinks.datadog_event import AGGREGATION_KEY_MAX, TEXT_MAX, build_payload, to_request
from tests.support.classified import CANCELLED_AT_MS, TRIGGER, make_classified

LABELS = {"environment": "production", "region": "eu"}


def test_tags_name_function_source_age_bucket_and_constant_labels_but_not_the_run() -> None:
    payload = build_payload(make_classified(source=Source.TIMEOUT), LABELS)
    assert sorted(payload["tags"]) == sorted(
        [
            "function_id:newsletter-app-import-all-contacts",
            "cancellation_source:timeout",
            "run_age:1m_to_1h",
            "environment:production",
            "region:eu",
        ]
    )
    assert payload["title"] == "Inngest run cancelled: newsletter-app-import-all-contacts (timeout)"
    assert payload["alert_type"] == "warning"


def test_text_names_the_run_the_trigger_and_the_exact_age() -> None:
    text = build_payload(make_classified("01JRUNID"), LABELS)["text"]
    assert "01JRUNID" in text
    assert f"{TRIGGER['name']} (id {TRIGGER['id']})" in text
    assert "90.500 s" in text


def test_unknown_age_and_trigger_are_said_so_and_tagged_unknown() -> None:
    payload = build_payload(make_classified(scheduled_at_ms=None, trigger=None), {})
    assert "Run age: unknown" in payload["text"]
    assert "Triggering event: unknown" in payload["text"]
    assert "run_age:unknown" in payload["tags"]


def test_date_happened_is_the_cancellation_time_else_the_received_time() -> None:
    assert build_payload(make_classified(), {})["date_happened"] == CANCELLED_AT_MS // 1000
    received = make_classified(cancelled_at_ms=None, received_at_ms=CANCELLED_AT_MS + 5_000)
    assert build_payload(received, {})["date_happened"] == (CANCELLED_AT_MS + 5_000) // 1000


def test_aggregation_key_groups_by_function_within_datadogs_limit() -> None:
    def key(run_id: str, function_id: str) -> str:
        return build_payload(make_classified(run_id, function_id=function_id), {})["aggregation_key"]

    assert key("run-a", "app-a") == key("run-b", "app-a")
    assert key("run-a", "app-a") != key("run-a", "app-b")
    long_a, long_b = "app-" + "a" * 200, "app-" + "a" * 199 + "b"
    assert len(key("run-a", long_a)) <= AGGREGATION_KEY_MAX
    assert key("run-a", long_a) != key("run-a", long_b)


def test_payload_is_json_and_converts_to_the_clients_model() -> None:
    payload = json.loads(json.dumps(build_payload(make_classified(), LABELS)))
    request = to_request(payload, now_s=CANCELLED_AT_MS / 1000 + 60)
    assert isinstance(request, EventCreateRequest)
    assert request.to_dict() == payload


def test_an_event_too_old_for_datadogs_date_window_is_sent_without_a_date() -> None:
    payload = build_payload(make_classified(), {})
    request = to_request(payload, now_s=CANCELLED_AT_MS / 1000 + 3 * 86400)
    assert "date_happened" not in request.to_dict()
    assert "2024-11-25T21:27:10.000+00:00" in request.text  # the real time stays in the text


def test_a_huge_trigger_name_still_makes_a_valid_event() -> None:
    payload = build_payload(make_classified(trigger={"name": "x" * 10_000}), {})
    assert len(payload["text"]) <= TEXT_MAX
    to_request(payload, now_s=CANCELLED_AT_MS / 1000)
