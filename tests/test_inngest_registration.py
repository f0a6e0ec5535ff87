"""Registering the exporter's Inngest app again when the evidence events change: failures are retried and told once."""

from __future__ import annotations

import logging
from typing import Any, Iterator

import pytest
from flask import Flask

from exporter.inngest_registration import ServedFunctions
from exporter.ingress_inngest import SERVE_PATH, build_client, build_functions
from exporter.settings import Settings, load_settings
from tests.support.payloads import SIGNING_KEY
from tests.support.recording_server import RecordingServer, server_error

OWN_URL = "http://exporter.example:9469/api/inngest"
FAILED = "the exporter's Inngest app: registering its new triggers failed"


class SubscribingCore:
    """What ServedFunctions asks of the core: the settings and the events to subscribe to (changed by the test)."""

    def __init__(self, settings: Settings, own_url: str | None) -> None:
        self.settings = settings
        self.names = ["shop/order.cancelled"]
        self.own_url = own_url

    def signal_subscription(self) -> tuple[list[str], str | None]:
        return self.names, self.own_url


@pytest.fixture
def inngest_api() -> Iterator[RecordingServer]:
    with RecordingServer() as server:
        yield server


def served(inngest_api: RecordingServer, own_url: str | None = OWN_URL) -> tuple[ServedFunctions, SubscribingCore]:
    """The exporter's Inngest app, registering with `inngest_api`; Inngest has synced it at `own_url` (None: not yet)."""
    settings = load_settings({
        "INNGEST_SIGNING_KEY": SIGNING_KEY, "INNGEST_API_BASE_URL": inngest_api.url, "EXPORTER_DISCOVERY": "off",
    })
    core = SubscribingCore(settings, own_url)
    client = build_client(settings)
    functions = ServedFunctions(
        Flask(__name__), client, core, lambda names: build_functions(client, core, names), serve_path=SERVE_PATH,  # type: ignore[arg-type]
    )
    return functions, core


def registered_events(request: Any) -> set[str]:
    return {trigger["event"] for function in request.json["functions"] for trigger in function["triggers"]}


def test_a_failed_registration_is_told_once_retried_at_each_check_and_its_success_said(
    inngest_api: RecordingServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Inngest's API answers its errors as JSON (`{"error": ...}`): the SDK's own sync takes them for a success."""
    functions, core = served(inngest_api)
    functions.check()
    assert inngest_api.requests == []  # nothing changed: nothing to register
    core.names = ["shop/order.cancelled", "shop/cart.abandoned"]
    inngest_api.script(server_error(), server_error())
    with caplog.at_level(logging.INFO, logger="exporter.inngest_registration"):
        functions.check()
        functions.check()  # the same failure again: retried, not told again
        functions.check()  # answered: registered
        functions.check()  # registered: nothing more to send
    assert [request.path for request in inngest_api.requests] == ["/fn/register"] * 3
    assert registered_events(inngest_api.requests[-1]) >= {"shop/order.cancelled", "shop/cart.abandoned"}
    messages = [record.getMessage() for record in caplog.records if record.name == "exporter.inngest_registration"]
    assert messages == [
        "the exporter's Inngest app now subscribes to 2 evidence events",
        f"{FAILED}: POST /fn/register for {OWN_URL}: HTTP 500 '{{\"errors\": [\"Internal Server Error\"]}}'",
        f"the exporter's Inngest app registered again at {OWN_URL} with 2 evidence events",
    ]


def test_without_the_url_inngest_syncs_the_app_at_nothing_is_sent_and_the_user_is_told_to_sync(
    inngest_api: RecordingServer, caplog: pytest.LogCaptureFixture
) -> None:
    functions, core = served(inngest_api, own_url=None)
    core.names = ["shop/order.cancelled", "shop/cart.abandoned"]
    with caplog.at_level(logging.WARNING, logger="exporter.inngest_registration"):
        functions.check()
        functions.check()
    assert inngest_api.requests == []
    assert [record.getMessage() for record in caplog.records] == [
        f"{FAILED}: the URL at which Inngest syncs this app is not known yet (GET /v2/apps lists it once the app "
        "is synced): sync the app in Inngest to apply them now"
    ]
