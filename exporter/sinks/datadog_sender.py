"""Delivers the outbox's events to Datadog's Events API, from one background thread.

Retries belong to the outbox, not to the HTTP client: they must outlive a restart and
must never hold a request thread, so the client's own retries are off and a failed
attempt is rescheduled in the state database instead. A failure that concerns Datadog
as a whole (5xx, 429, timeouts, refused connections) pauses all deliveries for the
backoff, so an outage costs a trickle of probes rather than one failed request per
queued event. A rejected API key (401, 403) is treated the same way: it is the
operator's to fix, and the events must still be there when it is. A refusal of one
event (any other 4xx) gives that event up at once.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from dataclasses import dataclass
from typing import Mapping

from datadog_api_client import ApiClient, Configuration
from datadog_api_client.exceptions import ApiException
from datadog_api_client.v1.api.events_api import EventsApi
from urllib3.util import Retry

from exporter.health import HealthMetrics
from exporter.settings import Settings
from exporter.sinks.datadog_event import to_request
from exporter.sinks.datadog_outbox import DatadogOutbox, OutboxRow

log = logging.getLogger(__name__)

RATE_LIMIT_RESET_HEADER = "x-ratelimit-reset"
"""Datadog's answer to 429: seconds until the rate-limit window resets."""
_RETRIED_CLIENT_ERRORS = frozenset({401, 403, 408})
"""4xx answers about the key or the connection, not the event: retried until the give-up time."""
_MAX_EXPONENT = 32
"""Beyond this the cap has long been reached; it only keeps the arithmetic finite."""


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with jitter, so that many exporters do not retry in step after an outage."""

    initial: float = 1.0
    cap: float = 300.0

    def delay(self, failures: int) -> float:
        """Seconds to wait after the `failures`-th failure in a row: a random point in the upper half."""
        ceiling = min(self.cap, self.initial * 2 ** min(failures - 1, _MAX_EXPONENT))
        return random.uniform(ceiling / 2, ceiling)


@dataclass(frozen=True, slots=True)
class _Failure:
    """What a failed attempt means for the event and for the next ones."""

    description: str
    """For the log and the outbox's `last_error`; never holds the API key (it travels only in a request header)."""
    permanent: bool
    """Datadog refused this event itself: retrying cannot help."""
    retry_after: float | None = None
    """Datadog said how long to wait (429)."""


def _classify(err: Exception) -> _Failure:
    """Retry what may pass later (transport errors, 401/403, 408, 429, 5xx); give up what Datadog refused (other 4xx)."""
    if isinstance(err, ApiException):
        status = err.status or 0  # 0: a TLS failure, reported by the client without a response
        description = f"HTTP {status} {err.reason}: {err.body}" if err.body else f"HTTP {status} {err.reason}"
        if status == 429:
            return _Failure(description, permanent=False, retry_after=_reset_seconds(err.headers or {}))
        return _Failure(description, permanent=400 <= status < 500 and status not in _RETRIED_CLIENT_ERRORS)
    # ValueError/TypeError: a stored payload the client's model refuses, which no retry can fix.
    # Anything else (urllib3's timeouts and connection errors among them) may pass later.
    return _Failure(f"{type(err).__name__}: {err}", permanent=isinstance(err, (ValueError, TypeError)))


def _reset_seconds(headers: Mapping[str, str]) -> float | None:
    """The rate-limit reset from a 429's headers (their case varies by proxy), or None when absent or malformed."""
    for name, value in headers.items():
        if name.lower() == RATE_LIMIT_RESET_HEADER:
            try:
                return max(0.0, float(value))
            except ValueError:
                return None
    return None


def client_configuration(settings: Settings, request_timeout: float) -> Configuration:
    """A client configuration for `settings`: EXPORTER_DATADOG_URL when set, else the DD_SITE server."""
    config = Configuration(
        api_key={"apiKeyAuth": settings.dd_api_key},
        request_timeout=request_timeout,
        retry_policy=Retry(total=0),
        # Datadog has the event once it answers 2xx: an unexpected body must not cause a resend.
        check_return_type=False,
    )
    if settings.datadog_url:
        config.host = settings.datadog_url.rstrip("/")
    else:
        # Set after construction: Configuration also reads DD_SITE from the environment, and settings win.
        config.server_variables["site"] = settings.dd_site
    try:
        config.host  # resolves the site: an unknown one raises here, at startup, not at the first send
    except ValueError as err:
        raise ValueError(f"DD_SITE: {err}") from None
    return config


class DatadogSender:
    """Drains a `DatadogOutbox` into Datadog from a daemon thread; see the module docstring for the policy."""

    def __init__(
        self,
        outbox: DatadogOutbox,
        settings: Settings,
        health: HealthMetrics,
        *,
        request_timeout: float = 10.0,
        backoff: Backoff = Backoff(),
        poll_interval: float = 5.0,
        batch_size: int = 100,
    ) -> None:
        if not settings.dd_api_key:
            raise ValueError("DD_API_KEY is not set: Datadog forwarding is off")
        self._configuration = client_configuration(settings, request_timeout)
        self._outbox = outbox
        self._health = health
        self._give_up_after_ms = int(settings.datadog_give_up_after * 1000)
        self._backoff = backoff
        self._poll_interval = poll_interval
        self._batch_size = batch_size
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        # Touched only by the sender thread.
        self._failures_in_a_row = 0
        self._paused_until_ms = 0
        outbox.on_stage(self.notify)
        health.gauge_from("datadog_outbox_depth", "Datadog events waiting in the durable outbox.", outbox.depth)

    def start(self) -> None:
        """Start delivering, beginning with whatever a previous process left in the outbox."""
        log.info("Datadog events go to %s", self._configuration.host)
        self._thread = threading.Thread(target=self._run, name="datadog-sender", daemon=True)
        self._thread.start()

    def notify(self) -> None:
        """Wake the sender: an event was staged and should go now, not at the next poll."""
        self._wake.set()

    def stop(self, timeout: float) -> None:
        """Stop within `timeout` seconds; an event still in flight or undelivered stays queued for the next start."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        with ApiClient(self._configuration) as client:
            api = EventsApi(client)
            while not self._stopping.is_set():
                self._wake.clear()
                try:
                    self._drain(api)
                    idle = self._idle_seconds()
                except Exception:  # a broken state file or a bug must not end deliveries for good
                    if self._stopping.is_set():
                        return  # the state was closed under an attempt that outlived stop()
                    log.exception("Datadog sender failed; trying again in %ss", self._poll_interval)
                    idle = self._poll_interval
                self._wake.wait(idle)

    def _drain(self, api: EventsApi) -> None:
        """Send the due events until one shows that Datadog is failing."""
        now_ms = _now_ms()
        if now_ms < self._paused_until_ms:
            return
        for row in self._outbox.due(now_ms, self._batch_size):
            if self._stopping.is_set() or not self._deliver(api, row):
                return

    def _idle_seconds(self) -> float:
        """How long to wait for the next due event or the end of a pause; a poll at most."""
        next_ms = self._outbox.next_attempt_at_ms()
        if next_ms is None:
            return self._poll_interval
        wake_ms = max(next_ms, self._paused_until_ms)
        return min(self._poll_interval, max(0.0, (wake_ms - _now_ms()) / 1000))

    def _deliver(self, api: EventsApi, row: OutboxRow) -> bool:
        """Send one event; False when the failure concerns Datadog as a whole and deliveries should pause."""
        try:
            api.create_event(to_request(json.loads(row.payload), time.time()))
        except Exception as err:
            return self._failed(row, _classify(err))
        self._outbox.delete(row.id)
        self._failures_in_a_row = 0
        self._health.datadog_deliveries.labels("sent").inc()
        return True

    def _failed(self, row: OutboxRow, failure: _Failure) -> bool:
        if failure.permanent:
            self._give_up(row, failure)
            return True
        self._failures_in_a_row += 1
        now_ms = _now_ms()
        delay = failure.retry_after
        if delay is None:
            delay = self._backoff.delay(max(row.attempts + 1, self._failures_in_a_row))
        self._paused_until_ms = now_ms + int(delay * 1000)
        deadline_ms = row.enqueued_at_ms + self._give_up_after_ms
        if now_ms >= deadline_ms:
            self._give_up(row, failure)
        else:
            # The last attempt is made at the deadline, so an event is never given up before its time.
            self._outbox.reschedule(row.id, min(self._paused_until_ms, deadline_ms), failure.description)
            self._health.datadog_deliveries.labels("retried").inc()
            log.info("Datadog event for run %s not delivered, retrying in %.1fs: %s", row.run_id, delay, failure.description)
        return False

    def _give_up(self, row: OutboxRow, failure: _Failure) -> None:
        self._outbox.delete(row.id)
        self._health.datadog_deliveries.labels("gave_up").inc()
        log.warning(
            "gave up the Datadog event for run %s after %d attempt(s) over %.0fs: %s",
            row.run_id,
            row.attempts + 1,
            (_now_ms() - row.enqueued_at_ms) / 1000,
            failure.description,
        )


def _now_ms() -> int:
    """Wall-clock milliseconds: outbox times are persisted and must mean the same after a restart."""
    return int(time.time() * 1000)
