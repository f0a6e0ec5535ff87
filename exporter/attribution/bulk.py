"""Bulk cancellations: the REST API's list, polled and kept as evidence for attribution.

Inngest's `function.cancelled` event does not say that a bulk cancellation ended
the run, but `GET /v1/cancellations` lists each bulk cancellation's function, time
range and `if` expression (read by `bulk_list`). The poller copies that list into
the state database, where the classifier looks up, inside the ingest transaction,
the windows that cover a run, the listed cancellations of single runs, and the
backlog cancellations that keep `manual` from being concluded for a function.
Windows outlive their place in the list for a retention period, because a finished
bulk cancellation may be dropped from it while its `function.cancelled` events are
still arriving.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Iterable

from exporter import clock
from exporter.attribution.bulk_list import BacklogCancellation, BulkWindow, Listed, RunCancellation, parse_cancellations
from exporter.attribution.inngest_api import ApiFailure, InngestApi
from exporter.failure_log import FailureLog
from exporter.health import HealthMetrics
from exporter.periodic import PeriodicTask
from exporter.settings import Settings
from exporter.state import StateDB

log = logging.getLogger(__name__)

LIST_PATH = "/v1/cancellations"
PAGE_LIMIT = 100
"""Items asked for per page (`?limit=`)."""
MAX_PAGES = 20
"""Pages followed in one poll; a longer list (or a cursor loop) fails the poll rather than be read in part."""
MAX_WINDOWS = 100_000
"""Windows kept at most, the least recently listed forgotten first: bounds the state file."""
MAX_RUN_CANCELLATIONS = 100_000
"""Single-run cancellations kept at most, the least recently listed forgotten first."""
MAX_BACKLOGS = 10_000
"""Backlog cancellations kept at most, the least recently listed forgotten first."""
UNAVAILABLE_AFTER_SERVER_ERRORS = 3
"""HTTP 500 answers in a row after which the list is taken as unavailable, when the answer does not say so itself."""
NOT_OFFERED_ERROR = "Error listing cancellations"
"""The `error` of the server's HTTP 500 when it has no store for the list to read (pkg/api/apiv1)."""
_CURSOR_KEYS = ("cursor", "next_cursor")
_WINDOW_COLUMNS = "id, function_id, app_id, started_after_ms, started_before_ms, expression"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS bulk_windows (
    id TEXT PRIMARY KEY,
    function_id TEXT NOT NULL,
    app_id TEXT,
    slug TEXT,
    started_after_ms INTEGER NOT NULL,
    started_before_ms INTEGER NOT NULL,
    expression TEXT,
    first_seen_ms INTEGER NOT NULL,
    last_seen_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS bulk_windows_by_function ON bulk_windows (function_id, started_after_ms);
CREATE INDEX IF NOT EXISTS bulk_windows_by_slug ON bulk_windows (slug, started_after_ms);
CREATE INDEX IF NOT EXISTS bulk_windows_by_last_seen ON bulk_windows (last_seen_ms);
CREATE TABLE IF NOT EXISTS listed_run_cancellations (
    run_id TEXT PRIMARY KEY,
    id TEXT NOT NULL,
    last_seen_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS listed_run_cancellations_by_last_seen ON listed_run_cancellations (last_seen_ms);
CREATE TABLE IF NOT EXISTS listed_backlogs (
    id TEXT PRIMARY KEY,
    function_id TEXT NOT NULL,
    app_id TEXT,
    last_seen_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS listed_backlogs_by_last_seen ON listed_backlogs (last_seen_ms);
CREATE TABLE IF NOT EXISTS bulk_meta (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
"""


class BulkWindowStore:
    """Polled bulk windows, single-run cancellations and the time of the last successful poll, under the state database.

    They are few (bounded by retention) and read for every cancellation, so the store
    also keeps them in memory, replaced as a whole after each write: the ingest path
    then asks nothing of SQLite, and readers never see a half-updated list.
    """

    def __init__(self, state: StateDB, *, retention_seconds: float) -> None:
        self._state = state
        self._retention_ms = int(retention_seconds * 1000)
        state.ensure_schema(_SCHEMA)
        self._windows: tuple[BulkWindow, ...] = ()
        self._run_cancellations: dict[str, RunCancellation] = {}
        self._backlogs: tuple[BacklogCancellation, ...] = ()
        self._last_success_ms: int | None = None
        self._list_available = True
        self._reload()

    def _reload(self) -> None:
        with self._state.reading() as conn:
            rows = conn.execute(f"SELECT {_WINDOW_COLUMNS} FROM bulk_windows ORDER BY id").fetchall()
            runs = conn.execute("SELECT id, run_id FROM listed_run_cancellations").fetchall()
            backlogs = conn.execute("SELECT id, function_id, app_id FROM listed_backlogs ORDER BY id").fetchall()
            meta = conn.execute("SELECT value FROM bulk_meta WHERE key = 'last_success_ms'").fetchone()
        self._windows = tuple(BulkWindow(*row) for row in rows)
        self._run_cancellations = {run_id: RunCancellation(ident, run_id) for ident, run_id in runs}
        self._backlogs = tuple(BacklogCancellation(*row) for row in backlogs)
        self._last_success_ms = None if meta is None else int(meta[0])

    def record(self, listed: Iterable[Listed], seen_at_ms: int) -> None:
        """Store a successful poll's list at once: its evidence (first seen kept) and the poll's time."""
        listed = tuple(listed)
        windows = [item for item in listed if isinstance(item, BulkWindow)]
        runs = [(item.run_id, item.id, seen_at_ms) for item in listed if isinstance(item, RunCancellation)]
        backlogs = [(b.id, b.function_id, b.app_id, seen_at_ms) for b in listed if isinstance(b, BacklogCancellation)]
        with self._state.transaction() as tx:
            tx.executemany(
                f"INSERT INTO bulk_windows ({_WINDOW_COLUMNS}, slug, first_seen_ms, last_seen_ms)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (id) DO UPDATE SET function_id = excluded.function_id, app_id = excluded.app_id,"
                " slug = excluded.slug, started_after_ms = excluded.started_after_ms,"
                " started_before_ms = excluded.started_before_ms, expression = excluded.expression,"
                " last_seen_ms = excluded.last_seen_ms",
                [
                    (w.id, w.function_id, w.app_id, w.started_after_ms, w.started_before_ms, w.expression, w.slug, seen_at_ms, seen_at_ms)
                    for w in windows
                ],
            )
            # a run listed twice keeps its first cancellation (ULIDs sort by time): the one that can have ended it
            tx.executemany(
                "INSERT INTO listed_run_cancellations VALUES (?, ?, ?) ON CONFLICT (run_id)"
                " DO UPDATE SET id = min(id, excluded.id), last_seen_ms = excluded.last_seen_ms",
                runs,
            )
            tx.executemany(
                "INSERT INTO listed_backlogs VALUES (?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET"
                " function_id = excluded.function_id, app_id = excluded.app_id, last_seen_ms = excluded.last_seen_ms",
                backlogs,
            )
            tx.execute(
                "INSERT INTO bulk_meta VALUES ('last_success_ms', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (seen_at_ms,),
            )
        self._reload()

    def covering(self, function_slug: str, scheduled_at_ms: int) -> list[BulkWindow]:
        """Windows for `function_slug` (any form, see `BulkWindow.applies_to`) whose range contains `scheduled_at_ms`."""
        return [
            window for window in self._windows
            if window.started_after_ms <= scheduled_at_ms <= window.started_before_ms and window.applies_to(function_slug)
        ]

    def run_cancellation(self, run_id: str) -> RunCancellation | None:
        """The listed cancellation of this one run, if any."""
        return self._run_cancellations.get(run_id)

    def backlog_cancelled(self, function_slug: str, at_ms: int) -> bool:
        """Whether a backlog cancellation of the function made by `at_ms` is listed: it may have ended any queued run."""
        return any(backlog.applies_to(function_slug) and backlog.made_by(at_ms) for backlog in self._backlogs)

    def last_success_ms(self) -> int | None:
        """When the list was last read in full; None when never (in this state directory)."""
        return self._last_success_ms

    def list_available(self) -> bool:
        """False once the poller found that the list cannot be read (Inngest does not offer it), until it is read again.

        Then no run waits for a poll. Kept in memory only: after a restart the first poll, made at once, tells again.
        """
        return self._list_available

    def set_list_available(self, available: bool) -> None:
        """The poller's finding: False when Inngest's answers show it does not offer the list, True once it is read."""
        self._list_available = available

    def prune(self, now_ms: int) -> int:
        """Forget windows and single-run cancellations not listed for the retention period.

        What the last successful poll listed is kept however long polling then
        fails: an outage of the API must not erase the evidence it gave.
        """
        last_success = self._last_success_ms
        if last_success is None:
            return 0
        older_than_ms = min(now_ms - self._retention_ms, last_success)
        removed = self._state.prune(
            "bulk_windows", "id", "last_seen_ms", older_than_ms=older_than_ms, max_rows=MAX_WINDOWS
        ) + self._state.prune(
            "listed_run_cancellations", "run_id", "last_seen_ms", older_than_ms=older_than_ms, max_rows=MAX_RUN_CANCELLATIONS
        ) + self._state.prune(
            "listed_backlogs", "id", "last_seen_ms", older_than_ms=older_than_ms, max_rows=MAX_BACKLOGS
        )
        self._reload()
        return removed

    def size(self) -> int:
        return len(self._windows)


class BulkPoller:
    """Reads the bulk cancellation list every `interval` seconds into a `BulkWindowStore`.

    A failed poll is counted, never raised: the evidence already stored just grows
    older, and the classifier stops concluding `manual` until a poll succeeds. It is
    logged when it starts, when it changes, every FAILURE_REMINDER_MS while it lasts,
    and when it ends, not at every poll. When the answers show that the server does
    not offer the list (self-hosted and dev servers answer HTTP 500), the store is
    marked so and held runs are released: none waits for a poll that cannot succeed.
    """

    def __init__(
        self,
        store: BulkWindowStore,
        settings: Settings,
        *,
        interval: float,
        health: HealthMetrics,
        timeout: float = 10.0,
        on_settled: Callable[[], object] = lambda: None,
        now_ms: Callable[[], int] = clock.now_ms,
    ) -> None:
        """`on_settled` releases the held runs that no longer wait: called after each successful poll, and when the
        list is found unavailable."""
        self._store = store
        self._on_settled = on_settled
        self._now_ms = now_ms
        self._api = InngestApi(settings, timeout=timeout)
        self._url = self._api.base_url + LIST_PATH
        self._interval = interval
        self._health = health
        self._reported: set[str] = set()
        self._failures = FailureLog(
            log, f"bulk cancellations: polling GET {self._url}", "polls",
            advice="Until a poll succeeds, cancellations that may be bulk or manual wait for it up to "
            "EXPORTER_ATTRIBUTION_GRACE and are then reported `unknown`. Check INNGEST_API_BASE_URL and "
            "INNGEST_SIGNING_KEY; if this Inngest server has no bulk cancellation list, declare "
            "`bulk_cancellations: {available: false}` in the config",
        )
        self._server_errors = 0
        """HTTP 500 answers in a row, up to the last poll."""
        # polled at once: evidence is wanted before the first cancellations arrive
        self._task = PeriodicTask("bulk-poller", interval, self.poll_once, run_first=True)
        health.gauge_from("bulk_windows", "Bulk cancellation windows kept as attribution evidence.", store.size)
        health.gauge_from(
            "bulk_list_available",
            "0 once the bulk cancellation list was found unavailable (Inngest does not offer it): no run waits for it, "
            "and runs that would be manual are unknown; 1 otherwise.",
            lambda: float(store.list_available()),
        )

    def start(self) -> None:
        self._task.start()

    def stop(self, timeout: float) -> None:
        """Stop within about `timeout`; a request still hanging is abandoned on its daemon thread."""
        self._task.stop(timeout)

    def poll_once(self) -> bool:
        """Read the whole list and store it; False (counted as an error) when that failed."""
        started_ms = self._now_ms()  # before the request: a later cancellation may be missing from the answer
        try:
            listed, problems = self._read_all()
            self._store.record(listed, started_ms)
        except Exception as err:  # never raise: a failed poll only leaves the evidence older
            self._failed(err, started_ms)
            return False
        self._recovered()
        for problem in sorted(set(problems) - self._reported):
            log.warning("bulk cancellations: skipping %s", problem)
        self._reported = set(problems)  # the last poll's only: bounded, and a problem that comes back is told again
        self._health.bulk_polls.labels("ok").inc()
        self._health.last_bulk_poll.set(started_ms / 1000)
        self._settle()  # runs held only for this poll can go now
        return True

    def _failed(self, err: Exception, now_ms: int) -> None:
        """Count a failed poll, decide whether the list is unavailable, and log what is new."""
        self._health.bulk_polls.labels("error").inc()
        failure = err if isinstance(err, ApiFailure) else ApiFailure(str(err), kind=type(err).__name__)
        self._failures.count(now_ms)
        self._server_errors = self._server_errors + 1 if failure.status == 500 else 0
        reason = self._api.redacted(str(failure))
        if self._store.list_available() and (_not_offered(failure) or self._server_errors >= UNAVAILABLE_AFTER_SERVER_ERRORS):
            self._store.set_list_available(False)
            repeated = f", {self._server_errors} times in a row" if self._server_errors > 1 else ""
            log.warning(
                "bulk cancellations: GET %s %s%s: this Inngest server does not offer the bulk cancellation list "
                "(self-hosted and dev servers have none) or cannot read it. Until it can, bulk cancellations cannot be "
                "told apart from cancels of single runs: runs that would be `manual` are reported `unknown`, and no run "
                "waits for a poll. Polling goes on every %gs and its recovery is logged. If this server has no bulk "
                "cancellation (self-hosted, dev), declare it with `bulk_cancellations: {available: false}` in the "
                "config: polling stops and single-run cancels are reported `manual` again.",
                self._url, reason, repeated, self._interval,
            )
            self._failures.told(failure.kind, now_ms)
            self._settle()  # runs held only for a poll can go now
        else:
            self._failures.tell(failure.kind, reason, now_ms)

    def _recovered(self) -> None:
        """After a successful poll: say so once if polls had failed, and let runs wait for the list again."""
        outage = self._failures.ended()
        self._server_errors = 0
        was_available = self._store.list_available()
        self._store.set_list_available(True)
        if outage is not None:
            log.info(
                "bulk cancellations: GET %s read again after %d failed polls%s",
                self._url, outage.failures, "" if was_available else "; bulk and manual can be concluded again",
            )

    def _settle(self) -> None:
        """Let the pipeline release held runs that no longer wait for a poll."""
        try:
            self._on_settled()
        except Exception:
            log.exception("releasing held cancellations failed; they are released when due")

    def _read_all(self) -> tuple[list[Listed], list[str]]:
        """The evidence and problems of every page; ValueError or ApiFailure when the list cannot be read whole."""
        listed: list[Listed] = []
        problems: list[str] = []
        params = {"limit": str(PAGE_LIMIT)}
        for _ in range(MAX_PAGES):
            body = self._api.get_json(LIST_PATH, params)
            page_listed, page_problems = parse_cancellations(body)
            listed += page_listed
            problems += page_problems
            cursor = _next_cursor(body)
            if cursor is None:
                return listed, problems
            params = {"limit": str(PAGE_LIMIT), "cursor": cursor}
        raise ApiFailure(f"the list goes on past {MAX_PAGES} pages; not read in part", kind="too many pages")


def _not_offered(failure: ApiFailure) -> bool:
    """Whether the answer itself shows that the server has no list to read.

    The open-source server (`inngest start`, `inngest dev`) has no store for the list: v1.43
    answers HTTP 500 with no body (its handler's panic, recovered); a server whose store
    fails answers NOT_OFFERED_ERROR. Either, or a 501, shows that the list is not offered.
    """
    return failure.status == 501 or (failure.status == 500 and (failure.empty or failure.error == NOT_OFFERED_ERROR))


def _next_cursor(body: Any) -> str | None:
    """The next page's cursor, at the top level or under `metadata`; None on the last page (and for an array)."""
    if not isinstance(body, dict):
        return None
    metadata = body.get("metadata")
    for holder in (body, metadata if isinstance(metadata, dict) else {}):
        for key in _CURSOR_KEYS:
            cursor = holder.get(key)
            if isinstance(cursor, str) and cursor:
                return cursor
    return None
