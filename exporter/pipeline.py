"""The one path every event takes, whatever its ingress: dedupe → classify → sinks.

Ingress modules parse and authenticate; this module decides, in one state
transaction per request, which runs are new, what caused each, and what the
durable sinks must remember. Live sinks are told only after that transaction
commits, so nothing is counted that was not recorded.
"""

from __future__ import annotations

import logging
import time
from typing import Sequence

from exporter.classify import SourceClassifier
from exporter.dedupe import Dedupe
from exporter.health import HealthMetrics
from exporter.records import Cancellation, Classified, Ignored, IngestSummary, ParsedEvent, Signal
from exporter.signals import SignalStore
from exporter.sinks import DurableSink, LiveSink
from exporter.state import StateDB

log = logging.getLogger(__name__)


class Pipeline:
    """Records parsed events and fans classified cancellations out to the sinks."""

    def __init__(
        self,
        *,
        state: StateDB,
        dedupe: Dedupe,
        signals: SignalStore,
        classifier: SourceClassifier,
        durable_sinks: Sequence[DurableSink],
        live_sinks: Sequence[LiveSink],
        health: HealthMetrics,
    ) -> None:
        self._state = state
        self._dedupe = dedupe
        self._signals = signals
        self._classifier = classifier
        self._durable = tuple(durable_sinks)
        self._live = tuple(live_sinks)
        self._health = health

    def ingest(self, events: Sequence[ParsedEvent], ingress: str) -> IngestSummary:
        """Record `events` atomically; raises StateUnavailable (nothing recorded) when state cannot be written."""
        summary = IngestSummary()
        now_ms = int(time.time() * 1000)
        with self._state.transaction() as tx:
            for event in events:
                if isinstance(event, Cancellation):
                    if not self._dedupe.claim(tx, event.run_id, now_ms):
                        summary.duplicates += 1
                        continue
                    item = Classified(event, self._classifier.classify(tx, event))
                    for sink in self._durable:
                        sink.stage(tx, item)
                    summary.classified.append(item)
                    summary.accepted += 1
                elif isinstance(event, Signal):
                    self._signals.record(tx, event)
                    summary.signals += 1
                else:
                    assert isinstance(event, Ignored)
                    summary.ignored += 1
        for item in summary.classified:
            for sink in self._live:
                try:
                    sink.emit(item)
                except Exception:  # a live sink's failure must not undo a recorded cancellation
                    log.exception("sink %s failed for run %s", type(sink).__name__, item.cancellation.run_id)
        self._count(ingress, summary)
        return summary

    def _count(self, ingress: str, summary: IngestSummary) -> None:
        for outcome, count in (
            ("accepted", summary.accepted),
            ("duplicate", summary.duplicates),
            ("ignored", summary.ignored),
            ("signal", summary.signals),
        ):
            if count:
                self._health.events_received.labels(ingress, outcome).inc(count)
