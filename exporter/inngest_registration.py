"""The exporter's Inngest functions, kept subscribed to the evidence events of the functions' current definitions.

`record-cancel-signals[-N]` subscribe to every cancel signal and cancelling singleton
trigger the effective config names. When discovery changes that set, the functions
the SDK serves are swapped (the SDK reads its list on every request) and the app
registers itself again with Inngest as an out-of-band sync does (`POST /fn/register`,
signed with the signing key), at the URL at which Inngest last synced it; from then
on Inngest delivers the new events. A sync by Inngest (`PUT`) takes the current list
too, and once it succeeded the core reads the definitions again: an app may have
been synced with it.

The SDK's `flask.serve` keeps its handler to itself, so `inngest_sdk.ServedApp` builds it
with the same arguments and serves it with the SDK's own Flask route.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable

import inngest
from flask import Flask, Response, request

from exporter import clock, inngest_sdk
from exporter.failure_log import FailureLog
from exporter.core_api import Core
from exporter.periodic import PeriodicTask
from exporter.state import StateUnavailable

log = logging.getLogger(__name__)

SUBSCRIPTION_CHECK_SECONDS = 5.0
"""How often the HTTP worker asks the core whether the events to subscribe to changed."""

Build = Callable[[list[str]], list[inngest.Function[Any]]]


class ServedFunctions:
    """The exporter's Inngest app as the SDK serves it on `serve_path`, its triggers following the core's config."""

    def __init__(self, app: Flask, client: inngest.Inngest, exporter: Core, build: Build, *, serve_path: str) -> None:
        self._client = client
        self._exporter = exporter
        self._build = build
        self._serve_path = serve_path
        self._lock = threading.Lock()
        self._names, self._own_url = exporter.signal_subscription()
        self._served = inngest_sdk.ServedApp(app, client, build(self._names), serve_path=serve_path)
        app.before_request(self._before_sync)
        app.after_request(self._after_sync)
        self._unregistered = False
        """The events changed and registering them with Inngest has not succeeded yet."""
        self._failures = FailureLog(log, "the exporter's Inngest app: registering its new triggers", "attempts")
        if exporter.settings.discovers:
            PeriodicTask("inngest-subscription", SUBSCRIPTION_CHECK_SECONDS, self.check).start()

    def ids(self) -> frozenset[str]:
        """The ids of the functions served now."""
        return self._served.ids()

    def follow(self) -> bool:
        """Serve functions for the core's current events; True when they changed."""
        names, own_url = self._exporter.signal_subscription()
        with self._lock:
            self._own_url = own_url or self._own_url
            if names == self._names:
                return False
            self._served.replace(self._build(names))
            self._names = names
        log.info("the exporter's Inngest app now subscribes to %d evidence events", len(names))
        return True

    def check(self) -> None:
        """Follow the core, and register with Inngest when the events changed (or the last registration failed)."""
        if self.follow() or self._unregistered:
            self._unregistered = not self.register()

    def register(self) -> bool:
        """Register the app and its current functions with Inngest, at the URL Inngest knows it by; whether it took.

        A failure is logged when it starts, changes and every few minutes while it lasts (checks retry it every
        SUBSCRIPTION_CHECK_SECONDS), its end once.
        """
        url = self._own_url
        now_ms = clock.now_ms()
        if url is None:
            self._failures.count(now_ms)
            self._failures.tell(
                "no URL", "the URL at which Inngest syncs this app is not known yet (GET /v2/apps lists it once the app "
                "is synced): sync the app in Inngest to apply them now", now_ms,
            )
            return False
        problem = self._served.register(url, log)
        if problem is not None:
            kind, reason = problem
            self._failures.count(now_ms)
            self._failures.tell(kind, f"POST /fn/register for {url}: {reason}", now_ms)
            return False
        self._failures.ended()
        log.info("the exporter's Inngest app registered again at %s with %d evidence events", url, len(self._names))
        return True

    def _before_sync(self) -> None:
        """A sync registers the functions of the core's current events."""
        if request.path == self._serve_path and request.method == "PUT":
            try:
                self.follow()
            except StateUnavailable:
                pass  # the core is restarting: the sync registers the functions served so far

    def _after_sync(self, response: Response) -> Response:
        """After a sync that succeeded, the definitions are read again: apps are often synced together."""
        if request.path == self._serve_path and request.method == "PUT" and response.status_code == 200:
            try:
                self._exporter.refresh_definitions()
            except StateUnavailable:
                pass
        return response
