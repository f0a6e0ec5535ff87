"""Delivers the outbox's events to Datadog's Events API, from one background thread.

Retries belong to the outbox, not to the HTTP client: they must outlive a restart and
must never hold a request thread, so the client's own retries are off and a failed
attempt is rescheduled in the state database instead. A failure that concerns Datadog
as a whole (5xx, 429, timeouts, refused connections) pauses all deliveries for the
backoff, so an outage costs a trickle of probes rather than one failed request per
queued event. A rejected API key (401, 403) is treated the same way: it is the
operator's to fix, and the events must still be there when it is. A refusal of one
event (any other 4xx) gives that event up at once, as does a stored payload that cannot
be read.

Each event costs the sender one HTTP exchange and little else: the body is serialised once
and posted through the client's connection pool (`_EventsEndpoint`), and the rows of a
drain are forgotten in one state transaction (`_Finished`), which makes delivery
at-least-once across a crash; see there. Up to IN_FLIGHT events are sent at once
(`_Posts`), so a storm reaches Datadog at several events per round trip, not one; while
Datadog fails, a single event probes it.
"""

from __future__ import annotations

import collections
import json
import logging
import queue
import random
import threading
import time
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from datadog_api_client import ApiClient, Configuration
from datadog_api_client.exceptions import ApiException
from prometheus_client import Counter
from urllib3 import Timeout
from urllib3.util import Retry, parse_url

from exporter import clock
from exporter.failure_log import FailureLog, plain_reason
from exporter.health import HealthMetrics
from exporter.settings import Settings
from exporter.sinks.datadog_event import request_body
from exporter.sinks.datadog_outbox import DatadogOutbox, OutboxRow

log = logging.getLogger(__name__)

RATE_LIMIT_RESET_HEADER = "x-ratelimit-reset"
"""Datadog's answer to 429: seconds until the rate-limit window resets."""
_RETRIED_CLIENT_ERRORS = frozenset({401, 403, 408})
"""4xx answers about the key or the connection, not the event: retried until the give-up time."""
_MAX_EXPONENT = 32
"""Beyond this the cap has long been reached; it only keeps the arithmetic finite."""
EVENTS_PATH = "/api/v1/events"
"""The Events API (v1) endpoint that `EventsApi.create_event` posts to."""
FORGET_WITHIN_S = 0.25
"""Longest a sent event's row waits for its delete before the next send (see `_Finished`)."""
BUSY_SHARE = 0.1
"""Most of the interpreter's time deliveries take while events are arriving (see `_yield_to_ingestion`)."""
BUSY_WINDOW_S = 1.0
"""Events staged this recently mean ingestion is busy."""
IN_FLIGHT = 4
"""Most events sent to Datadog at once: the connections the client's pool keeps to a host.

One at a time, a storm would reach Datadog at one event per round trip (some 10-30 a second
across the internet); Datadog's Events API takes 250,000 a minute.
"""


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
    kind: str
    """The failure without what changes from one attempt to the next, so that a repeat is recognised (`HTTP 503`)."""
    permanent: bool
    """Datadog refused this event itself: retrying cannot help."""
    retry_after: float | None = None
    """Datadog said how long to wait (429)."""


def _classify(err: Exception) -> _Failure:
    """Retry what may pass later (transport errors, 401/403, 408, 429, 5xx); give up what Datadog refused (other 4xx)."""
    if isinstance(err, ApiException):
        status = err.status
        description = f"HTTP {status} {err.reason}: {err.body}" if err.body else f"HTTP {status} {err.reason}"
        kind = f"HTTP {status}"
        if status == 429:
            return _Failure(description, kind, permanent=False, retry_after=_reset_seconds(err.headers or {}))
        return _Failure(description, kind, permanent=400 <= status < 500 and status not in _RETRIED_CLIENT_ERRORS)
    # urllib3's timeouts, TLS and connection errors among them: they may pass later.
    kind, reason = plain_reason(err)
    return _Failure(reason, kind, permanent=False)


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
        # No Accept-Encoding: gzip: the answer to a delivered event is never parsed, so not worth decompressing.
        compress=False,
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


class _EventsEndpoint:
    """`POST /api/v1/events` through the client's own connection pool, without the client's models.

    `EventsApi.create_event` builds and validates an `EventCreateRequest`, serialises it through
    the model layer and parses the answer into an `EventCreateResponse`: most of the sender's CPU,
    all of it holding the GIL that request threads need. This sends the same request from the
    same client (its User-Agent, the API key header from its configuration, the host its
    configuration resolves, its timeout, and its pool manager's TLS settings and retry policy)
    with a body serialised once, and reads the answer only to raise what the client's REST layer
    raises for it: `ApiException` for anything but 2xx. A 2xx is never parsed, so an unexpected
    body cannot cause a resend.
    """

    def __init__(self, client: ApiClient) -> None:
        configuration = client.configuration
        api_key = configuration.auth_settings()["apiKeyAuth"]
        self._headers = {
            **client.default_headers,
            "Accept": "application/json",
            "Content-Type": "application/json",
            api_key["key"]: api_key["value"],
        }
        url = configuration.host + EVENTS_PATH
        # The pool the client's pool manager keeps for the host, looked up once rather than per request.
        self._pool = client.rest_client.pool_manager.connection_from_url(url)
        self._path = parse_url(url).request_uri
        self._timeout = Timeout(total=configuration.request_timeout)

    def post(self, body: Mapping[str, Any]) -> None:
        """Send one event; ApiException when Datadog answers but not 2xx, urllib3's errors when it does not answer."""
        response = self._pool.urlopen(
            "POST",
            self._path,
            body=json.dumps(body).encode(),
            headers=self._headers,
            timeout=self._timeout,
            redirect=False,
        )
        if not 200 <= response.status <= 299:
            raise ApiException(http_resp=response)


class _Posts:
    """Sends events through one endpoint from threads of its own, several at once.

    Daemon threads, not an executor's: those are joined when the interpreter exits, and a
    request hanging on Datadog must never hold up the process's exit.
    """

    def __init__(self, endpoint: _EventsEndpoint, threads: int) -> None:
        self._endpoint = endpoint
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._work, name=f"datadog-post-{number}", daemon=True) for number in range(threads)
        ]
        for thread in self._threads:
            thread.start()

    def send_all(self, bodies: Sequence[Mapping[str, Any]]) -> list[_Sent]:
        """Send the bodies at once (at most as many as there are threads) and wait for every answer; in order."""
        answers: queue.SimpleQueue[tuple[int, _Sent]] = queue.SimpleQueue()
        for index, body in enumerate(bodies):
            self._jobs.put(_Job(index, body, answers))
        arrived = sorted((answers.get() for _ in bodies), key=lambda answer: answer[0])
        return [outcome for _, outcome in arrived]

    def close(self) -> None:
        """Let the threads end once what they are sending is answered."""
        for _ in self._threads:
            self._jobs.put(None)

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            started = time.thread_time()
            try:
                self._endpoint.post(job.body)
                error = None
            except Exception as err:
                error = err
            job.answers.put((job.index, _Sent(error, time.thread_time() - started)))


@dataclass(frozen=True, slots=True)
class _Job:
    index: int
    body: Mapping[str, Any]
    answers: queue.SimpleQueue[tuple[int, _Sent]]


@dataclass(frozen=True, slots=True)
class _Sent:
    """One send's outcome."""

    error: Exception | None
    """None when Datadog took the event."""
    cpu_seconds: float
    """What the send cost the thread that made it."""


class _Finished:
    """The rows a drain is done with (sent or given up), deleted together in one state transaction.

    A transaction per delivered event costs some ten times the CPU of a row in a batched
    one, and takes the state lock that ingestion waits for once per event. The price is a
    window in which a crash (`kill -9`) after an event was sent and before its row is
    deleted makes the next process send it again, so Datadog may show it twice, as it
    already may when a request times out after Datadog took the event: delivery is
    at-least-once. The window is kept small: rows are deleted at the end of each drain, and
    before a send once the oldest has waited FORGET_WITHIN_S, so it spans that long plus one
    request at most; a stop closes it before the thread ends, unless a request outlives the
    stop's timeout. The outcome counters move when the rows are deleted, so `sent` never
    counts an event that is still queued.
    """

    def __init__(self, outbox: DatadogOutbox, outcomes: Mapping[str, Counter]) -> None:
        self._outbox = outbox
        self._outcomes = outcomes
        self._ids: list[int] = []
        self._counts: collections.Counter[str] = collections.Counter()
        self._first_at = 0.0

    def add(self, row_id: int, outcome: str) -> None:
        if not self._ids:
            self._first_at = time.monotonic()
        self._ids.append(row_id)
        self._counts[outcome] += 1

    def flush_if_waiting(self, seconds: float) -> None:
        """Delete the rows now if the oldest has waited `seconds`: the next send may take long."""
        if self._ids and time.monotonic() - self._first_at >= seconds:
            self.flush()

    def flush(self) -> None:
        self._outbox.delete(self._ids)
        for outcome, count in self._counts.items():
            self._outcomes[outcome].inc(count)
        self._ids.clear()
        self._counts.clear()


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
        self._outcomes = {
            outcome: health.datadog_deliveries.labels(outcome) for outcome in ("sent", "retried", "gave_up")
        }
        self._give_up_after_ms = int(settings.datadog_give_up_after * 1000)
        self._backoff = backoff
        self._poll_interval = poll_interval
        self._batch_size = batch_size
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        # Touched only by the sender thread.
        where = self._configuration.host + EVENTS_PATH
        self._outage = FailureLog(
            log, f"Datadog: POST {where}", "attempts",
            advice="Events wait in the outbox (EXPORTER_STATE_DIR) and are retried, at most every "
            "EXPORTER_DATADOG_MAX_BACKOFF, until EXPORTER_DATADOG_GIVE_UP_AFTER. Check DD_API_KEY (HTTP 401/403), "
            "DD_SITE or EXPORTER_DATADOG_URL, and that this host reaches Datadog",
        )
        self._given_up = FailureLog(
            log, f"Datadog: delivering an event to {where}", "events given up",
            advice="Given-up events are lost to Datadog and counted in "
            'inngest_cancellation_exporter_datadog_deliveries{outcome="gave_up"}',
        )
        self._failures_in_a_row = 0
        self._paused_until_ms = 0
        self._last_staged = -BUSY_WINDOW_S  # monotonic; written by ingesting threads, read by the sender
        outbox.on_stage(self.notify)
        health.gauge_from("datadog_outbox_depth", "Datadog events waiting in the durable outbox.", outbox.depth)

    def start(self) -> None:
        """Start delivering, beginning with whatever a previous process left in the outbox."""
        log.info("Datadog events go to %s", self._configuration.host)
        self._thread = threading.Thread(target=self._run, name="datadog-sender", daemon=True)
        self._thread.start()

    def notify(self) -> None:
        """Wake the sender: an event was staged and should go now, not at the next poll.

        Called for every staged event, inside the ingest transaction: setting an Event that is
        already set would only take its lock again. Skipping it cannot lose a wake-up: the
        sender clears the Event before it reads the outbox, and that read waits for the
        ingest transaction to commit.
        """
        self._last_staged = time.monotonic()
        if not self._wake.is_set():
            self._wake.set()

    def stop(self, timeout: float) -> None:
        """Stop within `timeout` seconds; an event still in flight or undelivered stays queued for the next start.

        When a request outlives `timeout`, the events sent just before it may be sent again then (see `_Finished`).
        """
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        with ApiClient(self._configuration) as client:
            posts = _Posts(_EventsEndpoint(client), IN_FLIGHT)
            try:
                while not self._stopping.is_set():
                    self._wake.clear()
                    try:
                        self._drain(posts)
                        idle = self._idle_seconds()
                    except Exception:  # a broken state file or a bug must not end deliveries for good
                        if self._stopping.is_set():
                            return  # the state was closed under an attempt that outlived stop()
                        log.exception("Datadog sender failed; trying again in %ss", self._poll_interval)
                        idle = self._poll_interval
                    self._wake.wait(idle)
            finally:
                posts.close()

    def _drain(self, posts: _Posts) -> None:
        """Send the due events, IN_FLIGHT at a time (one while Datadog fails), until Datadog shows it is failing."""
        now_ms = clock.now_ms()
        if now_ms < self._paused_until_ms:
            return
        finished = _Finished(self._outbox, self._outcomes)
        try:
            rows = self._outbox.due(now_ms, self._batch_size)
            while rows:
                if self._stopping.is_set():
                    return
                finished.flush_if_waiting(FORGET_WITHIN_S)
                width = 1 if self._failures_in_a_row else IN_FLIGHT  # a failing Datadog gets one probe at a time
                wave, rows = rows[:width], rows[width:]
                started = time.thread_time()
                healthy, sending_cpu = self._deliver(posts, wave, finished)
                if not healthy:
                    return
                self._yield_to_ingestion(time.thread_time() - started + sending_cpu)
        finally:
            finished.flush()

    def _yield_to_ingestion(self, cpu_seconds: float) -> None:
        """While events are arriving, wait so that delivering takes at most BUSY_SHARE of the interpreter.

        The sender and the request threads share one interpreter lock, and an event's delivery
        costs several times its ingestion: against a nearby endpoint the sender would take a third
        of the process during a storm and slow ingestion down. Waiting (nine times the CPU time the
        delivery took) hands that back; the outbox holds the difference and drains at full speed
        once events stop arriving. Against Datadog's real round trip the wait is a few percent of
        a request.
        """
        if time.monotonic() - self._last_staged < BUSY_WINDOW_S:
            self._stopping.wait(cpu_seconds * (1 - BUSY_SHARE) / BUSY_SHARE)

    def _idle_seconds(self) -> float:
        """How long to wait for the next due event or the end of a pause; a poll at most."""
        next_ms = self._outbox.next_attempt_at_ms()
        if next_ms is None:
            return self._poll_interval
        wake_ms = max(next_ms, self._paused_until_ms)
        return min(self._poll_interval, max(0.0, (wake_ms - clock.now_ms()) / 1000))

    def _deliver(self, posts: _Posts, rows: Sequence[OutboxRow], finished: _Finished) -> tuple[bool, float]:
        """Send the rows' events at once: (False when a failure concerns Datadog as a whole and deliveries
        should pause, the CPU seconds the sends took in other threads)."""
        sendable = []
        for row in rows:
            try:
                sendable.append((row, request_body(self._outbox.payload(row), time.time())))
            except (ValueError, TypeError) as err:  # a stored payload that is not a JSON object: no retry can fix it
                unreadable = _Failure(f"unreadable payload: {type(err).__name__}: {err}", "unreadable payload", permanent=True)
                self._give_up(row, unreadable, finished)
        sent = posts.send_all([body for _, body in sendable])
        failures_before = self._failures_in_a_row
        healthy = True
        for (row, _), outcome in zip(sendable, sent):
            if outcome.error is None:
                finished.add(row.id, "sent")
                self._given_up.ended()
                continue
            self._failures_in_a_row = failures_before  # the failures of one wave back off as one
            healthy = self._failed(row, _classify(outcome.error), finished) and healthy
        if healthy:
            self._failures_in_a_row = 0
            self._outage.recovered(clock.now_ms())
        return healthy, sum(outcome.cpu_seconds for outcome in sent)

    def _failed(self, row: OutboxRow, failure: _Failure, finished: _Finished) -> bool:
        if failure.permanent:
            self._give_up(row, failure, finished)
            return True
        self._failures_in_a_row += 1
        now_ms = clock.now_ms()
        delay = failure.retry_after
        if delay is None:
            delay = self._backoff.delay(max(row.attempts + 1, self._failures_in_a_row))
        self._paused_until_ms = now_ms + int(delay * 1000)
        deadline_ms = row.enqueued_at_ms + self._give_up_after_ms
        if now_ms >= deadline_ms:
            self._give_up(row, failure, finished)
        else:
            # The last attempt is made at the deadline, so an event is never given up before its time.
            self._outbox.reschedule(row.id, min(self._paused_until_ms, deadline_ms), failure.description)
            self._outcomes["retried"].inc()
            self._outage.failed(failure.kind, failure.description, now_ms)
        return False

    def _give_up(self, row: OutboxRow, failure: _Failure, finished: _Finished) -> None:
        finished.add(row.id, "gave_up")
        now_ms = clock.now_ms()
        self._given_up.failed(
            failure.kind,
            f"gave up the event of run {row.run_id} after {row.attempts + 1} attempt(s) over "
            f"{(now_ms - row.enqueued_at_ms) / 1000:.0f}s: {failure.description}",
            now_ms,
        )

