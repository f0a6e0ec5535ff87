"""Attribution from timeouts (with the run's start, looked up), cancel signals and the bulk list; `unknown` whenever
evidence is missing or split."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import ulid

from exporter.attribution.bulk import BulkWindowStore
from exporter.attribution.bulk_list import NO_LOWER_BOUND_MS, BacklogCancellation, BulkWindow, Listed, RunCancellation
from exporter.attribution.classify import EvidenceClassifier
from exporter.attribution.run_lookups import LookupState, RunLookupStore
from exporter.attribution.timeouts import RunStart
from exporter.config import parse_config
from exporter.parsing import parse_event
from exporter.records import Cancellation, Signal, Source
from exporter.attribution.signals import SignalStore
from exporter.state import StateDB
from tests.support.fake_inngest_api import APP_UUID

SCHEDULED = 1_700_000_000_000
CONFIG = {
    "functions": {
        "app-import": {
            "cancel_on": [
                {"event": "import/cancelled", "if": "async.data.importId == event.data.importId", "timeout": "1h"}
            ],
            "timeouts": {"start": "30s", "finish": "2h"},
        },
        "app-plain": {"cancel_on": [{"event": "plain/stop"}]},
    }
}


def cancellation(function_id: str, age_s: float, import_id: str = "i-1") -> Cancellation:
    trigger = {"name": "import/requested", "id": "t", "ts": SCHEDULED, "data": {"importId": import_id}}
    return Cancellation(
        run_id="run", function_id=function_id, event_name="inngest/function.cancelled", event_id=None,
        cancelled_at_ms=SCHEDULED + int(age_s * 1000), scheduled_at_ms=SCHEDULED, trigger=trigger,
        received_at_ms=SCHEDULED + int(age_s * 1000),
    )


def classify(
    state: StateDB,
    item: Cancellation,
    signals: list[tuple[str, float, dict[str, Any]]] = [],
    config: dict[str, Any] = CONFIG,
    *,
    bulk: list[Listed] | None = None,
    polled_at_s: float | None = None,
    list_available: bool = True,
    looked_up: RunStart | None = None,
    lookups: bool = True,
    final: bool = True,
    events: list[dict[str, Any]] = [],
) -> tuple[Source | None, list[str]]:
    """Classify `item` given signals (name, seconds after scheduling that Inngest received it, data), `events` as
    they reach the exporter, when polling is on the list's evidence, and when run lookups are on what its lookup found
    (`looked_up`; None: no answer)."""
    errors: list[str] = []
    store_of_lookups = RunLookupStore(state, grace_ms=120_000) if lookups else None
    if looked_up is not None:
        assert store_of_lookups is not None
        with state.transaction() as tx:
            tx.execute("DELETE FROM run_lookups")  # an earlier call's answer about the same run id
            store_of_lookups.request(tx, item)
        store_of_lookups.found(item.run_id, looked_up)
    store = SignalStore(state, max_entries=1000, max_age_seconds=86400 * 30)
    windows = None
    if bulk is not None:
        windows = BulkWindowStore(state, retention_seconds=86400)
        if polled_at_s is not None:
            windows.record(bulk, SCHEDULED + int(polled_at_s * 1000))
        windows.set_list_available(list_available)
    parsed = parse_config(config, "test")
    classifier = EvidenceClassifier(parsed, store, windows, errors.append, lookups=store_of_lookups)
    with state.transaction() as tx:
        for name, offset_s, data in signals:
            store.record(tx, Signal(name, SCHEDULED + int(offset_s * 1000), {"name": name, "data": data}))
        for event in events:
            signal = parse_event(event, evidence_names=parsed.evidence_names, now_ms=item.received_at_ms)
            assert isinstance(signal, Signal)
            store.record(tx, signal)
        return classifier.classify(tx, item, final=final), errors


def started(at_s: float | None) -> RunStart:
    """A lookup's answer: the run started `at_s` seconds after it was scheduled (None: it never started)."""
    return RunStart(None if at_s is None else SCHEDULED + int(at_s * 1000))


def window(function_id: str = "app-import", after_s: float = -10, before_s: float = 10, expression: str | None = None, app_id: str | None = None) -> BulkWindow:
    return BulkWindow(
        id=f"w-{app_id}-{function_id}-{after_s}-{before_s}-{expression}", function_id=function_id, app_id=app_id,
        started_after_ms=SCHEDULED + int(after_s * 1000), started_before_ms=SCHEDULED + int(before_s * 1000),
        expression=expression,
    )


def run_cancelled(at_s: float, run_id: str = "run") -> RunCancellation:
    """A listed cancellation of `run_id` alone, made `at_s` seconds after the run was scheduled."""
    return RunCancellation(str(ulid.ULID.from_timestamp((SCHEDULED + at_s * 1000) / 1000)), run_id)


def test_unconfigured_function_is_unknown(state: StateDB) -> None:
    assert classify(state, cancellation("other-fn", 7200))[0] is Source.UNKNOWN


def test_a_finish_timeout_counts_from_when_the_run_started(state: StateDB) -> None:
    polled = {"bulk": [], "polled_at_s": 8000}
    assert classify(state, cancellation("app-import", 7200.2), looked_up=started(0), **polled)[0] is Source.TIMEOUT
    assert classify(state, cancellation("app-import", 7200.2), looked_up=started(1.2), **polled)[0] is Source.TIMEOUT
    # queued for a minute, then cancelled by hand: past `finish` by scheduling time, not by start time
    assert classify(state, cancellation("app-import", 7200.2), looked_up=started(60), **polled)[0] is Source.MANUAL
    # a run that never started cannot outrun its finish timeout
    assert classify(state, cancellation("app-import", 7200.2), looked_up=started(None), **polled)[0] is Source.MANUAL


def test_a_start_timeout_needs_a_run_that_never_started(state: StateDB) -> None:
    polled = {"bulk": [], "polled_at_s": 8000}
    assert classify(state, cancellation("app-import", 31), looked_up=started(None), **polled)[0] is Source.TIMEOUT
    assert classify(state, cancellation("app-import", 25), looked_up=started(None), **polled)[0] is Source.TIMEOUT
    assert classify(state, cancellation("app-import", 31), looked_up=started(2), **polled)[0] is Source.MANUAL


def test_a_batched_run_meets_its_start_timeout_when_dequeued_however_late(state: StateDB) -> None:
    """A batched run has no eager job: the server cancels it when it is dequeued past its start timeout."""
    config = {"functions": {"app-batch": {"batch_events": True, "timeouts": {"start": "30s"}}, "app-one": {"timeouts": {"start": "30s"}}}}
    polled = {"bulk": [], "polled_at_s": 8000, "config": config}
    assert classify(state, cancellation("app-batch", 600), final=False, **polled)[0] is None  # held for its lookup
    assert classify(state, cancellation("app-batch", 600), looked_up=started(None), **polled)[0] is Source.TIMEOUT
    assert classify(state, cancellation("app-batch", 600), looked_up=started(20), **polled)[0] is Source.MANUAL
    # not batched: its eager job would have ended it at 30 s; ten minutes on, no start timeout is possible
    assert classify(state, cancellation("app-one", 600), final=False, **polled)[0] is Source.MANUAL


@pytest.mark.parametrize("age_s", [7200.2, 31.0])
def test_an_age_that_admits_a_timeout_is_held_for_the_lookup_and_unknown_without_its_answer(state: StateDB, age_s: float) -> None:
    item = cancellation("app-plain", age_s)
    config = {"functions": {"app-plain": {"timeouts": {"start": "30s", "finish": "2h"}}}, "bulk_cancellations": {}}
    polled = {"bulk": [], "polled_at_s": 8000, "config": config}
    assert classify(state, item, final=False, **polled)[0] is None
    with state.reading() as conn:
        lookup = RunLookupStore(state, grace_ms=120_000).lookup(conn, item.run_id)
    assert lookup is not None and lookup.state is LookupState.WAITING  # requested, for the worker to ask
    assert classify(state, item, **polled)[0] is Source.UNKNOWN  # final: the grace period ended without an answer
    assert classify(state, item, lookups=False, final=False, **polled)[0] is Source.UNKNOWN  # lookups off


def test_an_age_that_rules_timeouts_out_is_not_looked_up(state: StateDB) -> None:
    item = cancellation("app-import", 600)
    assert classify(state, item, bulk=[], polled_at_s=700, final=False)[0] is None  # a cancel signal may come
    with state.reading() as conn:
        assert RunLookupStore(state, grace_ms=120_000).lookup(conn, item.run_id) is None
    assert classify(state, item, bulk=[], polled_at_s=700)[0] is Source.MANUAL


def test_matching_signal_before_the_cancellation_means_event(state: StateDB) -> None:
    signals = [("import/cancelled", 300, {"importId": "i-1"})]
    assert classify(state, cancellation("app-import", 600), signals)[0] is Source.EVENT


def test_signal_for_another_run_does_not_count(state: StateDB) -> None:
    signals = [("import/cancelled", 300, {"importId": "someone-else"})]
    assert classify(state, cancellation("app-import", 600), signals)[0] is Source.UNKNOWN


def test_signal_after_the_rule_timeout_or_after_the_cancellation_does_not_count(state: StateDB) -> None:
    assert classify(state, cancellation("app-import", 5000), [("import/cancelled", 3700, {"importId": "i-1"})])[0] is Source.UNKNOWN
    assert classify(state, cancellation("app-import", 600), [("import/cancelled", 900, {"importId": "i-1"})])[0] is Source.UNKNOWN


def ulid_at(offset_s: float) -> str:
    """An id Inngest made on receiving an event, `offset_s` seconds after the run was scheduled."""
    return str(ulid.ULID.from_timestamp((SCHEDULED + offset_s * 1000) / 1000))


def test_a_signal_counts_from_when_inngest_received_it_not_from_its_ts(state: StateDB) -> None:
    """Inngest matches a cancel event only if it received it after scheduling the run (its id against the run id)."""
    data = {"importId": "i-1"}
    sent_late = {"name": "import/cancelled", "id": ulid_at(-0.001), "ts": SCHEDULED + 300_000, "data": data}
    assert classify(state, cancellation("app-import", 600), events=[sent_late])[0] is Source.UNKNOWN
    sent_early = {"name": "import/cancelled", "id": ulid_at(0.001), "ts": SCHEDULED - 300_000, "data": data}
    assert classify(state, cancellation("app-import", 600), events=[sent_early])[0] is Source.EVENT


def test_a_signal_received_in_the_millisecond_the_run_was_scheduled_does_not_count(state: StateDB) -> None:
    """Inngest's order inside one millisecond is random: the same millisecond proves nothing."""
    assert classify(state, cancellation("app-plain", 60), [("plain/stop", 0, {})])[0] is Source.UNKNOWN
    assert classify(state, cancellation("app-plain", 60), [("plain/stop", 0.001, {})])[0] is Source.EVENT


def test_the_rule_timeout_counts_from_the_runs_scheduling_not_its_triggers_ts(state: StateDB) -> None:
    """The server sets a cancel rule's expiry when it schedules the run; a trigger sent long before changes nothing."""
    queued = cancellation("app-import", 3700)
    queued = dataclasses.replace(queued, trigger={**queued.trigger, "ts": SCHEDULED - 1_800_000})
    # one state for both: the first signal is still there when the second comes
    assert classify(state, queued, [("import/cancelled", 3600.001, {"importId": "i-1"})])[0] is Source.UNKNOWN
    assert classify(state, queued, [("import/cancelled", 3000, {"importId": "i-1"})])[0] is Source.EVENT


def test_the_runs_own_trigger_never_cancels_it(state: StateDB) -> None:
    """A function cancelled by newer events of its own trigger's name: its trigger is no such event, whatever its
    `ts` says (here a sender's id and a clock running ahead)."""
    config = {"functions": {"app-refresh": {"cancel_on": [{"event": "import/requested", "if": "async.data.importId == event.data.importId"}]}}}
    item = cancellation("app-refresh", 600)
    own = {**item.trigger, "id": "refresh-i-1", "ts": SCHEDULED + 1000}
    item = dataclasses.replace(item, trigger=own)
    assert classify(state, item, config=config, events=[own])[0] is Source.UNKNOWN
    newer = {**own, "id": ulid_at(300), "ts": SCHEDULED + 300_000}
    assert classify(state, item, config=config, events=[own, newer])[0] is Source.EVENT


def test_rule_without_expression_matches_any_signal_of_its_name(state: StateDB) -> None:
    assert classify(state, cancellation("app-plain", 60), [("plain/stop", 10, {})])[0] is Source.EVENT


def test_evidence_for_two_sources_is_not_claimed(state: StateDB) -> None:
    signals = [("import/cancelled", 20, {"importId": "i-1"})]
    assert classify(state, cancellation("app-import", 30), signals, looked_up=started(None))[0] is Source.UNKNOWN
    assert classify(state, cancellation("app-import", 30), signals)[0] is Source.UNKNOWN  # a timeout not ruled out
    assert classify(state, cancellation("app-import", 30), signals, looked_up=started(1))[0] is Source.EVENT


def test_failing_expression_is_no_match_and_reported(state: StateDB) -> None:
    # the trigger has no importId: evaluation fails instead of comparing
    item = cancellation("app-import", 600)
    item = Cancellation(**{**{f: getattr(item, f) for f in item.__dataclass_fields__}, "trigger": {"data": {}}})
    source, errors = classify(state, item, [("import/cancelled", 300, {"importId": "i-1"})])
    assert source is Source.UNKNOWN and errors == ["app-import"]


def test_an_expression_that_cannot_be_evaluated_never_leads_to_manual(state: StateDB) -> None:
    """No match is not no evidence: the rule or window whose `if` failed may be what cancelled the run."""
    item = cancellation("app-import", 600)
    item = Cancellation(**{**{f: getattr(item, f) for f in item.__dataclass_fields__}, "trigger": {"data": {}}})
    signal = [("import/cancelled", 300, {"importId": "i-1"})]
    assert classify(state, item, signal, bulk=[], polled_at_s=601)[0] is Source.UNKNOWN
    plain = cancellation("app-plain", 600)
    failing_window = window("app-plain", expression="event.data.missing.deeper == 1")
    assert classify(state, plain, bulk=[failing_window], polled_at_s=601)[0] is Source.UNKNOWN


def test_no_evidence_yet_is_undecided_while_evidence_can_still_arrive(state: StateDB) -> None:
    assert classify(state, cancellation("app-import", 600), final=False)[0] is None
    # nothing can explain an unconfigured function's run later when bulk polling is off
    assert classify(state, cancellation("other-fn", 600), final=False)[0] is Source.UNKNOWN
    assert classify(state, cancellation("other-fn", 600), bulk=[], polled_at_s=0, final=False)[0] is None


@pytest.mark.parametrize(
    ("bulk_window", "expected"),
    [
        (window("other-fn", 0, 0), Source.BULK),  # edges inclusive
        (window("other-fn", 0.001, 10), Source.UNKNOWN),  # one millisecond outside
        (window("fn", app_id="other"), Source.BULK),  # bare function id with app_id beside it
        (window("another-fn"), Source.UNKNOWN),
    ],
)
def test_bulk_window_covering_the_scheduled_time_means_bulk(state: StateDB, bulk_window: BulkWindow, expected: Source) -> None:
    assert classify(state, cancellation("other-fn", 600), bulk=[bulk_window], polled_at_s=700)[0] is expected


@pytest.mark.parametrize(("import_id", "expected"), [("i-7", Source.BULK), ("i-8", Source.MANUAL)])
def test_bulk_expression_must_hold_for_the_trigger(state: StateDB, import_id: str, expected: Source) -> None:
    bulk_window = window("app-plain", expression=f"event.data.importId == '{import_id}'")
    item = cancellation("app-plain", 60, import_id="i-7")
    assert classify(state, item, bulk=[bulk_window], polled_at_s=100)[0] is expected


def test_manual_only_by_elimination_with_a_poll_since_the_cancellation(state: StateDB) -> None:
    item = cancellation("app-import", 600)
    assert classify(state, item, bulk=[], polled_at_s=601)[0] is Source.MANUAL
    assert classify(state, item, bulk=[], polled_at_s=599)[0] is Source.UNKNOWN  # no poll since: bulk not ruled out
    assert classify(state, item, bulk=[], polled_at_s=None)[0] is Source.UNKNOWN  # never polled
    assert classify(state, item)[0] is Source.UNKNOWN  # bulk polling off
    assert classify(state, cancellation("other-fn", 600), bulk=[], polled_at_s=601)[0] is Source.UNKNOWN  # undeclared


def test_bulk_and_timeout_together_are_not_claimed(state: StateDB) -> None:
    assert classify(state, cancellation("app-import", 7300), bulk=[window()], polled_at_s=8000, looked_up=started(0))[0] is Source.UNKNOWN
    assert classify(state, cancellation("app-import", 7300), bulk=[window()], polled_at_s=8000, looked_up=started(600))[0] is Source.BULK


def test_a_window_open_at_the_start_covers_runs_scheduled_long_before(state: StateDB) -> None:
    open_window = BulkWindow("open", "other-fn", APP_UUID, NO_LOWER_BOUND_MS, SCHEDULED, None)
    assert classify(state, cancellation("other-fn", 600), bulk=[open_window], polled_at_s=700)[0] is Source.BULK


SIMILAR = {"functions": {"acme-sync": {}, "old-acme-sync": {}}}
"""Two functions, one slug ending in the other: `sync` of app `acme`, and `acme-sync` of app `old` (or `sync` of `old-acme`)."""


@pytest.mark.parametrize(
    ("listed_window", "run_of", "expected"),
    [
        (window("acme-sync", app_id=APP_UUID), "acme-sync", Source.BULK),  # as the server lists it
        (window("acme-sync", app_id=APP_UUID), "old-acme-sync", Source.MANUAL),
        (window("old-acme-sync", app_id=APP_UUID), "acme-sync", Source.MANUAL),
        (window("acme-sync", app_id="old"), "old-acme-sync", Source.BULK),  # a request body's form
        (window("acme-sync", app_id="old"), "acme-sync", Source.MANUAL),
        (window("sync", app_id="acme"), "old-acme-sync", Source.MANUAL),
    ],
)
def test_a_window_never_takes_another_functions_runs(
    state: StateDB, listed_window: BulkWindow, run_of: str, expected: Source
) -> None:
    assert classify(state, cancellation(run_of, 600), config=SIMILAR, bulk=[listed_window], polled_at_s=700)[0] is expected


def test_a_listed_cancellation_of_this_run_alone_means_manual(state: StateDB) -> None:
    # positive evidence: the function need not be declared, nor the list read since the cancellation
    assert classify(state, cancellation("other-fn", 600), bulk=[run_cancelled(590)], polled_at_s=595)[0] is Source.MANUAL
    assert classify(state, cancellation("app-import", 600), bulk=[run_cancelled(590)], polled_at_s=595)[0] is Source.MANUAL
    # a cancel signal may still come for a function with `cancel_on` rules: held until then
    assert classify(state, cancellation("app-import", 600), bulk=[run_cancelled(590)], polled_at_s=700, final=False)[0] is None


def test_a_listed_cancellation_of_another_run_or_made_after_the_cancellation_does_not_count(state: StateDB) -> None:
    assert classify(state, cancellation("other-fn", 600), bulk=[run_cancelled(590, "another-run")], polled_at_s=700)[0] is Source.UNKNOWN
    assert classify(state, cancellation("other-fn", 600), bulk=[run_cancelled(600.001)], polled_at_s=700)[0] is Source.UNKNOWN


def test_a_listed_cancellation_and_a_timeout_are_not_claimed(state: StateDB) -> None:
    listed = {"bulk": [run_cancelled(7000)], "polled_at_s": 7300}
    assert classify(state, cancellation("app-import", 7200.2), looked_up=started(0), **listed)[0] is Source.UNKNOWN
    assert classify(state, cancellation("app-import", 7200.2), looked_up=started(600), **listed)[0] is Source.MANUAL


def test_no_run_waits_for_a_list_found_unavailable_and_manual_is_not_concluded(state: StateDB) -> None:
    quiet = {"functions": {"app-quiet": {}}}
    item = cancellation("app-quiet", 600)
    assert classify(state, item, config=quiet, bulk=[], polled_at_s=None, final=False)[0] is None
    assert classify(state, item, config=quiet, bulk=[], polled_at_s=None, list_available=False, final=False)[0] is Source.UNKNOWN
    # evidence read before the list became unavailable still counts
    assert classify(state, item, config=quiet, bulk=[window("app-quiet")], polled_at_s=500, list_available=False, final=False)[0] is Source.BULK


def backlog(at_s: float, function_id: str = "app-import") -> BacklogCancellation:
    """A listed cancellation of the function's queued runs, made `at_s` seconds after the run was scheduled."""
    return BacklogCancellation(str(ulid.ULID.from_timestamp((SCHEDULED + at_s * 1000) / 1000)), function_id, None)


def test_a_listed_backlog_cancellation_of_the_function_keeps_manual_from_being_concluded(state: StateDB) -> None:
    item = cancellation("app-import", 600)  # the store keeps what each call lists: the blocking case comes last
    assert classify(state, item, bulk=[backlog(700)], polled_at_s=701)[0] is Source.MANUAL  # made after the cancellation
    assert classify(state, item, bulk=[backlog(300, "app-other")], polled_at_s=701)[0] is Source.MANUAL  # another function
    # it may have ended this queued run, and says nothing of which runs: neither bulk nor manual
    assert classify(state, item, bulk=[backlog(300)], polled_at_s=701)[0] is Source.UNKNOWN


def test_a_server_declared_without_bulk_cancellation_concludes_manual_with_no_poll(state: StateDB) -> None:
    declared = {"functions": {"app-quiet": {"timeouts": {"finish": "2h"}}}, "bulk_cancellations": {"available": False}}
    assert classify(state, cancellation("app-quiet", 600), config=declared, final=False)[0] is Source.MANUAL  # nothing to wait for
    assert classify(state, cancellation("app-quiet", 7200), config=declared, looked_up=started(0))[0] is Source.TIMEOUT
    assert classify(state, cancellation("other-fn", 600), config=declared)[0] is Source.UNKNOWN  # undeclared function
    assert classify(state, cancellation("app-quiet", 600), config={**declared, "bulk_cancellations": {}})[0] is Source.UNKNOWN


SINGLETON = {
    "functions": {
        "app-sync": {"singleton": {"key": "event.data.account", "mode": "cancel"}, "triggers": ["sync/requested"]},
        "app-sync-all": {"singleton": {"mode": "cancel"}, "triggers": [{"event": "sync/requested", "if": "event.data.full == true"}]},
        "app-sync-skip": {"singleton": {"key": "event.data.account", "mode": "skip"}, "triggers": ["sync/requested"]},
    }
}
"""Singletons: by account in `cancel` mode; one for the whole function, started only by full syncs; by account in `skip` mode."""


def sync_run(function_id: str, age_s: float, data: dict[str, Any]) -> Cancellation:
    """A run of a singleton function, triggered by `sync/requested` with `data` (Inngest's id, 0.3 s before scheduling)."""
    trigger = {"name": "sync/requested", "id": ulid_at(-0.3), "ts": SCHEDULED - 300, "data": data}
    return dataclasses.replace(cancellation(function_id, age_s), trigger=trigger)


def sync_requested(offset_s: float, data: dict[str, Any]) -> dict[str, Any]:
    """A newer `sync/requested`, which Inngest received `offset_s` seconds after the run was scheduled."""
    return {"name": "sync/requested", "id": ulid_at(offset_s), "ts": SCHEDULED + int(offset_s * 1000), "data": data}


def test_a_newer_trigger_with_the_runs_singleton_key_means_singleton(state: StateDB) -> None:
    run = sync_run("app-sync", 600, {"account": "acme"})
    assert classify(state, run, config=SINGLETON, events=[sync_requested(599, {"account": "acme"})])[0] is Source.SINGLETON


@pytest.mark.parametrize(
    ("newer", "why"),
    [
        (sync_requested(300, {"account": "globex"}), "another key: another singleton"),
        (sync_requested(600.001, {"account": "acme"}), "received after the cancellation"),
        (sync_requested(0, {"account": "acme"}), "received in the millisecond the run was scheduled"),
        ({**sync_requested(300, {"account": "acme"}), "id": "sync-acme", "ts": SCHEDULED - 60_000}, "stamped before the run"),
    ],
)
def test_a_newer_trigger_that_cannot_have_cancelled_the_run_does_not_count(
    state: StateDB, newer: dict[str, Any], why: str
) -> None:
    run = sync_run("app-sync", 600, {"account": "acme"})
    assert classify(state, run, config=SINGLETON, events=[newer], bulk=[], polled_at_s=700)[0] is Source.MANUAL, why


def test_the_runs_own_trigger_is_no_newer_run(state: StateDB) -> None:
    own = {"name": "sync/requested", "id": "sync-acme-1", "ts": SCHEDULED + 1000, "data": {"account": "acme"}}
    run = dataclasses.replace(cancellation("app-sync", 600), trigger=own)
    assert classify(state, run, config=SINGLETON, events=[own])[0] is Source.UNKNOWN


def test_without_a_key_the_whole_function_is_one_singleton_started_only_when_the_triggers_if_holds(state: StateDB) -> None:
    run = sync_run("app-sync-all", 600, {"account": "acme", "full": True})
    partial = sync_requested(200, {"account": "globex", "full": False})
    assert classify(state, run, config=SINGLETON, events=[partial])[0] is Source.UNKNOWN  # started no run
    full = sync_requested(300, {"account": "globex", "full": True})
    assert classify(state, run, config=SINGLETON, events=[full])[0] is Source.SINGLETON


def test_skip_mode_never_cancels_and_its_triggers_are_not_evidence(state: StateDB) -> None:
    run = sync_run("app-sync-skip", 600, {"account": "acme"})
    assert classify(state, run, config=SINGLETON, bulk=[], polled_at_s=700, final=False)[0] is Source.MANUAL
    assert parse_config(SINGLETON, "test").singleton_triggers == {"sync/requested"}  # from the cancelling ones only
    assert "sync/requested" not in parse_config({"functions": {"f": SINGLETON["functions"]["app-sync-skip"]}}, "t").evidence_names


def test_a_singleton_also_started_by_a_cron_schedule_is_never_manual_by_elimination(state: StateDB) -> None:
    """A newer run started by the schedule leaves no trigger the exporter can receive."""
    config = {"functions": {"app-sync": {**SINGLETON["functions"]["app-sync"], "triggers": ["sync/requested", {"cron": "0 * * * *"}]}}}
    run = sync_run("app-sync", 600, {"account": "acme"})
    assert classify(state, run, config=config, bulk=[], polled_at_s=700)[0] is Source.UNKNOWN
    assert classify(state, run, config=config, events=[sync_requested(300, {"account": "acme"})])[0] is Source.SINGLETON


@pytest.mark.parametrize(
    ("held", "newer"),
    [(False, False), (1, True), (True, 1), (0, False)],
    ids=["false is no key", "true is not 1", "1 is not true", "0 is not false"],
)
def test_singleton_keys_compare_as_inngest_hashes_them(state: StateDB, held: Any, newer: Any) -> None:
    run = sync_run("app-sync", 600, {"account": held})
    assert classify(state, run, config=SINGLETON, events=[sync_requested(300, {"account": newer})])[0] is Source.UNKNOWN


def test_a_singleton_key_that_cannot_be_evaluated_is_counted_and_never_leads_to_manual(state: StateDB) -> None:
    run = sync_run("app-sync", 600, {"team": "acme"})  # no account
    source, errors = classify(state, run, config=SINGLETON, bulk=[], polled_at_s=700)
    assert (source, errors) == (Source.UNKNOWN, ["app-sync"])


def test_a_singletons_run_waits_for_a_late_trigger_and_one_with_another_source_is_unknown(state: StateDB) -> None:
    run = sync_run("app-sync", 600, {"account": "acme"})
    assert classify(state, run, config=SINGLETON, bulk=[], polled_at_s=700, final=False)[0] is None
    assert classify(state, run, config=SINGLETON, bulk=[window("app-sync")], polled_at_s=700, final=False)[0] is None
    newer = sync_requested(300, {"account": "acme"})
    assert classify(state, run, config=SINGLETON, events=[newer], bulk=[window("app-sync")], polled_at_s=700)[0] is Source.UNKNOWN
