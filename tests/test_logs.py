"""What a user reads in the log: the start-up line, refused requests, and failures said once, not every try."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Callable

import pytest
import requests

from exporter.app import create_app
from exporter.config import Config
from exporter.refusals import RefusalLog
from exporter.settings import load_settings
from tests.conftest import ServeProcess, free_port
from tests.support.exposition import samples, scrape
from tests.support.payloads import INGEST_TOKEN, SIGNING_KEY, cancellation
from tests.support.waiting import eventually

AUTH = {"Authorization": f"Bearer {INGEST_TOKEN}", "Content-Type": "application/json"}


def lines(proc: ServeProcess, text: str) -> list[str]:
    return [line for line in proc.log().splitlines() if text in line]


def test_serve_says_its_setup_once_at_start_and_never_a_secret(serve: Callable[..., ServeProcess], tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("functions:\n  app-a: {}\n  app-b: {}\nbulk_cancellations: {poll_interval: 30s}\n")
    proc = serve("--config", str(config), DD_API_KEY="dd-secret-key-0123", DD_SITE="datadoghq.eu")
    (line,) = lines(proc, "starting in")
    assert f"starting in production mode: listening on 127.0.0.1:{proc.port}; config {config}: 2 functions" in line
    assert f"state in {proc.state_dir}" in line
    assert "sinks: Prometheus on /metrics, OTLP spans off (OTEL_EXPORTER_OTLP_ENDPOINT), " in line
    assert "Datadog events to https://api.datadoghq.eu (DD_API_KEY set)" in line
    assert "bulk cancellations: polled every 30s from http://127.0.0.1:9; run lookups: on, GET http://127.0.0.1:9" in line
    assert "INNGEST_SIGNING_KEY set, EXPORTER_INGEST_TOKEN set" in line
    log = proc.log()
    assert "dd-secret-key-0123" not in log and SIGNING_KEY not in log and INGEST_TOKEN not in log


def test_an_unreachable_collector_is_told_once_in_plain_words(serve: Callable[..., ServeProcess]) -> None:
    collector = f"http://127.0.0.1:{free_port()}"
    proc = serve(OTEL_EXPORTER_OTLP_ENDPOINT=collector, OTEL_BSP_SCHEDULE_DELAY="50", OTEL_EXPORTER_OTLP_TIMEOUT="1")
    for n in range(3):  # one batch each: every export fails
        run_id = f"01JDJKGTGDVV4DTXHY6XYB7BK{n}"
        sent = requests.post(f"{proc.url}/events", data=json.dumps(cancellation(run_id)), headers=AUTH, timeout=10)
        assert sent.status_code == 200
        eventually(lambda: samples(scrape(proc.url).decode(), "inngest_cancellation_exporter_spans_total").get(
            (("outcome", "dropped"),), 0) == n + 1)
    (told,) = lines(proc, "OTLP spans: export")
    assert f"OTLP spans: export to {collector}/v1/traces failed: cannot connect: Connection refused. " in told
    assert 'counted in inngest_cancellation_exporter_spans{outcome="dropped"}' in told
    assert "Transient error" not in proc.log() and "Failed to export" not in proc.log()
    assert "HTTPConnectionPool" not in proc.log() and "Traceback" not in proc.log()
    (setup,) = lines(proc, "starting in")
    assert f"OTLP spans to {collector} (http/protobuf)" in setup


def test_refused_requests_are_told_with_their_reason_once_per_kind(serve: Callable[..., ServeProcess]) -> None:
    proc = serve()
    for _ in range(3):
        answer = requests.post(f"{proc.url}/events", data="{}", headers={"Authorization": "Bearer wrong"}, timeout=10)
        assert answer.status_code == 401
    assert requests.post(f"{proc.url}/api/inngest?fnId=x", data="{}", timeout=10).status_code == 401
    assert requests.post(f"{proc.url}/events", data="[1]", headers=AUTH, timeout=10).status_code == 400
    eventually(lambda: len(lines(proc, "refused a request")) == 3)
    events_401, inngest_401, events_400 = lines(proc, "refused a request")
    assert "refused a request to /events with HTTP 401: bearer token does not match; check that the sender" in events_401
    assert ("refused a request to /api/inngest with HTTP 401: cannot validate signature in production mode "
            "without a x-inngest-signature header") in inngest_401
    assert "refused a request to /events with HTTP 400: events[0]: expected an event object, got a number" in events_400
    assert "ERROR" not in proc.log()  # the Inngest SDK's own line for its refusal is told as ours, once


def test_repeated_refusals_are_summed_up(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings = load_settings({"EXPORTER_STATE_DIR": str(tmp_path), "EXPORTER_INGEST_TOKEN": INGEST_TOKEN, "EXPORTER_RUN_LOOKUPS": "false"})
    app = create_app(settings, Config(), environ={})
    app.extensions["refusals"] = RefusalLog(logging.getLogger("exporter.refusals"), summary_seconds=0.1)
    client = app.test_client()
    with caplog.at_level(logging.WARNING, logger="exporter.refusals"):
        for _ in range(5):
            assert client.post("/events", data="{}", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.post("/events", data="x", headers={"Content-Type": "text/plain"}).status_code == 415
        assert client.post("/events", data="y", headers={"Content-Type": "text/plain"}).status_code == 415
        eventually(lambda: "more refused requests" in caplog.text)
    told = [record.getMessage() for record in caplog.records]
    assert len(told) == 3
    assert told[0].startswith("refused a request to /events with HTTP 401: bearer token does not match")
    assert told[1].startswith("refused a request to /events with HTTP 415: unsupported Content-Type 'text/plain'")
    assert told[2].startswith("5 more refused requests since the last summary: 4 x /events HTTP 401 (bearer token does not match); ")
    assert "1 x /events HTTP 415 (unsupported Content-Type 'text/plain'" in told[2]
