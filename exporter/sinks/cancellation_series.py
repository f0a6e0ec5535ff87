"""The cancellation counter and run-age histogram, held per series and written as exposition text directly.

prometheus_client validates, sorts and escapes every label of every line on every scrape: with 1,000
functions × 5 sources that is ~105,000 lines and over a second per scrape. Here a series' label text
is escaped once, when the series is created, and a scrape only formats numbers. The text is what
prometheus_client writes for the same observations, in the text format 0.0.4 and in OpenMetrics 1.0
(tests/test_cancellation_series.py compares them).
"""

from __future__ import annotations

import math
import threading
from bisect import bisect_left
from itertools import accumulate
from typing import Callable, Iterator, Mapping

from prometheus_client.metrics_core import Metric
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

from exporter.run_age import HISTOGRAM_BUCKETS

COUNTER = "inngest_function_cancellations"
COUNTER_HELP = "Cancelled Inngest function runs, by function and inferred cancellation source."
HISTOGRAM = "inngest_function_cancelled_run_age_seconds"
HISTOGRAM_HELP = "Age of cancelled runs (cancellation time minus scheduled time), by function and source."
# Neither HELP text has a backslash, newline or double quote, so both formats write them as they are.

UPPER_BOUNDS: tuple[float, ...] = (*HISTOGRAM_BUCKETS, math.inf)
_LE = tuple(floatToGoString(bound) for bound in UPPER_BOUNDS)


def escape_label_value(value: str) -> str:
    """A label value as both formats quote it: backslash, newline and double quote escaped."""
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


class Series:
    """One (function_id, source) series: its counts under its own lock, and its label text written once.

    Emits from request and background threads update different series in parallel; a scrape reads
    each series once, so its buckets, count and sum always agree with each other.
    """

    __slots__ = ("labels", "label_text", "bucket_open", "bucket_close", "_lock", "_cancellations", "_buckets", "_age_sum")

    def __init__(self, labels: Mapping[str, str]) -> None:
        self.labels = dict(labels)
        pairs = [(name, f'{name}="{escape_label_value(value)}"') for name, value in sorted(self.labels.items())]
        self.label_text = "{" + ",".join(pair for _, pair in pairs) + "}"
        # prometheus_client sorts `le` in among the labels; function_id always sorts before it, source after
        self.bucket_open = "{" + ",".join(pair for name, pair in pairs if name < "le") + ',le="'
        self.bucket_close = '",' + ",".join(pair for name, pair in pairs if name > "le") + "} "
        self._lock = threading.Lock()
        self._cancellations = 0
        self._buckets = [0] * len(UPPER_BOUNDS)
        self._age_sum = 0.0

    def observe(self, age_seconds: float | None) -> None:
        """One cancellation, and its run age when it has one (a run without an age is only counted)."""
        with self._lock:
            self._cancellations += 1
            if age_seconds is not None:
                # the first bound >= age, as prometheus_client's Histogram picks it
                self._buckets[bisect_left(UPPER_BOUNDS, age_seconds)] += 1
                self._age_sum += age_seconds

    def read(self) -> tuple[int, list[int], float]:
        """Cancellations, cumulative bucket counts (the last is the age count) and the age sum, read together."""
        with self._lock:
            return self._cancellations, list(accumulate(self._buckets)), self._age_sum


class CancellationSeries:
    """Every series seen so far, in the order they were first counted, and the two families they form.

    Registered on the app's registry as a prometheus_client collector, so in-process readers
    (`registry.get_sample_value`, any prometheus_client encoder) see the series like any other.
    """

    def __init__(self, constant_labels: Mapping[str, str]) -> None:
        self._constant = dict(constant_labels)
        self._series: dict[tuple[str, str], Series] = {}
        self._lock = threading.Lock()
        """Guards creating series, so two threads counting a new series' first runs share one."""

    def series(self, function_id: str, source: str) -> Series:
        """The (function_id, source) series, created (and from now on rendered) on its first use."""
        key = (function_id, source)
        found = self._series.get(key)
        if found is None:
            with self._lock:
                found = self._series.get(key)
                if found is None:
                    found = self._series[key] = Series({"function_id": function_id, "source": source, **self._constant})
        return found

    def collect(self) -> Iterator[SeriesFamily]:
        """The two families, as a prometheus_client collector yields them; cheap until their samples are read."""
        yield SeriesFamily(COUNTER, COUNTER_HELP, "counter", self._counter_lines, self._counter_samples)
        yield SeriesFamily(HISTOGRAM, HISTOGRAM_HELP, "histogram", self._histogram_lines, self._histogram_samples)

    def _readings(self) -> Iterator[tuple[Series, int, list[int], float]]:
        """Each series with one reading of its numbers; a series created after the list is copied waits for the next scrape."""
        with self._lock:
            every = list(self._series.values())
        for series in every:
            yield (series, *series.read())

    def _histogram_readings(self) -> Iterator[tuple[Series, list[int], float]]:
        """The readings of series with an age; one counted but never with an age has no histogram yet,
        as prometheus_client had no histogram child for it."""
        for series, _, buckets, age_sum in self._readings():
            if buckets[-1]:
                yield series, buckets, age_sum

    def _counter_lines(self) -> Iterator[str]:
        for series, cancellations, _, _ in self._readings():
            yield f"{COUNTER}_total{series.label_text} {floatToGoString(cancellations)}\n"

    def _histogram_lines(self) -> Iterator[str]:
        for series, buckets, age_sum in self._histogram_readings():
            opening, closing = f"{HISTOGRAM}_bucket{series.bucket_open}", series.bucket_close
            for le, cumulative in zip(_LE, buckets):
                yield f"{opening}{le}{closing}{floatToGoString(cumulative)}\n"
            yield f"{HISTOGRAM}_count{series.label_text} {floatToGoString(buckets[-1])}\n"
            yield f"{HISTOGRAM}_sum{series.label_text} {floatToGoString(age_sum)}\n"

    def _counter_samples(self) -> list[Sample]:
        return [Sample(f"{COUNTER}_total", dict(series.labels), float(cancellations)) for series, cancellations, _, _ in self._readings()]

    def _histogram_samples(self) -> list[Sample]:
        samples = []
        for series, buckets, age_sum in self._histogram_readings():
            samples += [Sample(f"{HISTOGRAM}_bucket", {**series.labels, "le": le}, float(n)) for le, n in zip(_LE, buckets)]
            samples.append(Sample(f"{HISTOGRAM}_count", dict(series.labels), float(buckets[-1])))
            samples.append(Sample(f"{HISTOGRAM}_sum", dict(series.labels), age_sum))
        return samples


class SeriesFamily(Metric):
    """One of the two families as prometheus_client sees it, which also writes itself as exposition text.

    The registry makes these on every `collect()`, /metrics included, so making one costs nothing:
    its `samples` (~105,000 of them at 1,000 functions) are built only when something reads them,
    and /metrics calls `exposition()` instead.
    """

    def __init__(self, name: str, documentation: str, typ: str, lines: Callable[[], Iterator[str]], samples: Callable[[], list[Sample]]) -> None:
        self._lines = lines
        self._samples = samples
        super().__init__(name, documentation, typ)

    @property  # type: ignore[override]
    def samples(self) -> list[Sample]:
        return self._samples()

    @samples.setter
    def samples(self, initial: list[Sample]) -> None:
        """Metric.__init__ starts a family with no samples; this one's are always the series', so that is ignored."""

    def exposition(self, openmetrics: bool) -> str:
        """The family's HELP, TYPE and sample lines; the formats differ only in a counter's name on the first two."""
        name = self.name if openmetrics or self.type != "counter" else f"{self.name}_total"
        return "".join([f"# HELP {name} {self.documentation}\n# TYPE {name} {self.type}\n", *self._lines()])
