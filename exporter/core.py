"""The exporter core: builds the pipeline and its sinks from settings and config, and runs their lifecycle.

This is the composition root: every other module receives what it needs as
arguments, so tests can build any piece alone, and `create_app` builds all of it.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from typing import Any, Mapping

from prometheus_client import CollectorRegistry

from exporter import clock, exposition
from exporter.attribution.bulk import BulkPoller, BulkWindowStore
from exporter.attribution.classify import EvidenceClassifier
from exporter.attribution.definition_store import DefinitionStore
from exporter.attribution.discovery import Discovery
from exporter.attribution.run_lookups import RunLookups, RunLookupStore
from exporter.config import Config
from exporter.dedupe import Dedupe
from exporter.health import HealthMetrics
from exporter.ingress_inngest import APP_ID
from exporter.parsing import parse_body, parse_event
from exporter.attribution.pending import PendingStore
from exporter.periodic import PeriodicTask
from exporter.pipeline import Pipeline
from exporter.settings import Settings
from exporter.attribution.signals import SignalStore
from exporter.sinks import DurableSink, LiveSink
from exporter.sinks.datadog_outbox import DatadogOutbox
from exporter.sinks.datadog_sender import Backoff, DatadogSender
from exporter.sinks.otel import OtelSink, build_otel_sink
from exporter.sinks.prometheus import PrometheusSink
from exporter.state import StateDB

log = logging.getLogger(__name__)

PRUNE_INTERVAL_SECONDS = 60.0
RELEASE_INTERVAL_SECONDS = 1.0
"""How often held cancellations whose grace period ended are emitted."""
MAX_SIGNALS = 100_000
"""Signals (cancel signals, singleton triggers) kept as evidence; the oldest are forgotten first."""


class Exporter:
    """Everything behind the HTTP endpoints: state, pipeline, sinks and background tasks (an `exporter.core_api.Core`)."""

    def __init__(self, settings: Settings, config: Config, environ: Mapping[str, str] = os.environ) -> None:
        self.settings = settings
        self.registry = CollectorRegistry()
        self.health = HealthMetrics(self.registry)
        self.state = StateDB(settings.state_dir)
        self.dedupe = Dedupe(self.state, max_entries=settings.dedupe_max_entries, max_age_seconds=settings.dedupe_max_age)
        self.signals = SignalStore(self.state, max_entries=MAX_SIGNALS, max_age_seconds=settings.dedupe_max_age)
        self.pending = PendingStore(self.state)
        self.health.gauge_from("dedupe_entries", "Run ids remembered for deduplication.", self.dedupe.size)
        self.health.gauge_from(
            "pending_classifications", "Cancellations held for late evidence, not yet emitted.", self.pending.size
        )
        self.health.gauge_from(
            "pending_classifications_due_timestamp_seconds",
            "When the last held cancellation's grace period ends, at the latest (0: none held).",
            self.pending.last_due,
        )
        self.discovery: Discovery | None = None
        if settings.discovers:
            self.discovery = Discovery(
                settings, config, DefinitionStore(settings.state_dir), self.health, APP_ID,
                on_change=self.apply_config, on_read=lambda: self.pipeline.release_settled(),
            )
            config = self.discovery.config  # the last good reading's, until Inngest is read
        self.config = config
        bulk = config.bulk_cancellations
        self.bulk_windows: BulkWindowStore | None = None
        self.bulk_poller: BulkPoller | None = None
        if bulk is not None and bulk.polled:
            self.bulk_windows = BulkWindowStore(self.state, retention_seconds=bulk.retention)
        grace_ms = int(settings.attribution_grace * 1000)
        self.run_lookups = RunLookupStore(self.state, grace_ms=grace_ms) if settings.run_lookups else None
        self.run_lookup_worker: RunLookups | None = None

        live: list[LiveSink] = [
            PrometheusSink(
                self.registry, self.health, constant_labels=config.labels, max_functions=settings.max_functions
            )
        ]
        self.otel: OtelSink | None = build_otel_sink(environ, self.health, settings.run_links)
        if self.otel is not None:
            live.append(self.otel)
        durable: list[DurableSink] = []
        self.datadog: DatadogSender | None = None
        if settings.datadog_enabled:
            outbox = DatadogOutbox(self.state, config.labels, settings.run_links)
            durable.append(outbox)
            self.datadog = DatadogSender(
                outbox,
                settings,
                self.health,
                request_timeout=settings.datadog_timeout,
                backoff=Backoff(cap=settings.datadog_max_backoff),
            )

        self.pipeline = Pipeline(
            state=self.state,
            dedupe=self.dedupe,
            signals=self.signals,
            pending=self.pending,
            classifier=self._classifier(config),
            durable_sinks=durable,
            live_sinks=live,
            health=self.health,
            grace_ms=grace_ms,
            signal_listeners=config.signal_listeners,
        )
        if bulk is not None and self.bulk_windows is not None:
            self.bulk_poller = BulkPoller(
                self.bulk_windows,
                settings,
                interval=bulk.poll_interval,
                health=self.health,
                on_settled=self.pipeline.release_settled,
            )
        if self.run_lookups is not None:
            self.run_lookup_worker = RunLookups(
                self.run_lookups, settings, health=self.health, on_settled=self.pipeline.release_runs
            )
        self._pruner = PeriodicTask("state-pruner", PRUNE_INTERVAL_SECONDS, self._prune)
        self._releaser = PeriodicTask("pending-release", RELEASE_INTERVAL_SECONDS, self.pipeline.release_due)
        self.started = False

    def _classifier(self, config: Config) -> EvidenceClassifier:
        return EvidenceClassifier(
            config,
            self.signals,
            self.bulk_windows,
            lambda function_id: self.health.expression_errors.labels(function_id).inc(),
            lookups=self.run_lookups,
            definition_holds=self.discovery.holds_for if self.discovery is not None else None,
        )

    def apply_config(self, config: Config) -> None:
        """Attribute with `config`'s functions from now on: discovery read new definitions from Inngest.

        Its labels and bulk polling are the declared ones, as at start: only the functions change.
        """
        self.pipeline.reconfigure(self._classifier(config), config.signal_listeners)
        self.config = config

    def signal_subscription(self) -> tuple[list[str], str | None]:
        """The events the exporter's Inngest app must subscribe to (cancel signals, singleton triggers), and the URL at
        which Inngest last synced it (None when not known)."""
        own_url = self.discovery.definitions.own_url if self.discovery is not None else None
        return sorted(self.config.evidence_names), own_url

    def refresh_definitions(self) -> None:
        """Read the functions' definitions again soon (the exporter was synced: an app may have been too)."""
        if self.discovery is not None:
            self.discovery.refresh_soon()

    def ingest_body(self, body: bytes, ingress: str) -> bytes:
        events = parse_body(
            body,
            evidence_names=self.config.evidence_names,
            now_ms=clock.now_ms(),
            max_events=self.settings.max_batch_events,
        )
        return _answer(tuple(self.pipeline.ingest(events, ingress).as_json().items()))

    def ingest_event(self, raw: dict[str, Any], ingress: str) -> dict[str, int]:
        event = parse_event(raw, evidence_names=self.config.evidence_names, now_ms=clock.now_ms())
        return self.pipeline.ingest([event], ingress).as_json()

    def count_received(self, ingress: str, outcome: str) -> None:
        self.health.count_received(ingress, outcome)

    def render_metrics(self, accept: str) -> tuple[bytes, str]:
        return exposition.render(self.registry, accept)

    def problems(self) -> list[str]:
        problems = []
        if not self.started:
            problems.append("not started")
        if not self.state.writable():
            problems.append(f"state directory {self.settings.state_dir} is not writable")
        return problems

    def _prune(self) -> None:
        now_ms = clock.now_ms()
        self.dedupe.prune(now_ms)
        self.signals.prune(now_ms)
        if self.bulk_windows is not None:
            self.bulk_windows.prune(now_ms)
        if self.run_lookups is not None:
            self.run_lookups.prune(now_ms)

    def start(self) -> None:
        """Start background work; call once per process (after a server's fork, never before)."""
        self._pruner.start()
        self._releaser.start()
        if self.bulk_poller is not None:
            self.bulk_poller.start()
        if self.run_lookup_worker is not None:
            self.run_lookup_worker.start()
        if self.discovery is not None:
            self.discovery.start()
        if self.datadog is not None:
            self.datadog.start()
        self.started = True

    def stop(self, timeout: float = 10.0) -> None:
        """Flush spans and stop background work within about `timeout`; undelivered Datadog events stay in the outbox."""
        self.started = False
        share = timeout / 2  # the sender and the span flush each get half, so together they fit the grace period
        self._pruner.stop(share)
        self._releaser.stop(share)
        if self.bulk_poller is not None:
            self.bulk_poller.stop(share)
        if self.run_lookup_worker is not None:
            self.run_lookup_worker.stop(share)
        if self.discovery is not None:
            self.discovery.stop(share)
        if self.datadog is not None:
            self.datadog.stop(share)
        if self.otel is not None:
            self.otel.shutdown(share)
        self.state.close()


@functools.lru_cache(maxsize=1024)
def _answer(summary: tuple[tuple[str, int], ...]) -> bytes:
    """The JSON answer to `POST /events`, as Flask's jsonify writes it.

    Cached: most answers are one of a few (`{"accepted":1,...}` for each new run sent alone),
    and writing one took about as long as recording the run's dedupe entry.
    """
    return json.dumps(dict(summary), sort_keys=True, separators=(",", ":")).encode() + b"\n"
