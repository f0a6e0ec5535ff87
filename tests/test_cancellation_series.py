"""The cancellation series written directly: the same bytes prometheus_client writes, exemplars included, every
observation counted."""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Callable, Iterator

import pytest
from flask import Flask
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families

from exporter.exposition import exposition
from exporter.health import HealthMetrics
from exporter.records import Classified, Source
from exporter.run_age import HISTOGRAM_BUCKETS
from exporter.run_ids import trace_id_for_run
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
RUN_IDS = (
    "01JDJKGTGDVV4DTXHY6XYB7BKK", "01JDJKH3ZQ0W5N6V4R8T2Y7C9M", "ünïcødé-😀", 'run "quoted"', "new\nline", "back\\slash",
    "r" * 82, "r" * 83,
)
"""Inngest's ULIDs; ones another sender may make up, the last three with what a label value escapes; the longest
that fits OpenMetrics' 128 code points beside its trace id, and one too long for them."""
STAMP = 1_764_818_309.25
"""When the first observation is made; each later one a millisecond later."""
ACCEPTS = (
    "",
    "text/plain;version=0.0.4",
    "text/plain;version=1.0.0;escaping=allow-utf-8",
    "application/openmetrics-text;version=1.0.0",
    "application/openmetrics-text;version=1.0.0;escaping=underscores;q=0.5,text/plain;version=0.0.4;q=0.3",
    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8",
    "application/openmetrics-text;version=1.0.0;escaping=dots",  # names rewritten: prometheus_client renders all
)


Observation = tuple[str, Source, float | None, str]
"""function_id, source, age, run_id."""


def observations() -> Iterator[Observation]:
    """Every function under a few sources with every age, and one series counted only without an age; the runs
    taking turns, so each series' and bucket's latest run differs.

    prometheus_client creates a series' histogram child on its first age, so a series first counted
    without one would come later in its histogram than here: each series' first observation has one,
    or none ever does.
    """
    observed = [
        (function_id, source, age)
        for i, function_id in enumerate(FUNCTIONS)
        for source in (Source.EVENT, Source.BULK, list(Source)[i % len(Source)])
        for age in AGES
    ]
    observed += [("plain", Source.MANUAL, None)] * 2
    for n, (function_id, source, age) in enumerate(observed):
        yield function_id, source, age, RUN_IDS[n % len(RUN_IDS)]


def stamped(observed: Iterator[Observation]) -> Iterator[Observation]:
    """Each observation with the wall clock, which both registries stamp exemplars with, stopped at its own time."""
    with pytest.MonkeyPatch.context() as patch:
        for n, observation in enumerate(observed):
            patch.setattr(time, "time", lambda n=n: STAMP + n / 1000)
            yield observation


def exemplar(run_id: str) -> dict[str, str]:
    """The exemplar labels a run should have: its span's trace id, and its run id when that is written as it is
    (Prometheus would keep the escapes) and both fit in 128 code points."""
    trace_id = trace_id_for_run(run_id).hex()
    named = len(run_id) <= 82 and not {"\\", '"', "\n"} & set(run_id)
    return {"run_id": run_id, "trace_id": trace_id} if named else {"trace_id": trace_id}


def prometheus_client_registry() -> CollectorRegistry:
    """The same observations in prometheus_client's own Counter and Histogram, as the sink kept them before."""
    registry = CollectorRegistry()
    names = ["function_id", "source", *CONSTANT]
    counter = Counter(COUNTER, COUNTER_HELP, names, registry=registry)
    histogram = Histogram(HISTOGRAM, HISTOGRAM_HELP, names, buckets=HISTOGRAM_BUCKETS, registry=registry)
    admitted: list[str] = []
    for function_id, source, age, run_id in stamped(observations()):
        if function_id not in admitted and len(admitted) < CAP:
            admitted.append(function_id)
        values = (function_id if function_id in admitted else OVERFLOW, source.value, *CONSTANT.values())
        counter.labels(*values).inc(exemplar=exemplar(run_id))
        if age is not None:
            age_seconds = classified(function_id, source, age, run_id).cancellation.age_seconds
            histogram.labels(*values).observe(age_seconds, exemplar(run_id))
    return registry


def sink_registry(observed: Iterator[Observation]) -> tuple[CollectorRegistry, PrometheusSink]:
    """A PrometheusSink on a registry of its own (its health series elsewhere), after `observed`."""
    registry = CollectorRegistry()
    sink = PrometheusSink(registry, HealthMetrics(CollectorRegistry()), constant_labels=CONSTANT, max_functions=CAP)
    for function_id, source, age, run_id in stamped(observed):
        sink.emit(classified(function_id, source, age, run_id))
    return registry, sink


def classified(function_id: str, source: Source, age: float | None, run_id: str = RUN_IDS[0]) -> Classified:
    """A cancellation of that run age, to the millisecond the run id's time has."""
    scheduled = None if age is None else CANCELLED_AT_MS - round(age * 1000)
    return make_classified(run_id, function_id=function_id, source=source, scheduled_at_ms=scheduled)


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
    overflowed = [1 for function_id, source, _, _ in observations() if function_id in FUNCTIONS[CAP:] and source is Source.EVENT]
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


def test_each_series_names_its_latest_run_and_span_in_openmetrics_only() -> None:
    """The counter's exemplar is the series' latest run; each bucket's, the latest run whose age fell in it."""
    first, slow, last = "01JDJKGTGDVV4DTXHY6XYB7BKK", "01JDJKH3ZQ0W5N6V4R8T2Y7C9M", "r" * 83
    registry, _ = sink_registry(iter([("fn", Source.EVENT, 0.5, first), ("fn", Source.EVENT, 90.5, slow), ("fn", Source.EVENT, 0.25, last)]))
    encoder, content_type = choose_encoder("application/openmetrics-text;version=1.0.0")
    openmetrics = exposition(registry, encoder, content_type).decode()
    exemplars = {
        (s.name, s.labels.get("le")): (s.exemplar.labels, s.exemplar.value)
        for family in openmetrics_families(openmetrics)
        for s in family.samples
        if s.exemplar
    }
    assert exemplars == {
        (f"{COUNTER}_total", None): ({"trace_id": trace_id_for_run(last).hex()}, 1.0),  # too long to name beside the trace
        (f"{HISTOGRAM}_bucket", "1.0"): ({"trace_id": trace_id_for_run(last).hex()}, 0.25),
        # the ULID's own 128 bits (python-ulid: ULID.from_str(slow).hex), as the span's trace id
        (f"{HISTOGRAM}_bucket", "120.0"): ({"run_id": slow, "trace_id": "019365388ff7070b536c984685e3b134"}, 90.5),
    }
    for accept in ("text/plain;version=0.0.4", "text/plain;version=1.0.0;escaping=allow-utf-8"):
        encoder, content_type = choose_encoder(accept)
        assert " # {" not in exposition(registry, encoder, content_type).decode()
