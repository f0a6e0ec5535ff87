"""The dashboards and rules, proven against a real Prometheus scraping the real exporter.

One demo run serves every test here (tests/support/demo_stack.py): `serve` with
examples/config.yaml fed by `simulate` (every source, every function), its Datadog
and OTLP sinks on, a few refused requests, and Debian's Prometheus scraping every
second and loading dashboards/rules.yml. Every panel target and every rule expression
then goes through Prometheus's HTTP API with the dashboard variables substituted as
Grafana substitutes them: no errors, and data in every panel. The exemplars Prometheus keeps
from the cancellation series lead to the runs and the spans the OTLP stand-in received for them.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest
import requests
import yaml
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families
from prometheus_client.parser import text_string_to_metric_families

from tests.support.dashboards import (
    CANCELLATIONS_UID,
    HEALTH_UID,
    LABEL_VALUES,
    RULES_FILE,
    Query,
    builtin_values,
    evaluate,
    interpolate,
    queries,
    shipped,
    variable_query,
    variable_values,
    variables,
)
from tests.support.demo_stack import CANCELLATIONS, DemoStack
from tests.support.exposition import Labels, samples, scrape
from tests.support.prometheus_server import JOB, PrometheusError, Series

SOURCES = {"event", "timeout", "bulk", "singleton", "manual", "unknown"}
AGES = "inngest_function_cancelled_run_age_seconds"
LONG_RUNNING = "newsletter-app-import-all-contacts"
"""The one simulated function whose runs outlive an hour: its finish timeout is 2 h."""


@dataclass(frozen=True)
class Demo:
    stack: DemoStack
    end: float
    """When Grafana is looking: the end of the dashboards' time range, after everything settled."""
    builtins: dict[str, str]
    """$__range, $__interval, $__rate_interval, ... for [stack.started, end]."""

    def run(self, query: Query, chosen: dict[str, str | list[str]]) -> list[Series]:
        values = {**variable_values(shipped()[query.dashboard], chosen), **self.builtins}
        return evaluate(self.stack.prometheus, query, values, self.stack.started, self.end)

    def exporter_samples(self, name: str) -> list[tuple[dict[str, str], float]]:
        text = requests.get(f"{self.stack.exporter.url}/metrics", timeout=5).text
        return [(s.labels, s.value) for f in text_string_to_metric_families(text) for s in f.samples if s.name == name]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    with DemoStack(tmp_path_factory.mktemp("demo")) as stack:
        stack.refused_requests()
        stack.simulate(count=300, rate=50, seed=7)
        end = stack.settle()
        yield Demo(stack, end, builtin_values(stack.started, end, stack.scrape_interval))


def finite(series: list[Series]) -> bool:
    return any(math.isfinite(value) for s in series for _, value in s.samples)


def panel_results(demo: Demo, uid: str, chosen: dict[str, str | list[str]]) -> tuple[dict[str, list[Series]], list[str]]:
    """Every panel's series (its targets' together), by panel title, and the errors Prometheus answered."""
    results: dict[str, list[Series]] = {}
    errors: list[str] = []
    for query in queries(shipped()[uid]):
        try:
            results.setdefault(query.panel["title"], []).extend(demo.run(query, chosen))
        except PrometheusError as err:
            errors.append(f"{query.where}: {err}")
    return results, errors


def single(demo: Demo, uid: str, title: str) -> Query:
    (query,) = [q for q in queries(shipped()[uid]) if q.panel["title"] == title]
    return query


@pytest.mark.parametrize("uid", [CANCELLATIONS_UID, HEALTH_UID])
def test_every_panel_shows_data_with_every_variable_at_all(demo: Demo, uid: str) -> None:
    results, errors = panel_results(demo, uid, {})
    assert not errors, "\n".join(errors)
    empty = [title for title, series in results.items() if not finite(series)]
    assert not empty, f"panels without data: {empty}\n{demo.stack.describe()}"


def test_every_panel_follows_the_variables_a_user_picks(demo: Demo) -> None:
    chosen: dict[str, str | list[str]] = {
        "job": [JOB],
        "instance": [demo.stack.exporter.url.removeprefix("http://")],  # dots: Grafana escapes them in the regex
        "function_id": [LONG_RUNNING, "billing-app-charge-invoice"],
        "source": ["timeout", "event"],
    }
    for uid in (CANCELLATIONS_UID, HEALTH_UID):
        results, errors = panel_results(demo, uid, chosen)
        assert not errors, "\n".join(errors)
        assert all(finite(series) for series in results.values()), [t for t, s in results.items() if not finite(s)]
    results, _ = panel_results(demo, CANCELLATIONS_UID, chosen)
    for title, series in results.items():
        for s in series:
            assert s.labels.get("function_id", LONG_RUNNING) in chosen["function_id"], title
            assert s.labels.get("source", "timeout") in chosen["source"], title


def test_every_variable_lists_what_the_exporter_exposes(demo: Demo) -> None:
    exposed = {s["function_id"] for s, _ in demo.exporter_samples("inngest_function_cancellations_total")}
    listed: dict[str, set[str]] = {}
    for dashboard in shipped().values():
        values = variable_values(dashboard, {})
        for name, variable in variables(dashboard).items():
            if variable["type"] != "query":
                continue
            parts = LABEL_VALUES.match(variable_query(variable))
            assert parts, f"{name}: not a label_values() query"
            match = interpolate(parts["match"] or "{__name__=~\".+\"}", values)
            listed[name] = set(demo.stack.prometheus.label_values(parts["label"], match))
    assert listed["job"] == {JOB}
    assert listed["instance"] == {demo.stack.exporter.url.removeprefix("http://")}
    assert listed["function_id"] == exposed and len(exposed) >= 6
    assert listed["source"] == SOURCES


def test_the_cancellation_panels_agree_with_the_exporter(demo: Demo) -> None:
    counted = {s["function_id"] for s, value in demo.exporter_samples("inngest_function_cancellations_total") if value}
    (functions,) = demo.run(single(demo, CANCELLATIONS_UID, "Functions cancelled"), {})
    assert functions.samples[-1][1] == len(counted)

    shares = demo.run(single(demo, CANCELLATIONS_UID, "Share by source"), {})
    assert {s.labels["source"] for s in shares} == SOURCES
    assert sum(s.samples[-1][1] for s in shares) == pytest.approx(1.0)

    last = demo.run(single(demo, CANCELLATIONS_UID, "Last cancellation per function"), {})
    assert {s.labels["function_id"] for s in last} == counted
    for s in last:  # a time within the run, in milliseconds as Grafana's dateTime units read it
        assert demo.stack.started * 1000 <= s.samples[-1][1] <= demo.end * 1000

    buckets = demo.exporter_samples("inngest_function_cancelled_run_age_seconds_bucket")
    over_an_hour = {
        labels["function_id"]
        for labels, value in buckets
        if labels["le"] == "+Inf"
        and value > next(v for other, v in buckets if other == {**labels, "le": "3600.0"})
    }
    assert over_an_hour == {LONG_RUNNING}
    long_running = demo.run(single(demo, CANCELLATIONS_UID, "Long-running runs cancelled, by function"), {})
    assert {s.labels["function_id"] for s in long_running if s.samples[-1][1] > 0} == {LONG_RUNNING}


def test_every_rule_evaluates_in_prometheus(demo: Demo) -> None:
    prometheus = demo.stack.prometheus
    loaded = prometheus.rules()
    groups = yaml.safe_load(Path(RULES_FILE).read_text())["groups"]
    assert len(loaded) == sum(len(group["rules"]) for group in groups)
    assert [(r["name"], r["lastError"]) for r in loaded if r["health"] != "ok"] == []
    firing = set()
    for rule in loaded:
        result = prometheus.query(rule["query"])  # raises on an evaluation error
        if rule["type"] == "recording" and "inngest_function_" in rule["name"]:
            assert finite(result), rule["name"]
        if rule["type"] == "alerting" and rule["state"] == "firing":
            firing.add(rule["name"])
    # the demo's Datadog stand-in rejects one event on purpose; nothing else is wrong
    assert firing == {"InngestCancellationExporterDatadogEventsGivenUp"}


def test_each_cancellation_series_leads_to_its_latest_run_and_that_runs_span(demo: Demo) -> None:
    """Prometheus keeps the exemplars it scrapes (OpenMetrics), each naming a run and the trace of the span the
    collector received for that run; each series' latest is the run the exporter counted last in it."""
    stack = demo.stack
    exposed = exporter_exemplars(stack.exporter.url)
    traces: dict[str, set[str]] = {}
    for received in stack.collector.spans():
        traces.setdefault(received.attributes["inngest.run.id"], set()).add(received.span.trace_id.hex())
    for name in (CANCELLATIONS, f"{AGES}_bucket"):
        found = stack.prometheus.exemplars(name, stack.started - 60, time.time())
        latest: dict[Labels, tuple[float, dict[str, str]]] = {}
        for series, exemplar in found:
            labels = exemplar["labels"]
            assert labels["trace_id"] in traces[labels["run_id"]], labels  # the trace of that very run's span
            key = own_labels(series)
            if key not in latest or exemplar["timestamp"] > latest[key][0]:
                latest[key] = (exemplar["timestamp"], labels)
        assert {key: labels for key, (_, labels) in latest.items()} == exposed[name]
    counted = {own_labels(labels) for labels, _ in demo.exporter_samples(CANCELLATIONS)}
    assert set(exposed[CANCELLATIONS]) == counted  # every series has one
    aged = {own_labels(labels) for labels, _ in demo.exporter_samples(f"{AGES}_count")}
    assert {tuple(pair for pair in key if pair[0] != "le") for key in exposed[f"{AGES}_bucket"]} == aged
    dropped = samples(requests.get(f"{stack.prometheus.url}/metrics", timeout=5).text, "prometheus_tsdb_exemplar_out_of_order_exemplars_total")
    assert set(dropped.values()) == {0.0}


def exporter_exemplars(url: str) -> dict[str, dict[Labels, dict[str, str]]]:
    """The exemplar on each sample of the exporter's OpenMetrics answer, by sample name and labels, as Prometheus reads it."""
    exemplars: dict[str, dict[Labels, dict[str, str]]] = {}
    for family in openmetrics_families(scrape(url, openmetrics=True).decode()):
        for sample in family.samples:
            if sample.exemplar:
                exemplars.setdefault(sample.name, {})[own_labels(sample.labels)] = sample.exemplar.labels
    return exemplars


def own_labels(labels: dict[str, str]) -> Labels:
    """A series' labels without those Prometheus adds (`__name__`, `job`, `instance`)."""
    return tuple(sorted((k, v) for k, v in labels.items() if k not in ("__name__", "job", "instance")))
