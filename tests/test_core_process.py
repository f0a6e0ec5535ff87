"""The exporter core in its own process: the same answers as in process, and a lifetime tied to the HTTP worker."""

from __future__ import annotations

import json
import os
import signal
from multiprocessing import AuthenticationError
from multiprocessing.connection import Client
from pathlib import Path
from typing import Callable, Iterator

import pytest
import requests

from exporter.app import create_app
from exporter.config import parse_config
from exporter.core_process import CoreUnavailable, RemoteCore
from exporter.parsing import InvalidInput
from exporter.settings import load_settings
from tests.conftest import ServeProcess
from tests.support.payloads import INGEST_TOKEN, cancellation, fixture_event
from tests.support.otlp_receiver import OtlpHttpReceiver
from tests.support.processes import alive, children
from tests.support.waiting import eventually

AUTH = {"Authorization": f"Bearer {INGEST_TOKEN}", "Content-Type": "application/json"}


@pytest.fixture
def serve_with_spans(serve: Callable[..., ServeProcess]) -> Iterator[Callable[[], ServeProcess]]:
    """`serve` exporting spans to a real OTLP receiver, so the core runs its span export process too."""
    with OtlpHttpReceiver() as receiver:
        yield lambda: serve(OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint, OTEL_BSP_SCHEDULE_DELAY="50")


def span_exporter(core: int) -> int:
    """The span export process the core forked."""
    eventually(lambda: len(children(core)) == 1, timeout=10)
    (pid,) = children(core)
    return pid


@pytest.fixture
def remote(tmp_path: Path) -> Iterator[RemoteCore]:
    settings = load_settings({"EXPORTER_STATE_DIR": str(tmp_path / "state"), "EXPORTER_INGEST_TOKEN": INGEST_TOKEN})
    core = RemoteCore(settings, parse_config({}, "test"), on_exit=lambda code: None)
    yield core
    core.stop(timeout=5)


def test_remote_calls_answer_and_fail_as_in_process(remote: RemoteCore) -> None:
    body = json.dumps(fixture_event("seed-cancelled-export.json")).encode()
    assert json.loads(remote.ingest_body(body, "events")) == {"accepted": 1, "duplicates": 0, "ignored": 0, "signals": 0, "pending": 0}
    assert remote.ingest_event(fixture_event("seed-cancelled-export.json"), "inngest")["duplicates"] == 1
    with pytest.raises(InvalidInput, match="body is an empty array"):
        remote.ingest_body(b"[]", "events")
    remote.count_received("events", "unauthorized")
    text, content_type = remote.render_metrics("")
    assert content_type.startswith("text/plain")
    assert b'inngest_function_cancellations_total{' in text
    assert b'events_received_total{ingress="events",outcome="unauthorized"} 1.0' in text
    assert remote.problems() == []


def test_only_a_caller_with_the_key_is_served(remote: RemoteCore) -> None:
    with pytest.raises(AuthenticationError):
        Client(remote.address, family="AF_UNIX", authkey=b"not the key")
    assert remote.problems() == []  # a refused caller does not disturb the others


def test_without_its_core_the_app_answers_503_and_says_why(remote: RemoteCore) -> None:
    client = create_app(remote.settings, remote.config, core=remote).test_client()
    remote.stop(timeout=5)
    with pytest.raises(CoreUnavailable):
        remote.ingest_body(json.dumps(cancellation()).encode(), "events")
    events = client.post("/events", json=cancellation(), headers={"Authorization": f"Bearer {INGEST_TOKEN}"})
    metrics, ready = client.get("/metrics"), client.get("/readyz")
    assert (events.status_code, events.headers["Retry-After"]) == (503, "5")
    assert events.json["error"].startswith("nothing was recorded: the exporter core is not running")
    assert (metrics.status_code, metrics.headers["Retry-After"]) == (503, "5")
    assert "not running" in metrics.json["error"]
    assert ready.status_code == 503 and "not running" in ready.json["problems"][0]
    assert client.get("/healthz").status_code == 200  # the worker's own liveness


def _accepts(proc: ServeProcess, run_id: str) -> Callable[[], bool]:
    def check() -> bool:
        answer = requests.post(f"{proc.url}/events", json=cancellation(run_id), headers=AUTH, timeout=10)
        return answer.status_code == 200
    return check


def test_a_core_that_dies_is_replaced_and_its_record_kept(serve_with_spans: Callable[[], ServeProcess]) -> None:
    proc = serve_with_spans()
    worker, core = proc.worker_and_core()
    spans = span_exporter(core)
    assert _accepts(proc, "01JDJKGTGDVV4DTXHY6XYB7BK1")()
    os.kill(core, signal.SIGKILL)
    eventually(lambda: not alive(worker), timeout=30)  # the worker without a core leaves; gunicorn starts another
    eventually(lambda: not alive(spans), timeout=10)  # the span export process ends with the core
    new_worker, new_core = proc.worker_and_core()
    assert (new_worker, new_core) != (worker, core)
    eventually(_accepts(proc, "01JDJKGTGDVV4DTXHY6XYB7BK2"), timeout=30)
    again = requests.post(f"{proc.url}/events", json=cancellation("01JDJKGTGDVV4DTXHY6XYB7BK1"), headers=AUTH, timeout=10)
    assert again.json()["duplicates"] == 1
    assert proc.stop() == 0


def test_a_core_whose_worker_dies_stops_by_itself(serve_with_spans: Callable[[], ServeProcess]) -> None:
    proc = serve_with_spans()
    worker, core = proc.worker_and_core()
    spans = span_exporter(core)
    os.kill(worker, signal.SIGKILL)
    eventually(lambda: not alive(core) and not alive(spans), timeout=30)
    proc.worker_and_core()
    eventually(_accepts(proc, "01JDJKGTGDVV4DTXHY6XYB7BK3"), timeout=30)
    assert proc.stop() == 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stopping_serve_leaves_no_process_behind(serve_with_spans: Callable[[], ServeProcess], sig: int) -> None:
    """SIGINT goes to the whole process group, as Ctrl-C in a terminal sends it."""
    proc = serve_with_spans()
    worker, core = proc.worker_and_core()
    spans = span_exporter(core)
    assert _accepts(proc, "01JDJKGTGDVV4DTXHY6XYB7BK4")()
    assert proc.proc is not None
    os.killpg(proc.proc.pid, sig)
    assert proc.proc.wait(30) == 0
    eventually(lambda: not alive(worker) and not alive(core) and not alive(spans), timeout=10)
    assert "Traceback" not in proc.log()
