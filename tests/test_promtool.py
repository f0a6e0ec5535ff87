"""`promtool check metrics` (Debian's prometheus package) accepts the exposition after good and bad input."""

from __future__ import annotations

import json
from typing import Callable

from flask import Flask
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from tests.support.exposition import assert_promtool_passes
from tests.support.payloads import INGEST_TOKEN, cancellation

AUTH = {"Authorization": f"Bearer {INGEST_TOKEN}", "Content-Type": "application/json"}
ABUSIVE_IDS = ['quo"te', "new\nline", "back\\slash", "ünïcødé-😀", "x" * 512, "{}=,", "_overflow"]


def test_exposition_passes_promtool_after_good_bad_and_abusive_input(make_app: Callable[..., Flask]) -> None:
    client = make_app({"labels": {"environment": 'prod "eu"\n'}}).test_client()
    assert_promtool_passes(client.get("/metrics").data)

    good = [cancellation(f"run-{i}", function_id) for i, function_id in enumerate(ABUSIVE_IDS)]
    assert client.post("/events", data=json.dumps(good), headers=AUTH).get_json()["accepted"] == len(ABUSIVE_IDS)
    for bad in (b"{", b"[1,2]", json.dumps({"name": "inngest/function.cancelled", "data": {"run_id": 1}}).encode(), b"\x00" * 10):
        assert client.post("/events", data=bad, headers=AUTH).status_code == 400
    assert client.post("/events", data=b"{}", headers={"Authorization": "Bearer nope"}).status_code == 401

    exposition = client.get("/metrics").data
    assert_promtool_passes(exposition)
    assert b'function_id="quo\\"te"' in exposition and b'function_id="new\\nline"' in exposition
    # promtool reads only the text format; the OpenMetrics rendering is checked by its reference parser
    openmetrics = client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}).data
    families = list(text_string_to_metric_families(openmetrics.decode()))
    functions = {s.labels["function_id"] for f in families for s in f.samples if s.name == "inngest_function_cancellations_total"}
    assert functions == set(ABUSIVE_IDS)
