"""Source attribution against labelled scenarios, through the real pipeline on a simulated clock.

Generated runs (tests.support.scenarios) check the attribution as a whole; the
named scenarios below pin each edge case, so a failure names the case. Each
named scenario is labelled twice, by hand and by the generator's oracle: the
two must agree before the pipeline is judged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest

from exporter.records import Source
from exporter.attribution.signals import MAX_CANDIDATES
from tests.support.attribution_harness import CONCRETE, Verdict, judge
from tests.support.scenarios import (
    BATCH,
    CASES,
    CONTRARY_AFTER_DECISION,
    DIGEST,
    EVIDENCE_UNSEEN,
    EXPORT,
    HOUR,
    IMPORT,
    LEGACY,
    MINUTE,
    NOTIFY,
    REFRESH,
    SECOND,
    SINGLE,
    SYNC,
    Profile,
    Run,
    ScenarioBuilder,
    generate,
)

GENERATED_RUNS = 600
SEED = 20241125

@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> list[Verdict]:
    verdicts, problems = judge(generate(SEED, GENERATED_RUNS), tmp_path_factory.mktemp("attribution"))
    assert not problems
    return verdicts


def _report(verdicts: list[Verdict]) -> str:
    return "\n".join(v.describe() for v in verdicts[:20]) + (f"\n... and {len(verdicts) - 20} more" if len(verdicts) > 20 else "")


def test_every_generated_run_is_emitted_exactly_once(generated: list[Verdict]) -> None:
    wrong = [v for v in generated if len(v.emitted) != 1]
    assert not wrong, _report(wrong)


def test_every_generated_run_gets_the_source_its_evidence_supports(generated: list[Verdict]) -> None:
    wrong = [v for v in generated if v.inferred is not v.run.expected]
    assert not wrong, _report(wrong)


def test_no_generated_run_gets_a_source_other_than_its_true_cause(generated: list[Verdict]) -> None:
    """Stated apart from the previous test, because it does not trust the labels: `unknown` or the true cause.

    Runs with evidence the exporter could not see in time (late, polling off, function
    not in the config) are exempt: no rule can weigh evidence it never receives.
    """
    wrong = [v for v in generated if v.unsupported and EVIDENCE_UNSEEN not in v.run.hazards]
    assert not wrong, _report(wrong)


def test_generated_runs_cover_every_case_source_and_setting(generated: list[Verdict]) -> None:
    """Guards the generator: assertions over runs that never happen would prove nothing."""
    runs = [v.run for v in generated]
    assert {r.case for r in runs} == {c.name for c in CASES}
    assert {r.cause for r in runs} == set(CONCRETE)
    assert {r.expected for r in runs} == {*CONCRETE, Source.UNKNOWN}
    assert {r.function_id for r in runs} >= {IMPORT.slug, SYNC.slug, DIGEST.slug, NOTIFY.slug, LEGACY.slug, REFRESH.slug, BATCH.slug, SINGLE.slug}
    assert sum(r.expected is r.cause for r in runs) > len(runs) // 2
    assert {h for r in runs for h in r.hazards} >= {EVIDENCE_UNSEEN, CONTRARY_AFTER_DECISION}


# --- named scenarios ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Named:
    name: str
    expect: Source
    place: Callable[[ScenarioBuilder], None]
    settings: dict[str, Any] = field(default_factory=dict)


NAMED: list[Named] = []


def named(name: str, expect: Source, **settings: Any) -> Callable[[Callable[[ScenarioBuilder], None]], None]:
    """Register a hand-labelled scenario; `place` adds one run and its evidence to the builder."""
    def register(place: Callable[[ScenarioBuilder], None]) -> None:
        NAMED.append(Named(name, expect, place, settings))
    return register


def cancelled(b: ScenarioBuilder, profile: Profile, cause: Source, age_ms: int, **options: Any) -> Run:
    """The scenario's run: cancelled at the epoch's moment, its cancellation arriving half a second later."""
    options = {"cancelled_ms": b.moment_ms, "skew_ms": 500, "queued_ms": 300, **options}
    return b.run(profile, case=b.name, cause=cause, age_ms=age_ms, **options)


def signal_before(b: ScenarioBuilder, run: Run, **options: Any) -> None:
    """A cancel signal sent a second before `run`'s cancellation and delivered with it (matching, unless told)."""
    b.signal(run, run.cancelled_ms - SECOND, delivered_ms=run.cancelled_ms, **options)


def lookups_fail_through_grace(b: ScenarioBuilder, run: Run) -> None:
    """Every run lookup fails from a minute before `run`'s cancellation until a minute after its grace period."""
    b.lookup_outage(run.cancelled_ms - MINUTE, run.decided_by_ms + MINUTE)


def window_over(b: ScenarioBuilder, run: Run, *, after: int = -MINUTE, before: int = MINUTE, **options: Any) -> None:
    """A bulk window of `run`'s function from `after` to `before` ms around its scheduled time, created a minute before
    its cancellation."""
    created = options.pop("created_ms", run.cancelled_ms - MINUTE)
    b.window(run.profile, after_ms=run.scheduled_ms + after, before_ms=run.scheduled_ms + before, created_ms=created, **options)


@named("event: signal delivered before the cancellation", Source.EVENT)
def _(b: ScenarioBuilder) -> None:
    run = cancelled(b, IMPORT, Source.EVENT, 10 * MINUTE)
    b.signal(run, run.cancelled_ms - 2 * SECOND, delivered_ms=run.cancelled_ms - SECOND)


@named("event: signal delivered after the cancellation, within the grace period", Source.EVENT)
def _(b: ScenarioBuilder) -> None:
    run = cancelled(b, IMPORT, Source.EVENT, 10 * MINUTE)
    b.signal(run, run.cancelled_ms - 2 * SECOND, delivered_ms=run.decided_by_ms - 2 * SECOND)


@named("event: signal delivered beyond the grace period, polling off, is unknown", Source.UNKNOWN, bulk_polling=False)
def _(b: ScenarioBuilder) -> None:
    run = cancelled(b, IMPORT, Source.EVENT, 10 * MINUTE)
    b.signal(run, run.cancelled_ms - 2 * SECOND, delivered_ms=run.decided_by_ms + 2 * SECOND)


@named("event: signal delivered beyond the grace period is unseen: manual by elimination (documented limit)", Source.MANUAL)
def _(b: ScenarioBuilder) -> None:
    run = cancelled(b, IMPORT, Source.EVENT, 10 * MINUTE)
    b.signal(run, run.cancelled_ms - 2 * SECOND, delivered_ms=run.decided_by_ms + 2 * SECOND)


@named("event: signal for another run (expression mismatch) does not count", Source.MANUAL)
def _(b: ScenarioBuilder) -> None:
    run = cancelled(b, IMPORT, Source.MANUAL, 10 * MINUTE)
    b.signal(run, run.cancelled_ms - 2 * SECOND, delivered_ms=run.cancelled_ms, matching=False)


@named("event: signal received exactly at the rule timeout after the scheduling counts", Source.EVENT)
def _(b: ScenarioBuilder) -> None:
    run = cancelled(b, IMPORT, Source.EVENT, HOUR + 10 * SECOND, queued_ms=10 * MINUTE)
    b.signal(run, run.scheduled_ms + HOUR, delivered_ms=run.cancelled_ms)


@named("event: signal received 1 ms after the rule timeout does not count", Source.MANUAL)
def _(b: ScenarioBuilder) -> None:
    run = cancelled(b, IMPORT, Source.MANUAL, HOUR + 10 * SECOND)
    b.signal(run, run.scheduled_ms + HOUR + 1, delivered_ms=run.cancelled_ms)


@named("event: signal received 1 ms after the run was scheduled counts", Source.EVENT)
def _(b: ScenarioBuilder) -> None:
    run = cancelled(b, IMPORT, Source.EVENT, 10 * MINUTE)
    b.signal(run, run.scheduled_ms + 1, delivered_ms=run.scheduled_ms + SECOND)


@named("event: signal received in the millisecond the run was scheduled does not count", Source.MANUAL)
def _(b: ScenarioBuilder) -> None:
    run = cancelled(b, IMPORT, Source.MANUAL, 10 * MINUTE)
    b.signal(run, run.scheduled_ms, delivered_ms=run.scheduled_ms + SECOND)


@named("event: signal received before the run was scheduled, its ts later, does not count", Source.MANUAL)
def _(b: ScenarioBuilder) -> None:
    run = cancelled(b, IMPORT, Source.MANUAL, 10 * MINUTE)
    b.signal(run, run.scheduled_ms - SECOND, ts_ms=run.scheduled_ms + MINUTE, delivered_ms=run.scheduled_ms + MINUTE)


@named("event: signal received after the run was scheduled, its ts earlier, counts", Source.EVENT)
def _(b: ScenarioBuilder) -> None:
    run = cancelled(b, IMPORT, Source.EVENT, 10 * MINUTE)
    b.signal(run, run.cancelled_ms - SECOND, ts_ms=run.scheduled_ms - MINUTE, delivered_ms=run.cancelled_ms)


@named("event: the run's own trigger, of the cancel event's name and stamped after the scheduling, never counts", Source.MANUAL)
def _(b: ScenarioBuilder) -> None:
    moment = b.moment_ms
    cancelled(b, REFRESH, Source.MANUAL, 10 * MINUTE, trigger_stamped_ms=moment - 10 * MINUTE + SECOND)


@named("event: a newer event of the run's own trigger's name, for its key, cancels it", Source.EVENT)
def _(b: ScenarioBuilder) -> None:
    signal_before(b, cancelled(b, REFRESH, Source.EVENT, 10 * MINUTE))


@named("batch: a cancel signal carrying a batched run's key is not its cause (no cancelOn on a batch)", Source.MANUAL)
def _(b: ScenarioBuilder) -> None:
    run = cancelled(b, BATCH, Source.MANUAL, 10 * MINUTE)
    (rule,) = IMPORT.rules
    b.signal(run, run.cancelled_ms - SECOND, delivered_ms=run.cancelled_ms, rule=rule)


@named("timeout: a batched run never started, dequeued ten minutes past its start timeout", Source.TIMEOUT)
def _(b: ScenarioBuilder) -> None:
    cancelled(b, BATCH, Source.TIMEOUT, 12 * MINUTE, started_after_ms=None)


@named("manual: a batched run that had started, cancelled by hand ten minutes past its start timeout", Source.MANUAL)
def _(b: ScenarioBuilder) -> None:
    cancelled(b, BATCH, Source.MANUAL, 12 * MINUTE, started_after_ms=MINUTE)


@named("event: signal exactly at the cancellation counts", Source.EVENT)
def _(b: ScenarioBuilder) -> None:
    run = cancelled(b, IMPORT, Source.EVENT, 10 * MINUTE)
    b.signal(run, run.cancelled_ms, delivered_ms=run.cancelled_ms + 10)


@named("event: signal 1 ms after the cancellation does not count", Source.MANUAL)
def _(b: ScenarioBuilder) -> None:
    run = cancelled(b, IMPORT, Source.MANUAL, 10 * MINUTE)
    b.signal(run, run.cancelled_ms + 1, delivered_ms=run.cancelled_ms + 10)


@named("event: rule without `if` matches any signal of its name", Source.EVENT)
def _(b: ScenarioBuilder) -> None:
    run = cancelled(b, SYNC, Source.EVENT, 45 * MINUTE)
    signal_before(b, run, rule=1)


@named("singleton: a newer trigger with the run's key, received before the cancellation, cancels it", Source.SINGLETON)
def _(b: ScenarioBuilder) -> None:
    run = cancelled(b, SINGLE, Source.SINGLETON, 10 * MINUTE)
    b.newer_trigger(run, run.cancelled_ms - 50, delivered_ms=run.cancelled_ms)


@named("singleton: a newer trigger delivered after the cancellation, within the grace period", Source.SINGLETON)
def _(b: ScenarioBuilder) -> None:
    run = cancelled(b, SINGLE, Source.SINGLETON, 10 * MINUTE)
    b.newer_trigger(run, run.cancelled_ms - 50, delivered_ms=run.decided_by_ms - 2 * SECOND)


@named("singleton: a newer trigger with another key does not cancel the run", Source.MANUAL)
def _(b: ScenarioBuilder) -> None:
    run = cancelled(b, SINGLE, Source.MANUAL, 10 * MINUTE)
    b.newer_trigger(run, run.cancelled_ms - 50, delivered_ms=run.cancelled_ms, matching=False)


@named("singleton: a trigger received before the run was scheduled, its ts later, does not cancel it", Source.MANUAL)
def _(b: ScenarioBuilder) -> None:
    run = cancelled(b, SINGLE, Source.MANUAL, 10 * MINUTE)
    b.newer_trigger(run, run.scheduled_ms, ts_ms=run.scheduled_ms + MINUTE, delivered_ms=run.scheduled_ms + MINUTE)


@named("singleton: a newer trigger received 1 ms after the cancellation does not count", Source.MANUAL)
def _(b: ScenarioBuilder) -> None:
    run = cancelled(b, SINGLE, Source.MANUAL, 10 * MINUTE)
    b.newer_trigger(run, run.cancelled_ms + 1, delivered_ms=run.cancelled_ms + 10)


@named("ambiguous: a newer singleton trigger and a bulk window are unknown", Source.UNKNOWN)
def _(b: ScenarioBuilder) -> None:
    run = cancelled(b, SINGLE, Source.SINGLETON, 10 * MINUTE)
    b.newer_trigger(run, run.cancelled_ms - 50, delivered_ms=run.cancelled_ms)
    window_over(b, run)


@named("bulk: window starting exactly at the scheduled time covers the run", Source.BULK)
def _(b: ScenarioBuilder) -> None:
    window_over(b, cancelled(b, NOTIFY, Source.BULK, 10 * MINUTE), after=0)


@named("bulk: window ending exactly at the scheduled time covers the run", Source.BULK)
def _(b: ScenarioBuilder) -> None:
    window_over(b, cancelled(b, NOTIFY, Source.BULK, 10 * MINUTE), before=0)


@named("bulk: window starting 1 ms after the scheduled time does not cover it", Source.MANUAL)
def _(b: ScenarioBuilder) -> None:
    window_over(b, cancelled(b, NOTIFY, Source.MANUAL, 10 * MINUTE), after=1)


@named("bulk: window ending 1 ms before the scheduled time does not cover it", Source.MANUAL)
def _(b: ScenarioBuilder) -> None:
    window_over(b, cancelled(b, NOTIFY, Source.MANUAL, 10 * MINUTE), before=-1)


@named("bulk: window whose `if` holds for the trigger", Source.BULK)
def _(b: ScenarioBuilder) -> None:
    run = cancelled(b, NOTIFY, Source.BULK, 10 * MINUTE)
    window_over(b, run, condition=(NOTIFY.key, run.key_value))


@named("bulk: window whose `if` does not hold for the trigger", Source.MANUAL)
def _(b: ScenarioBuilder) -> None:
    run = cancelled(b, NOTIFY, Source.MANUAL, 10 * MINUTE)
    window_over(b, run, condition=(NOTIFY.key, "someone-else"))


@named("bulk: window for another function does not count", Source.MANUAL)
def _(b: ScenarioBuilder) -> None:
    run = cancelled(b, NOTIFY, Source.MANUAL, 10 * MINUTE)
    b.window(DIGEST, after_ms=run.scheduled_ms - MINUTE, before_ms=run.scheduled_ms + MINUTE, created_ms=run.cancelled_ms - MINUTE)


@named("bulk: window listed only after the cancellation arrived, within the grace period", Source.BULK)
def _(b: ScenarioBuilder) -> None:
    run = cancelled(b, IMPORT, Source.BULK, 10 * MINUTE)
    window_over(b, run)
    b.outage(run.cancelled_ms - 2 * MINUTE, run.delivered_ms + 10 * SECOND)


@named("bulk: window listed only after the grace period (polls failing) is unknown", Source.UNKNOWN)
def _(b: ScenarioBuilder) -> None:
    run = cancelled(b, IMPORT, Source.BULK, 10 * MINUTE)
    window_over(b, run)
    b.outage(run.cancelled_ms - 2 * MINUTE, run.decided_by_ms + 10 * SECOND)


@named("bulk: window listed once, then dropped from the list before the cancellation arrived", Source.BULK)
def _(b: ScenarioBuilder) -> None:
    run = cancelled(b, IMPORT, Source.BULK, 10 * MINUTE)
    window_over(b, run, created_ms=run.cancelled_ms - 3 * MINUTE, dropped_ms=None)


for _shape in ("array", "data"):
    for _form in ("server", "app", "slug"):
        @named(f"bulk: list as a JSON {_shape}, function named by {_form}", Source.BULK, list_shape=_shape)
        def _(b: ScenarioBuilder, form: Any = _form) -> None:
            window_over(b, cancelled(b, IMPORT, Source.BULK, 10 * MINUTE), id_form=form)


@named("bulk: window open at the start (started_after null), as the server lists it", Source.BULK, list_shape="data")
def _(b: ScenarioBuilder) -> None:
    run = cancelled(b, NOTIFY, Source.BULK, 10 * MINUTE)
    b.window(NOTIFY, after_ms=None, before_ms=run.scheduled_ms, created_ms=run.cancelled_ms - MINUTE, id_form="server")


@named("manual: the list names the run as cancelled alone, even of an unconfigured function", Source.MANUAL)
def _(b: ScenarioBuilder) -> None:
    run = cancelled(b, LEGACY, Source.MANUAL, 5 * MINUTE)
    b.run_item(run, created_ms=run.cancelled_ms - SECOND)


@named("manual: a listed cancellation of another run does not count", Source.UNKNOWN)
def _(b: ScenarioBuilder) -> None:
    run = cancelled(b, LEGACY, Source.MANUAL, 5 * MINUTE)
    b.run_item(run, created_ms=run.cancelled_ms - SECOND, target_id=b.ulid_at(run.scheduled_ms))


@named("manual: a listed cancellation of the run made after it ended does not count", Source.UNKNOWN)
def _(b: ScenarioBuilder) -> None:
    run = cancelled(b, LEGACY, Source.MANUAL, 5 * MINUTE)
    b.run_item(run, created_ms=run.cancelled_ms + 1)


@named("timeout: the server's own job for the run's timeout, listed, is no cancel by hand", Source.TIMEOUT)
def _(b: ScenarioBuilder) -> None:
    run = cancelled(b, IMPORT, Source.TIMEOUT, 2 * HOUR + 3 * SECOND)
    b.run_item(run, created_ms=run.cancelled_ms - SECOND, kind="finish_timeout", cause="Event")


@named("ambiguous: the run listed as cancelled alone at its finish timeout is unknown", Source.UNKNOWN)
def _(b: ScenarioBuilder) -> None:
    run = cancelled(b, IMPORT, Source.MANUAL, 2 * HOUR + 3 * SECOND)
    b.run_item(run, created_ms=run.cancelled_ms - SECOND)


@named("unconfigured function: bulk is still attributed", Source.BULK)
def _(b: ScenarioBuilder) -> None:
    window_over(b, cancelled(b, LEGACY, Source.BULK, 5 * MINUTE))


@named("unconfigured function: its timeout is unknown", Source.UNKNOWN)
def _(b: ScenarioBuilder) -> None:
    cancelled(b, LEGACY, Source.TIMEOUT, 15 * MINUTE + 3 * SECOND)


@named("unconfigured function: its cancel signal is unknown", Source.UNKNOWN)
def _(b: ScenarioBuilder) -> None:
    run = cancelled(b, LEGACY, Source.EVENT, 5 * MINUTE)
    signal_before(b, run)


@named("unconfigured function: manual cannot be established", Source.UNKNOWN)
def _(b: ScenarioBuilder) -> None:
    cancelled(b, LEGACY, Source.MANUAL, 5 * MINUTE)


@named("timeout: start timeout 5.000 s late is within tolerance", Source.TIMEOUT)
def _(b: ScenarioBuilder) -> None:
    cancelled(b, DIGEST, Source.TIMEOUT, MINUTE + 5 * SECOND, started_after_ms=None)


@named("timeout: start timeout 5.000 s early is within tolerance", Source.TIMEOUT)
def _(b: ScenarioBuilder) -> None:
    cancelled(b, IMPORT, Source.TIMEOUT, 30 * SECOND - 5 * SECOND, started_after_ms=None)


@named("timeout: a run that had started is not cancelled by its start timeout, whatever its age (manual)", Source.MANUAL)
def _(b: ScenarioBuilder) -> None:
    cancelled(b, IMPORT, Source.MANUAL, 31 * SECOND, started_after_ms=2 * SECOND)


@named("timeout: a finish timeout counts from the run's start, after ten minutes in the queue", Source.TIMEOUT)
def _(b: ScenarioBuilder) -> None:
    cancelled(b, EXPORT, Source.TIMEOUT, 20 * MINUTE + 3 * SECOND, started_after_ms=10 * MINUTE)


@named("timeout: queued, then run for its finish timeout less its 1 s tolerance", Source.TIMEOUT)
def _(b: ScenarioBuilder) -> None:
    cancelled(b, EXPORT, Source.TIMEOUT, MINUTE + 10 * MINUTE - SECOND, started_after_ms=MINUTE)


@named("timeout: queued, then run for 1.001 s short of its finish timeout is not one (manual)", Source.MANUAL)
def _(b: ScenarioBuilder) -> None:
    cancelled(b, EXPORT, Source.MANUAL, MINUTE + 10 * MINUTE - SECOND - 1, started_after_ms=MINUTE)


@named("manual: queued past its finish timeout by scheduling time, then cancelled by hand while running", Source.MANUAL)
def _(b: ScenarioBuilder) -> None:
    cancelled(b, EXPORT, Source.MANUAL, 12 * MINUTE, started_after_ms=5 * MINUTE)


@named("manual: queued past its finish timeout by scheduling time and cancelled by hand before it started", Source.MANUAL)
def _(b: ScenarioBuilder) -> None:
    cancelled(b, EXPORT, Source.MANUAL, 12 * MINUTE, started_after_ms=None)


@named("unknown: queued past its finish timeout, its lookup failing all through the grace period, is never timeout", Source.UNKNOWN)
def _(b: ScenarioBuilder) -> None:
    run = cancelled(b, EXPORT, Source.MANUAL, 12 * MINUTE, started_after_ms=5 * MINUTE)
    lookups_fail_through_grace(b, run)


@named("unknown: a finish timeout with its lookup failing all through the grace period is not claimed", Source.UNKNOWN)
def _(b: ScenarioBuilder) -> None:
    run = cancelled(b, IMPORT, Source.TIMEOUT, 2 * HOUR + 3 * SECOND)
    lookups_fail_through_grace(b, run)


@named("timeout: the lookup fails at first, and a retry within the grace period answers", Source.TIMEOUT)
def _(b: ScenarioBuilder) -> None:
    run = cancelled(b, IMPORT, Source.TIMEOUT, 2 * HOUR + 3 * SECOND)
    b.lookup_outage(run.cancelled_ms - MINUTE, run.delivered_ms + 5 * SECOND)


@named("unknown: with run lookups off, a run past its finish timeout", Source.UNKNOWN, run_lookups=False)
def _(b: ScenarioBuilder) -> None:
    cancelled(b, IMPORT, Source.TIMEOUT, 2 * HOUR + 3 * SECOND)


@named("manual: an age that rules timeouts out needs no lookup, failing or not", Source.MANUAL)
def _(b: ScenarioBuilder) -> None:
    run = cancelled(b, IMPORT, Source.MANUAL, 10 * MINUTE, started_after_ms=3 * SECOND)
    lookups_fail_through_grace(b, run)


@named("timeout: age 5.001 s past the start timeout is outside tolerance (manual)", Source.MANUAL)
def _(b: ScenarioBuilder) -> None:
    cancelled(b, DIGEST, Source.MANUAL, MINUTE + 5 * SECOND + 1)


@named("timeout: age 5.001 s before the start timeout is outside tolerance (manual)", Source.MANUAL)
def _(b: ScenarioBuilder) -> None:
    cancelled(b, IMPORT, Source.MANUAL, 30 * SECOND - 5 * SECOND - 1)


@named("timeout: finish timeout reached, less its 1 s tolerance", Source.TIMEOUT)
def _(b: ScenarioBuilder) -> None:
    cancelled(b, IMPORT, Source.TIMEOUT, 2 * HOUR - SECOND)


@named("timeout: finish timeout after a queue delay", Source.TIMEOUT)
def _(b: ScenarioBuilder) -> None:
    cancelled(b, IMPORT, Source.TIMEOUT, 2 * HOUR + 12 * SECOND)


@named("timeout: age 1.001 s short of the finish timeout is not one (manual)", Source.MANUAL)
def _(b: ScenarioBuilder) -> None:
    cancelled(b, IMPORT, Source.MANUAL, 2 * HOUR - SECOND - 1)


@named("manual: polled after the cancellation", Source.MANUAL)
def _(b: ScenarioBuilder) -> None:
    cancelled(b, IMPORT, Source.MANUAL, 10 * MINUTE)


@named("manual: a poll exactly at the cancellation counts", Source.MANUAL)
def _(b: ScenarioBuilder) -> None:
    at = b.poll_at_or_after(b.moment_ms)
    run = cancelled(b, NOTIFY, Source.MANUAL, 10 * MINUTE, cancelled_ms=at)
    b.outage(at + 1, run.decided_by_ms + 10 * SECOND)


@named("manual: last successful poll 1 ms before the cancellation is unknown", Source.UNKNOWN)
def _(b: ScenarioBuilder) -> None:
    at = b.poll_at_or_after(b.moment_ms)
    run = cancelled(b, NOTIFY, Source.MANUAL, 10 * MINUTE, cancelled_ms=at + 1)
    b.outage(at + 1, run.decided_by_ms + 10 * SECOND)


@named("manual: polls failing since the cancellation is unknown", Source.UNKNOWN)
def _(b: ScenarioBuilder) -> None:
    run = cancelled(b, IMPORT, Source.MANUAL, 10 * MINUTE)
    b.outage(run.cancelled_ms - MINUTE, run.decided_by_ms + 10 * SECOND)


@named("manual: bulk polling off is unknown", Source.UNKNOWN, bulk_polling=False)
def _(b: ScenarioBuilder) -> None:
    cancelled(b, IMPORT, Source.MANUAL, 10 * MINUTE)


@named("duplicates: cancelled, its finished twin and a retry after release count once", Source.MANUAL)
def _(b: ScenarioBuilder) -> None:
    run = cancelled(b, NOTIFY, Source.MANUAL, 10 * MINUTE)
    b.redeliver(run, run.delivered_ms + 5 * SECOND, finished=True)
    b.redeliver(run, run.decided_by_ms + MINUTE, finished=False)


@named("duplicates: the finished twin arriving first counts once", Source.EVENT)
def _(b: ScenarioBuilder) -> None:
    run = cancelled(b, IMPORT, Source.EVENT, 10 * MINUTE, skew_ms=5 * SECOND)
    b.redeliver(run, run.cancelled_ms + 100, finished=True)
    signal_before(b, run)


@named("ambiguous: signal and bulk window are unknown", Source.UNKNOWN)
def _(b: ScenarioBuilder) -> None:
    run = cancelled(b, IMPORT, Source.BULK, 10 * MINUTE)
    window_over(b, run)
    signal_before(b, run)


@named("ambiguous: start timeout and signal are unknown", Source.UNKNOWN)
def _(b: ScenarioBuilder) -> None:
    run = cancelled(b, IMPORT, Source.TIMEOUT, 31 * SECOND, started_after_ms=None)
    signal_before(b, run)


@named("event: a signal at the start timeout's age of a run that had started", Source.EVENT)
def _(b: ScenarioBuilder) -> None:
    run = cancelled(b, IMPORT, Source.EVENT, 31 * SECOND)
    signal_before(b, run)


@named("ambiguous: start timeout and bulk window, both seen on arrival, are unknown", Source.UNKNOWN)
def _(b: ScenarioBuilder) -> None:
    window_over(b, cancelled(b, DIGEST, Source.TIMEOUT, MINUTE + 2 * SECOND, started_after_ms=None))


@named("bulk: a window at the start timeout's age of a run that had started", Source.BULK)
def _(b: ScenarioBuilder) -> None:
    window_over(b, cancelled(b, DIGEST, Source.BULK, MINUTE + 2 * SECOND, started_after_ms=SECOND))


@named("start timeout on arrival, bulk window listed within the grace period", Source.UNKNOWN)
def _(b: ScenarioBuilder) -> None:
    run = cancelled(b, DIGEST, Source.TIMEOUT, MINUTE + 2 * SECOND, started_after_ms=None)
    window_over(b, run)
    b.outage(run.cancelled_ms - 2 * MINUTE, run.delivered_ms + 10 * SECOND)


@named("bulk window created after the run's manual cancellation", Source.MANUAL)
def _(b: ScenarioBuilder) -> None:
    run = cancelled(b, NOTIFY, Source.MANUAL, 10 * MINUTE)
    window_over(b, run, created_ms=run.cancelled_ms + 5 * SECOND)


@named("bulk window listed with a bare function id and no app_id, as documented", Source.BULK)
def _(b: ScenarioBuilder) -> None:
    window_over(b, cancelled(b, NOTIFY, Source.BULK, 10 * MINUTE), id_form="bare")


@named("more than MAX_CANDIDATES newer signals hide the matching one: unknown, never manual", Source.UNKNOWN)
def _(b: ScenarioBuilder) -> None:
    run = cancelled(b, IMPORT, Source.EVENT, 30 * MINUTE)
    b.signal(run, run.scheduled_ms + MINUTE, delivered_ms=run.scheduled_ms + MINUTE)
    for n in range(MAX_CANDIDATES):
        b.signal(run, run.scheduled_ms + 2 * MINUTE + n, delivered_ms=run.scheduled_ms + 2 * MINUTE + n, matching=False)


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(case, id=case.name)
        for case in NAMED
    ],
)
def test_named_scenario(case: Named, tmp_path: Path) -> None:
    b = ScenarioBuilder(case.name, **case.settings)
    case.place(b)
    verdicts, problems = judge([b.build()], tmp_path)
    assert not problems
    (verdict,) = verdicts
    assert verdict.run.expected is case.expect, "the generator's oracle disagrees with the hand-written label"
    assert verdict.emitted == (case.expect,), verdict.describe()
