"""`promtool check metrics` (Debian's prometheus package) accepts the exposition after good and bad input.

promtool 2.42 reads only the text format: OpenMetrics' `# EOF`, its counter family names without `_total` and
its exemplars are not that format ("expected integer as timestamp, got \"#\""), so the OpenMetrics answer is read
by prometheus_client's reference parser (which also holds exemplars to OpenMetrics' 128 code points) and scraped
by a real Prometheus keeping exemplars, which fails a whole scrape on an exemplar it cannot parse.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

import requests
from flask import Flask
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from tests.conftest import ServeProcess
from tests.support.exposition import assert_promtool_passes, scrape
from tests.support.payloads import INGEST_TOKEN, cancellation
from tests.support.prometheus_server import PrometheusServer
from tests.support.waiting import eventually

AUTH = {"Authorization": f"Bearer {INGEST_TOKEN}", "Content-Type": "application/json"}
ABUSIVE_IDS = ['quo"te', "new\nline", "back\\slash", "ünïcødé-😀", "x" * 512, "{}=,", "_overflow"]
UNNAMED = {'quo"te', "new\nline", "back\\slash", "x" * 512}
"""Run ids an exemplar leaves out, keeping only their trace id: what a label value escapes, or too long to fit."""
NAMED_RUNS = {ident: (None if ident in UNNAMED else ident) for ident in ABUSIVE_IDS}
"""Each function's exemplar's run_id (each function's run has the function's id): the id, unless left out."""
COUNTER = "inngest_function_cancellations_total"


def test_exposition_passes_promtool_after_good_bad_and_abusive_input(make_app: Callable[..., Flask]) -> None:
    client = make_app({"labels": {"environment": 'prod "eu"\n'}}).test_client()
    assert_promtool_passes(client.get("/metrics").data)

    assert client.post("/events", data=abusive_runs(), headers=AUTH).get_json()["accepted"] == len(ABUSIVE_IDS)
    for bad in (b"{", b"[1,2]", json.dumps({"name": "inngest/function.cancelled", "data": {"run_id": 1}}).encode(), b"\x00" * 10):
        assert client.post("/events", data=bad, headers=AUTH).status_code == 400
    assert client.post("/events", data=b"{}", headers={"Authorization": "Bearer nope"}).status_code == 401

    exposition = client.get("/metrics").data
    assert_promtool_passes(exposition)
    assert b'function_id="quo\\"te"' in exposition and b'function_id="new\\nline"' in exposition
    openmetrics = client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}).data
    exemplars = counter_exemplars(openmetrics)
    assert {function_id: labels.get("run_id") for function_id, labels in exemplars.items()} == NAMED_RUNS
    assert all(len(labels["trace_id"]) == 32 for labels in exemplars.values())
    assert b" # {" not in exposition  # the text format has no exemplars


def test_prometheus_scrapes_and_keeps_the_exemplars_after_abusive_input(tmp_path: Path) -> None:
    exporter = ServeProcess(tmp_path / "state", {}, []).start()
    try:
        answer = requests.post(f"{exporter.url}/events", data=abusive_runs(), headers=AUTH, timeout=10)
        assert answer.json()["accepted"] == len(ABUSIVE_IDS)
        written = counter_exemplars(scrape(exporter.url, openmetrics=True))
        started = time.time() - 60
        with PrometheusServer(
            tmp_path / "prometheus", [exporter.url.removeprefix("http://")], features=["exemplar-storage"]
        ) as prometheus:
            eventually(lambda: len(prometheus.exemplars(COUNTER, started, time.time())) == len(ABUSIVE_IDS), timeout=30)
            (target,) = prometheus.api("targets")["activeTargets"]
            assert (target["health"], target["lastError"]) == ("up", "")
            kept = {series["function_id"]: e["labels"] for series, e in prometheus.exemplars(COUNTER, started, time.time())}
    finally:
        exporter.stop()
    assert kept == written  # as the exporter wrote them, no escape kept in a value
    assert {function_id: labels.get("run_id") for function_id, labels in kept.items()} == NAMED_RUNS


def abusive_runs() -> str:
    """A cancellation for each abusive id, as its function's id and its run's."""
    return json.dumps([cancellation(ident, ident) for ident in ABUSIVE_IDS])


def counter_exemplars(openmetrics: bytes) -> dict[str, dict[str, str]]:
    """Each function's counter exemplar's labels, as prometheus_client's OpenMetrics parser reads them."""
    return {
        s.labels["function_id"]: s.exemplar.labels
        for f in text_string_to_metric_families(openmetrics.decode())
        for s in f.samples
        if s.name == COUNTER
    }
