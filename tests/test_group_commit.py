"""Requests ingested at the same time share transactions, and each is still recorded whole, once.

`Pipeline.ingest` lets the thread that holds the recording lock commit every request
queued behind it. What a forwarder sees must not change: each answer counts its own
events, a run counts once however many requests carry it, and a request that cannot
be recorded fails alone, never taking the requests it shared a transaction with along.
"""

from __future__ import annotations

import json
import random
import sqlite3
import threading
import time
from typing import Any, Callable, Sequence

import pytest
import ulid
from flask import Flask

from exporter.core import Exporter
from exporter.parsing import parse_body
from exporter.pipeline import Pipeline
from exporter.records import Classified, IngestSummary
from tests.support.payloads import INGEST_TOKEN, cancellation

AUTH = {"Authorization": f"Bearer {INGEST_TOKEN}"}


def test_concurrent_requests_with_overlapping_runs_count_each_run_once(make_app: Callable[..., Flask]) -> None:
    app = make_app()
    runs = [str(ulid.ULID()) for _ in range(300)]
    answers: list[dict[str, int]] = []
    sent: list[list[str]] = []
    failures: list[str] = []
    start = threading.Barrier(8)

    def forwarder(seed: int) -> None:
        client = app.test_client()
        chosen = random.Random(seed)
        start.wait()
        for _ in range(25):
            carried = chosen.sample(runs, chosen.randint(1, 6))
            sent.append(carried)
            body = [cancellation(run) for run in carried]
            response = client.post("/events", json=body, headers=AUTH)
            if response.status_code != 200:
                failures.append(f"{response.status_code} {response.get_data(as_text=True)}")
            else:
                answers.append(response.get_json())

    threads = [threading.Thread(target=forwarder, args=(seed,)) for seed in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert failures == []
    assert sum(answer["accepted"] + answer["duplicates"] for answer in answers) == sum(map(len, sent))
    distinct = {run for carried in sent for run in carried}
    accepted = sum(answer["accepted"] for answer in answers)
    assert accepted == len(distinct), "each run carried is accepted by exactly one request"
    metrics = app.test_client().get("/metrics").get_data(as_text=True)
    assert f'inngest_cancellation_exporter_events_received_total{{ingress="events",outcome="accepted"}} {float(accepted)}' in metrics
    cancelled = sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("inngest_function_cancellations_total{")
    )
    assert cancelled == accepted
    again = app.test_client().post("/events", json=[cancellation(run) for run in sorted(distinct)], headers=AUTH)
    assert again.get_json()["duplicates"] == len(distinct)


class _GateSink:
    """A durable sink that holds the first transaction open until told, and fails on one run id."""

    def __init__(self, poison: str) -> None:
        self.poison = poison
        self.held = threading.Event()
        self.release = threading.Event()
        self.staged: list[list[str]] = []

    def stage_all(self, tx: sqlite3.Connection, items: Sequence[Classified]) -> None:
        if not self.held.is_set():
            self.held.set()
            assert self.release.wait(10)
        run_ids = [item.cancellation.run_id for item in items]
        if self.poison in run_ids:
            raise RuntimeError(f"cannot stage {self.poison}")
        self.staged.append(run_ids)


@pytest.fixture
def gated(make_app: Callable[..., Flask]) -> tuple[Exporter, Pipeline, _GateSink]:
    # every run is past its finish timeout by scheduling time and, with no lookup of its start, decided on arrival
    exporter: Exporter = make_app(
        {"functions": {"demo-app-export": {"timeouts": {"finish": "1s"}}}}, EXPORTER_RUN_LOOKUPS="false"
    ).extensions["exporter"]
    gate = _GateSink(poison=str(ulid.ULID()))
    live = exporter.pipeline._live  # the app's own Prometheus sink: the test checks what /metrics would count
    pipeline = Pipeline(
        state=exporter.state, dedupe=exporter.dedupe, signals=exporter.signals, pending=exporter.pending,
        classifier=exporter.pipeline._classifier, durable_sinks=[gate], live_sinks=live,
        health=exporter.health, grace_ms=0, signal_listeners=exporter.config.signal_listeners,
    )
    return exporter, pipeline, gate


def _ingest_in_thread(exporter: Exporter, pipeline: Pipeline, run_id: str, results: dict[str, Any]) -> threading.Thread:
    body = json.dumps(cancellation(run_id)).encode()
    events = parse_body(body, evidence_names=exporter.config.evidence_names, now_ms=int(time.time() * 1000), max_events=10)

    def run() -> None:
        try:
            results[run_id] = pipeline.ingest(events, "events")
        except Exception as err:
            results[run_id] = err

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def _wait_queued(pipeline: Pipeline, count: int) -> None:
    """Until `count` requests wait behind the held transaction (the pipeline's queue, read only to synchronise)."""
    deadline = time.monotonic() + 10
    while len(pipeline._queue) < count:
        assert time.monotonic() < deadline, "requests did not queue"
        time.sleep(0.01)


def test_requests_waiting_behind_a_transaction_are_committed_together(
    gated: tuple[Exporter, Pipeline, _GateSink],
) -> None:
    exporter, pipeline, gate = gated
    first, second, third = (str(ulid.ULID()) for _ in range(3))
    results: dict[str, Any] = {}
    threads = [_ingest_in_thread(exporter, pipeline, first, results)]
    assert gate.held.wait(10)
    threads += [_ingest_in_thread(exporter, pipeline, run, results) for run in (second, third)]
    _wait_queued(pipeline, 2)
    gate.release.set()
    for thread in threads:
        thread.join(10)

    assert gate.staged == [[first], [second, third]]
    for run in (first, second, third):
        summary = results[run]
        assert isinstance(summary, IngestSummary) and summary.accepted == 1, summary


def test_a_request_that_cannot_be_recorded_fails_alone(gated: tuple[Exporter, Pipeline, _GateSink]) -> None:
    exporter, pipeline, gate = gated
    first, good = str(ulid.ULID()), str(ulid.ULID())
    results: dict[str, Any] = {}
    threads = [_ingest_in_thread(exporter, pipeline, first, results)]
    assert gate.held.wait(10)
    threads += [_ingest_in_thread(exporter, pipeline, run, results) for run in (gate.poison, good)]
    _wait_queued(pipeline, 2)
    gate.release.set()
    for thread in threads:
        thread.join(10)

    assert isinstance(results[gate.poison], RuntimeError)
    assert results[good].accepted == 1 and results[first].accepted == 1
    assert gate.staged == [[first], [good]]
    # the failed request recorded nothing: sent again (now that it can be staged), it counts as new
    poisoned, gate.poison = gate.poison, "none"
    retry: dict[str, Any] = {}
    _ingest_in_thread(exporter, pipeline, good, retry).join(10)
    _ingest_in_thread(exporter, pipeline, poisoned, retry).join(10)
    assert retry[good].duplicates == 1
    assert retry[poisoned].accepted == 1
