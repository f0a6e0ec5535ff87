"""Prometheus sink: the cancellation counter and run-age histogram, with a function_id cap.

The cap bounds the series a flood of function ids can create: once `max_functions`
distinct ids are seen, new ones are counted under `function_id="_overflow"`, so no
cancellation goes uncounted.
"""

from __future__ import annotations

import threading
from typing import Mapping

from prometheus_client import CollectorRegistry

from exporter.health import HealthMetrics
from exporter.records import Classified
from exporter.sinks.cancellation_series import CancellationSeries

OVERFLOW = "_overflow"


class FunctionIdGuard:
    """Admits at most `cap` distinct function ids; the rest fold into OVERFLOW."""

    def __init__(self, cap: int) -> None:
        self._cap = cap
        self._admitted: set[str] = set()
        self._lock = threading.Lock()

    def label(self, function_id: str) -> str:
        if function_id in self._admitted:
            return function_id
        with self._lock:
            if function_id in self._admitted or len(self._admitted) < self._cap:
                self._admitted.add(function_id)
                return function_id
        return OVERFLOW


class PrometheusSink:
    """Counts every classified cancellation and observes its run age, in the series /metrics writes directly,
    each series keeping its latest run as its exemplar."""

    def __init__(
        self, registry: CollectorRegistry, health: HealthMetrics, *, constant_labels: Mapping[str, str], max_functions: int
    ) -> None:
        self._guard = FunctionIdGuard(max_functions)
        self._health = health
        self._series = CancellationSeries(constant_labels)
        registry.register(self._series)

    def emit(self, item: Classified) -> None:
        cancellation = item.cancellation
        function_id = self._guard.label(cancellation.function_id)
        if function_id == OVERFLOW:
            self._health.function_id_overflow.inc()
        self._series.series(function_id, item.source.value).observe(cancellation.run_id, cancellation.age_seconds)
