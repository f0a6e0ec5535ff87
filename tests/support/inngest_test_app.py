"""A user's Inngest app, on the official Python SDK, whose functions get cancelled by every path Inngest has.

Served over HTTP in the test process and synced by the real server, beside the
exporter. Each function exists to be cancelled one way; `EXPORTER_CONFIG` is what a
user would declare to the exporter for them. `SdkApp` serves any such app (the
storm benchmark's too).
"""

from __future__ import annotations

import datetime
import time
from typing import Any, Callable, TypeVar

import inngest
import inngest.flask
import requests
from flask import Flask

from tests.conftest import free_port
from tests.support.http import serve_in_thread

APP_ID = "e2e-shop"
HOLD = datetime.timedelta(minutes=10)
"""How long a run waits for its cancellation: longer than any test."""
START_TIMEOUT_S = 4
FINISH_TIMEOUT_S = 4
BUSY_S = 12.0
"""How long the concurrency-limited function's first run keeps its only slot, so later runs stay queued past START_TIMEOUT_S."""
SLOT_HELD_S = 45.0
"""How long SLOT_HOLDER keeps the slot it shares with QUEUED_PAST_FINISH: longer than that run waits to be cancelled."""
SHARED_SLOT = inngest.Concurrency(limit=1, key='"finish-queue"', scope="env")
"""One slot for two functions (a concurrency key scoped to the environment)."""

CANCEL_ON = "wait-for-cancel-event"
START_TIMEOUT = "queued-past-start-timeout"
FINISH_TIMEOUT = "runs-past-finish-timeout"
SINGLETON = "singleton-sync"
BATCHED = "batched-digest"
PLAIN = "plain-job"
SLOT_HOLDER = "holds-the-shared-slot"
QUEUED_PAST_FINISH = "queued-past-finish-timeout"
"""Has a finish timeout and waits behind SLOT_HOLDER for their one shared slot: it is cancelled by hand, never having
started, at an age past its finish timeout."""
RECORDER = "record-outcomes"
"""Subscribes to Inngest's own outcome events, so a test sees exactly what the exporter was sent."""

TRIGGERS = {
    CANCEL_ON: "shop/order.created",
    START_TIMEOUT: "shop/report.requested",
    FINISH_TIMEOUT: "shop/export.requested",
    SINGLETON: "shop/sync.requested",
    BATCHED: "shop/digest.item",
    PLAIN: "shop/job.requested",
    SLOT_HOLDER: "shop/slot.held",
    QUEUED_PAST_FINISH: "shop/backup.requested",
}
CANCEL_SIGNAL = "shop/order.cancelled"

EXPORTER_CONFIG: dict[str, Any] = {
    "functions": {
        f"{APP_ID}-{CANCEL_ON}": {
            "cancel_on": [{"event": CANCEL_SIGNAL, "if": "async.data.order_id == event.data.order_id", "timeout": "1h"}],
        },
        f"{APP_ID}-{START_TIMEOUT}": {"timeouts": {"start": f"{START_TIMEOUT_S}s"}},
        f"{APP_ID}-{FINISH_TIMEOUT}": {"timeouts": {"finish": f"{FINISH_TIMEOUT_S}s"}},
        f"{APP_ID}-{SINGLETON}": {
            "singleton": {"key": "event.data.account", "mode": "cancel"},
            "triggers": [TRIGGERS[SINGLETON]],
        },
        f"{APP_ID}-{BATCHED}": {"batch_events": True},
        f"{APP_ID}-{PLAIN}": {},
        f"{APP_ID}-{QUEUED_PAST_FINISH}": {"timeouts": {"finish": f"{FINISH_TIMEOUT_S}s"}},
    },
    "bulk_cancellations": {"poll_interval": "2s"},
}
"""What a user declares to the exporter for this app (JSON is YAML)."""


def build_functions(
    client: inngest.Inngest, started: dict[str, str], outcomes: list[dict[str, Any]]
) -> list[inngest.Function[Any]]:
    """The app's functions; `started` records each run the app saw begin (run id -> its trigger's name), `outcomes` the outcome events."""

    def wait(ctx: inngest.ContextSync) -> None:
        started.setdefault(ctx.run_id, ctx.event.name)
        ctx.step.sleep("wait-to-be-cancelled", HOLD)

    def busy(ctx: inngest.ContextSync) -> None:
        started.setdefault(ctx.run_id, ctx.event.name)
        ctx.step.run("hold-the-only-slot", lambda: time.sleep(BUSY_S))

    def hold_slot(ctx: inngest.ContextSync) -> None:
        # in the run's first request, with no step: the slot is taken by the time it is recorded as started
        started.setdefault(ctx.run_id, ctx.event.name)
        time.sleep(SLOT_HELD_S)

    def record(ctx: inngest.ContextSync) -> None:
        outcomes.append(ctx.event.model_dump(mode="json"))

    def make(fn_id: str, handler: Any, **options: Any) -> inngest.Function[Any]:
        return client.create_function(fn_id=fn_id, trigger=inngest.TriggerEvent(event=TRIGGERS[fn_id]), retries=0, **options)(handler)

    return [
        make(CANCEL_ON, wait, cancel=[inngest.Cancel(event=CANCEL_SIGNAL, if_exp="async.data.order_id == event.data.order_id", timeout=datetime.timedelta(hours=1))]),
        make(START_TIMEOUT, busy, concurrency=[inngest.Concurrency(limit=1)], timeouts=inngest.Timeouts(start=datetime.timedelta(seconds=START_TIMEOUT_S))),
        make(FINISH_TIMEOUT, wait, timeouts=inngest.Timeouts(finish=datetime.timedelta(seconds=FINISH_TIMEOUT_S))),
        make(SINGLETON, wait, singleton=inngest.Singleton(key="event.data.account", mode="cancel")),
        make(BATCHED, wait, batch_events=inngest.Batch(max_size=3, timeout=datetime.timedelta(seconds=1))),
        make(PLAIN, wait),
        make(SLOT_HOLDER, hold_slot, concurrency=[SHARED_SLOT]),
        make(QUEUED_PAST_FINISH, wait, concurrency=[SHARED_SLOT], timeouts=inngest.Timeouts(finish=datetime.timedelta(seconds=FINISH_TIMEOUT_S))),
        client.create_function(
            fn_id=RECORDER,
            retries=0,
            trigger=[
                inngest.TriggerEvent(event="inngest/function.cancelled"),
                # not its own finished runs: each would trigger another
                inngest.TriggerEvent(event="inngest/function.finished", expression=f"event.data.function_id != '{APP_ID}-{RECORDER}'"),
            ],
        )(record),
    ]


_App = TypeVar("_App", bound="SdkApp")


class SdkApp:
    """A user's Inngest app on the official Python SDK, on werkzeug's threaded server in this process; a context manager.

    Production mode with a signing key (`inngest start`), development mode without one
    (`inngest dev`); `build` makes its functions on the client.
    """

    def __init__(
        self, app_id: str, *, server_url: str, signing_key: str | None,
        build: Callable[[inngest.Inngest], list[inngest.Function[Any]]],
    ) -> None:
        self.app_id = app_id
        self.port = free_port()
        self.serve_url = f"http://127.0.0.1:{self.port}/api/inngest"
        self._client = inngest.Inngest(
            app_id=app_id,
            is_production=signing_key is not None,
            signing_key=signing_key,
            api_base_url=server_url,
            event_api_base_url=server_url,
        )
        self._build = build

    def __enter__(self: _App) -> _App:
        app = Flask(self.app_id)
        inngest.flask.serve(app, self._client, self._build(self._client))
        self._server, self._thread = serve_in_thread(app, self.port, self.app_id)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._thread.join(10)

    def redeploy(self, build: Callable[[inngest.Inngest], list[inngest.Function[Any]]]) -> None:
        """Deploy a new version of the app at the same URL, with the functions `build` makes, and sync it as a user
        does after a deploy (`PUT` on its serve URL: the SDK registers the app with the server)."""
        self.__exit__()
        self._build = build
        self.__enter__()
        response = requests.put(self.serve_url, timeout=30)
        if response.status_code != 200:
            raise AssertionError(f"re-syncing {self.app_id} failed: {response.status_code} {response.text[:500]}")


class TestApp(SdkApp):
    """The shop: every way of being cancelled, and a recorder of what Inngest sent."""

    __test__ = False  # not a pytest test class

    def __init__(self, *, server_url: str, signing_key: str | None) -> None:
        self.started: dict[str, str] = {}
        self.outcomes: list[dict[str, Any]] = []
        super().__init__(
            APP_ID, server_url=server_url, signing_key=signing_key,
            build=lambda client: build_functions(client, self.started, self.outcomes),
        )
