"""One cancellation, end to end, through the real `serve` process to all three sinks.

The real OpenTelemetry SDK exports OTLP/protobuf to a local receiver that decodes it, and the
real datadog-api-client posts to a local recording server; both are configured only by the
variables users set.
"""

from __future__ import annotations

import json
import signal
from typing import Callable

import pytest
import requests
import ulid

from tests.conftest import ServeProcess, sinks_env
from tests.support.fake_inngest_api import FakeInngestApi
from tests.support.inngest_driver import InngestDriver
from tests.support.otlp_receiver import OtlpHttpReceiver
from tests.support.payloads import INGEST_TOKEN, SIGNING_KEY, fixture_event
from tests.support.recording_server import RecordingServer, server_error
from tests.support.waiting import eventually

RUN_ID = "01JDJKGTGDVV4DTXHY6XYB7BKK"


def test_a_cancellation_from_inngest_reaches_every_sink_once(
    serve: Callable[..., ServeProcess], datadog: RecordingServer, collector: OtlpHttpReceiver
) -> None:
    with FakeInngestApi(SIGNING_KEY) as inngest_api:  # polled: no bulk cancellation, so `manual` by elimination
        proc = serve(
            "--config", "examples/config.yaml", INNGEST_API_BASE_URL=inngest_api.url, EXPORTER_ATTRIBUTION_GRACE="1s",
            **sinks_env(datadog, collector),
        )
        run_and_check_every_sink(proc, datadog, collector)


def run_and_check_every_sink(proc: ServeProcess, datadog: RecordingServer, collector: OtlpHttpReceiver) -> None:
    driver = InngestDriver(proc.url, SIGNING_KEY)
    function = driver.sync().function_for("inngest/function.cancelled")
    event = fixture_event("seed-cancelled-export.json")
    assert driver.invoke(function, event).status == 200
    assert driver.invoke(function, event).status == 200  # Inngest redelivers: still one of each

    (span,) = collector.wait_for_spans(1)
    assert span.span.name == "inngest.function.cancelled"
    assert span.span.trace_id == int(ulid.ULID.from_str(RUN_ID)).to_bytes(16, "big")
    assert span.attributes["inngest.cancellation.source"] == "manual"
    assert span.attributes["inngest.run.age_seconds"] == pytest.approx(7.448)
    assert span.resource["service.name"] == "inngest-cancellation-exporter"

    (request,) = datadog.wait_for(1)
    assert request.headers["DD-API-KEY"] == "dd-test-key"
    assert {"function_id:demo-app-export", "cancellation_source:manual", "run_age:under_1m", "environment:demo"} <= set(
        request.json["tags"]
    )
    assert RUN_ID in request.json["text"] and "integrations/export.requested" in request.json["text"]

    eventually(lambda: proc.metric("inngest_cancellation_exporter_datadog_deliveries_total", {"outcome": "sent"}) == 1.0)
    eventually(lambda: proc.metric("inngest_cancellation_exporter_spans_total", {"outcome": "exported"}) == 1.0)
    assert proc.metric("inngest_cancellation_exporter_spans_total", {"outcome": "exported"}) == 1.0
    assert proc.metric("inngest_function_cancellations_total", {"function_id": "demo-app-export"}) == 1.0
    assert len(collector.spans()) == 1 and len(datadog.requests) == 1


def test_datadog_events_wait_in_the_outbox_across_a_restart(
    serve: Callable[..., ServeProcess], datadog: RecordingServer, collector: OtlpHttpReceiver
) -> None:
    env = sinks_env(datadog, collector)
    datadog.script(*[server_error()] * 1000)  # Datadog is down for the first process's whole life
    first = serve(**env)
    body = json.dumps(fixture_event("seed-cancelled-export.json"))
    headers = {"Authorization": f"Bearer {INGEST_TOKEN}", "Content-Type": "application/json"}
    assert requests.post(f"{first.url}/events", data=body, headers=headers, timeout=10).json()["accepted"] == 1
    datadog.wait_for(1)
    assert first.metric("inngest_cancellation_exporter_datadog_outbox_depth") == 1.0
    assert first.stop(signal.SIGTERM) == 0
    collector.wait_for_spans(1)  # flushed on the way out

    datadog.clear_script()  # Datadog is back
    failed_attempts = len(datadog.requests)
    second = serve(state_dir=first.state_dir, **env)
    delivered = datadog.wait_for(failed_attempts + 1)[-1]
    assert RUN_ID in delivered.json["text"]
    eventually(lambda: second.metric("inngest_cancellation_exporter_datadog_outbox_depth") == 0.0)
    assert second.metric("inngest_cancellation_exporter_datadog_deliveries_total", {"outcome": "sent"}) == 1.0
