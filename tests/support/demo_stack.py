"""The whole demo, for real: `serve` with examples/config.yaml, `simulate`, every sink, and a Prometheus scraping it.

The dashboards proof (tests/test_prometheus_proof.py) and the README preview
(scripts/render_dashboard_preview.py) both need what a user sees on day one: the
real exporter fed by `simulate`, its Datadog and OTLP sinks on (stand-ins that
accept, after a few scripted failures, so retries, give-ups and the outbox show),
a few refused requests, and a real Prometheus that scrapes every second, keeps exemplars and
loads dashboards/rules.yml. Nothing is mocked between the exporter and Prometheus.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from types import TracebackType

import requests

from tests.conftest import ServeProcess, free_port
from tests.support.dashboards import RULES_FILE
from tests.support.otlp_receiver import OtlpHttpReceiver
from tests.support.payloads import INGEST_TOKEN, REPO
from tests.support.prometheus_server import PrometheusServer
from tests.support.recording_server import RecordingServer, bad_request, server_error
from tests.support.waiting import eventually

ATTRIBUTION_GRACE = "2s"
POLL_INTERVAL = "1s"
CANCELLATIONS = "inngest_function_cancellations_total"


class DemoStack:
    """Exporter, sinks and Prometheus, started together and stopped together; a context manager."""

    def __init__(self, workdir: Path, *, scrape_interval: float = 1.0) -> None:
        self.workdir = workdir
        self.scrape_interval = scrape_interval
        self.config = workdir / "config.yaml"
        self.api_port = free_port()
        self.sent: dict[str, int] = {}
        """Cancellations `simulate` sent so far, per intended source."""
        self._stack = ExitStack()
        self.exporter: ServeProcess
        self.collector: OtlpHttpReceiver
        """The OTLP receiver the exporter sends its spans to."""
        self.prometheus: PrometheusServer
        self.started = 0.0
        """Unix time when Prometheus was ready: the start of the dashboards' time range."""

    def __enter__(self) -> "DemoStack":
        self.workdir.mkdir(parents=True, exist_ok=True)
        # the example config, polling its bulk cancellations every second (as tests/test_serve.py does)
        example = (REPO / "examples" / "config.yaml").read_text()
        self.config.write_text(example.replace("poll_interval: 10s", f"poll_interval: {POLL_INTERVAL}"))
        try:
            datadog = self._stack.enter_context(RecordingServer())
            datadog.script(server_error(), server_error(), bad_request())  # a retry or two, and one give-up
            self.collector = self._stack.enter_context(OtlpHttpReceiver())
            self.exporter = ServeProcess(
                self.workdir / "state",
                {
                    "INNGEST_API_BASE_URL": f"http://127.0.0.1:{self.api_port}",
                    "EXPORTER_ATTRIBUTION_GRACE": ATTRIBUTION_GRACE,
                    "EXPORTER_RUN_LOOKUP_RATE": "200",  # the timed-out runs are looked up within the short grace period
                    "DD_API_KEY": "dd-demo-key",
                    "EXPORTER_DATADOG_URL": datadog.url,
                    "OTEL_EXPORTER_OTLP_ENDPOINT": self.collector.endpoint,
                    "OTEL_BSP_SCHEDULE_DELAY": "200",
                },
                ["--config", str(self.config)],
            )
            try:
                self.exporter.start()
            finally:
                if self.exporter.proc is not None:  # stopped however far it got
                    self._stack.callback(self.exporter.stop)
            self.prometheus = PrometheusServer(
                self.workdir / "prometheus",
                [self.exporter.url.removeprefix("http://")],
                rule_files=[RULES_FILE],
                scrape_interval=self.scrape_interval,
                features=["exemplar-storage"],  # as a user's Prometheus must run to keep the runs behind the counts
            ).start()
            self._stack.callback(self.prometheus.stop)
            # Prometheus scrapes a new target only after its discovery settles (about 5 s): the dashboards'
            # time range starts at the first scrape, so every series is seen from its first change.
            eventually(lambda: self.prometheus.scraped("up") == 1.0, timeout=30)
        except BaseException:
            self._stack.close()
            raise
        self.started = float(int(time.time()))
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._stack.close()

    def refused_requests(self, count: int = 3) -> None:
        """Requests the exporter must refuse (a wrong token, a malformed body), so those outcomes have series."""
        events = f"{self.exporter.url}/events"
        for _ in range(count):
            requests.post(events, data="{}", headers={"Authorization": "Bearer wrong-token"}, timeout=5)
            requests.post(
                events, data="{", headers={"Authorization": f"Bearer {INGEST_TOKEN}", "Content-Type": "application/json"},
                timeout=5,
            )

    def simulate(self, *, count: int, rate: float, seed: int) -> dict[str, int]:
        """Run `inngest-cancellation-exporter simulate` against the exporter, as a user would; its totals per source."""
        result = subprocess.run(
            [
                sys.executable, "-m", "exporter", "simulate", "--url", self.exporter.url, "--rate", str(rate),
                "--count", str(count), "--seed", str(seed), "--config", str(self.config), "--api-port", str(self.api_port),
            ],
            capture_output=True, text=True, timeout=120, cwd=REPO,
            env={"PATH": "/usr/bin:/bin", "EXPORTER_INGEST_TOKEN": INGEST_TOKEN},
        )
        if result.returncode != 0:
            raise RuntimeError(f"simulate failed ({result.returncode}): {result.stderr}")
        totals = {k: int(v) for k, v in (part.split(": ") for part in result.stdout.strip().removeprefix("sent ").split(", "))}
        for source, n in totals.items():
            self.sent[source] = self.sent.get(source, 0) + n
        return totals

    def settle(self, timeout: float = 30.0) -> float:
        """Wait until every held cancellation is emitted and Prometheus has scraped the final counts a few times.

        Returns the time to evaluate dashboards at. A few scrapes after the last change,
        every series has the two samples in range that `rate` needs.
        """
        eventually(lambda: self.exporter.metric("inngest_cancellation_exporter_pending_classifications") == 0.0, timeout)
        total = float(sum(self.sent.values()))
        eventually(lambda: self.prometheus.scraped(f"sum({CANCELLATIONS})") == total, timeout)
        time.sleep(3 * self.scrape_interval)
        return float(int(time.time()))

    def describe(self) -> str:
        """What was run, for a failure message or the preview's caption."""
        return json.dumps({"exporter": self.exporter.url, "prometheus": self.prometheus.url, "sent": self.sent})
