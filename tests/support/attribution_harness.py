"""Drives labelled scenarios (tests.support.scenarios) through the real attribution pipeline, and scores the result.

The pieces are built as exporter/core.py builds them (state, dedupe, signal
store, pending store, bulk window store, run lookup store and worker, evidence
classifier, pipeline), with two substitutions: the clock is the scenario's
simulated clock, and the only sink captures what the pipeline emits. `Exporter`
itself cannot be used: it reads the wall clock and starts background threads.
Every event goes through `parse_event` and `Pipeline.ingest`, every poll answer
through `parse_cancellations` and `BulkWindowStore.record`, as the ingress modules
and the poller do; the run lookups are asked over HTTP of a stand-in for
Inngest's REST API (tests.support.fake_inngest_api), which tells the scenario's
runs and fails while a lookup outage lasts, each at the simulated moment it is due
(`RunLookups.run_once`); held runs are released when their grace period ends, as
the exporter's once-a-second releaser would.

Shared by tests/test_attribution_scenarios.py and bench/attribution.py.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from prometheus_client import CollectorRegistry

from exporter.attribution.bulk import BulkWindowStore
from exporter.attribution.bulk_list import parse_cancellations
from exporter.attribution.classify import EvidenceClassifier
from exporter.attribution.run_lookups import RunLookups, RunLookupStore
from exporter.config import parse_config
from exporter.core import MAX_SIGNALS, PRUNE_INTERVAL_SECONDS
from exporter.dedupe import Dedupe
from exporter.health import HealthMetrics
from exporter.parsing import parse_event
from exporter.attribution.pending import PendingStore
from exporter.pipeline import Pipeline
from exporter.records import Classified, Source
from exporter.settings import load_settings
from exporter.attribution.signals import SignalStore
from exporter.state import StateDB
from tests.support.fake_inngest_api import FakeInngestApi, Mode
from tests.support.payloads import SIGNING_KEY
from tests.support.scenarios import EVIDENCE_UNSEEN, Delivery, EventDelivery, LabelledRun, Scenario

CONCRETE = (Source.EVENT, Source.TIMEOUT, Source.BULK, Source.SINGLETON, Source.MANUAL)
INGRESS = "events"


class SimulatedClock:
    """The pipeline's `now_ms`: moved forward by the harness, never backwards."""

    def __init__(self, start_ms: int) -> None:
        self.now_ms = start_ms

    def __call__(self) -> int:
        return self.now_ms

    def advance(self, to_ms: int) -> None:
        self.now_ms = max(self.now_ms, to_ms)


class CapturingSink:
    """A live sink that remembers every classified cancellation, in emission order."""

    def __init__(self) -> None:
        self.items: list[Classified] = []

    def emit(self, item: Classified) -> None:
        self.items.append(item)


@dataclass(frozen=True)
class Outcome:
    """What the pipeline emitted for one scenario."""

    emitted: dict[str, list[Source]]
    """Run id → the source of every record emitted for it (exactly one is right)."""
    expression_errors: int
    list_problems: tuple[str, ...]
    """Items of a poll answer that `parse_cancellations` skipped: none is expected."""


class _Simulation:
    """One scenario's exporter: the real pieces on a fresh state directory and the simulated clock, asking `api`."""

    def __init__(self, scenario: Scenario, state_dir: Path, api: FakeInngestApi) -> None:
        settings = load_settings({
            "EXPORTER_STATE_DIR": str(state_dir), "INNGEST_DEV": "1", "INNGEST_API_BASE_URL": api.url,
            "INNGEST_SIGNING_KEY": SIGNING_KEY, "EXPORTER_RUN_LOOKUP_RATE": "1000000",
        })
        config = parse_config(scenario.config, scenario.name)
        self.evidence_names = config.evidence_names
        self.clock = SimulatedClock(scenario.start_ms)
        self.sink = CapturingSink()
        self.expression_errors = 0
        self.list_problems: list[str] = []
        self.state = StateDB(state_dir)
        self.dedupe = Dedupe(
            self.state, max_entries=settings.dedupe_max_entries, max_age_seconds=settings.dedupe_max_age, now_ms=self.clock
        )
        self.signals = SignalStore(self.state, max_entries=MAX_SIGNALS, max_age_seconds=settings.dedupe_max_age)
        bulk = config.bulk_cancellations
        self.bulk = BulkWindowStore(self.state, retention_seconds=bulk.retention) if bulk and bulk.polled else None
        self.grace_ms = scenario.grace_ms
        self.lookups = RunLookupStore(self.state, grace_ms=scenario.grace_ms) if scenario.run_lookups else None
        health = HealthMetrics(CollectorRegistry())
        self.pipeline = Pipeline(
            state=self.state,
            dedupe=self.dedupe,
            signals=self.signals,
            pending=PendingStore(self.state),
            classifier=EvidenceClassifier(config, self.signals, self.bulk, self._count_expression_error, lookups=self.lookups),
            durable_sinks=[],
            live_sinks=[self.sink],
            health=health,
            grace_ms=scenario.grace_ms,
            signal_listeners=config.signal_listeners,
            now_ms=self.clock,
        )
        self.worker = None if self.lookups is None else RunLookups(
            self.lookups, settings, health=health, on_settled=self.pipeline.release_runs, now_ms=self.clock
        )
        self.api = api
        api.runs = scenario.run_records
        self._lookup_outages = scenario.lookup_outages
        self._due: list[int] = []
        self._pruned_at = scenario.start_ms

    def _count_expression_error(self, function_id: str) -> None:
        self.expression_errors += 1

    def feed(self, deliveries: Iterable[Delivery]) -> None:
        for delivery in deliveries:
            self._run_until(delivery.at_ms)
            self.clock.advance(delivery.at_ms)
            self._prune_if_due()
            if isinstance(delivery, EventDelivery):
                self._ingest(delivery.event)
            else:
                self._poll(delivery.body)
        self._run_until(max(self._due, default=self.clock.now_ms))

    def _ingest(self, raw: dict[str, Any]) -> None:
        parsed = parse_event(raw, evidence_names=self.evidence_names, now_ms=self.clock.now_ms)
        if self.pipeline.ingest([parsed], INGRESS).pending:
            heapq.heappush(self._due, self.clock.now_ms + self.grace_ms)

    def _poll(self, body: Any | None) -> None:
        """A poll's answer as the poller stores it; a failed poll (None) stores nothing."""
        if body is None or self.bulk is None:
            return
        windows, problems = parse_cancellations(body)
        self.list_problems += problems
        self.bulk.record(windows, self.clock.now_ms)
        self.pipeline.release_settled()  # as the poller does after each successful poll

    def _run_until(self, at_ms: int) -> None:
        """Until `at_ms`, in time order: each run lookup at the moment it is due (before a release due at the same
        moment), and each held run released when its grace period ends."""
        while True:
            lookup = None if self.lookups is None else self.lookups.next_due_ms()
            release = self._due[0] if self._due else None
            if lookup is not None and lookup <= at_ms and (release is None or lookup <= release):
                self.clock.advance(lookup)
                self._look_up()
            elif release is not None and release <= at_ms:
                self.clock.advance(heapq.heappop(self._due))
                self.pipeline.release_due()
            else:
                return

    def _look_up(self) -> None:
        """The lookups due now, against the stand-in API, failing while a lookup outage lasts."""
        assert self.worker is not None
        now = self.clock.now_ms
        self.api.runs_mode = Mode.ERROR if any(start <= now < end for start, end in self._lookup_outages) else Mode.LIST
        self.worker.run_once()

    def _prune_if_due(self) -> None:
        """The exporter's periodic pruning (exporter.core), on the simulated clock."""
        now = self.clock.now_ms
        if now - self._pruned_at < PRUNE_INTERVAL_SECONDS * 1000:
            return
        self._pruned_at = now
        self.dedupe.prune(now)
        self.signals.prune(now)
        if self.bulk is not None:
            self.bulk.prune(now)
        if self.lookups is not None:
            self.lookups.prune(now)

    def outcome(self) -> Outcome:
        emitted: dict[str, list[Source]] = {}
        for item in self.sink.items:
            emitted.setdefault(item.cancellation.run_id, []).append(item.source)
        return Outcome(emitted, self.expression_errors, tuple(self.list_problems))


def run_scenario(scenario: Scenario, state_dir: Path, api: FakeInngestApi) -> Outcome:
    """Feed `scenario`'s deliveries in time order to a fresh pipeline under `state_dir`, its runs told by `api`;
    what it emitted."""
    simulation = _Simulation(scenario, state_dir, api)
    try:
        simulation.feed(scenario.deliveries)
    finally:
        simulation.state.close()
    return simulation.outcome()


@dataclass(frozen=True)
class Verdict:
    """One labelled run and what the pipeline inferred for it."""

    run: LabelledRun
    emitted: tuple[Source, ...]

    @property
    def inferred(self) -> Source | None:
        """The inferred source when exactly one record was emitted."""
        return self.emitted[0] if len(self.emitted) == 1 else None

    @property
    def unsupported(self) -> bool:
        """A concrete source other than the true cause."""
        return self.inferred in CONCRETE and self.inferred is not self.run.cause

    def describe(self) -> str:
        got = ", ".join(s.value for s in self.emitted) or "nothing"
        hazards = f" [{', '.join(sorted(self.run.hazards))}]" if self.run.hazards else ""
        return (
            f"{self.run.case} {self.run.function_id} run {self.run.run_id}: cause {self.run.cause.value}, "
            f"expected {self.run.expected.value}, got {got}{hazards}"
        )


def judge(scenarios: Iterable[Scenario], root: Path) -> tuple[list[Verdict], list[str]]:
    """Run every scenario (each on its own state directory under `root`): a verdict per labelled run, and problems
    that belong to no run (records for runs that were not cancelled, expression errors, skipped list items)."""
    verdicts: list[Verdict] = []
    problems: list[str] = []
    with FakeInngestApi(SIGNING_KEY) as api:
        outcomes = [(scenario, run_scenario(scenario, root / f"{index:04d}", api)) for index, scenario in enumerate(scenarios)]
    for scenario, outcome in outcomes:
        labelled = {run.run_id for run in scenario.runs}
        verdicts += [Verdict(run, tuple(outcome.emitted.get(run.run_id, ()))) for run in scenario.runs]
        problems += [f"{scenario.name}: record for run {run_id}, which was not cancelled" for run_id in outcome.emitted.keys() - labelled]
        if outcome.expression_errors:
            problems.append(f"{scenario.name}: {outcome.expression_errors} expression errors")
        problems += [f"{scenario.name}: list item skipped: {problem}" for problem in outcome.list_problems]
    return verdicts, problems


@dataclass
class CauseRow:
    runs: int = 0
    correct: int = 0
    unknown: int = 0
    wrong: int = 0


@dataclass
class Scorecard:
    """Attribution accuracy over many runs, against the targets of the issue."""

    by_cause: dict[Source, CauseRow] = field(default_factory=lambda: {cause: CauseRow() for cause in CONCRETE})
    unambiguous: int = 0
    """Runs whose evidence, visible in time, establishes their true cause."""
    unambiguous_correct: int = 0
    unsupported: list[Verdict] = field(default_factory=list)
    """Concrete claims other than the true cause, on runs whose evidence all arrived within the grace period."""
    defeated_by_unseen_evidence: list[Verdict] = field(default_factory=list)
    """Concrete claims other than the true cause on runs with evidence the exporter could not see in time."""
    not_as_expected: list[Verdict] = field(default_factory=list)
    not_once: list[Verdict] = field(default_factory=list)
    """Runs emitted zero times or more than once."""

    @property
    def accuracy(self) -> float:
        return self.unambiguous_correct / self.unambiguous if self.unambiguous else 1.0

    @property
    def meets_targets(self) -> bool:
        return self.accuracy == 1.0 and not self.unsupported and not self.not_once

    def as_json(self) -> dict[str, Any]:
        return {
            "by_cause": {cause.value: vars(row) for cause, row in self.by_cause.items()},
            "runs": sum(row.runs for row in self.by_cause.values()),
            "unambiguous_runs": self.unambiguous,
            "unambiguous_correct": self.unambiguous_correct,
            "accuracy_on_unambiguous": self.accuracy,
            "unsupported_claims": len(self.unsupported),
            "claims_defeated_by_unseen_evidence": len(self.defeated_by_unseen_evidence),
            "not_as_expected": len(self.not_as_expected),
            "not_emitted_exactly_once": len(self.not_once),
            "meets_targets": self.meets_targets,
        }


def score(verdicts: Iterable[Verdict]) -> Scorecard:
    card = Scorecard()
    for verdict in verdicts:
        run, inferred = verdict.run, verdict.inferred
        row = card.by_cause[run.cause]
        row.runs += 1
        if inferred is None:
            card.not_once.append(verdict)
            continue
        row.correct += inferred is run.cause
        row.unknown += inferred is Source.UNKNOWN
        row.wrong += verdict.unsupported
        if run.expected is run.cause:
            card.unambiguous += 1
            card.unambiguous_correct += inferred is run.cause
        if inferred is not run.expected:
            card.not_as_expected.append(verdict)
        if verdict.unsupported:
            (card.defeated_by_unseen_evidence if EVIDENCE_UNSEEN in run.hazards else card.unsupported).append(verdict)
    return card
