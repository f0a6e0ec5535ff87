"""A storm on Inngest's real server: one cancel event ends thousands of sleeping runs; how long until the exporter has counted them all.

Three processes as in production, all on 127.0.0.1: `inngest start` (Inngest's
open-source server, built by scripts/install-inngest.sh; tests.support.inngest_server),
the exporter's real `serve` with every sink on (Prometheus; spans to an OTLP
receiver in this process, which keeps them to check each run; Datadog to the
benchmark's stand-in, bench/standins.py) and a user's app on the Python SDK whose
one function sleeps until a `cancelOn` event that matches every run.

The benchmark starts `--runs` runs through the event API, waits until the server
has every one of them sleeping, sends the one cancel event, and follows second by
second the exporter counting them (its /metrics), with the CPU time each side's
processes used (/proc) and the PSS of `serve`'s processes. Afterwards it checks
that each run was counted exactly once, with source `event` (one span per run, the
counter, Datadog), and works out when the server cancelled each run (the span's
end is the cancellation event's time), how long each of the exporter's
`/api/inngest` invocations waited in the server's queue and how long the executor's
call took (the runs' traces, through the server's GraphQL API), and how long the
exporter took to answer it (a timing relay in front of it): enough to tell whether
the exporter or Inngest sets the pace.

Prints a table, writes it with the machine's facts to
bench/results/real_server_storm.json, and exits 2 when the run is not valid (a run
not counted, counted twice or not as `event`, or the time limit reached).

    .venv/bin/python -m bench.real_server_storm [--runs N] [--timeout SECONDS] [--output FILE]
"""

from __future__ import annotations

import argparse
import bisect
import datetime
import json
import logging
import os
import secrets
import selectors
import signal
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import inngest
import requests
from prometheus_client.parser import text_string_to_metric_families

from bench.performance import PENDING, Figure, ForeignLoad, Problem, _busy_seconds, _server_env, machine, memory_mb, render, serving
from bench.standins import Standins
from exporter.ingress_inngest import APP_ID as EXPORTER_APP_ID, FUNCTION_ID as EXPORTER_FUNCTION_ID
from tests.conftest import ServeProcess
from tests.support.inngest_server import BINARY, InngestServer
from tests.support.inngest_test_app import SdkApp
from tests.support.otlp_receiver import OtlpHttpReceiver
from tests.support.processes import children

DEFAULT_RUNS = 2000
DEFAULT_TIMEOUT_S = 1800
"""Every wait gives up by then; HARD_STOP_S later an alarm ends whatever still hangs."""
HARD_STOP_S = 120
RESULTS = Path(__file__).resolve().parent / "results" / "real_server_storm.json"
REPRODUCE = ".venv/bin/python -m bench.real_server_storm"

APP_ID = "storm-shop"
FUNCTION = "sleep-until-cancelled"
SLUG = f"{APP_ID}-{FUNCTION}"
"""The function as the exporter names it (`<app id>-<function id>`)."""
TRIGGER = "storm/run.requested"
CANCEL_ALL = "storm/cancel-all"
MATCH = "async.data.storm == event.data.storm"
"""The cancelOn rule: every run of one storm (its events share `data.storm`) ends with the one cancel event."""
HOLD = datetime.timedelta(hours=1)
"""How long each run sleeps and its cancelOn rule waits: past any time limit of the benchmark."""
SEND_BATCH = 100
"""Events per request to the event API."""
SAMPLE_S = 1.0
SYNC_S = 60
COUNTED = "inngest_function_cancellations_total"
OUTBOX = "inngest_cancellation_exporter_datadog_outbox_depth"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class StormApp(SdkApp):
    """The user's app: one function whose runs each sleep until the one cancel event ends them all; a context manager.

    Served by werkzeug in this process, as the real-server suite serves its shop. Not the
    shop itself: its recorder function subscribes to every run's outcome, which would
    double the server's work during the storm.
    """

    def __init__(self, server: InngestServer) -> None:
        self.started: set[str] = set()
        """The runs the app saw begin: each is scheduled, with its cancelOn rule, and about to sleep."""
        super().__init__(APP_ID, server_url=server.url, signing_key=server.signing_key, build=self._functions)
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # not a line per request: thousands of them

    def _functions(self, client: inngest.Inngest) -> list[inngest.Function[None]]:
        return [client.create_function(
            fn_id=FUNCTION, trigger=inngest.TriggerEvent(event=TRIGGER), retries=0,
            cancel=[inngest.Cancel(event=CANCEL_ALL, if_exp=MATCH, timeout=HOLD)],
        )(self._sleep)]

    def _sleep(self, ctx: inngest.ContextSync) -> None:
        self.started.add(ctx.run_id)
        ctx.step.sleep("until-cancelled", HOLD)


class TimingRelay:
    """A TCP relay in front of the exporter's port that times each HTTP exchange passing through; a context manager.

    Inngest reaches the exporter through it (the app is synced at the relay's URL, so the
    SDK hands Inngest the relay's URL to invoke), and it records, per request, the time
    from its first byte to the first byte of the answer: how long the exporter took, as
    the server's executor waits for it. Inngest's HTTP client sends a request on a
    connection only once the previous answer is read, so the first byte each way marks
    an exchange. One thread and a selector: the relay adds well under a millisecond.
    """

    def __init__(self, upstream_port: int) -> None:
        self._upstream = ("127.0.0.1", upstream_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self.exchanges: list[tuple[float, float]] = []
        """(monotonic start, seconds to the answer) per request."""
        self.connections = 0
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._asked: dict[socket.socket, float | None] = {}
        """Per connection from Inngest: when its request in flight began, None when none is."""
        self._peer: dict[socket.socket, socket.socket] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._relay, name="timing-relay", daemon=True)

    def __enter__(self) -> "TimingRelay":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        for sock in [self._listener, *self._peer]:
            sock.close()

    def _relay(self) -> None:
        while not self._stop.is_set():
            for key, _ in self._selector.select(timeout=0.1):
                sock: socket.socket = key.fileobj  # type: ignore[assignment]
                if sock is self._listener:
                    self._accept()
                    continue
                if sock not in self._peer:
                    continue  # closed with its peer earlier in this round
                try:
                    data = sock.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    self._close(sock)
                    continue
                self._time(sock)
                self._peer[sock].sendall(data)

    def _accept(self) -> None:
        client, _ = self._listener.accept()
        upstream = socket.create_connection(self._upstream)
        self.connections += 1
        self._asked[client] = None
        self._peer.update({client: upstream, upstream: client})
        for sock in (client, upstream):
            self._selector.register(sock, selectors.EVENT_READ)

    def _time(self, sock: socket.socket) -> None:
        if sock in self._asked:  # from Inngest: a request begins, unless one is in flight
            if self._asked[sock] is None:
                self._asked[sock] = time.monotonic()
            return
        client = self._peer[sock]  # from the exporter: the answer to the request in flight
        began = self._asked[client]
        if began is not None:
            self.exchanges.append((began, time.monotonic() - began))
            self._asked[client] = None

    def _close(self, sock: socket.socket) -> None:
        peer = self._peer.pop(sock)
        del self._peer[peer]
        for each in (sock, peer):
            self._selector.unregister(each)
            self._asked.pop(each, None)
            each.close()


def exporter_config() -> dict[str, Any]:
    """The storm's function declared as its user would, cancelOn rule included, so each cancellation is `event`.

    No `bulk_cancellations`: no poller competes with the storm for the core.
    """
    return {"functions": {SLUG: {"cancel_on": [{"event": CANCEL_ALL, "if": MATCH, "timeout": "1h"}]}}}


# ---------------------------------------------------------------------------------------------------------------
# What each side reports


APPS = "{ apps { externalID functions { id slug } } }"
RUN_COUNT = """query($from: Time!, $fn: [UUID!], $status: [FunctionRunStatus!]) {
  runs(first: 1, orderBy: [{field: QUEUED_AT, direction: ASC}], filter: {from: $from, functionIDs: $fn, status: $status}) { totalCount }
}"""
RUN_PAGE = """query($from: Time!, $fn: [UUID!], $after: String) {
  runs(first: 200, after: $after, orderBy: [{field: QUEUED_AT, direction: ASC}], filter: {from: $from, functionIDs: $fn}) {
    edges { node { id status trace(preview: true) { queuedAt endedAt childrenSpans { name startedAt endedAt } } } }
    pageInfo { hasNextPage endCursor }
  }
}"""
"""Runs with their traces: the run list's own times are not the runs' (queuedAt is startedAt, and a cancelled
run's endedAt comes 10 s after its trace's end in Inngest v1.43)."""
CALL_SPAN = "executor.nonstep"
"""The trace's span of the executor calling a function that runs no steps: the exporter's `record-cancellation`."""


class Server:
    """What the benchmark asks the Inngest server: the two functions' ids, and their runs since the benchmark began."""

    def __init__(self, inngest_server: InngestServer, since: datetime.datetime) -> None:
        self.inngest = inngest_server
        self._since = since.isoformat()
        self.storm_function = ""
        self.exporter_function = ""

    def synced(self) -> bool:
        """Both apps registered with their functions (the exporter's cancel-signal function among them)."""
        ids = {fn["slug"]: fn["id"] for app in self.inngest.graphql(APPS)["apps"] for fn in app["functions"]}
        self.storm_function = ids.get(SLUG, "")
        self.exporter_function = ids.get(f"{EXPORTER_APP_ID}-{EXPORTER_FUNCTION_ID}", "")
        return bool(self.storm_function and self.exporter_function) and len(ids) == 3

    def count(self, function: str, status: str) -> int:
        variables = {"from": self._since, "fn": [function], "status": [status]}
        return int(self.inngest.graphql(RUN_COUNT, variables)["runs"]["totalCount"])

    def runs(self, function: str) -> list[dict[str, Any]]:
        """Every run of `function` with its status and trace, a page at a time (pages overlap: runs kept once, by id)."""
        found: dict[str, dict[str, Any]] = {}
        after = None
        while True:
            page = self.inngest.graphql(RUN_PAGE, {"from": self._since, "fn": [function], "after": after})["runs"]
            found.update((edge["node"]["id"], edge["node"]) for edge in page["edges"])
            if not page["pageInfo"]["hasNextPage"]:
                return list(found.values())
            after = page["pageInfo"]["endCursor"]


@dataclass(frozen=True)
class Count:
    """The exporter's /metrics, read once: the storm function's cancellations by source, and those still held."""

    by_source: dict[str, int]
    pending: int
    outbox: int

    @property
    def total(self) -> int:
        return sum(self.by_source.values())

    @classmethod
    def scrape(cls, exporter: ServeProcess) -> "Count":
        by_source: dict[str, int] = {}
        gauges = {PENDING: 0, OUTBOX: 0}
        for family in text_string_to_metric_families(requests.get(f"{exporter.url}/metrics", timeout=10).text):
            for sample in family.samples:
                if sample.name == COUNTED and sample.labels.get("function_id") == SLUG:
                    by_source[sample.labels["source"]] = int(sample.value)
                elif sample.name in gauges:
                    gauges[sample.name] = int(sample.value)
        return cls(by_source, gauges[PENDING], gauges[OUTBOX])


def process_tree(pid: int) -> list[int]:
    """`pid` and its live descendants: `serve` is gunicorn's master, its worker, the core and the span export process."""
    return [pid, *(descendant for child in children(pid) for descendant in process_tree(child))]


def cpu_seconds(pids: Sequence[int]) -> float:
    """User and system CPU seconds the processes have used so far (/proc/<pid>/stat)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended since it was listed
        total += int(fields[11]) + int(fields[12])
    return total / CLOCK_TICKS


@dataclass(frozen=True)
class Sample:
    """One moment of the storm, counted from the cancel event; CPU seconds are cumulative since it."""

    seconds: float
    counted: int
    pending: int
    exporter_cpu_s: float
    inngest_cpu_s: float
    benchmark_cpu_s: float
    """This process (the app, the OTLP receiver, the relay, the polling) and the Datadog stand-in."""
    machine_busy_s: float
    exporter_pss_mb: float
    server_cancelled: int = 0
    """Filled in afterwards from the cancellations' times, so the storm is not slowed by asking the server."""
    answered: int = 0
    """Filled in afterwards from the relay: /api/inngest requests the exporter had answered."""


class Meter:
    """The CPU time of each side and the exporter's memory, relative to the moment `zero()` was called."""

    def __init__(self, exporter: ServeProcess, server: InngestServer) -> None:
        assert exporter.proc is not None and server.proc is not None
        self._exporter, self._server = exporter.proc.pid, server.proc.pid
        self._base = (0.0, 0.0, 0.0, 0.0)

    def _now(self) -> tuple[float, float, float, float]:
        exporter, server = cpu_seconds(process_tree(self._exporter)), cpu_seconds(process_tree(self._server))
        everything = cpu_seconds(process_tree(os.getpid()))  # the servers are this process's children
        return exporter, server, everything - exporter - server, _busy_seconds()

    def zero(self) -> None:
        self._base = self._now()

    def cpu(self) -> tuple[float, float, float, float]:
        """(exporter, Inngest, the benchmark, the whole machine) CPU seconds since `zero()`."""
        exporter, server, benchmark, busy = (now - base for now, base in zip(self._now(), self._base))
        return exporter, server, benchmark, busy

    def exporter_pss_mb(self) -> float:
        """PSS of every process of `serve` added up: each page counted once, as bench.performance's memory figure."""
        return sum(memory_mb(pid)[1] for pid in process_tree(self._exporter))


# ---------------------------------------------------------------------------------------------------------------
# The storm


@dataclass
class Stack:
    server: Server
    exporter: ServeProcess
    relay: TimingRelay
    app: StormApp
    spans: OtlpHttpReceiver
    standins: Standins


@contextmanager
def stack(root: Path, standins: Standins, spans: OtlpHttpReceiver) -> Iterator[Stack]:
    """The server syncing the app and the exporter; stopped in reverse order, server first."""
    with ExitStack() as stop:
        inngest_server = InngestServer("start", root, [])
        app = stop.enter_context(StormApp(inngest_server))
        env = _server_env(
            standins, standins.urls.datadog, OTEL_EXPORTER_OTLP_ENDPOINT=spans.endpoint,
            INNGEST_SIGNING_KEY=inngest_server.signing_key, INNGEST_API_BASE_URL=inngest_server.url,
        )
        exporter = stop.enter_context(serving(root, "exporter", env, exporter_config()))
        relay = stop.enter_context(TimingRelay(exporter.port))
        inngest_server.sdk_urls = [app.serve_url, f"{relay.url}/api/inngest"]
        server = Server(stop.enter_context(inngest_server), datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=1))
        wait_for(server.synced, time.monotonic() + SYNC_S, lambda: f"the server did not sync both apps:\n{inngest_server.log()[-3000:]}")
        yield Stack(server, exporter, relay, app, spans, standins)


def start_runs(stack: Stack, runs: int, storm: str, deadline: float) -> dict[str, float]:
    """Send the runs' events in batches; wait until the app saw every run begin and the server lists them all running.

    A cancelOn event ends only the runs scheduled before the server received it: all must be.
    """
    server, started = stack.server, time.monotonic()
    for first in range(0, runs, SEND_BATCH):
        server.inngest.send(*({"name": TRIGGER, "data": {"storm": storm, "n": n}} for n in range(first, min(runs, first + SEND_BATCH))))
    sent = time.monotonic() - started
    wait_for(lambda: len(stack.app.started) >= runs, deadline, lambda: f"the app saw {len(stack.app.started)} of {runs} runs begin")
    begun = time.monotonic() - started

    def running() -> int:
        return server.count(server.storm_function, "RUNNING")

    wait_for(lambda: running() >= runs, deadline, lambda: f"the server lists {running()} of {runs} runs running")
    return {"sent_s": sent, "begun_s": begun, "sleeping_s": time.monotonic() - started}


def wait_for(check: Callable[[], bool], deadline: float, what: Callable[[], str]) -> None:
    """Ask every half second (not tests.support's 20 ms: each question costs the servers work) until `check()` holds.

    Problem, saying `what()` stands instead, once the monotonic `deadline` has passed.
    """
    while not check():
        if time.monotonic() > deadline:
            raise Problem(f"out of time: {what()}")
        time.sleep(0.5)


def follow(exporter: ServeProcess, meter: Meter, runs: int, cancelled_at: float, deadline: float) -> list[Sample]:
    """Every SAMPLE_S, until the exporter has counted every run and holds none (or `deadline`): its count and both sides' CPU.

    Only the exporter's /metrics and /proc are read meanwhile: the server's progress is
    read afterwards, so no query competes with its work.
    """
    samples: list[Sample] = []
    while True:
        time.sleep(max(0.0, SAMPLE_S * (len(samples) + 1) - (time.monotonic() - cancelled_at)))
        count = Count.scrape(exporter)
        exporter_cpu, inngest_cpu, benchmark_cpu, busy = meter.cpu()
        samples.append(Sample(
            seconds=time.monotonic() - cancelled_at, counted=count.total, pending=count.pending,
            exporter_cpu_s=exporter_cpu, inngest_cpu_s=inngest_cpu, benchmark_cpu_s=benchmark_cpu, machine_busy_s=busy,
            exporter_pss_mb=meter.exporter_pss_mb(),
        ))
        if count.total >= runs and count.pending == 0:
            return samples
        if time.monotonic() > deadline:
            raise Problem(f"out of time: the exporter had counted {count.total} of {runs} runs, {count.pending} held")


# ---------------------------------------------------------------------------------------------------------------
# What the storm shows


def _ms(text: str) -> float:
    """A GraphQL time (RFC 3339, up to nanoseconds, UTC) as Unix milliseconds."""
    whole, _, fraction = text.rstrip("Z").partition(".")
    stamp = datetime.datetime.fromisoformat(whole).replace(tzinfo=datetime.timezone.utc).timestamp()
    return stamp * 1000 + float(f"0.{fraction or 0}") * 1000


def _spread(values: Sequence[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "p50": statistics.median(ordered), "p90": ordered[int(0.9 * (len(ordered) - 1))],
        "p99": ordered[int(0.99 * (len(ordered) - 1))], "max": ordered[-1],
    }


def check_counted(stack: Stack, runs: int, deadline: float) -> dict[str, Any]:
    """Each run the app started counted exactly once, as `event`: by the counter, by one span each, and by Datadog."""
    expected = set(stack.app.started)
    wait_for(lambda: stack.spans.accepted_spans >= runs, deadline, lambda: f"{stack.spans.accepted_spans} of {runs} spans received")
    wait_for(lambda: Count.scrape(stack.exporter).outbox == 0, deadline, lambda: "the Datadog outbox did not drain")
    spans = stack.spans.spans()
    sources = Counter(span.attributes["inngest.cancellation.source"] for span in spans)
    per_run = Counter(span.attributes["inngest.run.id"] for span in spans)
    count = Count.scrape(stack.exporter)
    checks = {
        "counter_by_source": count.by_source,
        "spans": len(spans), "span_sources": dict(sources),
        "runs_with_one_span": sum(1 for run in expected if per_run[run] == 1),
        "runs_without_span": len(expected - set(per_run)), "spans_of_other_runs": len(set(per_run) - expected),
        "datadog_events": stack.standins.stats()["datadog_requests"],
    }
    valid = (
        len(expected) == runs and {k: v for k, v in count.by_source.items() if v} == {"event": runs}
        and checks["runs_with_one_span"] == runs and len(spans) == runs and dict(sources) == {"event": runs}
        and checks["datadog_events"] == runs
    )
    if not valid:
        raise Problem(f"not every run counted exactly once as `event`: {checks}")
    return checks


def timeline(stack: Stack, cancelled_ms: float, cancelled_at: float) -> tuple[dict[str, Any], list[float], list[float]]:
    """When the server cancelled each run, and how each of the exporter's invocations queued at the server and took.

    A cancelled run's span ends at its `inngest/function.cancelled` event's time, the
    moment the server cancelled it. Each cancellation is a run of the exporter's
    `record-cancellation`, one `/api/inngest` invocation: its trace says when the run
    was queued and when the executor's call began and ended; the relay says how long
    the exporter took to answer it. Also, sorted, the seconds after the cancel event at
    which the server cancelled each run and the exporter answered each request.
    """
    cancel_ms = [span.span.end_time_unix_nano / 1e6 - cancelled_ms for span in stack.spans.spans()]
    server = stack.server
    calls: list[tuple[float, float, float]] = []
    for run in server.runs(server.exporter_function):
        trace = run["trace"] or {}
        call = next((span for span in trace.get("childrenSpans") or [] if span["name"] == CALL_SPAN), None)
        if run["status"] == "COMPLETED" and call and call["startedAt"] and call["endedAt"]:
            calls.append((_ms(trace["queuedAt"]), _ms(call["startedAt"]), _ms(call["endedAt"])))
    answers = [(began - cancelled_at, took * 1000) for began, took in stack.relay.exchanges if began >= cancelled_at]
    answered = sorted(began + took / 1000 for began, took in answers)
    first, last = min(began for began, _ in answers), answered[-1]
    tenth, ninetieth = answered[len(answered) // 10], answered[9 * len(answered) // 10]
    calls_took = [ended - began for _, began, ended in calls]
    first_call, last_call = min(began for _, began, _ in calls), max(ended for _, _, ended in calls)
    summary = {
        "server_cancelled_ms": _spread(cancel_ms) | {"first": min(cancel_ms)},
        "calls": len(calls),
        "call_queued_ms": _spread([began - queued for queued, began, _ in calls]),
        "call_took_ms": _spread(calls_took),
        "calls_in_flight": sum(calls_took) / max(0.001, last_call - first_call),
        "last_call_ended_ms": last_call - cancelled_ms,
        "exporter_answers": len(answers),
        "exporter_answer_ms": _spread([took for _, took in answers]),
        "first_request_s": first, "last_answer_s": last,
        "answers_per_second": len(answers) / max(0.001, last - first),
        "steady_answers_per_second": 0.8 * len(answers) / max(0.001, ninetieth - tenth),
        "mean_in_flight": sum(took for _, took in answers) / 1000 / max(0.001, last - first),
        "relay_connections": stack.relay.connections,
    }
    return summary, sorted(ms / 1000 for ms in cancel_ms), answered


def figures(runs: int, start: dict[str, float], samples: list[Sample], line: dict[str, Any], checks: dict[str, Any]) -> list[Figure]:
    """The table's rows; CPU shares are taken over the deliveries (cancel event to the last answer), not the grace period after."""
    end = samples[-1]
    delivered = next((s for s in samples if s.seconds >= line["last_answer_s"]), end)
    held = max(s.pending for s in samples)
    others = max(0.0, delivered.machine_busy_s - delivered.exporter_cpu_s - delivered.inngest_cpu_s - delivered.benchmark_cpu_s)
    cancelled, answer, call, queued = (line[key] for key in ("server_cancelled_ms", "exporter_answer_ms", "call_took_ms", "call_queued_ms"))
    cpu = {
        name: {"exporter_cpu_s": s.exporter_cpu_s, "inngest_cpu_s": s.inngest_cpu_s, "benchmark_cpu_s": s.benchmark_cpu_s,
               "machine_busy_s": s.machine_busy_s, "seconds": s.seconds}
        for name, s in (("deliveries", delivered), ("until_counted", end))
    }
    return [
        Figure(
            "runs_sleeping", f"{runs:,} runs started, every one sleeping", start["sleeping_s"], "s",
            beside=f"events sent in {start['sent_s']:.1f} s; the app saw all begin after {start['begun_s']:.1f} s "
            f"({runs / start['begun_s']:,.0f} runs/s)",
            details=start,
        ),
        Figure(
            "server_cancelled_all", "cancel event → server cancelled every run", cancelled["max"] / 1000, "s",
            beside=f"first after {cancelled['first'] / 1000:.1f} s, half after {cancelled['p50'] / 1000:.1f} s "
            "(the function.cancelled events' times)",
            details=cancelled,
        ),
        Figure(
            "exporter_received_all", "cancel event → exporter answered every cancellation", line["last_answer_s"], "s",
            beside=f"its last /api/inngest answer; the first request came after {line['first_request_s']:.1f} s; "
            f"{delivered.counted:,} counted by then",
            details={"last_answer_s": line["last_answer_s"], "counted_then": delivered.counted},
        ),
        Figure(
            "exporter_counted_all", "cancel event → exporter counted every run, none held", end.seconds, "s",
            beside=f"/metrics, polled every {SAMPLE_S:.0f} s; "
            + (f"up to {held:,} runs held for late evidence (delivered before the cancel signal) until the grace period ended"
               if held else "no run held for late evidence"),
            details={"held_max": held},
        ),
        Figure(
            "delivery_rate", "/api/inngest invocations answered during the storm", line["answers_per_second"], "requests/s",
            beside=f"{line['steady_answers_per_second']:.1f}/s from the 10th to the 90th percentile; "
            f"exporter answered in p50 {answer['p50']:.0f} ms, p99 {answer['p99']:.0f} ms, max {answer['max']:.0f} ms, "
            f"{line['mean_in_flight']:.1f} requests in flight on average over {line['relay_connections']:,} connections; "
            f"the executor's call took p50 {call['p50']:.0f} ms ({line['calls_in_flight']:.1f} in flight on average), "
            f"after p50 {queued['p50'] / 1000:.1f} s "
            f"(max {queued['max'] / 1000:.1f} s) queued at the server",
            details=line,
        ),
        Figure(
            "exporter_cpu", "exporter CPU while the deliveries came (every process of serve)",
            100 * delivered.exporter_cpu_s / delivered.seconds, "% of a core",
            beside=f"{delivered.exporter_cpu_s:.1f} s over {delivered.seconds:.0f} s, {1000 * delivered.exporter_cpu_s / runs:.1f} ms per run; "
            f"Inngest {100 * delivered.inngest_cpu_s / delivered.seconds:.0f} % of a core ({delivered.inngest_cpu_s:.1f} s); "
            f"benchmark {delivered.benchmark_cpu_s:.1f} s; other work {100 * others / (delivered.seconds * (os.cpu_count() or 1)):.0f} % of the machine",
            details=cpu,
        ),
        Figure(
            "exporter_pss", "exporter memory peak during the storm", max(s.exporter_pss_mb for s in samples), "MB",
            beside=f"PSS of every process of serve; {start['exporter_pss_mb']:.0f} MB when the cancel event was sent",
        ),
        Figure(
            "counted_once", "runs counted exactly once, as `event`", checks["runs_with_one_span"], "runs",
            beside=f"of {runs:,}: counter {checks['counter_by_source']}, {checks['spans']:,} spans, "
            f"{checks['datadog_events']:,} Datadog events",
            target=f"{runs:,}", met=checks["runs_with_one_span"] == runs, details=checks,
        ),
    ]


def progress_table(samples: Sequence[Sample]) -> str:
    """Per sample: runs the server had cancelled, cancellations the exporter had answered, counted and held, and
    each side's CPU since the row before. A stretch where nothing moves is one row."""
    lines = [f"{'s':>6} {'server cancelled':>16} {'exporter answered':>17} {'counted':>8} {'held':>6} {'exporter CPU':>13} {'Inngest CPU':>12}"]
    previous = Sample(0.0, 0, 0, 0.0, 0.0, 0.0, 0.0, 0.0)
    for sample, after in zip(samples, [*samples[1:], None]):
        def state(s: Sample) -> tuple[int, ...]:
            return s.server_cancelled, s.answered, s.counted, s.pending
        if after is not None and state(sample) == state(after) == state(previous):
            continue
        span = max(0.001, sample.seconds - previous.seconds)
        lines.append(
            f"{sample.seconds:6.1f} {sample.server_cancelled:16,} {sample.answered:17,} {sample.counted:8,} {sample.pending:6,} "
            f"{100 * (sample.exporter_cpu_s - previous.exporter_cpu_s) / span:12.0f}% "
            f"{100 * (sample.inngest_cpu_s - previous.inngest_cpu_s) / span:11.0f}%"
        )
        previous = sample
    return "\n".join(lines)


def storm(runs: int, root: Path, deadline: float) -> tuple[list[Figure], dict[str, Any]]:
    """Start the runs, cancel them all with one event, follow until the exporter has counted them; the figures and the raw series."""
    with Standins() as standins, OtlpHttpReceiver() as spans, stack(root, standins, spans) as running:
        print(f"starting {runs:,} runs ...", flush=True)
        storm_id = secrets.token_hex(4)
        start = start_runs(running, runs, storm_id, deadline)
        meter = Meter(running.exporter, running.server.inngest)
        start["exporter_pss_mb"] = meter.exporter_pss_mb()
        print(f"all sleeping after {start['sleeping_s']:.1f} s; sending the cancel event", flush=True)
        meter.zero()
        cancelled_ms, cancelled_at = time.time() * 1000, time.monotonic()
        running.server.inngest.send({"name": CANCEL_ALL, "data": {"storm": storm_id}})
        samples = follow(running.exporter, meter, runs, cancelled_at, deadline)
        checks = check_counted(running, runs, deadline)
        line, cancelled, answered = timeline(running, cancelled_ms, cancelled_at)
    samples = [
        replace(s, server_cancelled=bisect.bisect_right(cancelled, s.seconds), answered=bisect.bisect_right(answered, s.seconds))
        for s in samples
    ]
    print(progress_table(samples), flush=True)
    return figures(runs, start, samples, line, checks), {"samples": [asdict(s) for s in samples], "timeline": line}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.real_server_storm", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=DEFAULT_RUNS, help=f"runs the one cancel event ends (default {DEFAULT_RUNS})")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="the whole benchmark's time limit, seconds")
    parser.add_argument("--output", type=Path, default=RESULTS, help="where to write the JSON results")
    args = parser.parse_args(argv)
    if not BINARY.exists():
        print(f"cannot run the benchmark: {BINARY} is missing (scripts/install-inngest.sh builds it)", file=sys.stderr)
        return 2
    facts = machine()
    facts["inngest"] = BINARY.resolve().parent.name
    print(f"real-server storm: {facts['nproc']} cores, {facts['cpu']}, Python {facts['python']}, {facts['inngest']}", flush=True)
    foreign = ForeignLoad()
    started = time.monotonic()
    signal.signal(signal.SIGALRM, _out_of_time)
    signal.alarm(int(args.timeout) + HARD_STOP_S)
    table: list[Figure] = []
    extra: dict[str, Any] = {}
    problems: list[str] = []
    try:
        with tempfile.TemporaryDirectory(prefix="real-server-storm-") as tmp:
            table, extra = storm(args.runs, Path(tmp), started + args.timeout)
    except (Problem, RuntimeError, OSError, requests.RequestException) as err:
        problems.append(f"{type(err).__name__}: {err}")
    finally:
        signal.alarm(0)
    facts["foreign_load"] = round(foreign.share(), 3)
    print(f"\n{render(table)}\n")
    for problem in problems:
        print(f"problem: {problem}")
    results = {
        "machine": facts, "runs": args.runs, "reproduce": f"{REPRODUCE} --runs {args.runs}",
        "seconds": round(time.monotonic() - started, 1), "figures": [asdict(figure) for figure in table],
        "problems": problems, **extra,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"written to {args.output} ({results['seconds']:.0f} s)")
    return 2 if problems else 0


def _out_of_time(_signum: int, _frame: Any) -> None:
    """The backstop: a wait that never returns (a hung request, a server that does not stop) ends the run too."""
    raise Problem("the benchmark's time limit was passed by a step that did not return")


if __name__ == "__main__":
    sys.exit(main())
