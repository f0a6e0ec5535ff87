"""The cancellation series written directly: the same bytes prometheus_client writes, every observation counted."""

from __future__ import annotations

import json
import sys
import threading
from typing import Callable, Iterator

import pytest
from flask import Flask
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import choose_encoder

from exporter.exposition import exposition
from exporter.health import HealthMetrics
from exporter.records import Classified, Source
from exporter.run_age import HISTOGRAM_BUCKETS
from exporter.sinks.cancellation_series import COUNTER, COUNTER_HELP, HISTOGRAM, HISTOGRAM_HELP
from exporter.sinks.prometheus import OVERFLOW, PrometheusSink
from tests.support.classified import CANCELLED_AT_MS, make_classified
from tests.support.payloads import INGEST_TOKEN, cancellation

CONSTANT = {"app": 'shop "eu"', "zone": "a\\b\nc"}
"""One constant label sorting before function_id, one after source (and `le`), both with values to escape."""
CAP = 6
AGES: tuple[float | None, ...] = (0.0, 1.0, 1.001, 90.5, 1_209_600.0, 2_000_000.25, None)
"""Zero, on a boundary, just over one, past the last bucket (+Inf; a sum Go writes as 2e+06), and none at all."""
FUNCTIONS = ['quo"te', "new\nline", "back\\slash", "ünïcødé-😀", "{}=,", "plain", "one-too-many", "one-more"]
"""More than CAP, so the last two are counted under OVERFLOW."""
ACCEPTS = (
    "",
    "text/plain;version=0.0.4",
    "text/plain;version=1.0.0;escaping=allow-utf-8",
    "application/openmetrics-text;version=1.0.0",
    "application/openmetrics-text;version=1.0.0;escaping=underscores;q=0.5,text/plain;version=0.0.4;q=0.3",
    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8",
    "application/openmetrics-text;version=1.0.0;escaping=dots",  # names rewritten: prometheus_client renders all
)


def observations() -> Iterator[tuple[str, Source, float | None]]:
    """Every function under a few sources with every age, and one series counted only without an age.

    prometheus_client creates a series' histogram child on its first age, so a series first counted
    without one would come later in its histogram than here: each series' first observation has one,
    or none ever does.
    """
    for i, function_id in enumerate(FUNCTIONS):
        for source in (Source.EVENT, Source.BULK, list(Source)[i % len(Source)]):
            for age in AGES:
                yield function_id, source, age
    yield "plain", Source.MANUAL, None
    yield "plain", Source.MANUAL, None


def prometheus_client_registry() -> CollectorRegistry:
    """The same observations in prometheus_client's own Counter and Histogram, as the sink kept them before."""
    registry = CollectorRegistry()
    names = ["function_id", "source", *CONSTANT]
    counter = Counter(COUNTER, COUNTER_HELP, names, registry=registry)
    histogram = Histogram(HISTOGRAM, HISTOGRAM_HELP, names, buckets=HISTOGRAM_BUCKETS, registry=registry)
    admitted: list[str] = []
    for function_id, source, age in observations():
        if function_id not in admitted and len(admitted) < CAP:
            admitted.append(function_id)
        values = (function_id if function_id in admitted else OVERFLOW, source.value, *CONSTANT.values())
        counter.labels(*values).inc()
        if age is not None:
            histogram.labels(*values).observe(classified(function_id, source, age).cancellation.age_seconds)
    return registry


def sink_registry(observed: Iterator[tuple[str, Source, float | None]]) -> tuple[CollectorRegistry, PrometheusSink]:
    """A PrometheusSink on a registry of its own (its health series elsewhere), after `observed`."""
    registry = CollectorRegistry()
    sink = PrometheusSink(registry, HealthMetrics(CollectorRegistry()), constant_labels=CONSTANT, max_functions=CAP)
    for function_id, source, age in observed:
        sink.emit(classified(function_id, source, age))
    return registry, sink


def classified(function_id: str, source: Source, age: float | None) -> Classified:
    """A cancellation of that run age, to the millisecond the run id's time has."""
    scheduled = None if age is None else CANCELLED_AT_MS - round(age * 1000)
    return make_classified(function_id=function_id, source=source, scheduled_at_ms=scheduled)


@pytest.mark.parametrize("accept", ACCEPTS)
def test_rendering_is_prometheus_clients_byte_for_byte(accept: str) -> None:
    encoder, content_type = choose_encoder(accept)
    ours, _ = sink_registry(observations())
    assert exposition(ours, encoder, content_type) == encoder(prometheus_client_registry())


@pytest.mark.parametrize("accept", ACCEPTS)
def test_nothing_but_help_and_type_before_a_series_is_counted(accept: str) -> None:
    encoder, content_type = choose_encoder(accept)
    ours, _ = sink_registry(iter(()))
    empty = CollectorRegistry()
    Counter(COUNTER, COUNTER_HELP, ["function_id", "source"], registry=empty)
    Histogram(HISTOGRAM, HISTOGRAM_HELP, ["function_id", "source"], buckets=HISTOGRAM_BUCKETS, registry=empty)
    assert exposition(ours, encoder, content_type) == encoder(empty)


def test_registry_readers_see_every_sample() -> None:
    registry, _ = sink_registry(observations())
    labels = {"function_id": 'quo"te', "source": "bulk", **CONSTANT}
    assert registry.get_sample_value(f"{COUNTER}_total", labels) == len(AGES)
    assert registry.get_sample_value(f"{HISTOGRAM}_bucket", {**labels, "le": "1.0"}) == 2
    assert registry.get_sample_value(f"{HISTOGRAM}_bucket", {**labels, "le": "+Inf"}) == len(AGES) - 1
    assert registry.get_sample_value(f"{HISTOGRAM}_count", labels) == len(AGES) - 1
    assert registry.get_sample_value(f"{HISTOGRAM}_sum", labels) == sum(age for age in AGES if age is not None)
    overflow = {"function_id": OVERFLOW, "source": "event", **CONSTANT}
    overflowed = [1 for function_id, source, _ in observations() if function_id in FUNCTIONS[CAP:] and source is Source.EVENT]
    assert registry.get_sample_value(f"{COUNTER}_total", overflow) == len(overflowed)  # however many sources there are
    no_age = {"function_id": "plain", "source": "manual", **CONSTANT}
    assert registry.get_sample_value(f"{COUNTER}_total", no_age) == 2
    assert registry.get_sample_value(f"{HISTOGRAM}_count", no_age) is None


def test_concurrent_emits_count_every_observation() -> None:
    threads, per_thread = 8, 2_400
    series = [(f"fn-{i}", source) for i in range(3) for source in (Source.EVENT, Source.TIMEOUT)]
    items = [classified(function_id, source, 0.5 * (n % 4)) for n, (function_id, source) in enumerate(series)]
    registry, sink = sink_registry(iter(()))
    start = threading.Barrier(threads)

    def emit_all() -> None:
        start.wait()
        for n in range(per_thread):
            sink.emit(items[n % len(items)])

    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible, to interleave the updates
    try:
        workers = [threading.Thread(target=emit_all) for _ in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    finally:
        sys.setswitchinterval(switch_interval)

    each = threads * per_thread / len(items)
    for n, (function_id, source) in enumerate(series):
        labels = {"function_id": function_id, "source": source.value, **CONSTANT}
        assert registry.get_sample_value(f"{COUNTER}_total", labels) == each
        assert registry.get_sample_value(f"{HISTOGRAM}_count", labels) == each
        assert registry.get_sample_value(f"{HISTOGRAM}_sum", labels) == each * 0.5 * (n % 4)


@pytest.mark.parametrize("accept", ["text/plain;version=0.0.4", "application/openmetrics-text;version=1.0.0"])
def test_metrics_has_each_family_once_and_openmetrics_one_eof_at_the_end(make_app: Callable[..., Flask], accept: str) -> None:
    client = make_app({"labels": {"environment": "production"}}).test_client()
    headers = {"Authorization": f"Bearer {INGEST_TOKEN}", "Content-Type": "application/json"}
    assert client.post("/events", data=json.dumps(cancellation()), headers=headers).status_code == 200
    text = client.get("/metrics", headers={"Accept": accept}).get_data(as_text=True)
    for family in (COUNTER, HISTOGRAM, "inngest_cancellation_exporter_build_info", "inngest_cancellation_exporter_dedupe_entries"):
        assert text.count(f"# HELP {family}") == 1  # the counter's is `..._total` in the text format
    assert text.count(f"{COUNTER}_total{{") == 1
    assert text.count("# EOF") == (1 if "openmetrics" in accept else 0)
    assert text.endswith("# EOF\n") == ("openmetrics" in accept)
