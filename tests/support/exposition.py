"""Reading `/metrics` as Prometheus does: `promtool check metrics` and prometheus_client's own parser."""

from __future__ import annotations

import shutil
import subprocess

import requests
from prometheus_client.parser import text_string_to_metric_families

Labels = tuple[tuple[str, str], ...]
"""A sample's labels, sorted: hashable, so samples can be keyed by them."""


def promtool_check(exposition: bytes) -> subprocess.CompletedProcess[str]:
    """`promtool check metrics` on an exposition; the result, for its return code and its complaints."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool is installed by `make test` (scripts/install-test-tools.sh)"
    return subprocess.run([promtool, "check", "metrics"], input=exposition.decode(), capture_output=True, text=True, timeout=30)


def assert_promtool_passes(exposition: bytes) -> None:
    result = promtool_check(exposition)
    assert result.returncode == 0, result.stdout + result.stderr


def samples(exposition: str, name: str) -> dict[Labels, float]:
    """Every sample called `name`, by its labels."""
    return {
        tuple(sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(exposition)
        for s in family.samples
        if s.name == name
    }


def scrape(base_url: str, *, openmetrics: bool = False) -> bytes:
    """`GET /metrics` of a running exporter, as Prometheus scrapes it (text format, or OpenMetrics)."""
    headers = {"Accept": "application/openmetrics-text; version=1.0.0"} if openmetrics else {}
    response = requests.get(f"{base_url}/metrics", headers=headers, timeout=10)
    response.raise_for_status()
    return response.content
