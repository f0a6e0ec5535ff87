"""Bulk cancellations: parsing the REST API's list, keeping its windows, and polling it like Inngest serves it."""

from __future__ import annotations

import json
import logging
import re
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

import pytest
import ulid
from prometheus_client import CollectorRegistry

from exporter import clock
from exporter.attribution import bulk_list
from exporter.attribution.bulk import MAX_PAGES, UNAVAILABLE_AFTER_SERVER_ERRORS, BulkPoller, BulkWindowStore
from exporter.attribution.bulk_list import (
    NO_LOWER_BOUND_MS,
    BacklogCancellation,
    BulkWindow,
    RunCancellation,
    parse_cancellations,
    rfc3339_ms,
)
from exporter.failure_log import FAILURE_REMINDER_MS
from exporter.config import parse_config
from exporter.core import Exporter
from exporter.health import PREFIX, HealthMetrics
from exporter.settings import CLOUD_API_ORIGIN, DEV_SERVER_ORIGIN, load_settings
from exporter.state import StateDB
from tests.support.fake_inngest_api import APP_UUID, CURSOR_PLACES, FakeInngestApi, Mode, query, server_item
from tests.support.payloads import FALLBACK_KEY, SIGNING_KEY, fixture_event

AFTER_MS = 1705861392000
"""The fixture's started_after, 2024-01-21T18:23:12.000Z."""
BEFORE_MS = 1705933362130
"""The fixture's started_before, 2024-01-22T14:22:42.130Z."""
RETENTION_S = 3600
HOUR_MS = 3_600_000
SLUG = "acme-app-schedule-reminder"
BULK_ID = "01HMRMPE5ZQ4AMNJ3S2N79QGRZ"
RUN_ID = "01HMRMNZ2D4H3Q3Z8N7V5X9K1T"


def listed(**changes: Any) -> dict[str, Any]:
    """The documented cancellation object, with `changes` (None removes a key)."""
    item = {**fixture_event("bulk-cancellation-response.json"), **changes}
    return {key: value for key, value in item.items() if value is not None}


def window(ident: str = "w1", function_id: str = "schedule-reminder", app_id: str | None = None) -> BulkWindow:
    return BulkWindow(ident, function_id, app_id, AFTER_MS, BEFORE_MS, None)


def from_server(ident: str = BULK_ID, function_slug: str = SLUG, **changes: Any) -> dict[str, Any]:
    """A bulk cancellation as the server lists it, over the fixture's range."""
    return server_item(ident, function_slug, **{"started_after_ms": AFTER_MS, "started_before_ms": BEFORE_MS, **changes})


@pytest.fixture
def store(state: StateDB) -> BulkWindowStore:
    return BulkWindowStore(state, retention_seconds=RETENTION_S)


# --- parsing -------------------------------------------------------------------------------------


def test_parses_the_servers_answer() -> None:
    body = {"data": [from_server(expression="event.data.userId == 'u1'")], "metadata": {"fetched_at": "2026-12-03T16:31:37.123456789Z"}}
    (item,), problems = parse_cancellations(body)
    assert problems == []
    assert item == BulkWindow(BULK_ID, SLUG, APP_UUID, AFTER_MS, BEFORE_MS, "event.data.userId == 'u1'")
    assert item.slug == SLUG


def test_data_null_is_an_empty_list() -> None:
    # the server encodes an empty Go slice as null
    assert parse_cancellations({"data": None, "metadata": {"fetched_at": "2026-12-03T16:31:37Z", "cached_until": None}}) == ([], [])


@pytest.mark.parametrize("after", [None, "absent", ""])
def test_a_window_without_started_after_is_open_at_the_start(after: str | None) -> None:
    item = from_server()
    if after == "absent":
        del item["started_after"]
    else:
        item["started_after"] = after
    (found,), problems = parse_cancellations({"data": [item]})
    assert problems == [] and found.started_after_ms == NO_LOWER_BOUND_MS and found.started_before_ms == BEFORE_MS


def test_only_bulk_run_items_are_windows_run_items_name_their_run_and_backlogs_their_function() -> None:
    items = [
        from_server("bulk"),
        from_server("run", kind="run", cause="API", target_id=RUN_ID),
        from_server("dashboard", kind="run", cause="Manual", target_id="01HMRMNZ2D4H3Q3Z8N7V5X9K1V"),
        from_server("server-job", kind="run", cause="Event", target_id="01HMRMNZ2D4H3Q3Z8N7V5X9K1W"),
        from_server("backlog", kind="backlog", cause="Manual", target_id="backlog-1"),
        from_server("start", kind="start_timeout", cause="Event", target_id=RUN_ID),
        from_server("finish", kind="finish_timeout", cause="Event", target_id=RUN_ID),
    ]
    listed, problems = parse_cancellations({"data": items})
    assert problems == []  # the kinds that are no evidence are skipped without a word
    assert [type(item).__name__ for item in listed] == ["BulkWindow", "RunCancellation", "RunCancellation", "BacklogCancellation"]
    assert listed[1:] == [
        RunCancellation("run", RUN_ID), RunCancellation("dashboard", "01HMRMNZ2D4H3Q3Z8N7V5X9K1V"),
        BacklogCancellation("backlog", SLUG, APP_UUID),
    ]


@pytest.mark.parametrize(
    "bad, problem",
    [
        (from_server(kind="run", cause="API"), "target_id: missing"),
        (from_server(kind="bulk_runs"), "kind: 'bulk_runs' is not a kind of cancellation the exporter knows"),
        (from_server(kind=0), "kind: expected a string"),
    ],
)
def test_an_item_of_an_unusable_kind_is_reported(bad: dict[str, Any], problem: str) -> None:
    listed, problems = parse_cancellations([bad])
    assert listed == [] and problems == [f"cancellation {BULK_ID!r}: {problem}"]


@pytest.mark.parametrize("shape", ["array", "data"])
def test_parses_the_documented_object_in_either_shape(shape: str) -> None:
    items = [listed()]
    windows, problems = parse_cancellations(items if shape == "array" else {"data": items, "metadata": {}})
    assert problems == []
    assert windows == [
        BulkWindow(
            id="01HMRMPE5ZQ4AMNJ3S2N79QGRZ", function_id="schedule-reminder", app_id=None,
            started_after_ms=AFTER_MS, started_before_ms=BEFORE_MS,
            expression="event.data.userId == 'user_o9235hf84hf'",
        )
    ]


def test_function_id_may_be_bare_beside_app_id_or_the_full_slug() -> None:
    (bare, slug), _ = parse_cancellations(
        [listed(id="a", app_id="acme-app"), listed(id="b", function_id="acme-app-schedule-reminder")]
    )
    assert bare.applies_to("acme-app-schedule-reminder") and slug.applies_to("acme-app-schedule-reminder")
    assert not bare.applies_to("other-app-schedule-reminder")
    assert not slug.applies_to("schedule-reminder")


@pytest.mark.parametrize(
    "other",
    [
        "other-acme-app-schedule-reminder",  # a function `acme-app-schedule-reminder` of app `other`
        "acme-app-schedule-reminder-2",
        "schedule-reminder",
        "app-schedule-reminder",
    ],
)
def test_a_server_window_is_for_its_slug_only(other: str) -> None:
    (item,), _ = parse_cancellations({"data": [from_server()]})
    assert item.applies_to(SLUG) and not item.applies_to(other)


def test_a_bare_id_beside_the_apps_own_id_is_that_apps_function_only() -> None:
    # app `acme-app`'s function `schedule-reminder`: `schedule-reminder` is app `schedule`'s function `reminder`
    item = window(app_id="acme-app")
    assert item.slug == SLUG and item.applies_to(SLUG)
    assert not item.applies_to("schedule-reminder") and not item.applies_to("other-schedule-reminder")


def test_other_timestamp_forms_and_an_empty_if() -> None:
    (item,), _ = parse_cancellations(
        [listed(started_after="2024-01-21T19:23:12+01:00", started_before="2024-01-22T14:22:42.130000001Z", **{"if": ""})]
    )
    assert (item.started_after_ms, item.started_before_ms, item.expression) == (AFTER_MS, BEFORE_MS, None)


@pytest.mark.parametrize(
    "text, ms",
    [
        ("2026-12-03T16:31:37.123456789Z", 1796315497123),  # Go's time.RFC3339Nano, as the server writes it
        ("2026-12-03T16:31:37.1239Z", 1796315497123),  # below a millisecond: dropped, not rounded
        ("2026-12-03T16:31:37Z", 1796315497000),
        ("2026-12-03t16:31:37z", 1796315497000),
        ("2026-12-03 16:31:37Z", 1796315497000),  # RFC 3339 allows a space for the T
        ("2026-12-03T17:31:37.5+01:00", 1796315497500),
        ("2026-12-03T16:01:37-00:30", 1796315497000),
        ("1969-12-31T23:59:59.9995Z", -1),  # before the epoch: still the millisecond it falls in
        ("0001-01-01T00:00:00Z", -62135596800000),  # Go's zero time
    ],
)
def test_rfc3339_timestamps_as_inngest_writes_them(text: str, ms: int) -> None:
    assert rfc3339_ms(text) == ms


@pytest.mark.parametrize(
    "text, problem",
    [
        ("2026-12-03T16:31:37", "has no time zone"),
        ("2026-12-03T16:31:37.123456789", "has no time zone"),
        ("2026-12-03", "is not an RFC 3339 timestamp"),
        ("2026-12-03T16:31Z", "is not an RFC 3339 timestamp"),
        ("2026-12-03T16:31:37.Z", "is not an RFC 3339 timestamp"),
        ("20261203T163137Z", "is not an RFC 3339 timestamp"),
        ("2026-13-03T16:31:37Z", "is not an RFC 3339 timestamp"),
        ("2026-12-03T24:00:00Z", "is not an RFC 3339 timestamp"),
        ("2026-12-03T16:31:37+24:00", "is not an RFC 3339 timestamp"),
        ("\uff12026-12-03T16:31:37Z", "is not an RFC 3339 timestamp"),  # a full-width digit: int() would take it
        (" 2026-12-03T16:31:37Z", "is not an RFC 3339 timestamp"),
    ],
)
def test_other_texts_are_refused_with_the_reason(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=re.escape(f"{text!r} {problem}")):
        rfc3339_ms(text)


class Python310Datetime(datetime):
    """`datetime` as Python 3.10 has it, which pyproject allows: `fromisoformat` reads no `Z` and at most six fraction digits."""

    @classmethod
    def fromisoformat(cls, text: str) -> Python310Datetime:
        if text.endswith(("Z", "z")) or re.search(r"\.[0-9]{7,}", text):
            raise ValueError(f"Invalid isoformat string: {text!r}")
        return super().fromisoformat(text)


def test_the_server_timestamps_are_read_on_python_3_10(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bulk_list, "datetime", Python310Datetime)
    (item,), problems = parse_cancellations(
        [listed(started_after="2024-01-21T18:23:12Z", started_before="2024-01-22T14:22:42.130000001Z")]
    )
    assert problems == [] and (item.started_after_ms, item.started_before_ms) == (AFTER_MS, BEFORE_MS)


@pytest.mark.parametrize(
    "bad, problem",
    [
        ("not an object", "cancellation [0]: expected an object"),
        (listed(id=""), "cancellation [0]: id: missing"),
        (listed(function_id=None), "function_id: missing"),
        (listed(app_id=42), "app_id: expected a string"),
        (listed(app_id="\ud800"), "app_id: not valid Unicode"),
        (listed(started_after="yesterday"), "started_after: 'yesterday' is not an RFC 3339 timestamp"),
        (listed(started_before="2024-01-22T14:22:42"), "started_before: '2024-01-22T14:22:42' has no time zone"),
        (listed(started_after="2024-01-23T00:00:00Z"), "started_after is later than started_before"),
        (listed(**{"if": "event.data.userId =="}), "if: invalid CEL expression"),
    ],
)
def test_unusable_items_are_reported_and_skipped(bad: Any, problem: str) -> None:
    windows, problems = parse_cancellations([bad, listed(id="good")])
    assert [w.id for w in windows] == ["good"]
    assert len(problems) == 1 and problem in problems[0]
    if isinstance(bad, dict) and bad.get("id"):
        assert problems[0].startswith("cancellation '01HMRMPE5ZQ4AMNJ3S2N79QGRZ': ")


@pytest.mark.parametrize("body", [{"items": []}, {"data": {}}, "text", None, 3])
def test_a_body_of_neither_shape_is_an_error(body: Any) -> None:
    with pytest.raises(ValueError, match="JSON array or an object with a \"data\" array"):
        parse_cancellations(body)


# --- the store -----------------------------------------------------------------------------------


def covering_ids(state: StateDB, store: BulkWindowStore, slug: str, at_ms: int) -> list[str]:
    return [w.id for w in store.covering(slug, at_ms)]


def test_window_edges_are_inclusive(state: StateDB, store: BulkWindowStore) -> None:
    store.record([window()], BEFORE_MS)
    for at_ms, expected in [(AFTER_MS - 1, []), (AFTER_MS, ["w1"]), (BEFORE_MS, ["w1"]), (BEFORE_MS + 1, [])]:
        assert covering_ids(state, store, "schedule-reminder", at_ms) == expected


def test_an_open_window_covers_every_run_scheduled_before_its_end(state: StateDB, store: BulkWindowStore) -> None:
    (open_window,), _ = parse_cancellations({"data": [from_server(started_after_ms=None)]})
    store.record([open_window], BEFORE_MS)
    for at_ms, expected in [(0, [BULK_ID]), (AFTER_MS - HOUR_MS, [BULK_ID]), (BEFORE_MS, [BULK_ID]), (BEFORE_MS + 1, [])]:
        assert covering_ids(state, store, SLUG, at_ms) == expected
    reopened = BulkWindowStore(state, retention_seconds=RETENTION_S)
    assert covering_ids(state, reopened, SLUG, 0) == [BULK_ID]  # the open start survives the state database


def test_run_cancellations_are_kept_by_run_apart_from_the_windows(tmp_path: Path) -> None:
    state = StateDB(tmp_path)
    store = BulkWindowStore(state, retention_seconds=RETENTION_S)
    later = "01HMRMPE5ZQ4AMNJ3S2N79QGS0"
    store.record([RunCancellation(later, RUN_ID), RunCancellation(BULK_ID, RUN_ID)], BEFORE_MS)
    store.record([RunCancellation(later, RUN_ID)], BEFORE_MS + 1)
    assert store.run_cancellation(RUN_ID) == RunCancellation(BULK_ID, RUN_ID)  # the first made is the one that counts
    assert store.run_cancellation("another-run") is None
    assert store.size() == 0 and store.covering(SLUG, AFTER_MS) == []
    state.close()

    reopened = StateDB(tmp_path)
    kept = BulkWindowStore(reopened, retention_seconds=RETENTION_S)
    assert kept.run_cancellation(RUN_ID) == RunCancellation(BULK_ID, RUN_ID)
    kept.record([], BEFORE_MS + RETENTION_S * 1000 + 2)
    assert kept.prune(BEFORE_MS + RETENTION_S * 1000 + 1) == 0
    assert kept.prune(BEFORE_MS + RETENTION_S * 1000 + 2) == 1
    assert kept.run_cancellation(RUN_ID) is None
    reopened.close()


def test_covering_matches_either_function_id_form(state: StateDB, store: BulkWindowStore) -> None:
    store.record(
        [window("bare", app_id="acme-app"), window("slug", "acme-app-schedule-reminder"), window("other", "other-fn")],
        BEFORE_MS,
    )
    assert covering_ids(state, store, "acme-app-schedule-reminder", AFTER_MS) == ["bare", "slug"]
    assert covering_ids(state, store, "other-app-schedule-reminder", AFTER_MS) == []


def test_a_bare_function_id_without_app_id_names_the_function_in_any_app(state: StateDB, store: BulkWindowStore) -> None:
    # the documented response (tests/fixtures/bulk-cancellation-response.json) has no app_id
    store.record([window("documented"), window("longer", "app-schedule-reminder")], BEFORE_MS)
    assert covering_ids(state, store, "acme-app-schedule-reminder", AFTER_MS) == ["documented", "longer"]
    assert covering_ids(state, store, "acme-app-reschedule-reminder", AFTER_MS) == []
    assert covering_ids(state, store, "schedule-reminder", AFTER_MS) == ["documented"]


def test_creation_time_comes_from_the_ulid_id() -> None:
    assert BulkWindow("01HMRMPE5ZQ4AMNJ3S2N79QGRZ", "f", None, 0, 1, None).created_at_ms == 1705929029823
    assert BulkWindow("not-a-ulid", "f", None, 0, 1, None).created_at_ms is None


def test_a_record_updates_a_window_it_already_holds(state: StateDB, store: BulkWindowStore) -> None:
    store.record([window()], BEFORE_MS)
    store.record([BulkWindow("w1", "schedule-reminder", None, AFTER_MS, AFTER_MS, "true")], BEFORE_MS + 1)
    assert store.covering("schedule-reminder", AFTER_MS)[0].expression == "true"
    assert covering_ids(state, store, "schedule-reminder", BEFORE_MS) == []
    assert store.size() == 1


def test_a_vanished_window_is_kept_until_retention_has_passed(state: StateDB, store: BulkWindowStore) -> None:
    seen = BEFORE_MS
    store.record([window()], seen)
    store.record([], seen + HOUR_MS // 2)  # finished and dropped from the list
    assert store.prune(seen + RETENTION_S * 1000) == 0
    assert covering_ids(state, store, "schedule-reminder", AFTER_MS) == ["w1"]
    assert store.prune(seen + RETENTION_S * 1000 + 1) == 1
    assert store.size() == 0


def test_a_window_still_listed_survives_a_long_api_outage(store: BulkWindowStore) -> None:
    store.record([window()], BEFORE_MS)
    assert store.prune(BEFORE_MS + 100 * RETENTION_S * 1000) == 0
    assert store.size() == 1


def test_last_success_survives_a_restart(tmp_path: Path) -> None:
    state = StateDB(tmp_path)
    store = BulkWindowStore(state, retention_seconds=RETENTION_S)
    assert store.last_success_ms() is None
    store.record([], BEFORE_MS)
    state.close()

    reopened = StateDB(tmp_path)
    assert BulkWindowStore(reopened, retention_seconds=RETENTION_S).last_success_ms() == BEFORE_MS
    reopened.close()


# --- the poller, against a stand-in for Inngest's REST API -------------------------------------


class Polling:
    """A poller wired to `api` on a fresh registry, with what a test looks at."""

    def __init__(
        self, api: FakeInngestApi, store: BulkWindowStore, fallback: str | None = None, timeout: float = 2.0, interval: float = 60
    ) -> None:
        env = {"INNGEST_API_BASE_URL": api.url + "/", "INNGEST_SIGNING_KEY": SIGNING_KEY}
        if fallback:
            env["INNGEST_SIGNING_KEY_FALLBACK"] = fallback
        self.registry = CollectorRegistry()
        self.store = store
        self.later_ms = 0
        """How far the poller's clock runs ahead of the wall clock."""
        self.settled = 0
        """Calls of `on_settled`: held runs released."""
        self.poller = BulkPoller(
            store, load_settings(env), interval=interval, health=HealthMetrics(self.registry), timeout=timeout,
            on_settled=self._settle, now_ms=lambda: clock.now_ms() + self.later_ms,
        )

    def _settle(self) -> None:
        self.settled += 1

    def polls(self, outcome: str) -> float:
        return self.registry.get_sample_value(f"{PREFIX}_bulk_polls_total", {"outcome": outcome}) or 0.0

    def metric(self, name: str) -> float | None:
        return self.registry.get_sample_value(f"{PREFIX}_{name}")


@pytest.fixture
def api() -> Iterator[FakeInngestApi]:
    with FakeInngestApi(SIGNING_KEY) as server:
        server.cancellations = [listed()]
        yield server


def test_a_poll_records_the_servers_answer(api: FakeInngestApi, store: BulkWindowStore) -> None:
    api.cancellations = [from_server("bulk", started_after_ms=None), from_server("run", kind="run", target_id=RUN_ID)]
    polling = Polling(api, store)
    assert polling.poller.poll_once() is True
    assert [w.id for w in store.covering(SLUG, 0)] == ["bulk"] and store.run_cancellation(RUN_ID) is not None
    api.cancellations = []  # answered `"data": null`
    assert polling.poller.poll_once() is True
    assert polling.polls("ok") == 2 and polling.polls("error") == 0


@pytest.mark.parametrize("shape", ["array", "data"])
def test_a_poll_sends_the_signing_key_and_records_the_list(api: FakeInngestApi, store: BulkWindowStore, shape: str) -> None:
    api.shape = shape
    polling = Polling(api, store)
    before = time.time()
    assert polling.poller.poll_once() is True
    (request,) = api.requests
    assert (request.method, request.path) == ("GET", "/v1/cancellations?limit=100")
    assert request.headers.get_all("Authorization") == [f"Bearer {SIGNING_KEY}"]
    assert store.size() == 1 and polling.metric("bulk_windows") == 1
    assert polling.polls("ok") == 1 and polling.polls("error") == 0
    assert before - 1 <= (polling.metric("bulk_last_success_timestamp_seconds") or 0) <= time.time()


@pytest.mark.parametrize(
    "env, origin",
    [
        ({}, CLOUD_API_ORIGIN),
        ({"INNGEST_DEV": "0"}, CLOUD_API_ORIGIN),
        ({"INNGEST_DEV": "1"}, DEV_SERVER_ORIGIN),
        ({"INNGEST_DEV": "true"}, DEV_SERVER_ORIGIN),
        ({"INNGEST_DEV": "http://localhost:9000"}, "http://localhost:9000"),
        ({"INNGEST_DEV": "localhost:9000"}, "http://localhost:9000"),
        ({"INNGEST_DEV": "1", "INNGEST_API_BASE_URL": "https://api.example.com"}, "https://api.example.com"),
        ({"INNGEST_DEV": "1", "INNGEST_API_BASE_URL": ""}, DEV_SERVER_ORIGIN),
    ],
)
def test_the_list_is_read_from_the_server_the_sdk_talks_to(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], origin: str
) -> None:
    assert load_settings(env).api_base_url == origin
    if env.get("INNGEST_DEV", "0") != "0" and not env.get("INNGEST_API_BASE_URL"):
        # the SDK's own choice, from the same variables (it reads the process environment)
        from inngest._internal import server_lib
        from inngest._internal.client_lib.utils import get_api_origin

        for name in ("INNGEST_API_BASE_URL", "INNGEST_BASE_URL"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("INNGEST_DEV", env["INNGEST_DEV"])
        assert get_api_origin(None, server_lib.ServerKind.DEV_SERVER) in (origin, origin + "/")


def test_in_development_mode_the_dev_server_is_polled(api: FakeInngestApi, store: BulkWindowStore) -> None:
    settings = load_settings({"INNGEST_DEV": api.url, "INNGEST_SIGNING_KEY": SIGNING_KEY})
    assert BulkPoller(store, settings, interval=60, health=HealthMetrics(CollectorRegistry())).poll_once() is True
    assert len(api.requests) == 1 and store.size() == 1


def test_the_fallback_key_is_tried_after_a_401(api: FakeInngestApi, store: BulkWindowStore) -> None:
    api.keys = {FALLBACK_KEY}
    assert Polling(api, store, fallback=FALLBACK_KEY).poller.poll_once() is True
    assert [r.headers["Authorization"] for r in api.requests] == [f"Bearer {SIGNING_KEY}", f"Bearer {FALLBACK_KEY}"]
    assert store.size() == 1


@pytest.mark.parametrize("place", CURSOR_PLACES)
def test_pages_are_followed_by_their_cursor(api: FakeInngestApi, store: BulkWindowStore, place: str) -> None:
    api.cancellations = [listed(id=f"w{n}") for n in range(250)]
    api.page_size, api.cursor_place = 100, place
    assert Polling(api, store).poller.poll_once() is True
    assert [query(r).get("cursor") for r in api.requests] == [None, "page-100", "page-200"]
    assert all(query(r)["limit"] == "100" for r in api.requests)
    assert store.size() == 250


def test_a_list_longer_than_the_page_bound_fails_the_poll(api: FakeInngestApi, store: BulkWindowStore) -> None:
    api.cancellations = [listed(id=f"w{n}") for n in range(MAX_PAGES + 1)]
    api.page_size = 1
    polling = Polling(api, store)
    assert polling.poller.poll_once() is False
    assert len(api.requests) == MAX_PAGES and store.size() == 0 and polling.polls("error") == 1


@pytest.mark.parametrize(
    "mode, fallback, reason",
    [
        (Mode.ERROR, None, "answered HTTP 500"),
        (Mode.NOT_JSON, None, "answer is not JSON"),
        (Mode.WRONG_SHAPE, None, "expected a JSON array"),
        (Mode.HANG, None, "no answer within 0.3s"),
        (Mode.LIST, "signkey-test-refused", "answered HTTP 401"),  # both keys refused
    ],
)
def test_a_failed_poll_is_logged_and_counted_never_raised(
    api: FakeInngestApi, state: StateDB, store: BulkWindowStore, caplog: pytest.LogCaptureFixture, mode: Mode, fallback: str | None, reason: str
) -> None:
    api.mode = mode
    if fallback:
        api.keys = {"signkey-test-accepted"}
    polling = Polling(api, store, fallback=fallback, timeout=0.3)
    with caplog.at_level(logging.WARNING, logger="exporter.attribution.bulk"):
        assert polling.poller.poll_once() is False
    assert reason in caplog.text and f"{api.url}/v1/cancellations" in caplog.text
    assert SIGNING_KEY not in caplog.text and (fallback is None or fallback not in caplog.text)
    assert polling.polls("error") == 1 and polling.polls("ok") == 0
    assert polling.metric("bulk_last_success_timestamp_seconds") == 0
    assert store.last_success_ms() is None


def test_an_unreachable_api_is_a_failed_poll(store: BulkWindowStore, caplog: pytest.LogCaptureFixture) -> None:
    with FakeInngestApi(SIGNING_KEY) as gone:
        polling = Polling(gone, store)
    with caplog.at_level(logging.WARNING, logger="exporter.attribution.bulk"):
        assert polling.poller.poll_once() is False
        assert polling.poller.poll_once() is False  # the error names another connection object: still the same failure
    (warning,) = said(caplog)
    assert warning.startswith(f"bulk cancellations: polling GET {gone.url}/v1/cancellations failed: cannot connect: Connection refused. ")
    assert "INNGEST_API_BASE_URL" in warning and "HTTPConnectionPool" not in warning and SIGNING_KEY not in warning
    assert polling.polls("error") == 2
    assert store.list_available() and polling.settled == 0  # an outage: runs still wait for the list


def said(caplog: pytest.LogCaptureFixture, level: int = logging.WARNING) -> list[str]:
    """What the poller logged at `level`."""
    return [r.getMessage() for r in caplog.records if r.name == "exporter.attribution.bulk" and r.levelno == level]


@pytest.mark.parametrize(
    "mode, reason",
    [
        (Mode.NOT_OFFERED, "answered HTTP 500 ('Error listing cancellations')"),
        (Mode.NOT_OFFERED_EMPTY, "answered HTTP 500 with no body"),
    ],
)
def test_a_server_without_the_list_is_told_once_and_no_run_waits_for_it(
    api: FakeInngestApi, store: BulkWindowStore, caplog: pytest.LogCaptureFixture, mode: Mode, reason: str
) -> None:
    api.mode = mode
    polling = Polling(api, store)
    assert polling.metric("bulk_list_available") == 1
    with caplog.at_level(logging.INFO, logger="exporter.attribution.bulk"):
        for _ in range(5):
            assert polling.poller.poll_once() is False
    (told,) = said(caplog)
    assert told.startswith(f"bulk cancellations: GET {api.url}/v1/cancellations {reason}: ")
    for words in (
        "does not offer the bulk cancellation list", "self-hosted and dev servers have none",
        "runs that would be `manual` are reported `unknown`", "no run waits for a poll",
        "Polling goes on every 60s", "declare it with `bulk_cancellations: {available: false}`",
    ):
        assert words in told
    assert store.list_available() is False and polling.metric("bulk_list_available") == 0
    assert polling.polls("error") == 5 and polling.settled == 1  # held runs released when it was found out

    caplog.clear()
    api.mode = Mode.LIST
    with caplog.at_level(logging.INFO, logger="exporter.attribution.bulk"):
        assert polling.poller.poll_once() is True
        assert polling.poller.poll_once() is True
    assert said(caplog, logging.INFO) == [
        f"bulk cancellations: GET {api.url}/v1/cancellations read again after 5 failed polls;"
        " bulk and manual can be concluded again"
    ]
    assert said(caplog) == [] and store.list_available() and polling.metric("bulk_list_available") == 1


def test_another_server_error_makes_the_list_unavailable_once_it_repeats(
    api: FakeInngestApi, store: BulkWindowStore, caplog: pytest.LogCaptureFixture
) -> None:
    api.mode = Mode.ERROR
    polling = Polling(api, store)
    with caplog.at_level(logging.WARNING, logger="exporter.attribution.bulk"):
        for _ in range(UNAVAILABLE_AFTER_SERVER_ERRORS - 1):
            assert polling.poller.poll_once() is False
        assert store.list_available() and polling.settled == 0
        assert polling.poller.poll_once() is False
    failed, unavailable = said(caplog)
    assert "failed: answered HTTP 500 ('Something went wrong.  Please try again'). Until a poll succeeds" in failed
    assert f"{UNAVAILABLE_AFTER_SERVER_ERRORS} times in a row: " in unavailable and "does not offer" in unavailable
    assert not store.list_available() and polling.settled == 1


def test_only_server_errors_in_a_row_make_the_list_unavailable(api: FakeInngestApi, store: BulkWindowStore) -> None:
    polling = Polling(api, store)
    for mode in (Mode.ERROR, Mode.ERROR, Mode.NOT_JSON, Mode.ERROR, Mode.ERROR, Mode.LIST, Mode.ERROR, Mode.ERROR):
        api.mode = mode
        polling.poller.poll_once()
    assert store.list_available() and polling.polls("error") == 7


def test_a_lasting_failure_is_told_when_it_starts_changes_and_every_ten_minutes(
    api: FakeInngestApi, store: BulkWindowStore, caplog: pytest.LogCaptureFixture
) -> None:
    api.mode = Mode.NOT_JSON
    polling = Polling(api, store)
    url = f"{api.url}/v1/cancellations"
    with caplog.at_level(logging.WARNING, logger="exporter.attribution.bulk"):
        for _ in range(3):
            polling.poller.poll_once()
        polling.later_ms += FAILURE_REMINDER_MS - 1_000
        polling.poller.poll_once()
        polling.later_ms += 1_000
        polling.poller.poll_once()
        api.mode = Mode.WRONG_SHAPE
        polling.poller.poll_once()
        polling.poller.poll_once()
    told = said(caplog)
    assert all(". Until a poll succeeds" in line for line in told)  # each says what it means and what to set
    assert [line.split(". Until")[0] for line in told] == [
        f"bulk cancellations: polling GET {url} failed: answer is not JSON (Content-Type 'text/html')",
        f"bulk cancellations: polling GET {url} still fails: answer is not JSON (Content-Type 'text/html')"
        " (5 polls in a row, for 10 minutes)",
        f"bulk cancellations: polling GET {url} failed: expected a JSON array or an object with a \"data\" array (or null)",
    ]
    assert polling.polls("error") == 7 and store.list_available()


def test_held_runs_are_released_as_unknown_once_the_list_is_found_unavailable(api: FakeInngestApi, tmp_path: Path) -> None:
    """Through the exporter's own wiring: the poller releases what the pipeline holds."""
    api.mode = Mode.NOT_OFFERED
    settings = load_settings(
        {"EXPORTER_STATE_DIR": str(tmp_path), "INNGEST_API_BASE_URL": api.url, "INNGEST_SIGNING_KEY": SIGNING_KEY}
    )
    exporter = Exporter(settings, parse_config({"functions": {SLUG: {}}, "bulk_cancellations": {}}, "test"), environ={})
    assert exporter.bulk_poller is not None

    def cancel() -> dict[str, int]:
        now_ms = clock.now_ms()
        run_id = str(ulid.ULID.from_timestamp((now_ms - 600_000) / 1000))
        event = {"name": "inngest/function.cancelled", "id": run_id, "ts": now_ms, "data": {"run_id": run_id, "function_id": SLUG}}
        answer: dict[str, int] = json.loads(exporter.ingest_body(json.dumps(event).encode(), "events"))
        return answer

    def unknown() -> float | None:
        return exporter.registry.get_sample_value("inngest_function_cancellations_total", {"function_id": SLUG, "source": "unknown"})

    try:
        assert cancel()["pending"] == 1  # a poll could still show a bulk cancellation behind it
        assert exporter.bulk_poller.poll_once() is False
        assert exporter.pending.size() == 0 and unknown() == 1
        assert cancel()["pending"] == 0 and unknown() == 2  # no run waits any more
    finally:
        exporter.stop()


def test_a_key_in_an_error_message_is_masked(store: BulkWindowStore, caplog: pytest.LogCaptureFixture) -> None:
    # requests names a header value it refuses (here, a key with a line break) in its error
    with FakeInngestApi() as server:
        env = {"INNGEST_API_BASE_URL": server.url, "INNGEST_SIGNING_KEY": "signkey-test-abc\n"}
        poller = BulkPoller(store, load_settings(env), interval=60, health=HealthMetrics(CollectorRegistry()))
        with caplog.at_level(logging.WARNING, logger="exporter.attribution.bulk"):
            assert poller.poll_once() is False
    assert "signkey-test-abc" not in caplog.text and "<signing key>" in caplog.text


def test_unusable_items_are_logged_once_and_the_rest_recorded(
    api: FakeInngestApi, store: BulkWindowStore, caplog: pytest.LogCaptureFixture
) -> None:
    api.cancellations = [listed(id="bad", started_after="soon"), listed(id="good")]
    poller = Polling(api, store).poller
    with caplog.at_level(logging.WARNING, logger="exporter.attribution.bulk"):
        assert poller.poll_once() is True
        assert poller.poll_once() is True
    assert caplog.text.count("cancellation 'bad': started_after") == 1
    assert store.size() == 1


def test_start_polls_at_once_and_stop_returns_while_the_api_hangs(api: FakeInngestApi, store: BulkWindowStore) -> None:
    api.mode = Mode.HANG
    polling = Polling(api, store, timeout=30)
    began = time.monotonic()
    polling.poller.start()
    api.wait_for(1, timeout=5)
    assert api.requests[0].at - began < 2  # not after the 60s interval
    stopping = time.monotonic()
    polling.poller.stop(timeout=0.5)
    assert time.monotonic() - stopping < 1.5


def test_after_the_first_poll_the_next_come_every_interval(api: FakeInngestApi, store: BulkWindowStore) -> None:
    polling = Polling(api, store, interval=0.1)
    polling.poller.start()
    api.wait_for(3, timeout=5)
    polling.poller.stop(timeout=2)
    assert polling.polls("ok") >= 3
