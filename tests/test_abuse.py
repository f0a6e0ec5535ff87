"""Abuse through `POST /events` on the real `serve` process: label values, a cardinality flood, a crowd of senders.

What a Prometheus user relies on: the exposition stays valid and readable
whatever ids arrive, the `function_id` cap bounds the series without losing a
count, and a run is counted exactly once however many senders redeliver it.
"""

from __future__ import annotations

import collections
import random
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import requests
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families

from exporter.parsing import FINISHED, MAX_ID_LENGTH
from exporter.sinks.prometheus import OVERFLOW
from tests.conftest import ServeProcess
from tests.support.exposition import assert_promtool_passes, samples, scrape
from tests.support.forwarder import post_events
from tests.support.payloads import cancellation

CANCELLATIONS = "inngest_function_cancellations_total"
RECEIVED = "inngest_cancellation_exporter_events_received_total"
OVERFLOWED = "inngest_cancellation_exporter_function_id_overflow_total"
ABUSIVE_IDS = [
    'quo"te', "new\nline", "back\\slash", "ünïcødé-😀", "tab\there", "cr\rreturn", "nul\x00byte", "\ufeffbom",
    "\u2028\u2029", "\x1b[31mred", " ", "\\n", '"', "\\", "{}=,", "# HELP x", 'a"} 1\nfake_metric{b="',
    "x" * MAX_ID_LENGTH, "é" * MAX_ID_LENGTH, "😀" * MAX_ID_LENGTH, "\U0010ffff",
]
"""Label values that break a naive exposition: escapes, line breaks, injected series, the longest ids allowed."""


def function_ids(exposition: bytes) -> dict[str, float]:
    """Cancellation counts by function_id, summed over sources."""
    counts: dict[str, float] = collections.defaultdict(float)
    for labels, value in samples(exposition.decode(), CANCELLATIONS).items():
        counts[dict(labels)["function_id"]] += value
    return dict(counts)


def received(exposition: bytes, outcome: str) -> float:
    return samples(exposition.decode(), RECEIVED).get((("ingress", "events"), ("outcome", outcome)), 0.0)


def test_abusive_label_values_round_trip_and_pass_promtool(serve: Callable[..., ServeProcess], http: requests.Session) -> None:
    server = serve()
    batch = [cancellation(f"abuse-{i}", function_id) for i, function_id in enumerate(ABUSIVE_IDS)]
    response = post_events(server.url, batch, http)
    assert (response.status_code, response.json()["accepted"]) == (200, len(ABUSIVE_IDS)), response.text

    exposition = scrape(server.url)
    assert_promtool_passes(exposition)
    assert function_ids(exposition) == {function_id: 1.0 for function_id in ABUSIVE_IDS}
    openmetrics = scrape(server.url, openmetrics=True).decode()
    parsed = {
        sample.labels["function_id"]
        for family in openmetrics_families(openmetrics)
        for sample in family.samples
        if sample.name == CANCELLATIONS
    }
    assert parsed == set(ABUSIVE_IDS)


def test_ids_longer_than_the_limit_are_refused_and_nothing_is_recorded(
    serve: Callable[..., ServeProcess], http: requests.Session
) -> None:
    server = serve()
    too_long = "x" * (MAX_ID_LENGTH + 1)
    for event, key in ((cancellation("ok-run", too_long), "function_id"), (cancellation(too_long), "run_id")):
        response = post_events(server.url, [cancellation("fine-run"), event], http)
        assert response.status_code == 400
        assert response.json() == {"error": f"events[1].data.{key}: longer than {MAX_ID_LENGTH} characters"}
    exposition = scrape(server.url)
    assert function_ids(exposition) == {}
    assert received(exposition, "invalid") == 2.0


def test_a_flood_of_function_ids_is_capped_without_losing_a_count(serve: Callable[..., ServeProcess], http: requests.Session) -> None:
    cap, total, batch_size = 100, 5_000, 250
    server = serve("--max-functions", str(cap))
    ids = [f"flood-app-fn-{i:04d}" for i in range(total)]
    sizes: list[int] = []
    for start in range(0, total, batch_size):
        batch = [cancellation(f"flood-run-{i}", ids[i]) for i in range(start, start + batch_size)]
        response = post_events(server.url, batch, http)
        assert (response.status_code, response.json()["accepted"]) == (200, batch_size), response.text
        sizes.append(len(scrape(server.url)))

    exposition = scrape(server.url)
    assert_promtool_passes(exposition)
    counts = function_ids(exposition)
    assert counts == {**{function_id: 1.0 for function_id in ids[:cap]}, OVERFLOW: float(total - cap)}
    assert sum(counts.values()) == total
    assert samples(exposition.decode(), OVERFLOWED) == {(): float(total - cap)}
    # the first batch reached the cap; 4,750 more functions add no series, only digits to the counts
    assert max(sizes) < sizes[0] * 1.01, sizes


def test_concurrent_senders_with_duplicates_count_each_run_exactly_once(serve: Callable[..., ServeProcess]) -> None:
    """16 threads send 400 runs, each run by four of them, some as `function.finished` Cancelled, in small batches."""
    server = serve()
    threads, runs, senders_per_run, batch_size = 16, 400, 4, 5
    rng = random.Random(20241125)
    work: list[list[dict[str, Any]]] = [[] for _ in range(threads)]
    for run in range(runs):
        for sender in rng.sample(range(threads), senders_per_run):
            event = cancellation(f"crowd-run-{run}", f"crowd-app-fn-{run % 7}")
            if rng.random() < 0.3:
                event["name"] = FINISHED
                event["data"]["_inngest"] = {"status": "Cancelled"}
            work[sender].append(event)
    for events in work:
        rng.shuffle(events)
    start = threading.Barrier(threads)

    def send(events: list[dict[str, Any]]) -> collections.Counter[str]:
        tally: collections.Counter[str] = collections.Counter()
        with requests.Session() as session:
            start.wait()
            for i in range(0, len(events), batch_size):
                response = post_events(server.url, events[i : i + batch_size], session)
                assert response.status_code == 200, response.text
                tally.update({key: value for key, value in response.json().items() if key in ("accepted", "duplicates")})
        return tally

    with ThreadPoolExecutor(threads) as pool:
        tallies = list(pool.map(send, work))
    total = sum(tallies, collections.Counter())
    sent = runs * senders_per_run
    assert (total["accepted"], total["duplicates"]) == (runs, sent - runs)

    exposition = scrape(server.url)
    assert sum(function_ids(exposition).values()) == runs
    assert (received(exposition, "accepted"), received(exposition, "duplicate")) == (runs, sent - runs)
    assert_promtool_passes(exposition)
