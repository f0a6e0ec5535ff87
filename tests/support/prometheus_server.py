"""A real Prometheus (Debian's package) on loopback, scraping the exporter the way users' Prometheus does.

The dashboards and rules are only proven when a real Prometheus has scraped a real
exporter and answered their queries: a query can parse and still return nothing
(a wrong label, a counter outside `rate`, a histogram without `le`). This starts
`/usr/bin/prometheus` on 127.0.0.1 and a free port, with its own data directory and a
generated `prometheus.yml`, and speaks its HTTP API.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import requests
import yaml

from tests.conftest import free_port
from tests.support.waiting import eventually

JOB = "inngest-cancellation-exporter"
"""The job name the generated config gives the exporter's scrape target."""


class PrometheusError(RuntimeError):
    """Prometheus answered a query with an error (bad PromQL, a failed evaluation) or could not be started."""


def prometheus_binary() -> str:
    """The installed `prometheus`; `make test` installs it (scripts/install-test-tools.sh)."""
    binary = shutil.which("prometheus")
    if binary is None:
        raise PrometheusError("prometheus is not installed: run `make test` (scripts/install-test-tools.sh)")
    return binary


@dataclass(frozen=True)
class Series:
    """One series of a query's answer: its labels and its samples as (unix time, value)."""

    labels: dict[str, str]
    samples: list[tuple[float, float]]


class PrometheusServer:
    """`prometheus` scraping `targets` every `scrape_interval` seconds and evaluating `rule_files`; a context manager."""

    def __init__(
        self,
        workdir: Path,
        targets: Sequence[str],
        *,
        rule_files: Sequence[Path] = (),
        scrape_interval: float = 1.0,
        scrape_configs: Sequence[dict[str, Any]] | None = None,
        features: Sequence[str] = (),
    ) -> None:
        """`scrape_configs`, when given, replaces the one job scraping `targets` (a user's own scrape jobs);
        `features` are `--enable-feature` names (`exemplar-storage`: keep the exemplars it scrapes)."""
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.scrape_interval = scrape_interval
        self.log_path = workdir / "prometheus.log"
        self._targets = list(targets)
        self._rule_files = [str(path.resolve()) for path in rule_files]
        self._scrape_configs = list(scrape_configs or [{"job_name": JOB, "static_configs": [{"targets": self._targets}]}])
        self._features = list(features)
        self._proc: subprocess.Popen[bytes] | None = None

    def _write_config(self) -> Path:
        interval = f"{int(self.scrape_interval * 1000)}ms"
        config = {
            "global": {"scrape_interval": interval, "evaluation_interval": interval, "scrape_timeout": interval},
            "rule_files": self._rule_files,
            "scrape_configs": self._scrape_configs,
        }
        path = self.workdir / "prometheus.yml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    def start(self, timeout: float = 30.0) -> "PrometheusServer":
        self.workdir.mkdir(parents=True, exist_ok=True)
        command = [
            prometheus_binary(),
            f"--config.file={self._write_config()}",
            f"--storage.tsdb.path={self.workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--log.level=warn",
            *(f"--enable-feature={feature}" for feature in self._features),
        ]
        log = open(self.log_path, "ab")
        try:
            self._proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir)
        finally:
            log.close()  # the child holds its own descriptor
        try:
            eventually(self._ready, timeout)
        except AssertionError:
            self.stop()
            raise PrometheusError(f"prometheus did not become ready in {timeout}s:\n{self.log()}") from None
        return self

    def _ready(self) -> bool:
        assert self._proc is not None
        if self._proc.poll() is not None:
            raise PrometheusError(f"prometheus exited with {self._proc.returncode}:\n{self.log()}")
        try:
            return requests.get(f"{self.url}/-/ready", timeout=1).status_code == 200
        except requests.ConnectionError:
            return False

    def stop(self, timeout: float = 15.0) -> None:
        if self._proc is None or self._proc.poll() is not None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()

    def __enter__(self) -> "PrometheusServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def api(self, path: str, **params: Any) -> Any:
        """The `data` of a `/api/v1/...` answer; PrometheusError with Prometheus's own message on an error."""
        response = requests.get(f"{self.url}/api/v1/{path}", params=params, timeout=30)
        try:
            body = response.json()
        except ValueError:
            raise PrometheusError(f"{path}: HTTP {response.status_code}: {response.text[:500]}") from None
        if body.get("status") != "success":
            raise PrometheusError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        for warning in body.get("warnings") or []:
            raise PrometheusError(f"{path} {params}: warning: {warning}")
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[Series]:
        """An instant query, as Grafana runs a panel's "Instant" target."""
        data = self.api("query", query=expr, **({"time": at} if at is not None else {}))
        return _series(data)

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[Series]:
        """A range query, as Grafana runs a time series panel's target."""
        return _series(self.api("query_range", query=expr, start=start, end=end, step=step))

    def label_values(self, label: str, match: str) -> list[str]:
        """What Grafana's `label_values(match, label)` variable query lists."""
        return list(self.api(f"label/{label}/values", **{"match[]": match}))

    def exemplars(self, expr: str, start: float, end: float) -> list[tuple[dict[str, str], dict[str, Any]]]:
        """Every exemplar of the series `expr` selects in [start, end], each with its series' labels:
        {"labels": ..., "value": "...", "timestamp": seconds}, as Grafana reads them."""
        data = self.api("query_exemplars", query=expr, start=start, end=end)
        return [(dict(series["seriesLabels"]), exemplar) for series in data for exemplar in series["exemplars"]]

    def rules(self) -> list[dict[str, Any]]:
        """Every loaded rule with its evaluation health (`ok`, `err`, `unknown`) and last error."""
        return [rule for group in self.api("rules")["groups"] for rule in group["rules"]]

    def scraped(self, expr: str) -> float | None:
        """The value of a scalar-like instant query now, or None while it has no result."""
        result = self.query(expr)
        return result[0].samples[-1][1] if result else None


def _series(data: dict[str, Any]) -> list[Series]:
    kind, result = data["resultType"], data["result"]
    if kind == "scalar":
        return [Series({}, [(float(result[0]), float(result[1]))])]
    if kind == "string":
        raise PrometheusError(f"a string is not a panel's result: {result}")
    out = []
    for item in result:
        points = item.get("values") or ([item["value"]] if "value" in item else [])
        out.append(Series(dict(item["metric"]), [(float(t), float(v)) for t, v in points]))
    return out
