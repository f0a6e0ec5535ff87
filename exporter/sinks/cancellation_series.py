"""The cancellation counter and run-age histogram, held per series and written as exposition text directly.

prometheus_client validates, sorts and escapes every label of every line on every scrape: with 1,000
functions × 5 sources that is ~105,000 lines and over a second per scrape. Here a series' label text
is escaped once, when the series is created, and a scrape only formats numbers. The text is what
prometheus_client writes for the same observations, in the text format 0.0.4 and in OpenMetrics 1.0
(tests/test_cancellation_series.py compares them), OpenMetrics' with each series' exemplars (`exemplars`).
"""

from __future__ import annotations

import math
import threading
import time
from bisect import bisect_left
from itertools import accumulate
from typing import Callable, Iterator, Mapping, NamedTuple

from prometheus_client.metrics_core import Metric
from prometheus_client.samples import Exemplar, Sample
from prometheus_client.utils import floatToGoString

from exporter.run_age import HISTOGRAM_BUCKETS
from exporter.sinks.exemplars import RunExemplar

COUNTER = "inngest_function_cancellations"
COUNTER_HELP = "Cancelled Inngest function runs, by function and inferred cancellation source."
HISTOGRAM = "inngest_function_cancelled_run_age_seconds"
HISTOGRAM_HELP = "Age of cancelled runs (cancellation time minus scheduled time), by function and source."
# Neither HELP text has a backslash, newline or double quote, so both formats write them as they are.

UPPER_BOUNDS: tuple[float, ...] = (*HISTOGRAM_BUCKETS, math.inf)
_LE = tuple(floatToGoString(bound) for bound in UPPER_BOUNDS)
_NO_EXEMPLARS = ("",) * len(UPPER_BOUNDS)
"""What follows each bucket's value in the text format, which has no exemplars."""


def escape_label_value(value: str) -> str:
    """A label value as both formats quote it: backslash, newline and double quote escaped."""
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


class Series:
    """One (function_id, source) series: its counts under its own lock, and its label text written once.

    Emits from request and background threads update different series in parallel; a scrape reads
    each series once, so its buckets, count and sum always agree with each other.

    Its exemplars are those prometheus_client keeps: the counter's latest run, and each bucket's
    latest run observed in it (not cumulative), so a series holds at most one per bucket plus one.
    Like the counts, they live only in memory and start again empty when the exporter does.
    """

    __slots__ = (
        "labels", "label_text", "bucket_open", "bucket_close", "_lock", "_cancellations", "_buckets", "_age_sum",
        "_counted", "_observed",
    )

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
        self._counted: RunExemplar | None = None
        self._observed: list[RunExemplar | None] = [None] * len(UPPER_BOUNDS)

    def observe(self, run_id: str, age_seconds: float | None) -> None:
        """One cancelled run, and its age when it has one (a run without an age is only counted)."""
        with self._lock:
            now = time.time()  # under the lock: a series' exemplars never go back in time, or Prometheus drops them
            self._cancellations += 1
            self._counted = RunExemplar(run_id, 1.0, now)
            if age_seconds is not None:
                # the first bound >= age, as prometheus_client's Histogram picks it
                bucket = bisect_left(UPPER_BOUNDS, age_seconds)
                self._buckets[bucket] += 1
                self._observed[bucket] = RunExemplar(run_id, age_seconds, now)
                self._age_sum += age_seconds

    def read(self) -> Reading:
        """Its numbers and exemplars, read together."""
        with self._lock:
            return Reading(
                self, self._cancellations, list(accumulate(self._buckets)), self._age_sum, self._counted, list(self._observed)
            )


class Reading(NamedTuple):
    """One series' numbers and exemplars at one moment."""

    series: Series
    cancellations: int
    buckets: list[int]
    """Cumulative bucket counts; the last is the age count."""
    age_sum: float
    counted: RunExemplar | None
    """The latest run counted."""
    observed: list[RunExemplar | None]
    """Each bucket's latest run, not cumulative: where the run's age fell."""


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

    def _readings(self) -> Iterator[Reading]:
        """One reading of each series; a series created after the list is copied waits for the next scrape."""
        with self._lock:
            every = list(self._series.values())
        for series in every:
            yield series.read()

    def _histogram_readings(self) -> Iterator[Reading]:
        """The readings of series with an age; one counted but never with an age has no histogram yet,
        as prometheus_client had no histogram child for it."""
        for reading in self._readings():
            if reading.buckets[-1]:
                yield reading

    def _counter_lines(self, openmetrics: bool) -> Iterator[str]:
        for series, cancellations, _, _, counted, _ in self._readings():
            exemplar = counted.text if openmetrics and counted else ""
            yield f"{COUNTER}_total{series.label_text} {floatToGoString(cancellations)}{exemplar}\n"

    def _histogram_lines(self, openmetrics: bool) -> Iterator[str]:
        for series, _, buckets, age_sum, _, observed in self._histogram_readings():
            opening, closing = f"{HISTOGRAM}_bucket{series.bucket_open}", series.bucket_close
            exemplars = [e.text if e else "" for e in observed] if openmetrics else _NO_EXEMPLARS
            for le, cumulative, exemplar in zip(_LE, buckets, exemplars):
                yield f"{opening}{le}{closing}{floatToGoString(cumulative)}{exemplar}\n"
            yield f"{HISTOGRAM}_count{series.label_text} {floatToGoString(buckets[-1])}\n"
            yield f"{HISTOGRAM}_sum{series.label_text} {floatToGoString(age_sum)}\n"

    def _counter_samples(self) -> list[Sample]:
        return [
            Sample(f"{COUNTER}_total", dict(series.labels), float(cancellations), None, _sample(counted))
            for series, cancellations, _, _, counted, _ in self._readings()
        ]

    def _histogram_samples(self) -> list[Sample]:
        samples = []
        for series, _, buckets, age_sum, _, observed in self._histogram_readings():
            samples += [
                Sample(f"{HISTOGRAM}_bucket", {**series.labels, "le": le}, float(n), None, _sample(exemplar))
                for le, n, exemplar in zip(_LE, buckets, observed)
            ]
            samples.append(Sample(f"{HISTOGRAM}_count", dict(series.labels), float(buckets[-1])))
            samples.append(Sample(f"{HISTOGRAM}_sum", dict(series.labels), age_sum))
        return samples


def _sample(exemplar: RunExemplar | None) -> Exemplar | None:
    return exemplar.sample() if exemplar else None


class SeriesFamily(Metric):
    """One of the two families as prometheus_client sees it, which also writes itself as exposition text.

    The registry makes these on every `collect()`, /metrics included, so making one costs nothing:
    its `samples` (~105,000 of them at 1,000 functions) are built only when something reads them,
    and /metrics calls `exposition()` instead.
    """

    def __init__(self, name: str, documentation: str, typ: str, lines: Callable[[bool], Iterator[str]], samples: Callable[[], list[Sample]]) -> None:
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
        """The family's HELP, TYPE and sample lines; the formats differ in a counter's name on the first two, and
        only OpenMetrics has exemplars."""
        name = self.name if openmetrics or self.type != "counter" else f"{self.name}_total"
        return "".join([f"# HELP {name} {self.documentation}\n# TYPE {name} {self.type}\n", *self._lines(openmetrics)])
