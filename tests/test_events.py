"""`POST /events` and the operational endpoints, as a forwarder and a scraper see them."""

from __future__ import annotations

import copy
import json
from typing import Any, Callable

import pytest
import ulid
from flask import Flask
from flask.testing import FlaskClient

from exporter import signature
from tests.support.exposition import Labels
from tests.support.exposition import samples as exposition_samples
from tests.support.payloads import FALLBACK_KEY, INGEST_TOKEN, SIGNING_KEY, cancellation

AUTH = {"Authorization": f"Bearer {INGEST_TOKEN}"}


def post(client: FlaskClient, body: Any, headers: dict[str, str] = AUTH) -> Any:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post("/events", data=data, headers={"Content-Type": "application/json", **headers})


def samples(client: FlaskClient, name: str) -> dict[Labels, float]:
    return exposition_samples(client.get("/metrics").get_data(as_text=True), name)


@pytest.fixture
def client(make_app: Callable[..., Flask]) -> FlaskClient:
    return make_app({"labels": {"environment": "test"}}).test_client()


def test_cancellation_is_counted_once_with_its_age_and_constant_labels(client: FlaskClient) -> None:
    response = post(client, cancellation())
    assert response.status_code == 200
    assert response.get_json() == {"accepted": 1, "duplicates": 0, "ignored": 0, "signals": 0, "pending": 0}
    assert post(client, cancellation()).get_json()["duplicates"] == 1
    twin = cancellation()
    twin["name"] = "inngest/function.finished"
    twin["data"]["_inngest"] = {"status": "Cancelled"}
    assert post(client, twin).get_json()["duplicates"] == 1
    labels = (("environment", "test"), ("function_id", "demo-app-export"), ("source", "unknown"))
    assert samples(client, "inngest_function_cancellations_total") == {labels: 1.0}
    # the captured run was cancelled 29.938 s after it was scheduled (its run id's time)
    assert samples(client, "inngest_function_cancelled_run_age_seconds_sum") == {labels: pytest.approx(29.938)}
    buckets = samples(client, "inngest_function_cancelled_run_age_seconds_bucket")
    assert buckets[(*labels[:2], ("le", "15.0"), labels[2])] == 0.0
    assert buckets[(*labels[:2], ("le", "30.0"), labels[2])] == 1.0


def test_batch_counts_each_run_and_ignores_other_events(client: FlaskClient) -> None:
    batch = [cancellation(f"run-{i}") for i in range(3)] + [{"name": "app/user.created", "data": {}}, cancellation("run-0")]
    assert post(client, batch).get_json() == {"accepted": 3, "duplicates": 1, "ignored": 1, "signals": 0, "pending": 0}


def test_invalid_event_in_a_batch_is_named_and_nothing_is_recorded(client: FlaskClient) -> None:
    bad = cancellation("run-9")
    del bad["data"]["run_id"]
    response = post(client, [cancellation("run-1"), bad])
    assert response.status_code == 400
    assert response.get_json() == {"error": "events[1].data.run_id: missing: expected a non-empty string"}
    assert post(client, cancellation("run-1")).get_json()["accepted"] == 1
    assert samples(client, "inngest_cancellation_exporter_events_received_total")[
        (("ingress", "events"), ("outcome", "invalid"))
    ] == 1.0


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "missing credentials"),
        ({"Authorization": "Bearer wrong"}, "bearer token does not match"),
        ({signature.HEADER: "t=1&s=00"}, "more than 300 seconds"),
        ({signature.HEADER: "nonsense"}, "malformed"),
    ],
)
def test_unauthenticated_requests_are_refused_and_counted(client: FlaskClient, headers: dict[str, str], message: str) -> None:
    response = post(client, cancellation(), headers)
    assert response.status_code == 401
    assert message in response.get_json()["error"]
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="inngest-cancellation-exporter"'  # RFC 9110: a 401 says how
    assert INGEST_TOKEN not in response.get_data(as_text=True)
    assert samples(client, "inngest_function_cancellations_total") == {}


@pytest.mark.parametrize("key", [SIGNING_KEY, FALLBACK_KEY])
def test_signed_requests_are_accepted_with_current_and_fallback_keys(make_app: Callable[..., Flask], key: str) -> None:
    client = make_app(INNGEST_SIGNING_KEY_FALLBACK=FALLBACK_KEY).test_client()
    body = json.dumps(cancellation()).encode()
    assert post(client, body, {signature.HEADER: signature.sign(body, key)}).status_code == 200


def test_development_mode_needs_no_credentials(make_app: Callable[..., Flask]) -> None:
    client = make_app(INNGEST_DEV="1", INNGEST_SIGNING_KEY="", EXPORTER_INGEST_TOKEN="").test_client()
    assert post(client, cancellation(), {}).status_code == 200


def test_default_limits_take_a_thousand_events_and_five_mebibytes(client: FlaskClient) -> None:
    batch = [cancellation(f"run-{i}") for i in range(1000)]
    batch[0]["data"]["event"]["data"]["padding"] = "x" * (5 * 1024 * 1024)
    response = post(client, batch)
    assert response.status_code == 200 and response.get_json()["accepted"] == 1000


def test_limits_are_configurable_and_refusals_say_so(make_app: Callable[..., Flask]) -> None:
    client = make_app(EXPORTER_MAX_BODY_BYTES="1024", EXPORTER_MAX_BATCH_EVENTS="2").test_client()
    response = post(client, [cancellation("a"), cancellation("b"), cancellation("c")])
    assert response.status_code == 413
    assert response.get_json() == {"error": "body is larger than the limit of 1024 bytes"}
    assert samples(client, "inngest_cancellation_exporter_events_received_total")[
        (("ingress", "events"), ("outcome", "too_large"))
    ] == 1.0
    small = [{"name": "x"}] * 3
    assert post(client, small).get_json() == {"error": "batch has 3 events, more than the limit of 2"}


def test_wrong_content_type_is_refused(client: FlaskClient) -> None:
    response = post(client, cancellation(), {**AUTH, "Content-Type": "text/plain"})
    assert response.status_code == 415 and "application/json" in response.get_json()["error"]


def test_function_id_cap_folds_new_ids_without_losing_counts(make_app: Callable[..., Flask]) -> None:
    client = make_app(EXPORTER_MAX_FUNCTIONS="3").test_client()
    post(client, [cancellation(f"run-{i}", f"app-fn-{i}") for i in range(5)])
    counts = samples(client, "inngest_function_cancellations_total")
    by_function = {dict(labels)["function_id"]: value for labels, value in counts.items()}
    assert by_function == {"app-fn-0": 1.0, "app-fn-1": 1.0, "app-fn-2": 1.0, "_overflow": 2.0}
    assert samples(client, "inngest_cancellation_exporter_function_id_overflow_total") == {(): 2.0}


def test_metrics_speak_openmetrics_when_asked(client: FlaskClient) -> None:
    post(client, cancellation())
    response = client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert response.content_type.startswith("application/openmetrics-text")
    assert response.get_data(as_text=True).endswith("# EOF\n")


def test_health_and_readiness(client: FlaskClient) -> None:
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").get_json() == {"status": "ready"}
    assert client.get("/nope").get_json()["error"]


EXPLAINED_BY_EXPORT_CANCELLED = pytest.mark.parametrize(
    ("declared", "source"),
    [
        ({"cancel_on": [{"event": "integrations/export.cancelled", "if": "async.data.job == event.data.job"}]}, "event"),
        ({"singleton": {"key": "event.data.job", "mode": "cancel"}, "triggers": ["integrations/export.cancelled"]}, "singleton"),
    ],
    ids=["cancel signal", "singleton trigger"],
)
"""`demo-app-export` declared so that `integrations/export.cancelled` for its run's job explains its cancellation."""


@EXPLAINED_BY_EXPORT_CANCELLED
def test_a_signal_arriving_after_its_cancellation_releases_the_held_run_at_once(
    make_app: Callable[..., Flask], declared: dict[str, Any], source: str
) -> None:
    """Inngest delivers the cancellation and its signal (or newer trigger) as separate runs, in either order: no grace
    period is waited out."""
    config = {"functions": {"demo-app-export": declared, "demo-app-other": {"cancel_on": [{"event": "other/stop"}]}}}
    client = make_app(config, EXPORTER_ATTRIBUTION_GRACE="1h").test_client()
    run, other = cancellation(), cancellation("01JDJKGTGDVV4DTXHY6XYB7BKM", "demo-app-other")
    assert post(client, [run, other]).get_json()["pending"] == 2
    signal_event = {
        "name": "integrations/export.cancelled",
        "id": str(ulid.ULID.from_timestamp((run["ts"] - 1000) / 1000)),
        "ts": run["ts"] - 1000,
        "data": {"job": run["data"]["event"]["data"]["job"]},
    }
    assert post(client, signal_event).get_json()["signals"] == 1
    assert samples(client, "inngest_function_cancellations_total") == {
        (("function_id", "demo-app-export"), ("source", source)): 1.0,  # the other function's run still waits
    }
    assert samples(client, "inngest_cancellation_exporter_pending_classifications") == {(): 1.0}


@EXPLAINED_BY_EXPORT_CANCELLED
def test_signal_is_recorded_as_evidence_and_explains_a_later_cancellation(
    make_app: Callable[..., Flask], declared: dict[str, Any], source: str
) -> None:
    client = make_app({"functions": {"demo-app-export": declared}}).test_client()
    run = cancellation()
    signal_event = {
        "name": "integrations/export.cancelled",
        "ts": run["ts"] - 1000,
        "data": {"job": copy.deepcopy(run["data"]["event"]["data"]["job"])},
    }
    assert post(client, signal_event).get_json()["signals"] == 1
    post(client, run)
    counts = samples(client, "inngest_function_cancellations_total")
    assert counts == {(("function_id", "demo-app-export"), ("source", source)): 1.0}
