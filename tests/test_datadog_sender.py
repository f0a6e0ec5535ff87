"""Delivery through the real datadog-api-client to a recording stand-in for Datadog's API."""

from __future__ import annotations

import collections
import itertools
import json
import logging
import time
from pathlib import Path
from typing import Iterator, Sequence

import pytest
from prometheus_client import CollectorRegistry

from exporter.health import HealthMetrics
from exporter.settings import Settings
from exporter.sinks.datadog_outbox import DatadogOutbox
from exporter.sinks.datadog_sender import IN_FLIGHT, Backoff, DatadogSender, client_configuration
from exporter.state import StateDB, StateUnavailable
from tests.support.classified import make_classified
from tests.support.legacy_outbox import legacy_row, write_legacy_outbox
from tests.support.recording_server import (
    RecordingServer,
    bad_request,
    forbidden,
    hang,
    rate_limited,
    server_error,
)
from tests.support.waiting import eventually

API_KEY = "dd-test-api-key-0123456789abcdef"
LABELS = {"environment": "test"}
DELIVERIES = "inngest_cancellation_exporter_datadog_deliveries_total"
DEPTH = "inngest_cancellation_exporter_datadog_outbox_depth"


class Exporter:
    """One exporter process's Datadog side: state, outbox, metrics and a sender, pointed at the server."""

    def __init__(self, state_dir: Path, server: RecordingServer) -> None:
        self.state = StateDB(state_dir)
        self.outbox = DatadogOutbox(self.state, LABELS)
        self.registry = CollectorRegistry()
        self.server = server
        self.sender: DatadogSender | None = None

    def start(self, *, give_up_after: float = 60.0, request_timeout: float = 0.5) -> DatadogSender:
        settings = Settings(dd_api_key=API_KEY, datadog_url=self.server.url, datadog_give_up_after=give_up_after)
        self.sender = DatadogSender(
            self.outbox,
            settings,
            HealthMetrics(self.registry),
            request_timeout=request_timeout,
            backoff=Backoff(initial=0.05, cap=0.2),
            poll_interval=0.2,
        )
        self.sender.start()
        return self.sender

    def stage(self, *run_ids: str) -> None:
        with self.state.transaction() as tx:
            self.outbox.stage_all(tx, [make_classified(run_id) for run_id in run_ids])

    def deliveries(self, outcome: str) -> float:
        return self.registry.get_sample_value(DELIVERIES, {"outcome": outcome}) or 0.0

    def close(self, stop_timeout: float = 2.0) -> None:
        if self.sender is not None:
            self.sender.stop(timeout=stop_timeout)
        self.state.close()


@pytest.fixture
def server() -> Iterator[RecordingServer]:
    with RecordingServer() as recording:
        yield recording


@pytest.fixture
def exporter(tmp_path: Path, server: RecordingServer) -> Iterator[Exporter]:
    running = Exporter(tmp_path / "state", server)
    yield running
    running.close()


def test_an_event_is_delivered_once_with_its_tags_text_and_api_key(exporter: Exporter, server: RecordingServer) -> None:
    exporter.start()
    exporter.stage("01JRUN")
    eventually(lambda: exporter.deliveries("sent") == 1)
    (request,) = server.requests
    assert (request.method, request.path) == ("POST", "/api/v1/events")
    assert request.headers["DD-API-KEY"] == API_KEY
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["User-Agent"].startswith("datadog-api-client-python/")
    assert "function_id:newsletter-app-import-all-contacts" in request.json["tags"]
    assert "environment:test" in request.json["tags"]
    assert "01JRUN" in request.json["text"]
    assert exporter.outbox.depth() == 0


def test_a_server_error_is_retried_and_the_event_delivered_exactly_once(
    exporter: Exporter, server: RecordingServer
) -> None:
    server.script(server_error())
    exporter.start()
    exporter.stage("01JRUN")
    eventually(lambda: exporter.deliveries("sent") == 1)
    assert len(server.requests) == 2
    assert server.requests[0].json == server.requests[1].json
    assert exporter.deliveries("retried") == 1
    assert exporter.outbox.depth() == 0


def test_a_rate_limit_is_waited_out_for_as_long_as_datadog_says(exporter: Exporter, server: RecordingServer) -> None:
    server.script(rate_limited(reset_seconds=1))
    exporter.start()
    exporter.stage("01JRUN")
    eventually(lambda: exporter.deliveries("sent") == 1)
    first, second = server.requests
    assert second.at - first.at >= 0.9
    assert exporter.deliveries("retried") == 1


def test_a_rejected_api_key_is_retried_not_given_up(exporter: Exporter, server: RecordingServer) -> None:
    server.script(forbidden())
    exporter.start()
    exporter.stage("01JRUN")
    eventually(lambda: exporter.deliveries("sent") == 1)
    assert len(server.requests) == 2
    assert exporter.deliveries("gave_up") == 0


def warnings_and_infos(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    return [(record.levelname, record.getMessage()) for record in caplog.records if record.levelno >= logging.INFO]


def test_a_lasting_failure_is_told_once_and_its_end_once(
    exporter: Exporter, server: RecordingServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="exporter.sinks.datadog_sender")
    server.script(*[server_error()] * 4)
    exporter.start()
    exporter.stage("01JRUN")
    eventually(lambda: exporter.deliveries("sent") == 1)
    told = warnings_and_infos(caplog)[1:]  # after the line that says where events go
    assert [level for level, _ in told] == ["WARNING", "INFO"]
    assert told[0][1].startswith(f"Datadog: POST {server.url}/api/v1/events failed: HTTP 500")
    assert "Events wait in the outbox (EXPORTER_STATE_DIR) and are retried" in told[0][1]
    assert told[1][1].startswith(f"Datadog: POST {server.url}/api/v1/events works again after 4 failed attempts")
    assert exporter.deliveries("retried") == 4


def test_an_unreachable_datadog_is_told_in_plain_words_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with RecordingServer() as gone:
        pass  # its port is now closed
    caplog.set_level(logging.INFO, logger="exporter.sinks.datadog_sender")
    unreachable = Exporter(tmp_path / "state", gone)
    try:
        unreachable.start()
        unreachable.stage("01JRUN")
        eventually(lambda: unreachable.deliveries("retried") >= 3)
    finally:
        unreachable.close()
    (told,) = [message for level, message in warnings_and_infos(caplog) if level == "WARNING"]
    assert told.startswith(f"Datadog: POST {gone.url}/api/v1/events failed: cannot connect: Connection refused. ")
    assert "HTTPConnectionPool" not in caplog.text and API_KEY not in caplog.text


def test_a_hanging_request_times_out_and_is_retried(exporter: Exporter, server: RecordingServer) -> None:
    server.script(hang(seconds=5))
    exporter.start(request_timeout=0.3)
    exporter.stage("01JRUN")
    eventually(lambda: exporter.deliveries("sent") == 1)
    assert len(server.requests) == 2
    assert exporter.deliveries("retried") == 1


def test_an_event_datadog_refuses_is_given_up_at_once_and_logged_without_the_key(
    exporter: Exporter, server: RecordingServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="exporter")
    server.script(bad_request())  # for whichever of the two, sent together, arrives first
    exporter.start()
    exporter.stage("01JONE", "01JTWO")
    eventually(lambda: exporter.deliveries("sent") == 1)
    assert exporter.deliveries("gave_up") == 1
    assert exporter.deliveries("retried") == 0
    refused, accepted = (request.json["text"].split()[1] for request in server.requests)
    assert {refused, accepted} == {"01JONE", "01JTWO"}
    assert f"gave up the event of run {refused}" in caplog.text
    assert accepted not in caplog.text
    assert API_KEY not in caplog.text


def test_an_event_is_given_up_after_the_bounded_time(exporter: Exporter, server: RecordingServer) -> None:
    server.script(*[server_error()] * 1000)
    exporter.start(give_up_after=0.5)
    exporter.stage("01JRUN")
    eventually(lambda: exporter.deliveries("gave_up") == 1)
    assert exporter.deliveries("retried") >= 1
    assert exporter.deliveries("sent") == 0
    assert exporter.outbox.depth() == 0


def test_queued_events_survive_a_restart_and_are_then_delivered(tmp_path: Path, server: RecordingServer) -> None:
    before = Exporter(tmp_path / "state", server)
    before.stage("01JA", "01JB")
    before.close()

    after = Exporter(tmp_path / "state", server)
    try:
        after.start()
        eventually(lambda: after.deliveries("sent") == 2)
        texts = [request.json["text"] for request in server.requests]
        assert len(texts) == 2 and any("01JA" in t for t in texts) and any("01JB" in t for t in texts)
        assert after.registry.get_sample_value(DEPTH) == 0
    finally:
        after.close()


def test_stop_returns_while_datadog_hangs_and_the_event_waits_for_the_next_start(
    tmp_path: Path, server: RecordingServer
) -> None:
    server.script(hang(seconds=30))
    first = Exporter(tmp_path / "state", server)
    first.start(request_timeout=30)
    first.stage("01JRUN")
    server.wait_for(1)
    started = time.monotonic()
    first.close(stop_timeout=0.5)
    assert time.monotonic() - started < 15  # not held until the hang ends

    second = Exporter(tmp_path / "state", server)
    try:
        assert second.outbox.depth() == 1
        second.start()
        eventually(lambda: second.deliveries("sent") == 1)
    finally:
        second.close()


def test_the_site_selects_the_api_host_whatever_the_environment_says(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DD_SITE", "us5.datadoghq.com")
    assert (
        client_configuration(Settings(dd_api_key=API_KEY, dd_site="datadoghq.eu"), 5).host == "https://api.datadoghq.eu"
    )
    with pytest.raises(ValueError, match="DD_SITE"):
        client_configuration(Settings(dd_api_key=API_KEY, dd_site="example.invalid"), 5)


def test_many_events_are_each_delivered_once_and_counted_once_forgotten(
    exporter: Exporter, server: RecordingServer
) -> None:
    run_ids = [f"01JRUN{n:03d}" for n in range(30)]
    exporter.start()
    exporter.stage(*run_ids)
    eventually(lambda: exporter.deliveries("sent") == len(run_ids))
    assert exporter.outbox.depth() == 0  # `sent` moves only once the rows are gone
    delivered = collections.Counter(request.json["text"].split()[1] for request in server.requests)
    assert delivered == dict.fromkeys(run_ids, 1)


def test_events_are_sent_several_at_once(exporter: Exporter, server: RecordingServer) -> None:
    server.script(hang(seconds=2))  # the first request to arrive gets no answer in time
    exporter.start(request_timeout=1.5)
    exporter.stage("01JA", "01JB", "01JC")
    server.wait_for(3, timeout=1.2)  # one at a time, the second would wait for the first's timeout
    eventually(lambda: exporter.deliveries("sent") == 3)
    assert exporter.deliveries("retried") == 1
    delivered = collections.Counter(request.json["text"].split()[1] for request in server.acknowledged)
    assert delivered == {"01JA": 1, "01JB": 1, "01JC": 1}


def test_a_failing_datadog_gets_one_probe_at_a_time_then_everything_once(
    exporter: Exporter, server: RecordingServer
) -> None:
    run_ids = [f"01JRUN{n:02d}" for n in range(10)]
    exporter.stage(*run_ids)
    server.outage(0.6)
    outage_ends = time.monotonic() + 0.6
    exporter.start()
    eventually(lambda: exporter.deliveries("sent") == len(run_ids))
    failed = [request for request in server.requests if request.at < outage_ends]
    assert len(failed) > IN_FLIGHT  # the first wave failed whole, then probes followed
    probes = failed[IN_FLIGHT - 1 :]  # from the wave's last request on, each waits for a backoff
    assert all(later.at - earlier.at >= 0.02 for earlier, later in itertools.pairwise(probes))
    delivered = collections.Counter(request.json["text"].split()[1] for request in server.acknowledged)
    assert delivered == dict.fromkeys(run_ids, 1)


def test_delivered_rows_that_could_not_be_forgotten_are_sent_again_not_lost(
    exporter: Exporter, server: RecordingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    delete = exporter.outbox.delete
    failures = [StateUnavailable("disk full")]

    def delete_failing_once(row_ids: Sequence[int]) -> None:
        if failures:
            raise failures.pop()
        delete(row_ids)

    monkeypatch.setattr(exporter.outbox, "delete", delete_failing_once)
    exporter.stage("01JA", "01JB")
    exporter.start()
    eventually(lambda: exporter.deliveries("sent") == 2)
    assert exporter.outbox.depth() == 0
    texts = sorted(request.json["text"].split()[1] for request in server.requests)
    assert texts == ["01JA", "01JA", "01JB", "01JB"]  # at-least-once: the window the batched delete leaves


def test_events_queued_by_a_version_that_stored_payloads_are_delivered_after_the_upgrade(
    tmp_path: Path, server: RecordingServer
) -> None:
    rows = [
        legacy_row("01JOLDA", enqueued_at_ms=int(time.time() * 1000)),
        legacy_row("01JOLDB", enqueued_at_ms=int(time.time() * 1000)),
    ]
    write_legacy_outbox(tmp_path / "state", rows)
    upgraded = Exporter(tmp_path / "state", server)
    try:
        upgraded.start()
        upgraded.stage("01JNEW")
        eventually(lambda: upgraded.deliveries("sent") == 3)
        by_run = {request.json["text"].split()[1]: request.json for request in server.requests}  # sent together
        old_a, old_b, new = by_run["01JOLDA"], by_run["01JOLDB"], by_run["01JNEW"]
        # as stored, but for the date: the stored event is older than Datadog's window for date_happened
        assert [old_a, old_b] == [{k: v for k, v in json.loads(row[1]).items() if k != "date_happened"} for row in rows]
        assert "01JNEW" in new["text"] and "environment:test" in new["tags"]
        assert upgraded.outbox.depth() == 0
    finally:
        upgraded.close()


def test_an_unreadable_stored_payload_is_given_up_and_the_rest_delivered(
    tmp_path: Path, server: RecordingServer
) -> None:
    now_ms = int(time.time() * 1000)
    corrupt = ("01JCORRUPT", "{not json", now_ms, 0, now_ms)
    write_legacy_outbox(tmp_path / "state", [corrupt, legacy_row("01JFINE", enqueued_at_ms=now_ms)])
    upgraded = Exporter(tmp_path / "state", server)
    try:
        upgraded.start()
        eventually(lambda: upgraded.deliveries("sent") == 1)
        assert upgraded.deliveries("gave_up") == 1
        (request,) = server.requests
        assert "01JFINE" in request.json["text"]
        assert upgraded.outbox.depth() == 0
    finally:
        upgraded.close()
