"""Shared fixtures: settings, an in-process app, and the real `serve` process driven over HTTP."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import requests
from flask import Flask
from hypothesis import HealthCheck, settings

from exporter.config import Config, parse_config
from exporter.settings import load_settings
from exporter.state import StateDB
from tests.support.otlp_receiver import OtlpHttpReceiver
from tests.support.payloads import INGEST_TOKEN, REPO, SIGNING_KEY
from tests.support.processes import worker_and_core
from tests.support.recording_server import RecordingServer
from tests.support.waiting import eventually

SOAK_ENV = "SOAK"
"""`SOAK=1` in the environment is the same as `--soak` (for CI jobs that cannot change the command)."""
SOAK_FACTOR = 20
"""How many times more examples the `soak` hypothesis profile runs than `ci`."""


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--soak", action="store_true", default=False,
        help=f"run the long soak tests (marker `soak`) and fuzz with the `soak` hypothesis profile; also {SOAK_ENV}=1",
    )


def soak_requested(config: pytest.Config) -> bool:
    return bool(config.getoption("--soak")) or os.environ.get(SOAK_ENV, "") not in ("", "0")


def pytest_configure(config: pytest.Config) -> None:
    """Hypothesis profiles: `ci` (the default, fast) and `soak` (SOAK_FACTOR times the examples).

    Tests size their runs as multiples of the profile's `max_examples`, so one switch scales them all.
    No deadline: a request to the real server has no stable duration on a loaded CI machine.
    """
    ci = settings(deadline=None, print_blob=True, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    settings.register_profile("ci", ci)
    settings.register_profile("soak", ci, max_examples=SOAK_FACTOR * ci.max_examples)
    settings.load_profile("soak" if soak_requested(config) else "ci")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Soak tests are skipped, visibly, unless asked for."""
    if soak_requested(config):
        return
    skip = pytest.mark.skip(reason=f"soak test: run with --soak (or {SOAK_ENV}=1)")
    for item in items:
        if "soak" in item.keywords:
            item.add_marker(skip)


NO_API = "http://127.0.0.1:9"
"""Inngest's REST API for tests that do not start one: a closed loopback port, so that bulk polls and run
lookups fail here at once and never leave the machine for the default, Inngest Cloud."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def state(tmp_path: Path) -> Iterator[StateDB]:
    """The state database in the test's own directory, closed after it."""
    db = StateDB(tmp_path)
    yield db
    db.close()


@pytest.fixture
def make_app(tmp_path: Path) -> Iterator[Callable[..., Flask]]:
    """Build an app on a fresh state dir; env overrides and a config dict are optional."""
    apps: list[Flask] = []

    def build(config: dict[str, Any] | Config | None = None, **env: str) -> Flask:
        environ = {
            "EXPORTER_STATE_DIR": str(tmp_path / "state"),
            "INNGEST_API_BASE_URL": NO_API,
            "INNGEST_SIGNING_KEY": SIGNING_KEY,
            "EXPORTER_INGEST_TOKEN": INGEST_TOKEN,
            "EXPORTER_DISCOVERY": "off",  # Inngest is not there to read the definitions from (NO_API)
            **env,
        }
        settings = load_settings(environ)
        cfg = config if isinstance(config, Config) else parse_config(config or {}, "test")
        from exporter.app import create_app

        app = create_app(settings, cfg, environ)
        apps.append(app)
        return app

    yield build
    for app in apps:
        app.extensions["exporter"].stop(timeout=5)


class ServeProcess:
    """The real `inngest-cancellation-exporter serve`, started as users start it."""

    def __init__(self, state_dir: Path, env: dict[str, str], args: list[str], log_dir: Path | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.state_dir = state_dir
        self._env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "DD_", "INNGEST_", "EXPORTER_"))},
            "EXPORTER_STATE_DIR": str(state_dir),
            "INNGEST_API_BASE_URL": NO_API,
            "INNGEST_SIGNING_KEY": SIGNING_KEY,
            "EXPORTER_INGEST_TOKEN": INGEST_TOKEN,
            "EXPORTER_DISCOVERY": "off",  # Inngest is not there to read the definitions from (NO_API)
            **env,
        }
        self._args = args
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = (log_dir or state_dir.parent) / f"serve-{self.port}.log"

    def start(self) -> "ServeProcess":
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "exporter", "serve", "--host", "127.0.0.1", "--port", str(self.port), *self._args],
            env=self._env, stdout=self._log, stderr=subprocess.STDOUT, cwd=REPO,
            start_new_session=True,  # its own process group, so `kill` reaches gunicorn's worker too
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"serve exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if requests.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return self
            except (requests.ConnectionError, requests.Timeout):  # a loaded machine may answer late: ask again
                pass
            time.sleep(0.1)
        raise RuntimeError(f"serve did not become ready:\n{self.log()}")

    def worker_and_core(self) -> tuple[int, int]:
        """The pids of gunicorn's worker and of the exporter core it forked, once both run."""
        assert self.proc is not None
        master = self.proc.pid
        eventually(lambda: worker_and_core(master) is not None, timeout=30)
        pids = worker_and_core(master)
        assert pids is not None
        return pids

    def kill(self) -> None:
        """`kill -9` the master, its worker and the core at once: a crash, with no chance to flush or clean up."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        """A sample's value from /metrics, parsed with prometheus_client's own parser."""
        from prometheus_client.parser import text_string_to_metric_families

        text = requests.get(f"{self.url}/metrics", timeout=5).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in (labels or {}).items()):
                    return sample.value
        return None


@pytest.fixture
def datadog() -> Iterator[RecordingServer]:
    """A recording stand-in for Datadog's API, for `serve` (see `sinks_env`) or a sender."""
    with RecordingServer() as server:
        yield server


@pytest.fixture
def collector() -> Iterator[OtlpHttpReceiver]:
    """An OTLP/HTTP receiver, for `serve` (see `sinks_env`)."""
    with OtlpHttpReceiver() as receiver:
        yield receiver


def sinks_env(datadog: RecordingServer, collector: OtlpHttpReceiver) -> dict[str, str]:
    """The variables a user sets to send Datadog events and spans to these two, spans exported within 100 ms."""
    return {
        "DD_API_KEY": "dd-test-key",
        "EXPORTER_DATADOG_URL": datadog.url,
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., ServeProcess]]:
    """Start `serve` processes; each is stopped at the end of the test."""
    started: list[ServeProcess] = []

    def start(*args: str, state_dir: Path | None = None, **env: str) -> ServeProcess:
        proc = ServeProcess(state_dir or tmp_path / "state", env, list(args), log_dir=tmp_path).start()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.proc is not None and proc.proc.poll() is None:
            proc.stop()


@pytest.fixture
def http(serve: Callable[..., ServeProcess]) -> Iterator[requests.Session]:
    """One HTTP session for a test's requests to `serve` processes, closed before they are stopped.

    An idle keep-alive connection makes a graceful stop wait about two seconds; this
    fixture depends on `serve`, so its teardown (the close) comes first.
    """
    with requests.Session() as session:
        yield session
