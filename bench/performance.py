"""Performance: every figure of the performance issue, side by side in one run, against its target.

1. the in-process pipeline (parse, dedupe, classify, every sink; Datadog to the
   outbox), beside the floor of a bare JSON parse plus counter and histogram updates;
2. `POST /events` with one new run per request (wrk), beside `GET /healthz` on the
   same server, and p50/p99 latency at half that rate (a paced open-loop generator);
3. `POST /events` with arrays of 1,000 runs;
4. `/api/inngest` invocations (signed like Inngest signs them), beside the same invocations to a
   naive app on the SDK (bench/naive_app.py, a baseline) and beside `/events`;
5. batch ingestion with Datadog hanging, beside Datadog healthy;
6. RSS of the serve process over a million runs across a thousand functions;
7. `GET /metrics` with a thousand functions and every cancellation source.

Each HTTP figure runs against the real `serve` process (tests.conftest.ServeProcess)
with every sink on: Datadog and an OTLP collector are the test suite's stand-ins in
a process of their own (bench/standins.py); ingestion authenticates with the bearer
token. Prints a table, writes it with the machine's facts to
bench/results/performance.json, and exits 1 when a target is missed (2 when a
figure could not be measured).

    .venv/bin/python -m bench.performance [--quick] [--profile] [--only GROUP,...] [--output FILE]

`--profile` records where each figure's time goes (py-spy on the serve worker, cProfile
in process) into bench/results/profiles/; `--only` measures some groups of figures.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import hashlib
import json
import math
import os
import platform
import pstats
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections import Counter as Tally
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import requests
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.parser import text_string_to_metric_families

from bench import sources
from bench.loadgen import LoadError, WrkResult, closed_loop, ensure_wrk, paced, run_wrk
from bench.standins import Standins
from bench.workload import (
    AGE_SPREAD_MS,
    AGE_STEP_MS,
    FUNCTION_FORMAT,
    LABELS,
    BEARER_HEADER,
    Cancellations,
    EventTemplate,
    events_request,
    nonce,
    storm_config,
    write_config,
    write_signed_invocations,
)
from exporter.config import parse_config
from exporter.core import Exporter
from exporter.parsing import CANCELLED
from exporter.run_age import HISTOGRAM_BUCKETS
from exporter.settings import load_settings
from exporter.simulate_progress import HELD as PENDING
from tests.conftest import NO_API, ServeProcess, free_port
from tests.support.fake_inngest_api import FakeInngestApi
from tests.support.inngest_driver import InngestDriver
from tests.support.payloads import INGEST_TOKEN, REPO, SIGNING_KEY
from tests.support.processes import children
from tests.support.waiting import eventually

RESULTS = Path(__file__).resolve().parent / "results" / "performance.json"
PROFILES = RESULTS.parent / "profiles"
REPRODUCE = ".venv/bin/python -m bench.performance"
RECEIVED = "inngest_cancellation_exporter_events_received_total"
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,"
    "text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
)
"""What Prometheus asks a target for: OpenMetrics first."""
TEXT_ACCEPT = "text/plain;version=0.0.4"


@dataclass(frozen=True)
class Plan:
    """How long and how much each measurement runs."""

    quick: bool
    seconds: float
    """Each wrk run and the paced run."""
    warmup: float
    inprocess_events: int
    memory_events: int
    metrics_functions: int
    metrics_samples: int
    functions: int = 1000
    """Functions the runs are spread over (the memory figure's `--max-functions` too)."""
    connections: int = 16
    """wrk's connections for one event per request: twice the server's 8 threads."""
    batch: int = 1000
    batch_connections: int = 4
    """Connections for arrays of `batch` events: enough to keep the server busy, few enough that a
    request does not wait behind many others' thousands of events (and past wrk's timeout)."""
    rounds: int = 2
    """Alternating rounds of /healthz and /events, and of the healthy and hanging Datadog batch figures."""


FULL = Plan(quick=False, seconds=10, warmup=2, inprocess_events=50_000, memory_events=1_000_000, metrics_functions=1000, metrics_samples=7)
QUICK = Plan(quick=True, seconds=2, warmup=1, inprocess_events=5_000, memory_events=50_000, metrics_functions=100, metrics_samples=5, rounds=1)


@dataclass
class Figure:
    """One row of the table."""

    key: str
    name: str
    value: float | None
    unit: str
    beside: str = ""
    """What it is measured beside, in words and numbers."""
    target: str = ""
    met: bool | None = None
    """None: the issue sets no target for this row."""
    details: dict[str, Any] = field(default_factory=dict)


class Problem(Exception):
    """A figure could not be measured as designed (errors from the server, wrong counts): the run is not valid."""


# ---------------------------------------------------------------------------------------------------------------
# Servers and what they report


def _server_env(standins: Standins, datadog_url: str, **extra: str) -> dict[str, str]:
    """Every sink on: Datadog at `datadog_url`, spans to the stand-in collector. The ingestion figures ask nothing of
    Inngest's API (no run admits a timeout, no bulk polling, the config declares every function), so it is a closed
    port, as in the test suite: a request to it would fail at once, never leave the machine."""
    return {
        "DD_API_KEY": "bench-datadog-key",
        "EXPORTER_DATADOG_URL": datadog_url,
        "OTEL_EXPORTER_OTLP_ENDPOINT": standins.urls.otlp,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "INNGEST_API_BASE_URL": NO_API,
        "EXPORTER_DISCOVERY": "off",
        **extra,
    }


@contextmanager
def serving(root: Path, name: str, env: dict[str, str], config: dict[str, Any], *args: str) -> Iterator[ServeProcess]:
    """The real `serve` process with `config`, stopped (SIGTERM) afterwards; its log is kept under `root/name`."""
    home = root / name
    home.mkdir(parents=True)
    path = write_config(home / "config.yaml", config)
    proc = ServeProcess(home / "state", env, ["--config", str(path), *args], log_dir=home).start()
    try:
        yield proc
    finally:
        proc.stop()


def memory_mb(pid: int) -> tuple[float, float]:
    """(VmRSS from /proc/<pid>/status, Pss from /proc/<pid>/smaps_rollup) in MB (10^6 bytes).

    PSS shares each page among the processes mapping it: summed over gunicorn's master
    and worker, it counts their common pages once, as a container's memory limit does.
    """
    return _kb_field(f"/proc/{pid}/status", "VmRSS:") / 1000, _kb_field(f"/proc/{pid}/smaps_rollup", "Pss:") / 1000


def _kb_field(path: str, name: str) -> float:
    for line in Path(path).read_text().splitlines():
        if line.startswith(name):
            return int(line.split()[1]) * 1.024
    raise Problem(f"no {name} in {path}")


def counted(proc: ServeProcess, ingress: str, outcome: str = "accepted") -> int:
    """`events_received_total` for one ingress and outcome."""
    return int(proc.metric(RECEIVED, {"ingress": ingress, "outcome": outcome}) or 0)


def check_wrk(result: WrkResult, what: str) -> None:
    if result.failed or result.requests == 0:
        raise Problem(f"{what}: {result.requests} requests, errors {result.errors}")


def check_accepted(proc: ServeProcess, ingress: str, before: int, expected_at_least: int, what: str) -> int:
    """The runs accepted since `before`; Problem when fewer than the answered requests carried (all are new runs), or
    when a run is held for evidence instead of decided, and sent to every sink, as it was recorded."""
    accepted = counted(proc, ingress) - before
    if accepted < expected_at_least:
        raise Problem(f"{what}: {expected_at_least} new runs answered but only {accepted} accepted")
    held = proc.metric(PENDING)
    if held:
        raise Problem(f"{what}: {held:.0f} runs held for evidence: the figure would not include their sinks")
    return accepted


# ---------------------------------------------------------------------------------------------------------------
# Profiles (--profile): where the time goes, for the figures that miss


PY_SPY = Path(sys.executable).parent / "py-spy"
"""Installed by the `profile` extra, beside this interpreter."""


class Profiler:
    """py-spy on the serve worker during a measurement, cProfile in process; both summarised as text."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)

    @contextmanager
    def sampling(self, key: str, proc: ServeProcess) -> Iterator[None]:
        """Record, in the worker and in the core, the stacks of the thread holding the GIL (py-spy --gil: where
        each interpreter's time goes) while the block runs: `<key>-worker.txt`, `<key>-core.txt`."""
        if self.directory is None:
            yield
            return
        raws = {role: self.directory / f"{key}-{role}.collapsed" for role in ("worker", "core")}
        spies = [
            subprocess.Popen(
                [str(PY_SPY), "record", "--gil", "-p", str(pid), "-r", "100", "-f", "raw", "-o", str(raw)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            for pid, raw in zip(proc.worker_and_core(), raws.values())
        ]
        time.sleep(0.5)  # attached before the load starts
        try:
            yield
        finally:
            for spy in spies:
                spy.send_signal(signal.SIGINT)  # py-spy writes what it sampled and exits
            for spy in spies:
                spy.wait(timeout=60)
        for raw in raws.values():
            if raw.exists():
                raw.with_suffix(".txt").write_text(summarise_collapsed(raw.read_text()), encoding="utf-8")

    @contextmanager
    def in_process(self, key: str) -> Iterator[None]:
        if self.directory is None:
            yield
            return
        profile = cProfile.Profile()
        profile.enable()
        try:
            yield
        finally:
            profile.disable()
            with (self.directory / f"{key}.txt").open("w", encoding="utf-8") as out:
                stats = pstats.Stats(profile, stream=out).strip_dirs()
                stats.sort_stats("cumulative").print_stats(40)
                stats.sort_stats("tottime").print_stats(30)


def summarise_collapsed(text: str, top: int = 40) -> str:
    """Inclusive and self sample shares per function from py-spy's collapsed stacks (`a;b;c count` lines)."""
    inclusive: Tally[str] = Tally()
    own: Tally[str] = Tally()
    total = 0
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [_function(frame) for frame in stack.split(";")[1:]]  # the first frame names the thread
        for frame in set(frames):
            inclusive[frame] += count
        if frames:
            own[frames[-1]] += count
    lines = [f"{total} samples", "", "inclusive:"]
    lines += [f"{100 * n / total:6.1f} %  {name}" for name, n in inclusive.most_common(top)]
    lines += ["", "self:"]
    lines += [f"{100 * n / total:6.1f} %  {name}" for name, n in own.most_common(top)]
    return "\n".join(lines) + "\n"


def _function(frame: str) -> str:
    """`name (path/file.py:12)` → `name (package/file.py)`: one entry per function, whatever the line."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    return f"{name} ({'/'.join(path.split('/')[-2:])})" if path else name


# ---------------------------------------------------------------------------------------------------------------
# 1. In process


def measure_in_process(plan: Plan, root: Path, standins: Standins, template: EventTemplate, profiler: Profiler) -> list[Figure]:
    """The core as `POST /events` drives it (`Exporter.ingest_body`: parse, ingest, the answer), minus HTTP, beside the floor."""
    environ = {
        **os.environ, **_server_env(standins, standins.urls.datadog), "EXPORTER_STATE_DIR": str(root / "in-process" / "state"),
    }
    saved = dict(os.environ)
    os.environ.update(environ)  # the OpenTelemetry SDK reads its endpoint from os.environ itself
    try:
        exporter = Exporter(load_settings(environ), parse_config(storm_config(plan.functions), "bench"), os.environ)
        # not started: the Datadog sender stays off, so the Datadog sink is the outbox, as the issue asks
        gc.freeze()  # as the core process does once its exporter is built (exporter.core_process)
        try:
            single = _pipeline_rate(exporter, template, plan, batch=1, profiler=profiler)
            batched = _pipeline_rate(exporter, template, plan, batch=plan.batch, profiler=profiler)
            outbox = exporter.datadog is not None and exporter.otel is not None
        finally:
            gc.unfreeze()
            exporter.stop(timeout=5)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    if not outbox:
        raise Problem("in-process exporter was built without the Datadog outbox or the span sink")
    floor = _floor_rate(template, plan)
    beside = f"floor (json.loads + counter + histogram) {floor:,.0f} events/s"
    return [
        Figure(
            "in_process_single", "1. in-process pipeline, one event per call, every sink", single, "events/s",
            beside=f"{single / floor:.1%} of the {beside}", target=">= 20,000 events/s", met=single >= 20_000,
            details={"floor_events_per_second": floor, "events": plan.inprocess_events},
        ),
        Figure(
            "in_process_batch", f"1. in-process pipeline, {plan.batch:,} events per call, every sink", batched, "events/s",
            beside=f"{batched / floor:.1%} of the {beside}", target=">= 20,000 events/s", met=batched >= 20_000,
            details={"floor_events_per_second": floor, "events": plan.inprocess_events},
        ),
    ]


def _bodies(template: EventTemplate, plan: Plan, batch: int) -> list[bytes]:
    """Made before the clock starts, so the figure is the pipeline's alone."""
    source = Cancellations(template, plan.functions)
    return [source.body(batch) for _ in range(max(1, plan.inprocess_events // batch))]


def _pipeline_rate(exporter: Exporter, template: EventTemplate, plan: Plan, *, batch: int, profiler: Profiler) -> float:
    bodies = _bodies(template, plan, batch)
    with profiler.in_process(f"in_process_batch{batch}"):
        started = time.perf_counter()
        for body in bodies:  # what the core does for each POST /events, after the worker authenticated it
            exporter.ingest_body(body, "events")
        elapsed = time.perf_counter() - started
    return len(bodies) * batch / elapsed


def _floor_rate(template: EventTemplate, plan: Plan) -> float:
    """The least any exporter must do per event: parse it, count it, observe its age (same labels, same buckets)."""
    registry = CollectorRegistry()
    names = ["function_id", "source", *LABELS]
    counter = Counter("floor_cancellations", "floor", names, registry=registry)
    histogram = Histogram("floor_age_seconds", "floor", names, buckets=HISTOGRAM_BUCKETS, registry=registry)
    constant = tuple(LABELS.values())
    bodies = _bodies(template, plan, 1)
    started = time.perf_counter()
    for body in bodies:
        event = json.loads(body)
        values = (event["data"]["function_id"], "unknown", *constant)
        counter.labels(*values).inc()
        histogram.labels(*values).observe((event["ts"] - event["data"]["event"]["ts"]) / 1000)
    return len(bodies) / (time.perf_counter() - started)


# ---------------------------------------------------------------------------------------------------------------
# 2-5. Over HTTP


def _events_args(template_path: Path, plan: Plan, batch: int) -> list[str]:
    """bench/wrk/events.lua's arguments; a new nonce per run, so no two runs share a run id."""
    return [
        str(template_path), nonce(), str(batch), str(plan.functions), FUNCTION_FORMAT,
        str(AGE_SPREAD_MS), str(AGE_STEP_MS), INGEST_TOKEN,
    ]


def _post_events(proc: ServeProcess, plan: Plan, template_path: Path, batch: int, seconds: float) -> WrkResult:
    connections = plan.connections if batch == 1 else plan.batch_connections
    result = run_wrk(proc.url, "events.lua", _events_args(template_path, plan, batch), seconds=seconds, connections=connections)
    check_wrk(result, f"POST /events ({batch} per request)")
    return result


def measure_single(
    plan: Plan, root: Path, standins: Standins, template: EventTemplate, template_path: Path, profiler: Profiler
) -> list[Figure]:
    """Figures 2 and 4 on one server: /healthz, /events, latency at half rate, /api/inngest."""
    env = _server_env(standins, standins.urls.datadog)
    with serving(root, "single", env, storm_config(plan.functions)) as proc:
        run_wrk(proc.url + "/healthz", "plain.lua", seconds=plan.warmup, connections=plan.connections)
        _post_events(proc, plan, template_path, 1, plan.warmup)
        healthz_rounds, single_rounds = [], []
        for number in range(plan.rounds):  # alternating, best of each: other work on the machine only lowers a rate
            # /healthz while the Datadog sender has nothing left to send: the best this server can answer
            _drain_outbox(proc)
            healthz_rounds.append(run_wrk(proc.url + "/healthz", "plain.lua", seconds=plan.seconds, connections=plan.connections))
            check_wrk(healthz_rounds[-1], "GET /healthz")
            before = counted(proc, "events")
            with profiler.sampling(f"http_single_{number}", proc):
                single_rounds.append(_post_events(proc, plan, template_path, 1, plan.seconds))
            check_accepted(proc, "events", before, single_rounds[-1].requests, "POST /events")
        healthz = max(healthz_rounds, key=lambda result: result.rate)
        single = max(single_rounds, key=lambda result: result.rate)

        half = single.rate / 2
        source = Cancellations(template, plan.functions)
        _drain_outbox(proc)
        before = counted(proc, "events")
        latency = paced(proc.url, lambda: events_request(source.body()), rate=half, seconds=plan.seconds)
        if latency.failed:
            raise Problem(f"paced POST /events: {latency.errors} socket errors, statuses {dict(latency.statuses)}")
        check_accepted(proc, "events", before, len(latency.latencies_ms), "paced POST /events")

        with naive_app(root / "naive") as naive_url:
            inngest_rounds, naive_rounds = _invocations(
                proc, naive_url, plan, root / "single", template, expected_rate=single.rate, profiler=profiler
            )
        stats = standins.stats()
    inngest = max(inngest_rounds, key=lambda result: result.rate)
    naive = max(naive_rounds, key=lambda result: result.rate)

    ratio = single.rate / healthz.rate
    p50, p99 = latency.percentile(50), latency.percentile(99)
    return [
        Figure(
            "http_single", "2. POST /events, one new run per request", single.rate, "requests/s",
            beside=f"{ratio:.1%} of GET /healthz {healthz.rate:,.0f}/s on the same server, best of {plan.rounds} each",
            target=">= 70 % of /healthz", met=ratio >= 0.70,
            details={"healthz_per_second": healthz.rate, "ratio": ratio, "wrk_latency_ms": single.latency_ms,
                     "healthz_wrk_latency_ms": healthz.latency_ms, "connections": plan.connections,
                     "rounds": {"healthz": [r.rate for r in healthz_rounds], "events": [r.rate for r in single_rounds]}},
        ),
        Figure(
            "http_single_latency", "2. POST /events latency at half the maximum rate", p99, "ms p99",
            beside=f"p50 {p50:.1f} ms at {latency.achieved_rate:,.0f}/s (paced, open loop)",
            target="p99 < 20 ms", met=p99 < 20,
            details={"rate": half, "achieved_rate": latency.achieved_rate, "p50_ms": p50, "p90_ms": latency.percentile(90),
                     "p99_ms": p99, "max_ms": max(latency.latencies_ms), "requests": len(latency.latencies_ms)},
        ),
        Figure(
            "http_inngest", "4. /api/inngest invocations (signed), against the naive app", inngest.rate / naive.rate, "×",
            beside=f"{inngest.rate:,.0f}/s against {naive.rate:,.0f}/s for the same invocations to bench/naive_app.py, "
            f"alternating, best of {plan.rounds} each",
            target=">= 1.0× the naive app", met=inngest.rate >= naive.rate,
            details={"requests_per_second": inngest.rate, "naive_per_second": naive.rate, "wrk_latency_ms": inngest.latency_ms,
                     "naive_wrk_latency_ms": naive.latency_ms, "standins": stats,
                     "rounds": {"inngest": [r.rate for r in inngest_rounds], "naive": [r.rate for r in naive_rounds]}},
        ),
        Figure(
            "http_inngest_events", "4. /api/inngest invocations (signed), against POST /events", inngest.rate / single.rate * 100,
            "% of /events", beside=f"{inngest.rate:,.0f}/s against POST /events {single.rate:,.0f}/s on the same server",
            target=">= 60 % of /events", met=inngest.rate >= 0.6 * single.rate,
            details={"requests_per_second": inngest.rate, "events_per_second": single.rate},
        ),
    ]


def _drain_outbox(proc: ServeProcess, timeout: float = 120) -> None:
    """Wait until the Datadog sender has delivered everything: its work would otherwise count against what is measured next."""
    try:
        eventually(lambda: not proc.metric("inngest_cancellation_exporter_datadog_outbox_depth"), timeout)
    except AssertionError:
        raise Problem(f"the Datadog outbox did not drain in {timeout:.0f} s") from None


def _invocations(
    proc: ServeProcess, naive_url: str, plan: Plan, home: Path, template: EventTemplate, *, expected_rate: float,
    profiler: Profiler,
) -> tuple[list[WrkResult], list[WrkResult]]:
    """Signed invocations of `record-cancellation`, each a new run, replayed by wrk from pools signed just before:
    to the exporter, then the same pool to the naive app, for `plan.rounds` alternating rounds."""
    function = InngestDriver(proc.url, SIGNING_KEY).sync().function_for(CANCELLED)
    target = urllib.parse.urlsplit(function.url)
    url_path = f"{target.path}?{target.query}"
    source = Cancellations(template, plan.functions)

    def pool(name: str, seconds: float) -> Path:
        count = math.ceil(expected_rate * seconds * 2) + 500  # more than /events answers: /api/inngest should not
        return write_signed_invocations(home / f"{name}.txt", url_path, function.id, source, count)

    def replay(url: str, invocations: Path, seconds: float) -> WrkResult:
        result = run_wrk(url, "replay.lua", [str(invocations), "1"], seconds=seconds, connections=plan.connections)
        check_wrk(result, f"POST {url}/api/inngest")
        if result.counters.get("reused"):
            raise Problem(f"{url}/api/inngest: the pool of signed invocations ran out")
        return result

    warmup = pool("invocations-warmup", plan.warmup)
    replay(proc.url, warmup, plan.warmup)
    replay(naive_url, warmup, plan.warmup)
    exporter_rounds, naive_rounds = [], []
    for number in range(plan.rounds):  # alternating, best of each, as for /healthz and /events
        invocations = pool(f"invocations-{number}", plan.seconds)
        before = counted(proc, "inngest")
        with profiler.sampling(f"http_inngest_{number}", proc):
            exporter_rounds.append(replay(proc.url, invocations, plan.seconds))
        check_accepted(proc, "inngest", before, exporter_rounds[-1].requests, "POST /api/inngest")
        before = naive_counted(naive_url)
        naive_rounds.append(replay(naive_url, invocations, plan.seconds))
        if naive_counted(naive_url) - before < naive_rounds[-1].requests:
            raise Problem("the naive app answered invocations its function did not count")
    return exporter_rounds, naive_rounds


@contextmanager
def naive_app(home: Path) -> Iterator[str]:
    """bench/naive_app.py (the baseline) under gunicorn as the issue describes it, 1 worker with 8 threads; its URL."""
    home.mkdir(parents=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with (home / "gunicorn.log").open("ab") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--workers", "1", "--worker-class", "gthread", "--threads", "8",
             "--bind", f"127.0.0.1:{port}", "bench.naive_app:app"],
            env={**os.environ, "INNGEST_SIGNING_KEY": SIGNING_KEY}, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
        )
        try:
            eventually(lambda: _answers(f"{url}/metrics"), 30)
            yield url
        finally:
            server.terminate()
            server.wait(timeout=30)


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=5).status_code == 200
    except requests.RequestException:
        return False


def naive_counted(url: str) -> int:
    """The cancellations the naive app's function counted."""
    text = requests.get(f"{url}/metrics", timeout=30).text
    return int(sum(
        sample.value for family in text_string_to_metric_families(text) if family.name == "naive_cancellations"
        for sample in family.samples if sample.name.endswith("_total")
    ))


def measure_batches(
    plan: Plan, root: Path, standins: Standins, template_path: Path, profiler: Profiler
) -> list[Figure]:
    """Figures 3 and 5: arrays of 1,000 runs on fresh servers alike but for Datadog, healthy or hanging.

    The two alternate for `plan.rounds` rounds, each on a fresh server, and each keeps
    its best round: other work on the machine only ever lowers a rate, and alternating
    spreads whatever it does over both sides of the comparison.
    """
    datadog = {"healthy": standins.urls.datadog, "hanging": standins.urls.datadog_hanging}
    rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in datadog}
    for number in range(plan.rounds):
        for name, url in datadog.items():
            with serving(root, f"batch-{name}-{number}", _server_env(standins, url), storm_config(plan.functions)) as proc:
                _post_events(proc, plan, template_path, plan.batch, plan.warmup)
                before = counted(proc, "events")
                with profiler.sampling(f"http_batch_{name}_{number}", proc):
                    result = _post_events(proc, plan, template_path, plan.batch, plan.seconds)
                check_accepted(proc, "events", before, result.requests * plan.batch, f"batches, Datadog {name}")
                rounds[name].append({
                    "events_per_second": result.rate * plan.batch, "requests_per_second": result.rate,
                    "wrk_latency_ms": result.latency_ms,
                    "outbox_depth": proc.metric("inngest_cancellation_exporter_datadog_outbox_depth"),
                })
    healthy, hanging = (max(r["events_per_second"] for r in rounds[name]) for name in datadog)
    ratio = hanging / healthy
    details = {"rounds": rounds, "standins": standins.stats()}
    return [
        Figure(
            "http_batch", f"3. POST /events, arrays of {plan.batch:,} new runs", healthy, "events/s",
            beside=f"{healthy / plan.batch:,.1f} requests/s, best of {plan.rounds}", target=">= 20,000 events/s",
            met=healthy >= 20_000, details=details,
        ),
        Figure(
            "http_batch_datadog_hanging", "5. batches with Datadog hanging", hanging, "events/s",
            beside=f"{ratio:.1%} of Datadog healthy {healthy:,.0f} events/s, best of {plan.rounds} each",
            target=">= 90 % of healthy", met=ratio >= 0.90, details={"ratio": ratio},
        ),
    ]


# ---------------------------------------------------------------------------------------------------------------
# 6. Memory, and 7. /metrics


def measure_memory(plan: Plan, root: Path, standins: Standins, template: EventTemplate) -> list[Figure]:
    """A million new runs over HTTP in batches across `functions` functions, RSS sampled; then /metrics on that state.

    The figure is the PSS of every process of `serve` added up (gunicorn's master, its worker
    that speaks HTTP, the core that holds every series, the state and the sinks' buffers, and
    the span export process the core forks): each page counted once, shared pages split among
    the processes that map them, which is what a container's memory limit counts. Each process
    is forked from the one before and shares its libraries, so adding up VmRSS would count
    those pages twice; each process's VmRSS is reported beside the figure.
    """
    env = _server_env(standins, standins.urls.datadog)
    args = ("--max-functions", str(plan.functions))
    with serving(root, "memory", env, storm_config(plan.functions), *args) as proc:
        assert proc.proc is not None
        master = proc.proc.pid
        worker, core = proc.worker_and_core()
        source = Cancellations(template, plan.functions)
        batches = plan.memory_events // plan.batch
        answered: Tally[int] = Tally()
        samples: list[MemorySample] = []
        stop = threading.Event()

        def sample() -> None:
            span_exporters = children(core)  # looked up each time: a new one replaces one that died
            readings = {pid: memory_mb(pid) for pid in (master, worker, core, *span_exporters)}
            samples.append(MemorySample(
                answered[200] * plan.batch, sum(pss for _, pss in readings.values()),
                readings[worker][0], readings[core][0], readings[master][0], sum(readings[pid][0] for pid in span_exporters),
            ))

        def sampling() -> None:
            while not stop.wait(0.25):
                sample()

        sample()
        sampler = threading.Thread(target=sampling, name="rss-sampler")
        started = time.monotonic()
        sampler.start()
        try:
            closed_loop(
                proc.url, (events_request(source.body(plan.batch)) for _ in range(batches)),
                connections=plan.batch_connections, on_answer=lambda status: answered.update([status]),
            )
        finally:
            stop.set()
            sampler.join()
        elapsed = time.monotonic() - started
        sample()
        if answered[200] != batches:
            raise Problem(f"memory: {batches} batches sent, answers {dict(answered)}")
        after_storm = _time_metrics(proc, plan.metrics_samples)

    peak = max(s.total_pss for s in samples)
    # Halves compared as wholes: one sample swings by several MB with the batches in flight when it is taken.
    half = plan.memory_events // 2
    first_half = [s.total_pss for s in samples if plan.memory_events // 10 <= s.events < half]  # after warm-up
    second_half = [s.total_pss for s in samples if s.events >= half]
    first_median, second_median = statistics.median(first_half), statistics.median(second_half)
    growth = second_median - first_median
    peak_growth = max(second_half) - max(first_half)
    return [
        Figure(
            "memory_peak", f"6. memory peak over {plan.memory_events:,} runs, {plan.functions:,} functions", peak, "MB",
            beside=f"PSS of master + worker + core + span export; VmRSS peaks: core {max(s.core_rss for s in samples):.0f} MB, "
            f"worker {max(s.worker_rss for s in samples):.0f} MB, master {max(s.master_rss for s in samples):.0f} MB, "
            f"span export {max(s.spans_rss for s in samples):.0f} MB; "
            f"over HTTP, {plan.memory_events / elapsed:,.0f} events/s",
            target="< 200 MB", met=peak < 200,
            details={"samples": [asdict(s) for s in samples], "seconds": elapsed},
        ),
        Figure(
            "memory_growth", "6. memory growth over the second half", growth, "MB",
            beside=f"median {first_median:.1f} MB over runs 10-50 %, {second_median:.1f} MB over 50-100 %; "
            f"peaks {max(first_half):.0f} and {max(second_half):.0f} MB",
            target="flat: median and peak grow <= 5 %",
            met=growth <= 0.05 * first_median and peak_growth <= 0.05 * max(first_half),
            details={"first_half_median_mb": first_median, "second_half_median_mb": second_median,
                     "first_half_peak_mb": max(first_half), "second_half_peak_mb": max(second_half)},
        ),
        _metrics_figure(
            "metrics_after_storm", f"7. GET /metrics after the {plan.memory_events:,} runs (state as after a storm)", after_storm
        ),
    ]


@dataclass(frozen=True)
class MemorySample:
    events: int
    """Runs answered when the sample was taken."""
    total_pss: float
    """The figure: master, worker, core and span export process."""
    worker_rss: float
    core_rss: float
    master_rss: float
    spans_rss: float


def measure_metrics(plan: Plan, root: Path, standins: Standins, template: EventTemplate, profiler: Profiler) -> list[Figure]:
    """/metrics once every function has a series for every source, each from real evidence (bench/sources.py)."""
    functions = plan.metrics_functions
    api = FakeInngestApi(SIGNING_KEY)
    with api:
        now_ms = int(time.time() * 1000)
        api.cancellations = sources.bulk_windows(functions, now_ms)
        runs, api.runs = sources.runs(template, functions, now_ms)
        env = _server_env(
            standins, standins.urls.datadog, INNGEST_API_BASE_URL=api.url, EXPORTER_ATTRIBUTION_GRACE=sources.GRACE,
            EXPORTER_RUN_LOOKUP_RATE=sources.LOOKUP_RATE,
        )
        with serving(root, "metrics", env, sources.config(functions)) as proc:
            eventually(lambda: (proc.metric("inngest_cancellation_exporter_bulk_last_success_timestamp_seconds") or 0) * 1000 >= now_ms, 30)
            session = requests.Session()
            session.headers.update({"Authorization": BEARER_HEADER})
            for chunk in _chunks([json.dumps(signal) for signal in sources.signals(functions, now_ms)], plan.batch):
                _post_batch(session, proc, chunk)
            for chunk in _chunks(runs, plan.batch):
                _post_batch(session, proc, chunk)
            expected = functions * len(sources.RUNS)
            try:
                eventually(lambda: sum(_series_by_source(proc).values()) >= expected, 120)
            except AssertionError:
                found = _series_by_source(proc)
                raise Problem(
                    f"/metrics: {sum(found.values())} function × source series, expected {expected} "
                    f"({', '.join(f'{source} {count}' for source, count in sorted(found.items()))})"
                ) from None
            with profiler.sampling("metrics", proc):
                timings = _time_metrics(proc, plan.metrics_samples)
    figure = _metrics_figure("metrics", f"7. GET /metrics, {functions:,} functions × every source", timings)
    figure.details["series"] = expected
    return [figure]


def _chunks(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _post_batch(session: requests.Session, proc: ServeProcess, events: Sequence[str]) -> None:
    body = "[" + ",".join(events) + "]"
    response = session.post(f"{proc.url}/events", data=body, headers={"Content-Type": "application/json"}, timeout=60)
    if response.status_code != 200:
        raise Problem(f"POST /events: {response.status_code} {response.text[:200]}")


def _series_by_source(proc: ServeProcess) -> Tally[str]:
    """Per source, the functions counted in inngest_function_cancellations_total (distinct function × source pairs)."""
    text = requests.get(f"{proc.url}/metrics", timeout=30).text
    pairs = {
        (sample.labels["function_id"], sample.labels["source"])
        for family in text_string_to_metric_families(text) if family.name == "inngest_function_cancellations"
        for sample in family.samples if sample.name.endswith("_total")
    }
    return Tally(source for _, source in pairs)


def _time_metrics(proc: ServeProcess, samples: int) -> dict[str, Any]:
    """Median wall time of full `GET /metrics` answers, as Prometheus asks (OpenMetrics) and as plain text."""
    timings: dict[str, Any] = {}
    session = requests.Session()
    for name, accept in (("openmetrics", PROMETHEUS_ACCEPT), ("text", TEXT_ACCEPT)):
        durations, size = [], 0
        for _ in range(samples):
            started = time.perf_counter()
            response = session.get(f"{proc.url}/metrics", headers={"Accept": accept}, timeout=60)
            durations.append((time.perf_counter() - started) * 1000)
            if response.status_code != 200:
                raise Problem(f"GET /metrics: {response.status_code}")
            size = len(response.content)
        durations.sort()
        timings[name] = {"median_ms": durations[len(durations) // 2], "max_ms": durations[-1], "bytes": size}
    return timings


def _metrics_figure(key: str, name: str, timings: dict[str, Any]) -> Figure:
    slowest = max(timings.values(), key=lambda t: t["median_ms"])["median_ms"]
    om, text = timings["openmetrics"], timings["text"]
    return Figure(
        key, name, slowest, "ms median",
        beside=f"OpenMetrics {om['median_ms']:.0f} ms ({om['bytes'] / 1e6:.1f} MB), text {text['median_ms']:.0f} ms",
        target="< 250 ms", met=slowest < 250, details=timings,
    )


# ---------------------------------------------------------------------------------------------------------------
# The run


def machine() -> dict[str, Any]:
    """The facts a reader needs to compare figures across machines."""
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")), "")
    meminfo = Path("/proc/meminfo").read_text().split()
    wrk = subprocess.run([ensure_wrk(), "-v"], capture_output=True, text=True)
    return {
        "nproc": os.cpu_count(),
        "cpu": model or platform.processor(),
        "memory_gb": round(int(meminfo[meminfo.index("MemTotal:") + 1]) / 1024 / 1024, 1),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "wrk": (wrk.stdout or wrk.stderr).splitlines()[0].strip(),
        "commit": _commit(),
    }


def _commit() -> str:
    """The checked-out commit, `-dirty` with uncommitted changes, and a digest of exporter/ (it may change mid-run)."""
    described = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    digest = hashlib.sha256()
    for path in sorted((REPO / "exporter").rglob("*.py")):
        digest.update(path.read_bytes())
    return f"{described} exporter:{digest.hexdigest()[:12]}"


def _busy_seconds() -> float:
    """CPU seconds all cores have spent outside idle since boot (/proc/stat)."""
    fields = [int(value) for value in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # less idle and iowait


def _own_seconds() -> float:
    """CPU seconds of this process and its waited-for descendants (servers, wrk, stand-ins, profilers)."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def cpu_busy(seconds: float = 1.0) -> float:
    """The share of all cores' time spent outside idle over the next `seconds`."""
    before = _busy_seconds()
    time.sleep(seconds)
    return (_busy_seconds() - before) / seconds / (os.cpu_count() or 1)


class ForeignLoad:
    """How much of the machine other work used during the run: it lowers every figure.

    The machine's busy time less this process tree's own CPU time, once every child has
    been waited for (the kernel then counts descendants in `children_*`).
    """

    def __init__(self) -> None:
        self._started = time.monotonic()
        self._busy, self._own = _busy_seconds(), _own_seconds()

    def share(self) -> float:
        """Other work's CPU time as a share of the machine's capacity since construction."""
        foreign = (_busy_seconds() - self._busy) - (_own_seconds() - self._own)
        return max(0.0, foreign / ((time.monotonic() - self._started) * (os.cpu_count() or 1)))


def render(figures: Sequence[Figure]) -> str:
    rows = [("figure", "value", "beside", "target", "met")]
    for figure in figures:
        value = (
            "n/a" if figure.value is None else f"{figure.value:.2f}{figure.unit}" if figure.unit == "×"
            else f"{figure.value:,.1f} {figure.unit}" if figure.value < 100 else f"{figure.value:,.0f} {figure.unit}"
        )
        met = "-" if figure.met is None else "yes" if figure.met else "NO"
        rows.append((figure.name, value, figure.beside, figure.target, met))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows)


Measurement = Callable[[], list[Figure]]
GROUPS = ("in-process", "single", "batches", "memory", "metrics")
"""The measurements, each starting its own servers: `--only` picks some."""
BUSY_WARNING = 0.15


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.performance", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run: a few seconds per figure, not comparable")
    parser.add_argument("--profile", action="store_true", help=f"also profile each figure (py-spy, cProfile) into {PROFILES}")
    parser.add_argument("--output", type=Path, default=RESULTS, help="where to write the JSON results")
    parser.add_argument(
        "--only", type=lambda text: text.split(","), default=list(GROUPS), metavar="GROUP[,GROUP]",
        help=f"measure only these groups of figures, of {', '.join(GROUPS)} (default: all)",
    )
    args = parser.parse_args(argv)
    unknown = sorted(set(args.only) - set(GROUPS))
    if unknown:
        parser.error(f"--only: unknown group(s) {', '.join(unknown)}; choose from {', '.join(GROUPS)}")
    if args.profile and not PY_SPY.exists():
        parser.error(f"--profile samples with py-spy, not installed ({PY_SPY}): .venv/bin/pip install -e '.[profile]'")
    plan = QUICK if args.quick else FULL
    try:
        facts = machine()
    except (LoadError, subprocess.CalledProcessError, OSError) as err:
        print(f"cannot run the benchmark: wrk is needed (Debian's `wrk` package) and could not be installed: {err}", file=sys.stderr)
        return 2
    print(f"performance: {facts['nproc']} cores, {facts['cpu']}, Python {facts['python']}, {facts['wrk']}", flush=True)
    facts["busy_before"] = round(cpu_busy(), 3)
    if facts["busy_before"] > BUSY_WARNING:
        print(f"warning: the machine is {facts['busy_before']:.0%} busy before the run: figures will be low", flush=True)
    foreign = ForeignLoad()

    figures: list[Figure] = []
    problems: list[str] = []
    profiler = Profiler(PROFILES if args.profile else None)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="performance-bench-") as tmp, Standins() as standins:
        root = Path(tmp)
        template = EventTemplate.from_fixture()
        template_path = template.write(root / "event-template.json")
        measurements: dict[str, tuple[str, Measurement]] = {
            "in-process": ("1. in-process pipeline", lambda: measure_in_process(plan, root, standins, template, profiler)),
            "single": ("2, 4. single events", lambda: measure_single(plan, root, standins, template, template_path, profiler)),
            "batches": ("3, 5. batches", lambda: measure_batches(plan, root, standins, template_path, profiler)),
            "memory": ("6. memory", lambda: measure_memory(plan, root, standins, template)),
            "metrics": ("7. /metrics", lambda: measure_metrics(plan, root, standins, template, profiler)),
        }
        for title, measure in (measurements[group] for group in GROUPS if group in args.only):
            print(f"measuring {title} ...", flush=True)
            try:
                figures += measure()
            except (Problem, LoadError, RuntimeError, AssertionError, OSError) as err:
                problems.append(f"{title}: {type(err).__name__}: {err}")
                print(f"  could not measure: {err}", file=sys.stderr, flush=True)

    facts["foreign_load"] = round(foreign.share(), 3)
    facts["commit_after"] = _commit()
    if facts["commit_after"] != facts["commit"]:
        print(f"warning: the code changed during the run ({facts['commit']} -> {facts['commit_after']}): servers started later ran newer code")
    print(f"\n{render(figures)}\n")
    if facts["foreign_load"] > BUSY_WARNING:
        print(f"warning: other work used {facts['foreign_load']:.0%} of the machine during the run: figures are low and noisy")
    for problem in problems:
        print(f"problem: {problem}")
    missed = [figure.name for figure in figures if figure.met is False]
    results = {
        "machine": facts, "plan": asdict(plan), "reproduce": " ".join(
            [REPRODUCE, *(["--quick"] if plan.quick else []), *(["--only", ",".join(args.only)] if set(args.only) != set(GROUPS) else [])]
        ),
        "groups": [group for group in GROUPS if group in args.only],
        "seconds": round(time.monotonic() - started, 1), "figures": [asdict(figure) for figure in figures],
        "missed": missed, "problems": problems,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"written to {args.output} ({results['seconds']:.0f} s)" + (f"; profiles in {PROFILES}" if args.profile else ""))
    if problems:
        return 2
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
