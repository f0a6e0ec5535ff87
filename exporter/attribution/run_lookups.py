"""Run lookups: when a cancelled run started executing, asked of Inngest's REST API for the few runs that need it.

A run whose age since scheduling admits a timeout (exporter.attribution.timeouts)
is held by the classifier, which records a lookup request in the state database
inside the ingest transaction: no network I/O happens while the state is locked.
A background worker asks Inngest for each requested run, at most
`EXPORTER_RUN_LOOKUP_RATE` requests a second and `EXPORTER_RUN_LOOKUP_CONCURRENCY`
at a time, records the answer in the same table (so it survives a restart), and
lets the pipeline release the runs that no longer wait. A failed lookup is retried
with backoff until the run's grace period ends (`EXPORTER_ATTRIBUTION_GRACE` after
it was received), and then given up: the classifier says `unknown`.

What is asked, as Inngest's server v1.43 answers it (pkg/api/v2, checked on the
built server): `GET /v2/runs/{runId}` gives the run's `status`, `queuedAt` and
`startedAt` (in a `data` object; a bare one is read too); a `startedAt` that is
absent, null or zero says the run never started. But the self-hosted and dev
servers fill `startedAt` of a run that never started with the time its trace
began (about its scheduling), so a start time is confirmed by
`GET /v2/runs/{runId}/trace`, whose root span carries `startedAt` only once the
run started. An answer whose `status` is not yet final (the record lags the
cancellation) is asked again.
"""

from __future__ import annotations

import enum
import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from exporter import clock
from exporter.attribution.bulk_list import rfc3339_ms
from exporter.attribution.inngest_api import ApiFailure, InngestApi
from exporter.attribution.timeouts import RunStart
from exporter.failure_log import FailureLog
from exporter.health import HealthMetrics
from exporter.records import Cancellation
from exporter.settings import Settings
from exporter.state import StateDB

log = logging.getLogger(__name__)

RUN_PATH = "/v2/runs/{run_id}"
TRACE_PATH = "/v2/runs/{run_id}/trace"
FINAL_STATUSES = frozenset({"CANCELLED", "COMPLETED", "FAILED"})
"""A run's `status` once its record shows how it ended."""
FIRST_RETRY_MS = 1_000
MAX_RETRY_MS = 30_000
"""A failed lookup is asked again after 1 s, then twice as long each time, at most this long."""
ROUND = 64
"""Most lookups taken on in one round; the held runs they settle are released after it."""
RETENTION_MS = 10 * 60_000
"""How long past its run's grace period a lookup is kept: by then its run has been emitted."""
MAX_LOOKUPS = 100_000
"""Lookups kept at most, the oldest forgotten first: bounds the state file."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS run_lookups (
    run_id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    started_at_ms INTEGER,
    attempts INTEGER NOT NULL,
    next_attempt_ms INTEGER NOT NULL,
    give_up_at_ms INTEGER NOT NULL,
    requested_at_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS run_lookups_by_next_attempt ON run_lookups (state, next_attempt_ms);
CREATE INDEX IF NOT EXISTS run_lookups_by_requested ON run_lookups (requested_at_ms);
"""


class LookupState(str, enum.Enum):
    WAITING = "waiting"
    """Requested, not answered yet; may still be tried."""
    FOUND = "found"
    """Answered: `started_at_ms` says when the run started (NULL: never)."""
    FAILED = "failed"
    """Given up: no answer will come."""


@dataclass(frozen=True)
class Lookup:
    """One run's lookup as the classifier sees it."""

    state: LookupState
    start: RunStart | None
    """Set once FOUND."""


class RunLookupStore:
    """Requested lookups and their answers, under the state database; read by the classifier inside its transaction."""

    def __init__(self, state: StateDB, *, grace_ms: int) -> None:
        self._state = state
        self._grace_ms = grace_ms
        self.wanted = threading.Event()
        """Set when a lookup is requested: wakes the worker."""
        state.ensure_schema(_SCHEMA)

    def lookup(self, tx: sqlite3.Connection, run_id: str) -> Lookup | None:
        """The run's lookup, None when none was requested."""
        row = tx.execute("SELECT state, started_at_ms FROM run_lookups WHERE run_id = ?", (run_id,)).fetchone()
        if row is None:
            return None
        state = LookupState(row[0])
        return Lookup(state, RunStart(row[1]) if state is LookupState.FOUND else None)

    def request(self, tx: sqlite3.Connection, cancellation: Cancellation) -> Lookup:
        """The run's lookup, requested now if it has none: tried until its grace period ends."""
        known = self.lookup(tx, cancellation.run_id)
        if known is not None:
            return known
        received = cancellation.received_at_ms
        tx.execute(
            "INSERT INTO run_lookups VALUES (?, ?, NULL, 0, ?, ?, ?)",
            (cancellation.run_id, LookupState.WAITING.value, received, received + self._grace_ms, received),
        )
        self.wanted.set()
        return Lookup(LookupState.WAITING, None)

    def due(self, now_ms: int, limit: int) -> list[tuple[str, int]]:
        """(run id, attempts so far) of waiting lookups to try now, the longest waiting first."""
        with self._state.reading() as conn:
            rows = conn.execute(
                "SELECT run_id, attempts FROM run_lookups WHERE state = ? AND next_attempt_ms <= ? AND give_up_at_ms > ?"
                " ORDER BY next_attempt_ms LIMIT ?",
                (LookupState.WAITING.value, now_ms, now_ms, limit),
            ).fetchall()
        return [(run_id, attempts) for run_id, attempts in rows]

    def next_due_ms(self) -> int | None:
        """When the next waiting lookup may be tried; None when none waits."""
        with self._state.reading() as conn:
            (at,) = conn.execute(
                "SELECT min(next_attempt_ms) FROM run_lookups WHERE state = ? AND next_attempt_ms < give_up_at_ms",
                (LookupState.WAITING.value,),
            ).fetchone()
        return None if at is None else int(at)

    def found(self, run_id: str, start: RunStart) -> None:
        self._set(run_id, "state = ?, started_at_ms = ?, attempts = attempts + 1", (LookupState.FOUND.value, start.started_at_ms))

    def retry(self, run_id: str, at_ms: int) -> bool:
        """Try again at `at_ms`, unless that is past the run's grace period: then give up. Whether it will be tried."""
        with self._state.transaction() as tx:
            tx.execute(
                "UPDATE run_lookups SET attempts = attempts + 1, next_attempt_ms = ?,"
                " state = CASE WHEN ? < give_up_at_ms THEN state ELSE ? END WHERE run_id = ? AND state = ?",
                (at_ms, at_ms, LookupState.FAILED.value, run_id, LookupState.WAITING.value),
            )
            row = tx.execute("SELECT state FROM run_lookups WHERE run_id = ?", (run_id,)).fetchone()
        return row is not None and row[0] == LookupState.WAITING.value

    def give_up(self, run_id: str) -> None:
        self._set(run_id, "state = ?, attempts = attempts + 1", (LookupState.FAILED.value,))

    def _set(self, run_id: str, assignments: str, values: tuple[Any, ...]) -> None:
        """Update a waiting lookup; `assignments` is this module's own SQL, never input."""
        with self._state.transaction() as tx:
            tx.execute(
                f"UPDATE run_lookups SET {assignments} WHERE run_id = ? AND state = ?",
                (*values, run_id, LookupState.WAITING.value),
            )

    def waiting(self, now_ms: int) -> int:
        """Lookups that may still be tried at `now_ms` (for the gauge): requested, not answered, their run's grace
        period not over."""
        with self._state.reading() as conn:
            (count,) = conn.execute(
                "SELECT COUNT(*) FROM run_lookups WHERE state = ? AND give_up_at_ms > ?", (LookupState.WAITING.value, now_ms)
            ).fetchone()
        return int(count)

    def prune(self, now_ms: int) -> int:
        """Forget lookups whose run's grace period ended more than RETENTION_MS ago: their runs have been emitted."""
        return self._state.prune(
            "run_lookups", "run_id", "requested_at_ms",
            older_than_ms=now_ms - self._grace_ms - RETENTION_MS, max_rows=MAX_LOOKUPS,
        )


class _Unusable(ValueError):
    """An answer of no known shape."""


class _NotFinal(Exception):
    """The run's record does not show its end yet."""


class _Stopping(Exception):
    """The worker stops: the lookup stays due for the next start."""


def run_start(run: Any, trace: Callable[[], Any]) -> RunStart:
    """When the run started, from the answer to `GET /v2/runs/{id}`, confirmed by `trace()` (the trace's answer).

    _NotFinal while the record does not show the run's end; _Unusable for an answer of no known shape.
    """
    record = _unwrapped(run)
    status = record.get("status")
    if not (isinstance(status, str) and status.upper() in FINAL_STATUSES):
        raise _NotFinal(f"the run's status is {status!r}, not yet how it ended")
    if _time_ms(record, "startedAt") is None:
        return RunStart(None)
    root = _unwrapped(trace()).get("rootSpan")
    if not isinstance(root, dict):
        raise _Unusable("the trace has no rootSpan object")
    return RunStart(_time_ms(root, "startedAt"))


def _unwrapped(body: Any) -> dict[str, Any]:
    """The object of an answer: under `data` as the server writes it, or bare."""
    if isinstance(body, dict) and isinstance(body.get("data"), dict):
        body = body["data"]
    if not isinstance(body, dict):
        raise _Unusable("expected a JSON object")
    return body


def _time_ms(record: dict[str, Any], key: str) -> int | None:
    """An RFC 3339 time in epoch milliseconds; None when absent, null, empty or zero (Go's zero time, or 1970)."""
    text = record.get(key)
    if text is None or text == "":
        return None
    if not isinstance(text, str):
        raise _Unusable(f"{key}: expected an RFC 3339 string")
    try:
        ms = rfc3339_ms(text)
    except ValueError as err:
        raise _Unusable(f"{key}: {err}") from None
    return ms if ms > 0 else None


class _RateLimiter:
    """At most `rate` acquisitions a second, spaced evenly; shared by the lookup threads."""

    def __init__(self, rate: float) -> None:
        self._interval = 1.0 / rate
        self._next = time.monotonic()
        self._lock = threading.Lock()

    def acquire(self, stopping: threading.Event) -> bool:
        """Wait for a slot; False when `stopping` was set meanwhile."""
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next)
            self._next = slot + self._interval
        return not stopping.wait(slot - now) if slot > now else not stopping.is_set()


class RunLookups:
    """The worker: looks up requested runs in rounds on a daemon thread, records the answers, releases what they settle.

    Failures are counted by outcome (`run_lookups_total`), logged when they start, change,
    every 10 minutes while they last and when they end, never with a key.
    """

    def __init__(
        self,
        store: RunLookupStore,
        settings: Settings,
        *,
        health: HealthMetrics,
        on_settled: Callable[[list[str]], object] = lambda run_ids: None,
        now_ms: Callable[[], int] = clock.now_ms,
    ) -> None:
        """`on_settled` releases those of the held runs it is given that no longer wait: called after each round
        with the runs whose lookup it answered or gave up."""
        self._store = store
        self._health = health
        self._on_settled = on_settled
        self._now_ms = now_ms
        self._api = InngestApi(settings, timeout=settings.run_lookup_timeout)
        self._concurrency = settings.run_lookup_concurrency
        self._limiter = _RateLimiter(settings.run_lookup_rate)
        self._failures = FailureLog(
            log, f"run lookups: GET {self._api.base_url}{RUN_PATH}[/trace]", "lookups",
            advice="Until lookups succeed, cancellations that may be timeouts are retried up to "
            "EXPORTER_ATTRIBUTION_GRACE and then reported `unknown`. Check INNGEST_API_BASE_URL and "
            "INNGEST_SIGNING_KEY, or set EXPORTER_RUN_LOOKUPS=false to turn lookups off",
        )
        self._failures_lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="run-lookups", daemon=True)
        health.gauge_from(
            "run_lookups_waiting", "Run lookups requested, not answered, whose run's grace period is not over.",
            lambda: store.waiting(self._now_ms()),
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float) -> None:
        """Stop within about `timeout`; a request still hanging is abandoned on its daemon thread."""
        self._stopping.set()
        self._store.wanted.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stopping.is_set():
            self._store.wanted.clear()
            try:
                if self.run_once():
                    continue
                next_due = self._store.next_due_ms()
            except Exception:  # never end the worker: the state may be briefly unwritable
                log.exception("run lookups: a round failed; retrying in a second")
                next_due = None
            wait = 1.0 if next_due is None else min(1.0, max(0.05, (next_due - self._now_ms()) / 1000))
            self._store.wanted.wait(wait)

    def run_once(self) -> int:
        """Look up the runs due now (up to ROUND), `concurrency` at a time; then release the held runs their answers
        settle. How many were tried. The harness of the attribution scenarios calls it on its simulated clock."""
        due = self._store.due(self._now_ms(), ROUND)
        if not due:
            return 0
        decided: list[str] = []
        lanes = [due[lane :: self._concurrency] for lane in range(min(self._concurrency, len(due)))]
        threads = [
            threading.Thread(target=self._look_up_all, args=(lane, decided), name="run-lookup", daemon=True) for lane in lanes
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if decided:
            try:
                self._on_settled(decided)
            except Exception:
                log.exception("releasing held cancellations failed; they are released when due")
        return len(due)

    def _look_up_all(self, lane: list[tuple[str, int]], decided: list[str]) -> None:
        """Look up a lane's runs one after the other; add those answered or given up to `decided`."""
        for run_id, attempts in lane:
            if self._stopping.is_set():
                return
            try:
                if self._look_up(run_id, attempts):
                    decided.append(run_id)
            except Exception:  # the state could not be written: the lookup stays due and is tried again
                log.exception("run lookups: recording the lookup of run %s failed", run_id)

    def _look_up(self, run_id: str, attempts: int) -> bool:
        """Ask Inngest when `run_id` started and record the answer, or when to ask again; whether it is decided."""
        try:
            start = run_start(self._get(RUN_PATH, run_id), lambda: self._get(TRACE_PATH, run_id))
        except _Stopping:
            return False
        except Exception as err:  # never raise: a failed lookup is retried, then given up
            return self._failed(run_id, attempts, err)
        self._store.found(run_id, start)
        self._health.run_lookups.labels("found").inc()
        with self._failures_lock:
            self._failures.recovered(self._now_ms())
        return True

    def _get(self, path: str, run_id: str) -> Any:
        if not self._limiter.acquire(self._stopping):
            raise _Stopping()
        return self._api.get_json(path.format(run_id=run_id))

    def _failed(self, run_id: str, attempts: int, err: Exception) -> bool:
        """Count a failed lookup and log it (a record that only lags its run's end is no failure), then retry it
        later or give it up; whether it was given up."""
        now_ms = self._now_ms()
        if isinstance(err, _NotFinal):
            self._health.run_lookups.labels("incomplete").inc()
            log.debug("run lookups: run %s: %s; asked again later", run_id, err)
        else:
            failure = err if isinstance(err, ApiFailure) else ApiFailure(str(err), kind=type(err).__name__)
            self._health.run_lookups.labels({404: "not_found", 429: "rate_limited"}.get(failure.status or 0, "error")).inc()
            with self._failures_lock:
                self._failures.failed(failure.kind, f"{self._api.redacted(str(failure))} (run {run_id})", now_ms)
            if failure.status == 400:  # the server refuses this run id: asking again cannot help
                self._store.give_up(run_id)
                return True
        return not self._store.retry(run_id, now_ms + min(MAX_RETRY_MS, FIRST_RETRY_MS << min(attempts, 16)))
