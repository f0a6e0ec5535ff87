"""`/api/inngest` driven over HTTP exactly as an Inngest server drives it: sync, then invoke."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import inngest
import inngest.flask
import pytest
import ulid
from flask import Flask
from inngest.experimental import mocked

from exporter.app import create_app
from exporter.config import Config
from exporter.ingress_inngest import APP_ID, build_functions
from exporter.parsing import CANCELLED
from exporter.settings import load_settings
from exporter.state import StateUnavailable
from tests.conftest import ServeProcess, free_port
from tests.support.http import serve_in_thread
from tests.support.inngest_driver import MAX_ATTEMPTS, InngestDriver, SyncedFunction
from tests.support.payloads import FALLBACK_KEY, OTHER_KEY, SIGNING_KEY, cancellation, fixture_event

FUNCTION_ID = f"{APP_ID}-record-cancellation"


class InProcessServe(ServeProcess):
    """The same app and settings on werkzeug's threaded server in this process, for faults injected in-process."""

    def start(self) -> "InProcessServe":
        self.app = create_app(load_settings(self._env), Config(), self._env)
        self._server, self._thread = serve_in_thread(self.app, self.port, f"wsgi-{self.port}")
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        self._server.shutdown()
        self._thread.join(timeout)
        self.app.extensions["exporter"].stop(timeout)
        return 0


@pytest.fixture
def exporter_server(serve: Callable[..., ServeProcess]) -> Callable[..., ServeProcess]:
    """The real `serve` process, settings from `env`."""
    return serve


@pytest.fixture
def in_process_server(tmp_path: Path) -> Iterator[Callable[..., InProcessServe]]:
    """Exporters served in this process (settings from `env`); each is stopped at the end."""
    started: list[InProcessServe] = []

    def start(**env: str) -> InProcessServe:
        server = InProcessServe(tmp_path / f"state-{len(started)}", env, []).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def cancellations(server: ServeProcess, function_id: str = "demo-app-export") -> float | None:
    return server.metric("inngest_function_cancellations_total", {"function_id": function_id, "source": "unknown"})


def received(server: ServeProcess, outcome: str) -> float | None:
    return server.metric("inngest_cancellation_exporter_events_received_total", {"ingress": "inngest", "outcome": outcome})


def test_signed_in_band_sync_registers_the_cancellation_function(exporter_server: Callable[..., ServeProcess]) -> None:
    server = exporter_server()
    app = InngestDriver(server.url, SIGNING_KEY).sync()
    assert app.app_id == APP_ID
    function = app.function_for(CANCELLED)
    assert (function.id, function.triggers) == (FUNCTION_ID, [CANCELLED])
    assert function.url == f"{server.url}/api/inngest?fnId={FUNCTION_ID}&stepId=step"
    assert app.body["inspection"]["mode"] == "cloud"


@pytest.mark.parametrize("key", [None, OTHER_KEY], ids=["unsigned", "wrong-key"])
def test_sync_is_refused_without_the_signing_key(exporter_server: Callable[..., ServeProcess], key: str | None) -> None:
    server = exporter_server()
    assert InngestDriver(server.url, key).in_band_sync().status_code == 401
    assert received(server, "unauthorized") == 1.0


def test_unsigned_out_of_band_sync_cannot_register_the_app_at_another_url(
    exporter_server: Callable[..., ServeProcess],
) -> None:
    # were it allowed, the SDK would register this Host with the Inngest API (here a closed port)
    server = exporter_server(INNGEST_API_BASE_URL=f"http://127.0.0.1:{free_port()}")
    response = InngestDriver(server.url, None).send("PUT", f"{server.url}/api/inngest", {}, {"Host": "attacker.example"})
    assert response.status_code == 401


def test_fixture_cancellation_is_counted_once_however_often_inngest_delivers_it(
    exporter_server: Callable[..., ServeProcess],
) -> None:
    server = exporter_server()
    driver = InngestDriver(server.url, SIGNING_KEY)
    function = driver.sync().function_for(CANCELLED)
    first = driver.invoke(function, cancellation())
    assert (first.status, first.body, first.requests) == (200, {"accepted": 1, "duplicates": 0, "ignored": 0, "signals": 0, "pending": 0}, 1)
    assert cancellations(server) == 1.0
    redelivered = driver.invoke(function, cancellation())  # a new run of our function, the same event
    assert redelivered.run_id != first.run_id
    assert (redelivered.status, redelivered.body["duplicates"]) == (200, 1)
    assert cancellations(server) == 1.0
    assert (received(server, "accepted"), received(server, "duplicate")) == (1.0, 1.0)


def test_documented_older_payload_with_error_is_counted_too(exporter_server: Callable[..., ServeProcess]) -> None:
    """Older servers (and Inngest's documentation) send `data.error` and no `_inngest`; v1.43 the other way round."""
    server = exporter_server()
    driver = InngestDriver(server.url, SIGNING_KEY)
    event = fixture_event("seed-cancelled-export.json")
    assert "error" in event["data"] and "_inngest" not in event["data"]
    assert driver.invoke(driver.sync().function_for(CANCELLED), event).status == 200
    assert cancellations(server) == 1.0


def test_stale_signature_is_refused_and_not_counted(exporter_server: Callable[..., ServeProcess]) -> None:
    server = exporter_server()
    function = InngestDriver(server.url, SIGNING_KEY).sync().function_for(CANCELLED)
    stale = InngestDriver(server.url, SIGNING_KEY, clock=lambda: time.time() - 360)
    result = stale.invoke(function, cancellation())
    assert result.status == 401
    assert "more than 300 seconds from now" in result.body["error"]
    assert cancellations(server) is None
    assert received(server, "unauthorized") == result.requests == MAX_ATTEMPTS  # each retry refused and counted


@pytest.mark.parametrize("key", [SIGNING_KEY, FALLBACK_KEY], ids=["current", "fallback"])
def test_both_keys_work_during_a_rotation_whatever_the_process_environment_says(
    in_process_server: Callable[..., InProcessServe], monkeypatch: pytest.MonkeyPatch, key: str
) -> None:
    # the SDK reads these by itself; the exporter's settings must win
    monkeypatch.setenv("INNGEST_DEV", "1")
    monkeypatch.setenv("INNGEST_SIGNING_KEY_FALLBACK", OTHER_KEY)
    server = in_process_server(INNGEST_SIGNING_KEY_FALLBACK=FALLBACK_KEY)
    driver = InngestDriver(server.url, key)
    assert driver.invoke(driver.sync().function_for(CANCELLED), cancellation()).status == 200
    assert cancellations(server) == 1.0
    assert InngestDriver(server.url, OTHER_KEY).in_band_sync().status_code == 401
    assert InngestDriver(server.url, None).in_band_sync().status_code == 401


def test_invalid_cancellation_fails_once_without_retries_and_is_counted(exporter_server: Callable[..., ServeProcess]) -> None:
    server = exporter_server()
    driver = InngestDriver(server.url, SIGNING_KEY)
    event = cancellation()
    del event["data"]["run_id"]
    result = driver.invoke(driver.sync().function_for(CANCELLED), event)
    assert (result.status, result.no_retry, result.requests) == (500, True, 1)
    assert result.body["name"] == "NonRetriableError"
    assert result.body["message"] == "data.run_id: missing: expected a non-empty string"
    assert received(server, "invalid") == 1.0
    assert cancellations(server) is None


def test_refusals_that_cannot_succeed_tell_inngest_not_to_retry(exporter_server: Callable[..., ServeProcess]) -> None:
    """Inngest retries any 4xx without `X-Inngest-No-Retry: true`; a malformed request or an unknown function never passes."""
    server = exporter_server()
    driver = InngestDriver(server.url, SIGNING_KEY)
    function = driver.sync().function_for(CANCELLED)
    unknown = SyncedFunction("no-such-function", [CANCELLED], function.url.replace("record-cancellation", "no-such-function"))
    result = driver.invoke(unknown, cancellation())
    assert (result.status, result.no_retry, result.requests) == (404, True, 1)
    malformed = driver.send("POST", function.url, {"ctx": "not a context"})
    assert (malformed.status_code, malformed.headers.get("X-Inngest-No-Retry")) == (400, "true")
    stale = InngestDriver(server.url, SIGNING_KEY, clock=lambda: time.time() - 360).invoke(function, cancellation())
    assert (stale.status, stale.no_retry) == (401, False)  # retried: a key or clock put right lets a retry through
    assert cancellations(server) is None


def test_unwritable_state_makes_inngest_retry_the_run(
    in_process_server: Callable[..., InProcessServe], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = in_process_server()
    pipeline = server.app.extensions["exporter"].pipeline
    ingest = pipeline.ingest
    failures = iter([StateUnavailable("disk full")])

    def flaky_ingest(*args: Any) -> Any:
        for failure in failures:
            raise failure
        return ingest(*args)

    monkeypatch.setattr(pipeline, "ingest", flaky_ingest)
    driver = InngestDriver(server.url, SIGNING_KEY)
    result = driver.invoke(driver.sync().function_for(CANCELLED), cancellation())
    assert (result.status, result.requests) == (200, 2)
    assert cancellations(server) == 1.0
    assert received(server, "unavailable") == 1.0


def test_production_without_a_signing_key_says_what_is_missing(make_app: Callable[..., Flask]) -> None:
    response = make_app(INNGEST_SIGNING_KEY="").test_client().get("/api/inngest")
    assert response.status_code == 503
    assert "INNGEST_SIGNING_KEY" in response.get_json()["error"]


def test_function_body_records_through_the_pipeline(make_app: Callable[..., Flask]) -> None:
    exporter = make_app().extensions["exporter"]
    client = mocked.Inngest(app_id=APP_ID, is_production=False)
    function = build_functions(client, exporter, [])[0]
    event = inngest.Event(**cancellation())
    outputs = [mocked.trigger(function, event, client).output for _ in range(2)]
    assert [output["accepted"] for output in outputs] == [1, 0]
    assert exporter.registry.get_sample_value(
        "inngest_function_cancellations_total", {"function_id": "demo-app-export", "source": "unknown"}
    ) == 1.0


def test_driver_feeds_step_results_back_until_the_function_returns() -> None:
    """The driver's 206 loop, against the SDK itself: each step.run answers 206 and is memoised."""
    app = Flask("steps")
    client = inngest.Inngest(app_id="steps", is_production=True, signing_key=SIGNING_KEY)

    @client.create_function(fn_id="two-steps", trigger=inngest.TriggerEvent(event="test/go"))
    def two_steps(ctx: inngest.ContextSync) -> list[Any]:
        first = ctx.step.run("first", lambda: ctx.event.data["n"] + 1)
        return [first, ctx.step.run("second", lambda: first * 10)]

    inngest.flask.serve(app, client, [two_steps])
    server, thread = serve_in_thread(app, free_port(), "wsgi-steps")
    try:
        driver = InngestDriver(f"http://127.0.0.1:{server.server_port}", SIGNING_KEY)
        result = driver.invoke(driver.sync().function_for("test/go"), {"name": "test/go", "data": {"n": 1}, "id": "e1", "ts": 1})
    finally:
        server.shutdown()
        thread.join()
    assert (result.status, result.body, result.requests) == (200, [2, 20], 3)


def test_development_mode_runs_unsigned_invocations(exporter_server: Callable[..., ServeProcess]) -> None:
    # the dev server syncs out of band (the app registers itself), so the function is addressed directly
    server = exporter_server(INNGEST_DEV="1")
    function = SyncedFunction(FUNCTION_ID, [CANCELLED], f"{server.url}/api/inngest?fnId={FUNCTION_ID}&stepId=step")
    assert InngestDriver(server.url, None).invoke(function, cancellation()).status == 200
    assert cancellations(server) == 1.0


def _rules(names: list[str]) -> str:
    return ", ".join(f'{{event: "{name}", if: "async.data.job == event.data.job"}}' for name in names)


@pytest.mark.parametrize(
    ("declared", "split", "source"),
    [
        # twelve signals: more than Inngest's ten triggers per function, so they are split
        (
            f"demo-app-export: {{cancel_on: [{_rules([f'export/cancelled-{i}' for i in range(11)] + ['integrations/export.cancelled'])}]}}",
            [1, 2, 10],
            "event",
        ),
        # nine signals (of another function) and two triggers of a singleton that cancels: eleven events, split alike
        (
            f"demo-app-other: {{cancel_on: [{_rules([f'export/cancelled-{i}' for i in range(9)])}]}}\n"
            "  demo-app-export: {singleton: {key: event.data.job, mode: cancel}, triggers: [shop/job.requested, integrations/export.cancelled]}",
            [1, 1, 10],
            "singleton",
        ),
    ],
    ids=["cancel signals", "singleton triggers"],
)
def test_evidence_arrives_through_inngest_and_explains_the_cancellation(
    exporter_server: Callable[..., ServeProcess], tmp_path: Path, declared: str, split: list[int], source: str
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"functions:\n  {declared}\n")
    server = exporter_server("--config", str(config))
    driver = InngestDriver(server.url, SIGNING_KEY)
    app = driver.sync()
    assert sorted(len(function.triggers) for function in app.functions) == split
    run = cancellation()  # triggered by `shop/job.requested`
    evidence = {
        "name": "integrations/export.cancelled",
        "id": str(ulid.ULID.from_timestamp((run["ts"] - 1000) / 1000)),  # received a second before the cancellation
        "ts": run["ts"] - 1000,
        "data": {"job": run["data"]["event"]["data"]["job"]},
    }
    assert driver.invoke(app.function_for("integrations/export.cancelled"), evidence).body["signals"] == 1
    assert driver.invoke(app.function_for(CANCELLED), run).status == 200
    assert server.metric("inngest_function_cancellations_total", {"function_id": "demo-app-export", "source": source}) == 1.0
