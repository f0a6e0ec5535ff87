"""BASELINE, not the exporter: the receiver a user would write in an afternoon, to compare `/api/inngest` with.

A Flask app on the official Python SDK, served by gunicorn as the exporter is (one
worker, 8 threads), with the exporter's app and function ids, so the benchmark
replays byte-identical signed invocations of `record-cancellation` to both. Its one
function increments a `prometheus_client` counter and observes a histogram of the
run's age; the SDK verifies each signature. Nothing else: no exactly-once counting,
no attribution, no spans, no Datadog, no replay window.

    INNGEST_SIGNING_KEY=... gunicorn --workers 1 --worker-class gthread --threads 8 bench.naive_app:app
"""

from __future__ import annotations

import os
from typing import Any

import inngest
import inngest.flask
import prometheus_client
from flask import Flask, Response

app = Flask("naive-baseline")
client = inngest.Inngest(
    app_id="inngest-cancellation-exporter",
    is_production=True,
    signing_key=os.environ["INNGEST_SIGNING_KEY"],
    api_base_url="http://127.0.0.1:9",  # never called: the benchmark does not sync this app
)
cancellations = prometheus_client.Counter("naive_cancellations", "Cancelled runs", ["function_id"])
ages = prometheus_client.Histogram("naive_cancelled_run_age_seconds", "Age of cancelled runs", ["function_id"])


@client.create_function(fn_id="record-cancellation", trigger=inngest.TriggerEvent(event="inngest/function.cancelled"))
def record_cancellation(ctx: inngest.ContextSync) -> dict[str, Any]:
    data = ctx.event.data
    function_id = str(data["function_id"])
    cancellations.labels(function_id).inc()
    ages.labels(function_id).observe((ctx.event.ts - data["event"]["ts"]) / 1000)
    return {"accepted": 1}


@app.get("/metrics")
def metrics() -> Response:
    return Response(prometheus_client.generate_latest(), content_type=prometheus_client.CONTENT_TYPE_LATEST)


inngest.flask.serve(app, client, [record_cancellation])
