"""Run lookups: asking Inngest's API v2 when a run started, as the real server answers, and living with its failures."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import ulid
from prometheus_client import CollectorRegistry

from exporter import pipeline
from exporter.failure_log import FAILURE_REMINDER_MS
from exporter.attribution.run_lookups import FIRST_RETRY_MS, RETENTION_MS, LookupState, RunLookups, RunLookupStore
from exporter.attribution.timeouts import RunStart
from exporter.config import parse_config
from exporter.core import Exporter
from exporter.health import PREFIX, HealthMetrics
from exporter.records import Cancellation
from exporter.settings import load_settings
from exporter.state import StateDB
from tests.support.fake_inngest_api import FakeInngestApi, Mode, RunRecord, RunShape
from tests.support.payloads import FALLBACK_KEY, SIGNING_KEY

NOW_MS = 1_796_316_105_236
GRACE_MS = 120_000
SCHEDULED_MS = NOW_MS - 600_000
RUN_ID = str(ulid.ULID.from_timestamp(SCHEDULED_MS / 1000))


@pytest.fixture
def api() -> Iterator[FakeInngestApi]:
    with FakeInngestApi(SIGNING_KEY) as server:
        yield server


def cancelled(run_id: str = RUN_ID, received_ms: int = NOW_MS) -> Cancellation:
    return Cancellation(
        run_id=run_id, function_id="app-fn", event_name="inngest/function.cancelled", event_id=run_id,
        cancelled_at_ms=received_ms, scheduled_at_ms=SCHEDULED_MS, trigger=None, received_at_ms=received_ms,
    )


class Looking:
    """A store and its worker on a clock the test moves, against `api`."""

    def __init__(self, api: FakeInngestApi, state: StateDB, *, fallback: str | None = None, **settings: str) -> None:
        self.now_ms = NOW_MS
        self.settled = 0
        self.registry = CollectorRegistry()
        env = {"INNGEST_API_BASE_URL": api.url, "INNGEST_SIGNING_KEY": SIGNING_KEY, "EXPORTER_RUN_LOOKUP_RATE": "1000", **settings}
        if fallback:
            env["INNGEST_SIGNING_KEY_FALLBACK"] = fallback
        self.store = RunLookupStore(state, grace_ms=GRACE_MS)
        self.state = state
        self.worker = RunLookups(
            self.store, load_settings(env), health=HealthMetrics(self.registry), on_settled=self._settle, now_ms=lambda: self.now_ms
        )

    def _settle(self, run_ids: list[str]) -> None:
        self.settled += 1

    def request(self, *runs: Cancellation) -> None:
        with self.state.transaction() as tx:
            for run in runs or (cancelled(),):
                self.store.request(tx, run)

    def lookup(self, run_id: str = RUN_ID) -> Any:
        with self.state.reading() as conn:
            return self.store.lookup(conn, run_id)

    def outcomes(self) -> dict[str, float]:
        return {
            outcome: self.registry.get_sample_value(f"{PREFIX}_run_lookups_total", {"outcome": outcome}) or 0.0
            for outcome in ("found", "not_found", "incomplete", "rate_limited", "error")
            if self.registry.get_sample_value(f"{PREFIX}_run_lookups_total", {"outcome": outcome})
        }


def said(caplog: pytest.LogCaptureFixture, level: int = logging.WARNING) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "exporter.attribution.run_lookups" and r.levelno == level]


@pytest.mark.parametrize("shape", ["server", "omitted", "zero", "bare"])
def test_a_run_that_never_started_is_told_in_every_shape(api: FakeInngestApi, state: StateDB, shape: RunShape) -> None:
    api.runs[RUN_ID] = RunRecord(SCHEDULED_MS, None, NOW_MS)
    api.run_shape = shape
    looking = Looking(api, state)
    looking.request()
    assert looking.worker.run_once() == 1
    assert looking.lookup().state is LookupState.FOUND and looking.lookup().start == RunStart(None)
    # the self-hosted servers put a start time on a run that never started: only its trace tells
    paths = [r.path for r in api.requests]
    assert paths == [f"/v2/runs/{RUN_ID}", f"/v2/runs/{RUN_ID}/trace"] if shape in ("server", "bare") else [f"/v2/runs/{RUN_ID}"]
    assert all(r.headers["Authorization"] == f"Bearer {SIGNING_KEY}" for r in api.requests)
    assert looking.outcomes() == {"found": 1} and looking.settled == 1


@pytest.mark.parametrize("shape", ["server", "omitted", "bare"])
def test_a_run_that_started_is_told_with_its_start(api: FakeInngestApi, state: StateDB, shape: RunShape) -> None:
    api.runs[RUN_ID] = RunRecord(SCHEDULED_MS, SCHEDULED_MS + 90_123, NOW_MS)
    api.run_shape = shape
    looking = Looking(api, state)
    looking.request()
    looking.worker.run_once()
    assert looking.lookup().start == RunStart(SCHEDULED_MS + 90_123)


def test_only_requested_runs_are_looked_up_once_each(api: FakeInngestApi, state: StateDB) -> None:
    looking = Looking(api, state)
    assert looking.worker.run_once() == 0 and api.requests == []
    api.runs[RUN_ID] = RunRecord(SCHEDULED_MS, None, NOW_MS)
    looking.request()
    looking.request()  # asked again (a held run classified again): still one lookup
    assert looking.store.wanted.is_set()
    assert looking.worker.run_once() == 1 and looking.worker.run_once() == 0
    assert len(api.requests) == 2 and looking.store.waiting(NOW_MS) == 0


def test_the_fallback_key_is_tried_after_a_401(api: FakeInngestApi, state: StateDB) -> None:
    api.keys = {FALLBACK_KEY}
    api.runs[RUN_ID] = RunRecord(SCHEDULED_MS, None, NOW_MS, status="CANCELLED")
    api.run_shape = "omitted"
    looking = Looking(api, state, fallback=FALLBACK_KEY)
    looking.request()
    looking.worker.run_once()
    assert [r.headers["Authorization"] for r in api.requests] == [f"Bearer {SIGNING_KEY}", f"Bearer {FALLBACK_KEY}"]
    assert looking.lookup().state is LookupState.FOUND


@pytest.mark.parametrize(
    "mode, outcome",
    [(Mode.ERROR, "error"), (Mode.NOT_JSON, "error"), (Mode.RATE_LIMITED, "rate_limited"), (Mode.HANG, "error")],
)
def test_a_failed_lookup_is_retried_with_backoff_then_given_up_at_the_end_of_the_grace_period(
    api: FakeInngestApi, state: StateDB, mode: Mode, outcome: str
) -> None:
    api.runs_mode = mode
    looking = Looking(api, state, EXPORTER_RUN_LOOKUP_TIMEOUT="300ms")
    looking.request()
    tried = []
    while looking.store.next_due_ms() is not None:
        looking.now_ms = max(looking.now_ms, looking.store.next_due_ms() or 0)
        tried.append(looking.now_ms - NOW_MS)
        assert looking.worker.run_once() == 1
    assert tried == [0, 1_000, 3_000, 7_000, 15_000, 31_000, 61_000, 91_000]  # doubling up to 30 s, within 2 minutes
    assert looking.lookup().state is LookupState.FAILED
    assert looking.outcomes() == {outcome: 8} and looking.settled == 1  # released once it was given up


def test_a_run_not_found_or_not_yet_ended_is_asked_again_and_then_found(api: FakeInngestApi, state: StateDB, caplog: pytest.LogCaptureFixture) -> None:
    looking = Looking(api, state)
    looking.request()
    with caplog.at_level(logging.INFO, logger="exporter.attribution.run_lookups"):
        looking.worker.run_once()  # not found
        api.runs[RUN_ID] = RunRecord(SCHEDULED_MS, SCHEDULED_MS + 5, None, status="RUNNING")  # the record lags its end
        looking.now_ms += FIRST_RETRY_MS
        looking.worker.run_once()
        api.runs[RUN_ID] = RunRecord(SCHEDULED_MS, SCHEDULED_MS + 5, NOW_MS)
        looking.now_ms += 2 * FIRST_RETRY_MS
        looking.worker.run_once()
    assert looking.outcomes() == {"not_found": 1, "incomplete": 1, "found": 1}
    assert looking.lookup().start == RunStart(SCHEDULED_MS + 5)
    (warning,) = said(caplog)
    assert warning.startswith(
        f"run lookups: GET {api.url}/v2/runs/{{run_id}}[/trace] failed: answered HTTP 404 ('Run not found') (run {RUN_ID}). "
        "Until lookups succeed, cancellations that may be timeouts are retried"
    )
    assert said(caplog, logging.INFO) == [
        f"run lookups: GET {api.url}/v2/runs/{{run_id}}[/trace] works again after 1 failed lookups over 0 minutes"
    ]


def test_a_run_id_the_server_refuses_is_given_up_at_once(api: FakeInngestApi, state: StateDB) -> None:
    looking = Looking(api, state)
    looking.request(cancelled("not-a-ulid"))
    looking.worker.run_once()
    assert looking.lookup("not-a-ulid").state is LookupState.FAILED and looking.store.next_due_ms() is None
    assert looking.outcomes() == {"error": 1}


def test_a_lasting_failure_is_told_once_then_every_ten_minutes_never_with_a_key(
    api: FakeInngestApi, state: StateDB, caplog: pytest.LogCaptureFixture
) -> None:
    api.keys = {"signkey-test-other"}
    looking = Looking(api, state, fallback=FALLBACK_KEY)
    with caplog.at_level(logging.WARNING, logger="exporter.attribution.run_lookups"):
        for n in range(3):
            looking.request(cancelled(str(ulid.ULID.from_timestamp((SCHEDULED_MS + n) / 1000))))
            looking.worker.run_once()
        looking.now_ms += FAILURE_REMINDER_MS
        looking.request(cancelled(str(ulid.ULID.from_timestamp((SCHEDULED_MS + 9) / 1000)), received_ms=looking.now_ms))
        looking.worker.run_once()
    first, reminder = said(caplog)
    assert "failed: answered HTTP 401" in first and "still fails: answered HTTP 401" in reminder
    assert "(4 lookups in a row, for 10 minutes)" in reminder
    assert SIGNING_KEY not in caplog.text and FALLBACK_KEY not in caplog.text


def test_requests_keep_to_the_rate_and_the_concurrency(api: FakeInngestApi, state: StateDB) -> None:
    runs = [cancelled(str(ulid.ULID.from_timestamp((SCHEDULED_MS + n) / 1000))) for n in range(8)]
    for run in runs:
        api.runs[run.run_id] = RunRecord(SCHEDULED_MS, None, NOW_MS)
    api.run_shape = "omitted"
    looking = Looking(api, state, EXPORTER_RUN_LOOKUP_RATE="20", EXPORTER_RUN_LOOKUP_CONCURRENCY="8")
    looking.request(*runs)
    began = time.monotonic()
    assert looking.worker.run_once() == 8
    assert time.monotonic() - began >= 7 / 20 - 0.02  # eight requests, one every 50 ms

    api.runs_mode = Mode.HANG  # each request hangs for its whole timeout: in flight at once, two at the most
    hanging = Looking(api, state, EXPORTER_RUN_LOOKUP_CONCURRENCY="2", EXPORTER_RUN_LOOKUP_TIMEOUT="400ms")
    others = [cancelled(str(ulid.ULID.from_timestamp((SCHEDULED_MS + 100 + n) / 1000))) for n in range(4)]
    hanging.request(*others)
    began = time.monotonic()
    hanging.worker.run_once()
    arrivals = sorted(r.at - began for r in api.requests[8:])
    assert len(arrivals) == 4 and arrivals[1] < 0.3 and arrivals[2] >= 0.35


def test_lookups_survive_a_restart_and_are_pruned_after_their_grace_period(api: FakeInngestApi, tmp_path: Path) -> None:
    first = StateDB(tmp_path)
    Looking(api, first).request()
    first.close()
    again = StateDB(tmp_path)
    try:
        api.runs[RUN_ID] = RunRecord(SCHEDULED_MS, None, NOW_MS)
        looking = Looking(api, again)
        assert looking.worker.run_once() == 1  # the request made before the restart
        assert looking.store.prune(NOW_MS + GRACE_MS + RETENTION_MS) == 0
        assert looking.store.prune(NOW_MS + GRACE_MS + RETENTION_MS + 1) == 1 and looking.lookup() is None
    finally:
        again.close()


def test_the_worker_wakes_when_a_lookup_is_requested_and_stops_while_a_request_hangs(api: FakeInngestApi, state: StateDB) -> None:
    api.runs_mode = Mode.HANG
    looking = Looking(api, state, EXPORTER_RUN_LOOKUP_TIMEOUT="30s")
    looking.worker.start()
    time.sleep(0.2)
    began = time.monotonic()
    looking.request()
    api.wait_for(1, timeout=5)
    assert api.requests[0].at - began < 0.5
    stopping = time.monotonic()
    looking.worker.stop(timeout=0.5)
    assert time.monotonic() - stopping < 1.5


@pytest.mark.parametrize(
    "record, source",
    [
        (RunRecord(SCHEDULED_MS, SCHEDULED_MS + 20, NOW_MS), "timeout"),  # it ran for its whole finish timeout
        (RunRecord(SCHEDULED_MS, SCHEDULED_MS + 400_000, NOW_MS), "unknown"),  # queued 400 s, cancelled by hand 200 s later
        (None, "unknown"),  # no answer: a timeout is not ruled out, nor proven
    ],
)
def test_through_the_exporter_the_lookup_happens_after_the_ingest_and_decides(
    api: FakeInngestApi, tmp_path: Path, record: RunRecord | None, source: str
) -> None:
    if record is not None:
        api.runs[RUN_ID] = record
    settings = load_settings({
        "EXPORTER_STATE_DIR": str(tmp_path), "INNGEST_API_BASE_URL": api.url, "INNGEST_SIGNING_KEY": SIGNING_KEY,
        "EXPORTER_ATTRIBUTION_GRACE": "1s",
    })
    exporter = Exporter(settings, parse_config({"functions": {"app-fn": {"timeouts": {"finish": "5m"}}}}, "test"), environ={})
    assert exporter.run_lookup_worker is not None
    # cancelled ten minutes after it was scheduled: past `finish` by scheduling time
    event = {"name": "inngest/function.cancelled", "id": RUN_ID, "ts": SCHEDULED_MS + 600_000, "data": {"run_id": RUN_ID, "function_id": "app-fn"}}

    def counted(given: str) -> float | None:
        return exporter.registry.get_sample_value("inngest_function_cancellations_total", {"function_id": "app-fn", "source": given})

    try:
        assert json.loads(exporter.ingest_body(json.dumps(event).encode(), "events"))["pending"] == 1
        assert api.requests == []  # nothing asked while the ingest transaction held the state
        exporter.run_lookup_worker.run_once()
        if record is None:
            time.sleep(1.1)  # past the grace period: released by the exporter's releaser
            exporter.pipeline.release_due()
        assert counted(source) == 1 and exporter.pending.size() == 0
    finally:
        exporter.stop()


def test_the_pipeline_releases_all_settled_runs_page_by_page_or_only_those_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pipeline, "RELEASE_BATCH", 3)
    settings = load_settings({"EXPORTER_STATE_DIR": str(tmp_path), "INNGEST_API_BASE_URL": "http://127.0.0.1:9"})
    exporter = Exporter(settings, parse_config({"functions": {"app-fn": {}}, "bulk_cancellations": {}}, "test"), environ={})
    runs = [str(ulid.ULID.from_timestamp((SCHEDULED_MS + n) / 1000)) for n in range(7)]
    events = [{"name": "inngest/function.cancelled", "id": run, "ts": NOW_MS, "data": {"run_id": run, "function_id": "app-fn"}} for run in runs]
    try:
        assert json.loads(exporter.ingest_body(json.dumps(events).encode(), "events"))["pending"] == 7  # waiting for a poll
        assert exporter.bulk_windows is not None
        exporter.bulk_windows.record([], NOW_MS + 1)  # read since the cancellations: none waits any more
        assert exporter.pipeline.release_runs(runs[:2]) == 2 and exporter.pending.size() == 5
        assert exporter.pipeline.release_settled() == 5 and exporter.pending.size() == 0
    finally:
        exporter.stop()
