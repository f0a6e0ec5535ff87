"""Links from a cancellation's Datadog event and span to the run's page in the Inngest dashboard.

Through the real `serve`: the real datadog-api-client posts to the recording server, the real
OpenTelemetry SDK's encoding reaches the OTLP receiver, configured as users configure them.
The expected URLs are the dashboards' own routes (see exporter/run_links.py for where in
Inngest's source each is defined).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import pytest
import requests

from exporter.settings import SettingsError, load_settings
from tests.conftest import ServeProcess, sinks_env
from tests.support.otlp_receiver import OtlpHttpReceiver
from tests.support.payloads import INGEST_TOKEN, fixture_event
from tests.support.recording_server import RecordingServer
from tests.test_serve import run_cli

RUN_ID = "01JDJKGTGDVV4DTXHY6XYB7BKK"
"""The run of seed-cancelled-export.json."""
SETTING = "EXPORTER_INNGEST_DASHBOARD_URL"
FLAG = "--inngest-dashboard-url"
CLOUD_RUN = f"https://app.inngest.com/env/production/runs/{RUN_ID}"
SERVER_RUN = f"http://127.0.0.1:8288/run?runID={RUN_ID}"


def cancel_one_run(
    serve: Callable[..., ServeProcess], datadog: RecordingServer, collector: OtlpHttpReceiver, *args: str, **env: str
) -> tuple[str, dict[str, object]]:
    """The Datadog event's text and the span's attributes for one cancelled run, sent to a `serve` started so."""
    proc = serve(*args, **sinks_env(datadog, collector), **env)
    answer = requests.post(
        f"{proc.url}/events", data=json.dumps(fixture_event("seed-cancelled-export.json")),
        headers={"Authorization": f"Bearer {INGEST_TOKEN}", "Content-Type": "application/json"}, timeout=10,
    )
    assert answer.json()["accepted"] == 1
    (event,) = datadog.wait_for(1)
    (span,) = collector.wait_for_spans(1)
    return str(event.json["text"]), dict(span.attributes)


@pytest.mark.parametrize(
    ("base_url", "run_page"),
    [
        ("https://app.inngest.com/env/production", CLOUD_RUN),
        ("https://app.inngest.com/env/production/", CLOUD_RUN),
        ("http://127.0.0.1:8288", SERVER_RUN),
        ("http://127.0.0.1:8288/", SERVER_RUN),
        ("https://ops.example.com/inngest//", f"https://ops.example.com/inngest/run?runID={RUN_ID}"),
    ],
    ids=["cloud", "cloud-slash", "server", "server-slash", "server-behind-a-proxy-path"],
)
def test_the_event_and_the_span_link_to_the_runs_page(
    serve: Callable[..., ServeProcess], datadog: RecordingServer, collector: OtlpHttpReceiver, base_url: str, run_page: str
) -> None:
    text, attributes = cancel_one_run(serve, datadog, collector, **{SETTING: base_url})
    assert f"\nRun in Inngest: {run_page}\n" in text
    assert attributes["inngest.run.url"] == run_page


def test_the_flag_sets_the_link_too_and_wins_over_the_variable(
    serve: Callable[..., ServeProcess], datadog: RecordingServer, collector: OtlpHttpReceiver
) -> None:
    text, attributes = cancel_one_run(
        serve, datadog, collector, FLAG, "https://app.inngest.com/env/production", **{SETTING: "http://127.0.0.1:8288"}
    )
    assert f"Run in Inngest: {CLOUD_RUN}" in text and SERVER_RUN not in text
    assert attributes["inngest.run.url"] == CLOUD_RUN


def test_without_the_setting_there_is_no_link(
    serve: Callable[..., ServeProcess], datadog: RecordingServer, collector: OtlpHttpReceiver
) -> None:
    text, attributes = cancel_one_run(serve, datadog, collector)
    assert RUN_ID in text and "Run in Inngest" not in text and "http" not in text
    assert "inngest.run.url" not in attributes and attributes["inngest.run.id"] == RUN_ID


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("localhost:8288", "expected the http(s) URL of the Inngest dashboard, got 'localhost:8288'"),
        ("ftp://inngest.example.com", "expected the http(s) URL of the Inngest dashboard, got 'ftp://inngest.example.com'"),
        ("http://", "expected the http(s) URL of the Inngest dashboard, got 'http://'"),
        ("http://127.0.0.1:8288/?env=x", "expected a base URL without a query or fragment, got 'http://127.0.0.1:8288/?env=x'"),
        ("http://127.0.0.1:8288/#runs", "expected a base URL without a query or fragment, got 'http://127.0.0.1:8288/#runs'"),
        *(
            (
                cloud,
                "for Inngest Cloud, expected the environment's URL, https://app.inngest.com/env/<environment slug> "
                f"(e.g. https://app.inngest.com/env/production), got '{cloud}'",
            )
            for cloud in (
                "https://app.inngest.com",
                "https://app.inngest.com/env/",
                "https://app.inngest.com/env/production/runs",
                "https://app.inngest.com/production",
            )
        ),
    ],
)
def test_an_unusable_dashboard_url_is_refused_naming_the_setting(value: str, problem: str) -> None:
    with pytest.raises(SettingsError) as refused:
        load_settings({SETTING: value})
    assert refused.value.problems == [f"{SETTING} / {FLAG}: {problem}"]


def test_an_empty_setting_means_no_links() -> None:
    assert load_settings({SETTING: " "}).run_links is None


def test_serve_refuses_to_start_with_an_unusable_dashboard_url_in_one_line(tmp_path: Path) -> None:
    result = run_cli("serve", FLAG, "app.inngest.com/env/production", env={"EXPORTER_STATE_DIR": str(tmp_path), "INNGEST_DEV": "1"})
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"error: {SETTING} / {FLAG}: expected the http(s) URL of the Inngest dashboard, got 'app.inngest.com/env/production'"
    ]


def test_the_start_up_line_shows_the_run_pages_pattern(serve: Callable[..., ServeProcess]) -> None:
    with_links = serve(**{SETTING: "https://app.inngest.com/env/production/"})
    assert "links to runs: https://app.inngest.com/env/production/runs/<run id>;" in with_links.log()
    without = serve(state_dir=with_links.state_dir.parent / "other")
    assert f"links to runs: off ({SETTING});" in without.log()
