"""Faults on the real `serve` process: nothing acknowledged is lost, nothing is counted twice.

Datadog flapping, rate limiting, hanging and down for a while; the process killed with
`kill -9` or stopped with SIGTERM under load; the OTLP collector down; the state disk
full or unwritable. Each test drives the process over HTTP as a forwarder would and
checks what users see: answers, the recording Datadog server, /metrics, /readyz.
"""

from __future__ import annotations

import collections
import os
import random
import signal
import subprocess
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import requests
import ulid

from tests.conftest import ServeProcess, free_port
from tests.support.forwarder import post_events
from tests.support.load import Load
from tests.support.payloads import cancellation
from tests.support.recording_server import RecordingServer, accepted, hang, rate_limited, server_error
from tests.support.waiting import eventually

DATADOG_FAST = {"EXPORTER_DATADOG_TIMEOUT": "1s", "EXPORTER_DATADOG_MAX_BACKOFF": "1s", "DD_API_KEY": "dd-test"}


def unique_cancellation(run_id: str | None = None) -> dict[str, Any]:
    return cancellation(run_id or str(ulid.ULID()))


def post(proc: ServeProcess, body: Any) -> requests.Response:
    return post_events(proc.url, body)


def delivered_run_ids(datadog: RecordingServer) -> collections.Counter[str]:
    """Run ids Datadog acknowledged, each with how often: every one must be 1."""
    counts: collections.Counter[str] = collections.Counter()
    for request in list(datadog.acknowledged):
        counts[request.json["text"].split()[1]] += 1  # "Run <run id> of <function> was cancelled."
    return counts


def test_datadog_flapping_rate_limiting_and_hanging_lose_nothing_and_send_nothing_twice(
    serve: Callable[..., ServeProcess], datadog: RecordingServer
) -> None:
    rng = random.Random(5)
    datadog.script(*[rng.choice([server_error(), rate_limited(0.3), hang(1.5), accepted(), accepted()]) for _ in range(60)])
    proc = serve(EXPORTER_DATADOG_URL=datadog.url, **DATADOG_FAST)
    run_ids = [str(ulid.ULID()) for _ in range(120)]
    answers = [post(proc, unique_cancellation(run_id)).status_code for run_id in run_ids]
    assert answers == [200] * len(run_ids)  # ingestion never waits for Datadog
    eventually(lambda: set(delivered_run_ids(datadog)) == set(run_ids), timeout=60)
    assert max(delivered_run_ids(datadog).values()) == 1
    assert proc.metric("inngest_cancellation_exporter_datadog_deliveries_total", {"outcome": "gave_up"}) in (None, 0.0)
    eventually(lambda: proc.metric("inngest_cancellation_exporter_datadog_outbox_depth") == 0.0)


def test_a_long_datadog_outage_is_waited_out(serve: Callable[..., ServeProcess], datadog: RecordingServer) -> None:
    datadog.outage(8)
    proc = serve(EXPORTER_DATADOG_URL=datadog.url, **DATADOG_FAST)
    run_ids = [str(ulid.ULID()) for _ in range(50)]
    assert {post(proc, unique_cancellation(run_id)).status_code for run_id in run_ids} == {200}
    assert proc.metric("inngest_cancellation_exporter_datadog_outbox_depth") == 50.0
    eventually(lambda: set(delivered_run_ids(datadog)) == set(run_ids), timeout=60)
    assert max(delivered_run_ids(datadog).values()) == 1
    assert proc.metric("inngest_cancellation_exporter_datadog_deliveries_total", {"outcome": "retried"}) >= 1.0


@pytest.mark.parametrize("stop", ["kill -9", "SIGTERM"])
def test_a_crash_or_stop_under_load_loses_no_acknowledged_event(
    serve: Callable[..., ServeProcess], datadog: RecordingServer, stop: str
) -> None:
    datadog.outage(3600)  # Datadog is down: everything waits in the outbox when the process dies
    first = serve(EXPORTER_DATADOG_URL=datadog.url, **DATADOG_FAST)
    with Load(first) as load:
        load.wait_for(200)
        if stop == "kill -9":
            first.kill()
        else:
            assert first.stop(signal.SIGTERM) == 0
    assert load.statuses[200] == len(load.acknowledged) and all(
        status == 200 or isinstance(status, str) for status in load.statuses
    ), load.statuses

    datadog.outage(0)  # Datadog is back
    second = serve(state_dir=first.state_dir, EXPORTER_DATADOG_URL=datadog.url, **DATADOG_FAST)
    # redeliveries after the restart: what was acknowledged is a duplicate; what was not may be either
    for run_id in load.attempted:
        summary = post(second, unique_cancellation(run_id)).json()
        assert summary["duplicates"] == 1 or run_id not in load.acknowledged, run_id
    eventually(lambda: set(delivered_run_ids(datadog)) == set(load.attempted), timeout=60)
    assert max(delivered_run_ids(datadog).values()) == 1


def test_the_core_killed_under_load_is_replaced_and_loses_no_acknowledged_event(
    serve: Callable[..., ServeProcess], datadog: RecordingServer
) -> None:
    datadog.outage(3600)
    proc = serve(EXPORTER_DATADOG_URL=datadog.url, **DATADOG_FAST)
    with Load(proc) as load:
        load.wait_for(100)
        _, core = proc.worker_and_core()
        os.kill(core, signal.SIGKILL)
        eventually(lambda: load.statuses[503] > 0 or any(isinstance(status, str) for status in load.statuses), 30)
        load.wait_for(len(load.acknowledged) + 100)  # a new worker and core took over
    # refused while the core was gone (503) or cut off as the worker was replaced: never a 500
    assert all(status in (200, 503) or isinstance(status, str) for status in load.statuses), load.statuses

    datadog.outage(0)
    for run_id in load.attempted:
        summary = post(proc, unique_cancellation(run_id)).json()
        assert summary["duplicates"] == 1 or run_id not in load.acknowledged, run_id
    eventually(lambda: set(delivered_run_ids(datadog)) == set(load.attempted), timeout=60)
    assert max(delivered_run_ids(datadog).values()) == 1


def test_the_collector_down_does_not_hold_ingestion_and_dropped_spans_are_counted(
    serve: Callable[..., ServeProcess],
) -> None:
    proc = serve(OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{free_port()}", OTEL_BSP_SCHEDULE_DELAY="100")
    assert {post(proc, unique_cancellation()).status_code for _ in range(40)} == {200}
    eventually(lambda: proc.metric("inngest_cancellation_exporter_spans_total", {"outcome": "dropped"}) == 40.0, timeout=60)
    assert proc.metric("inngest_function_cancellations_total") == 40.0


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs, mounted for the test (the suite runs as root, as CI does)."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount_point)], check=True)
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=True)


def fill(directory: Path) -> Path:
    """Write a file until the disk refuses more."""
    filler = directory / "filler"
    with open(filler, "wb") as handle:
        try:
            while True:
                handle.write(b"\0" * 65536)
                handle.flush()
        except OSError:
            pass
    return filler


def test_a_full_disk_answers_503_and_records_nothing_then_recovers(
    serve: Callable[..., ServeProcess], small_disk: Path
) -> None:
    proc = serve(state_dir=small_disk / "state")
    filler = fill(small_disk)
    batch = [unique_cancellation() for _ in range(1000)]
    refused = post(proc, batch)
    assert refused.status_code == 503 and refused.headers["Retry-After"]
    assert refused.json()["error"].startswith("nothing was recorded: cannot write state: ")  # then SQLite's reason
    assert requests.get(f"{proc.url}/readyz", timeout=5).status_code == 503
    assert requests.get(f"{proc.url}/healthz", timeout=5).status_code == 200  # alive: no restart loop

    filler.unlink()
    eventually(lambda: requests.get(f"{proc.url}/readyz", timeout=5).status_code == 200)
    assert post(proc, batch).json()["accepted"] == 1000  # none of the refused events had been recorded


def test_unwritable_state_files_answer_503(serve: Callable[..., ServeProcess]) -> None:
    proc = serve()
    state_files = [str(path) for path in proc.state_dir.iterdir()]  # the database, its WAL and shared memory
    subprocess.run(["chattr", "+i", *state_files], check=True)
    try:
        assert post(proc, unique_cancellation()).status_code == 503
        assert requests.get(f"{proc.url}/readyz", timeout=5).json()["status"] == "unavailable"
    finally:
        subprocess.run(["chattr", "-i", *state_files], check=True)
    eventually(lambda: requests.get(f"{proc.url}/readyz", timeout=5).status_code == 200)
    assert post(proc, unique_cancellation()).status_code == 200
