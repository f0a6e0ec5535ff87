"""The real `serve` process, as users run it: startup errors, restarts on the same state, clean shutdown."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

import requests
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from exporter.cli import main
from exporter.simulate_progress import held_line
from tests.conftest import NO_API, ServeProcess, free_port
from tests.support.payloads import INGEST_TOKEN, REPO, fixture_event
from tests.support.sockets import unread_by_server
from tests.support.waiting import eventually

AUTH = {"Authorization": f"Bearer {INGEST_TOKEN}", "Content-Type": "application/json"}
CANCELLATIONS = "inngest_function_cancellations_total"


def send(proc: ServeProcess, body: Any) -> requests.Response:
    return requests.post(f"{proc.url}/events", data=json.dumps(body), headers=AUTH, timeout=10)


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exporter", *args], capture_output=True, text=True, timeout=60, cwd=REPO,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
    )


def test_redelivery_after_a_restart_is_recognised(serve: Callable[..., ServeProcess]) -> None:
    first = serve()
    assert send(first, fixture_event("seed-cancelled-export.json")).json()["accepted"] == 1
    assert first.stop() == 0
    second = serve(state_dir=first.state_dir)
    assert send(second, fixture_event("seed-cancelled-export.json")).json() == {
        "accepted": 0, "duplicates": 1, "ignored": 0, "signals": 0, "pending": 0,
    }
    assert second.metric(CANCELLATIONS) is None  # counted once, by the first process


def test_sigterm_lets_in_flight_requests_finish(serve: Callable[..., ServeProcess]) -> None:
    """A request the worker is reading when SIGTERM arrives is answered in full before the process exits."""
    proc = serve()
    event = fixture_event("seed-cancelled-export.json")
    body = json.dumps([{**event, "data": {**event["data"], "run_id": f"run-{i}"}} for i in range(3000)]).encode()
    head = (
        f"POST /events HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {AUTH['Authorization']}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", proc.port), timeout=30) as client:
        client.sendall(head + body[:1000])
        # In flight: the worker accepted the connection and read all that was sent (it waits for the rest).
        eventually(lambda: unread_by_server(proc.port, client.getsockname()[1]) == 0)
        assert proc.proc is not None
        proc.proc.send_signal(signal.SIGTERM)
        client.sendall(body[1000:])
        answer = b"".join(iter(lambda: client.recv(65536), b""))
    assert proc.stop(signal.SIGTERM) == 0
    status, _, payload = answer.partition(b"\r\n\r\n")
    assert status.startswith(b"HTTP/1.1 200"), answer[:500]
    assert json.loads(payload)["accepted"] == 3000
    assert "Traceback" not in proc.log()


def test_sigint_also_exits_cleanly_and_keeps_what_was_recorded(serve: Callable[..., ServeProcess]) -> None:
    proc = serve()
    assert send(proc, fixture_event("seed-cancelled-export.json")).json()["accepted"] == 1
    assert proc.stop(signal.SIGINT) == 0
    again = serve(state_dir=proc.state_dir)
    assert send(again, fixture_event("seed-cancelled-export.json")).json()["duplicates"] == 1


def test_invalid_settings_fail_at_once_with_a_clear_line(tmp_path: Path) -> None:
    result = run_cli("serve", "--port", "http", env={"EXPORTER_STATE_DIR": str(tmp_path)})
    assert result.returncode != 0
    assert "error: EXPORTER_PORT / --port: Input should be a valid integer" in result.stderr
    assert "Traceback" not in result.stderr


def test_flags_are_checked_as_their_variables_are_and_override_them(tmp_path: Path) -> None:
    """A bad flag gets the same line as a bad variable (settings.py checks both), and a flag wins over its variable."""
    env = {"EXPORTER_STATE_DIR": str(tmp_path), "INNGEST_DEV": "1"}
    by_flag = run_cli("serve", "--port", "0", "--log-level", "loud", "--attribution-grace", "soon", env=env)
    by_env = run_cli("serve", env={**env, "EXPORTER_PORT": "0", "EXPORTER_LOG_LEVEL": "loud", "EXPORTER_ATTRIBUTION_GRACE": "soon"})
    assert by_flag.returncode == by_env.returncode == 1
    assert by_flag.stderr == by_env.stderr
    assert by_flag.stderr.splitlines() == [
        "error: EXPORTER_PORT / --port: Input should be greater than or equal to 1",
        "error: EXPORTER_ATTRIBUTION_GRACE / --attribution-grace: "
        "invalid duration 'soon': expected a number and a unit such as 30s, 5m, 2h, 1d, 1h30m",
        "error: EXPORTER_LOG_LEVEL / --log-level: Input should be 'debug', 'info', 'warning' or 'error'",
    ]
    overridden = run_cli(
        "serve", "--port", "9469", "--log-level", "INFO", "--run-lookups", "--config", str(tmp_path / "missing.yaml"),
        env={**env, "EXPORTER_PORT": "http", "EXPORTER_LOG_LEVEL": "loud", "EXPORTER_RUN_LOOKUPS": "maybe"},
    )
    assert overridden.stderr.splitlines() == [f"error: {tmp_path / 'missing.yaml'}: cannot read: No such file or directory"]


def test_version_and_help_show_the_installed_version_each_option_type_and_default() -> None:
    version = run_cli("--version")
    assert version.stdout == f"inngest-cancellation-exporter, version {metadata.version('inngest-cancellation-exporter')}\n"
    usage = CliRunner().invoke(main, ["serve", "--help"], terminal_width=400).output
    options: dict[str, str] = {}  # each option's help, a long name's on the line after it
    for line in usage.split("Options:\n")[1].splitlines():
        if line.startswith("  -"):
            name = line.strip().split("  ")[0]
        options[name] = " ".join([options.get(name, ""), *line.split()]).strip()
    assert options["--port INTEGER RANGE"].endswith("[env: EXPORTER_PORT] [default: 9469; 1<=x<=65535]")
    assert options["--host TEXT"].endswith("[default: 0.0.0.0]")
    assert options["--state-dir PATH"].endswith("[default: state]")
    assert options["--config PATH"].endswith("[env: EXPORTER_CONFIG]")  # no default: no config file
    assert options["--attribution-grace DURATION"].endswith("[default: 2m]")
    assert options["--run-lookups / --no-run-lookups"].endswith("[default: run-lookups]")
    assert options["--log-level [debug|info|warning|error]"].endswith("[default: info]")
    assert options["--threads INTEGER RANGE"].endswith("[default: 8; 1<=x<=256]")
    assert options["--inngest-dashboard-url TEXT"].endswith("[env: EXPORTER_INNGEST_DASHBOARD_URL]")  # no default: no links
    assert [name for name in options if name.endswith(" TEXT")] == ["--host TEXT", "--inngest-dashboard-url TEXT"]


def test_a_port_already_taken_is_named_in_one_line_and_serve_exits_at_once(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("serve", "--host", "127.0.0.1", "--port", str(port), env={"EXPORTER_STATE_DIR": str(tmp_path), "INNGEST_DEV": "1"})
    assert result.returncode == 1
    assert result.stderr.splitlines() == [  # not gunicorn's retries and "Can't connect to"
        f"error: EXPORTER_PORT / --port: port {port} on 127.0.0.1 is already in use by another process: "
        "stop it, or choose another port"
    ]


def test_production_without_credentials_or_with_a_bad_config_refuses_to_start(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("functions: {f: {timeouts: {finish: soon}}}\n")
    result = run_cli("serve", "--config", str(bad), env={"EXPORTER_STATE_DIR": str(tmp_path / "s")})
    assert result.returncode == 1
    assert f"error: {bad}: functions.f.timeouts.finish: invalid duration 'soon'" in result.stderr
    assert "INNGEST_SIGNING_KEY" in result.stderr and "Traceback" not in result.stderr


def test_unusable_sink_settings_fail_at_once_with_a_clear_line(tmp_path: Path) -> None:
    env = {
        "EXPORTER_STATE_DIR": str(tmp_path), "INNGEST_DEV": "1",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_EXPORTER_OTLP_PROTOCOL": "carrier-pigeon",
        "DD_API_KEY": "k", "DD_SITE": "nowhere.example",
    }
    result = run_cli("serve", env=env)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("error: OTEL_EXPORTER_OTLP_PROTOCOL: unsupported protocol 'carrier-pigeon'")
    assert lines[1].startswith("error: DD_SITE: ")


def test_check_config_exit_codes(tmp_path: Path) -> None:
    assert run_cli("check-config", str(REPO / "examples" / "config.yaml")).returncode == 0
    (tmp_path / "bad.yaml").write_text("labels: {source: x}\n")
    result = run_cli("check-config", str(tmp_path / "bad.yaml"))
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: {tmp_path / 'bad.yaml'}: labels: 'source' is reserved by the exporter's own series"
    (tmp_path / "bad.yaml").write_text("labels:\n  function_id: a\n  team: payments\n  bad-label: b\n")
    assert run_cli("check-config", str(tmp_path / "bad.yaml")).stderr.splitlines() == [  # every problem, not the first
        f"error: {tmp_path / 'bad.yaml'}: labels: 'function_id' is reserved by the exporter's own series",
        f"error: {tmp_path / 'bad.yaml'}: labels: 'bad-label' is not a valid Prometheus label name",
    ]


def test_simulate_shows_five_functions_and_every_source(serve: Callable[..., ServeProcess], tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"  # the example, polling its bulk cancellations every second
    config.write_text((REPO / "examples" / "config.yaml").read_text().replace("poll_interval: 10s", "poll_interval: 1s"))
    api_port = free_port()
    proc = serve(
        "--config", str(config), INNGEST_API_BASE_URL=f"http://127.0.0.1:{api_port}", EXPORTER_ATTRIBUTION_GRACE="3s",
        EXPORTER_RUN_LOOKUP_RATE="200",  # the timed-out runs are looked up within the short grace period
    )
    result = run_cli(
        "simulate", "--url", proc.url, "--rate", "200", "--count", "150", "--seed", "7", "--config", str(config),
        "--api-port", str(api_port), env={"EXPORTER_INGEST_TOKEN": INGEST_TOKEN},
    )
    assert result.returncode == 0, result.stderr
    assert "simulate: serving the bulk cancellation list 3 s more (two poll intervals)" in result.stderr
    eventually(lambda: proc.metric("inngest_cancellation_exporter_pending_classifications") == 0.0)
    text = requests.get(f"{proc.url}/metrics", timeout=5).text
    series = [s for f in text_string_to_metric_families(text) for s in f.samples if s.name == CANCELLATIONS]
    assert sum(s.value for s in series) == 150
    assert len({s.labels["function_id"] for s in series}) >= 5
    assert {s.labels["source"] for s in series} == {"event", "timeout", "bulk", "singleton", "manual", "unknown"}
    # what simulate intended is what the exporter inferred
    intended = dict(part.split(": ") for part in result.stdout.strip().removeprefix("sent ").split(", "))
    inferred: dict[str, float] = {}
    for s in series:
        inferred[s.labels["source"]] = inferred.get(s.labels["source"], 0) + s.value
    assert {k: int(v) for k, v in inferred.items()} == {k: int(v) for k, v in intended.items()}


def test_simulate_tells_its_progress_and_how_many_runs_the_exporter_still_holds(
    serve: Callable[..., ServeProcess], tmp_path: Path
) -> None:
    """A newcomer whose counts lag what simulate sent is told why (runs held for late evidence) and until when."""
    proc = serve("--config", str(REPO / "examples" / "config.yaml"), EXPORTER_ATTRIBUTION_GRACE="1h")
    result = run_cli(
        "simulate", "--url", proc.url, "--rate", "10", "--count", "60", "--seed", "7", "--api-port", "0",
        env={"EXPORTER_INGEST_TOKEN": INGEST_TOKEN},
    )
    assert result.returncode == 0, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[0] == f"simulate: sending 60 cancellations to {proc.url} at 10 a second (about 6 s)"
    progress = [re.fullmatch(r"simulate: sent (\d+)/60 \((.+)\)", line) for line in lines[1:-1]]
    assert progress and all(progress), lines  # a line every few seconds, in a log as on a terminal
    sent = {int(match[1]) for match in progress if match}
    assert all(0 < n < 60 for n in sent)
    held = proc.metric("inngest_cancellation_exporter_pending_classifications")
    assert held  # the runs wait for a poll of the bulk cancellations, which does not answer here
    last = re.fullmatch(
        r"simulate: the exporter still holds (\d+) runs for late evidence \(EXPORTER_ATTRIBUTION_GRACE\); "
        r"/metrics counts them within (\d+) s, by \d\d:\d\d:\d\d",
        lines[-1],
    )
    assert last is not None, lines[-1]
    assert int(last[1]) == held
    assert 3000 < int(last[2]) <= 3600  # the grace period of the last one held


def test_simulate_s_last_line_says_when_every_run_is_counted_and_when_it_cannot_tell(serve: Callable[..., ServeProcess]) -> None:
    proc = serve()
    assert held_line(proc.url) == "simulate: the exporter holds no run for late evidence: /metrics counts every run sent"
    gone = held_line(NO_API)
    assert gone.startswith(f"simulate: could not read how many runs the exporter still holds from {NO_API}/metrics (")
    assert gone.endswith("); held runs show when their EXPORTER_ATTRIBUTION_GRACE ends (2m by default)")


def test_a_held_cancellation_survives_a_restart_and_is_emitted_once(serve: Callable[..., ServeProcess], tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("functions:\n  demo-app-export:\n    cancel_on: [{event: integrations/export.cancelled}]\n")
    first = serve("--config", str(config), EXPORTER_ATTRIBUTION_GRACE="3s")
    assert send(first, fixture_event("seed-cancelled-export.json")).json()["pending"] == 1
    assert first.metric("inngest_cancellation_exporter_pending_classifications") == 1.0
    assert first.stop() == 0  # before the grace period ends
    second = serve("--config", str(config), state_dir=first.state_dir, EXPORTER_ATTRIBUTION_GRACE="3s")
    eventually(lambda: second.metric(CANCELLATIONS, {"function_id": "demo-app-export"}) == 1.0)
    assert second.metric(CANCELLATIONS, {"function_id": "demo-app-export", "source": "unknown"}) == 1.0
    assert second.metric("inngest_cancellation_exporter_pending_classifications") == 0.0
    assert send(second, fixture_event("seed-cancelled-export.json")).json()["duplicates"] == 1
