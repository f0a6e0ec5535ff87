"""The exporter's own series, under `inngest_cancellation_exporter_`: is the bridge itself healthy?"""

from __future__ import annotations

from typing import Callable

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge

from exporter import __version__

# No `_created` series: nothing here uses them, and they would add a line per series to every scrape.
prometheus_client.disable_created_metrics()

PREFIX = "inngest_cancellation_exporter"
INGRESSES = ("events", "inngest")
RUN_LOOKUP_OUTCOMES = ("found", "not_found", "incomplete", "rate_limited", "error")
"""A run lookup's outcomes: its start is known; the run is not found (404); its record does not show its end yet;
Inngest answered 429; anything else (no answer, another status, an answer of no known shape)."""
EVENT_OUTCOMES = ("accepted", "duplicate", "ignored", "signal", "invalid", "unauthorized", "too_large", "unavailable")


class HealthMetrics:
    """Counters and gauges every stage reports to; one instance per app, on the app's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        # a gauge rather than an Info: promtool's linter does not know the OpenMetrics `info` type
        Gauge(f"{PREFIX}_build_info", "Version of the running exporter.", ["version"], registry=registry).labels(__version__).set(1)
        self.events_received = Counter(
            f"{PREFIX}_events_received",
            "Events received, by ingress (events, inngest) and outcome "
            "(accepted, duplicate, ignored, signal, invalid, unauthorized, too_large, unavailable).",
            ["ingress", "outcome"],
            registry=registry,
        )
        self.datadog_deliveries = Counter(
            f"{PREFIX}_datadog_deliveries",
            "Datadog event delivery attempts, by outcome (sent, retried, gave_up).",
            ["outcome"],
            registry=registry,
        )
        self.spans = Counter(
            f"{PREFIX}_spans",
            "OpenTelemetry spans, by outcome (exported, dropped).",
            ["outcome"],
            registry=registry,
        )
        self.function_id_overflow = Counter(
            f"{PREFIX}_function_id_overflow",
            "Cancellations counted under function_id=\"_overflow\" because the function_id cap was reached.",
            registry=registry,
        )
        self.expression_errors = Counter(
            f"{PREFIX}_expression_errors",
            "Expressions (`if` of cancel_on rules, triggers and bulk cancellations; singleton keys) that failed to evaluate (treated as no match).",
            ["function_id"],
            registry=registry,
        )
        self.bulk_polls = Counter(
            f"{PREFIX}_bulk_polls",
            "Polls of the REST API's bulk cancellations, by outcome (ok, error).",
            ["outcome"],
            registry=registry,
        )
        self.last_bulk_poll = Gauge(
            f"{PREFIX}_bulk_last_success_timestamp_seconds",
            "When the bulk cancellation list was last read successfully (0: never, since start).",
            registry=registry,
        )
        self.run_lookups = Counter(
            f"{PREFIX}_run_lookups",
            "Lookups of when a cancelled run started (GET /v2/runs/{id}), by outcome "
            "(found, not_found, incomplete, rate_limited, error).",
            ["outcome"],
            registry=registry,
        )
        self._registry = registry
        self._start_at_zero()

    def _start_at_zero(self) -> None:
        """Create every known outcome's series at 0, so `rate` and `increase` see its first event too."""
        self._received = {
            (ingress, outcome): self.events_received.labels(ingress, outcome)
            for ingress in INGRESSES
            for outcome in EVENT_OUTCOMES
        }
        for outcome in ("sent", "retried", "gave_up"):
            self.datadog_deliveries.labels(outcome)
        for outcome in ("exported", "dropped"):
            self.spans.labels(outcome)
        for outcome in ("ok", "error"):
            self.bulk_polls.labels(outcome)
        for outcome in RUN_LOOKUP_OUTCOMES:
            self.run_lookups.labels(outcome)

    def count_received(self, ingress: str, outcome: str, count: int = 1) -> None:
        """Count events by ingress and outcome; the series are looked up once, not on every request."""
        self._received[ingress, outcome].inc(count)

    def counter(self, name: str, documentation: str, labels: list[str]) -> Counter:
        """A counter of a feature that only some setups turn on, registered by that feature on this registry."""
        return Counter(f"{PREFIX}_{name}", documentation, labels, registry=self._registry)

    def gauge_from(self, name: str, documentation: str, read: Callable[[], float]) -> None:
        """A gauge read at scrape time, for state held elsewhere (outbox depth, dedupe size)."""
        gauge = Gauge(f"{PREFIX}_{name}", documentation, registry=self._registry)
        gauge.set_function(read)
