"""The exporter against Inngest's real open-source server (`inngest start` and `inngest dev`), every cancellation path.

The server syncs two apps: the exporter's `serve` process and a user's app (the
official Python SDK) whose runs the test cancels by every path Inngest offers:
a `cancelOn` event, a start timeout, a finish timeout, a singleton in `cancel`
mode, and the REST API v1, API v2 and the dashboard's GraphQL mutation (a batched
run among them, and a run that waited in the queue past its finish timeout by
scheduling time without starting). The exporter learns of each cancellation only
as in production, through `/api/inngest`, signatures checked. For every run the
test knows the true cause and asserts that the exporter's source (its span's
attribute) is that cause or `unknown`, never another source, and that each run is
counted exactly once. A labelled mix of over 200 such runs, on a server declared
without bulk cancellation, must come out with every true source.
"""

from __future__ import annotations

import contextlib
import json
import random
import os
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import requests
import ulid

from tests.conftest import ServeProcess
from tests.support import inngest_test_app as shop
from tests.support.inngest_server import InngestServer, Mode
from tests.support.exposition import assert_promtool_passes
from tests.support.otlp_receiver import OtlpHttpReceiver
from tests.support.waiting import eventually

REAL_SERVER_FIXTURES = Path(__file__).parent / "fixtures" / "real-server"
EXPORTER_APP_ID = "inngest-cancellation-exporter"


@dataclass(frozen=True)
class CancelledRun:
    run_id: str
    function: str
    """The function's id within the shop app."""
    path: str
    """How the test cancelled it."""
    true_source: str


@dataclass
class Stack:
    inngest: InngestServer
    exporter: ServeProcess
    app: shop.TestApp
    spans: OtlpHttpReceiver


@pytest.fixture(params=["start", "dev"], ids=["inngest-start", "inngest-dev"])
def stack(request: pytest.FixtureRequest, serve: Callable[..., ServeProcess], tmp_path: Path) -> Iterator[Stack]:
    """A real Inngest server syncing the exporter and the shop app, as a user declares it; spans go to a local OTLP receiver."""
    with _stack(request.param, shop.EXPORTER_CONFIG, serve, tmp_path) as running:
        yield running


@pytest.fixture
def declared_stack(serve: Callable[..., ServeProcess], tmp_path: Path) -> Iterator[Stack]:
    """`inngest start`, with the exporter told what such a server is: one without bulk cancellation."""
    config = {**shop.EXPORTER_CONFIG, "bulk_cancellations": {"available": False}}
    with _stack("start", config, serve, tmp_path) as running:
        yield running


@contextlib.contextmanager
def _stack(
    mode: Mode, exporter_config: dict[str, Any], serve: Callable[..., ServeProcess], tmp_path: Path,
    exporter_env: dict[str, str] | None = None,
) -> Iterator[Stack]:
    config = tmp_path / "config.yaml"
    config.write_text(json.dumps(exporter_config))
    server = InngestServer(mode, tmp_path, [])
    with OtlpHttpReceiver() as spans, shop.TestApp(server_url=server.url, signing_key=server.signing_key if mode == "start" else None) as app:
        env = {
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_ENDPOINT": spans.endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": spans.protocol,
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "EXPORTER_ATTRIBUTION_GRACE": "20s",
        }
        if mode == "start":
            env |= {"INNGEST_SIGNING_KEY": server.signing_key, "INNGEST_API_BASE_URL": server.url}
        else:
            env |= {"INNGEST_DEV": server.url, "INNGEST_SIGNING_KEY": "", "INNGEST_API_BASE_URL": ""}  # the default: the dev server
        exporter = serve("--config", str(config), **(env | (exporter_env or {})))
        server.sdk_urls = [app.serve_url, f"{exporter.url}/api/inngest"]
        with server:
            eventually(lambda: _synced(server), timeout=60)
            yield Stack(server, exporter, app, spans)
        print(server.log()[-4000:])


def _apps(server: InngestServer) -> dict[str, list[dict[str, str]]]:
    """The synced apps' functions (`id`, `slug`), by app id."""
    apps = server.graphql("{ apps { externalID functions { id slug } } }")["apps"] or []
    return {app["externalID"]: app["functions"] or [] for app in apps}


def _synced(server: InngestServer) -> bool:
    """Both apps registered with their functions (the exporter's cancel-signal function included)."""
    apps = _apps(server)
    return len(apps.get(shop.APP_ID) or []) == len(shop.TRIGGERS) + 1 and len(apps.get(EXPORTER_APP_ID) or []) == 2


def _first_run(server: InngestServer, event_id: str, *, queued: bool = False) -> str:
    """The run of the shop's function an event triggered, once the server has scheduled it (`queued`: while it still
    waits in the queue; the exporter runs on a singleton's trigger too: it records it as evidence)."""
    shop_functions = {function["id"] for function in _apps(server)[shop.APP_ID]}
    found: list[str] = []

    def scheduled() -> bool:
        if queued:
            found[:] = [run["id"] for run in server.queued_runs(event_id) if run["app"]["id"] == shop.APP_ID]
        else:
            found[:] = [run["run_id"] for run in server.event_runs(event_id) if run["function_id"] in shop_functions]
        return bool(found)

    eventually(scheduled, timeout=30)
    return found[0]


def _cancel_by_every_path(stack: Stack, scale: int = 1) -> tuple[list[CancelledRun], set[str]]:
    """Start runs of every shop function and cancel them by every path, `scale` times over (17 runs each time, sent
    before any is cancelled, so every path's runs are live at once); the cancelled runs, and runs that must not be counted."""
    server, started = stack.inngest, stack.app.started
    orders = server.send(*({"name": shop.TRIGGERS[shop.CANCEL_ON], "data": {"order_id": f"o-{i}"}} for i in range(3 * scale)))
    reports = server.send(*({"name": shop.TRIGGERS[shop.START_TIMEOUT], "data": {"report": i}} for i in range(3 * scale + 1)))
    exports = server.send(*({"name": shop.TRIGGERS[shop.FINISH_TIMEOUT], "data": {"export": i}} for i in range(2 * scale)))
    first_syncs = server.send(*({"name": shop.TRIGGERS[shop.SINGLETON], "data": {"account": f"a-{i}"}} for i in range(scale)))
    server.send(*({"name": shop.TRIGGERS[shop.BATCHED], "data": {"item": i}} for i in range(3 * scale)))
    jobs = server.send(*({"name": shop.TRIGGERS[shop.PLAIN], "data": {"job": i}} for i in range(6 * scale)))

    order_runs = [_first_run(server, event) for event in orders]
    report_runs = [_first_run(server, event) for event in reports]
    export_runs = [_first_run(server, event) for event in exports]
    singleton_runs = [_first_run(server, event) for event in first_syncs]
    # the REST API does not link a batch's events to its run: the app tells which runs got them
    eventually(lambda: _runs_of(started, shop.BATCHED) == scale, timeout=60)
    batch_runs = [run for run, trigger in started.items() if trigger == shop.TRIGGERS[shop.BATCHED]]
    job_runs = [_first_run(server, event) for event in jobs]
    # a cancelOn event applies only to runs scheduled before it was received; a singleton needs its first run going
    eventually(lambda: all(run in started for run in [*order_runs, *singleton_runs, *batch_runs, *job_runs]), timeout=60)

    server.send(*({"name": shop.CANCEL_SIGNAL, "data": {"order_id": f"o-{i}"}} for i in range(3 * scale)))
    second_syncs = server.send(*({"name": shop.TRIGGERS[shop.SINGLETON], "data": {"account": f"a-{i}"}} for i in range(scale)))
    by_hand = [
        *((server.cancel_v1, run, "REST v1 DELETE (batched run)") for run in batch_runs),
        *((server.cancel_v1, run, "REST v1 DELETE") for run in job_runs[0::3]),
        *((server.cancel_v2, run, "API v2 cancel") for run in job_runs[1::3]),
        *((server.cancel_graphql, run, "GraphQL cancelRun") for run in job_runs[2::3]),
    ]
    random.Random(scale).shuffle(by_hand)  # the paths interleaved
    for cancel, run, _ in by_hand:
        cancel(run)
    second_runs = [_first_run(server, event) for event in second_syncs]

    # the slot shared with the backups is taken only now, so it is still held (SLOT_HELD_S) when they are cancelled
    # however slow the steps above were (the REST API lists the holder's run only once its long first request ends)
    server.send({"name": shop.TRIGGERS[shop.SLOT_HOLDER], "data": {}})
    eventually(lambda: _runs_of(started, shop.SLOT_HOLDER) == 1, timeout=30)
    holder_run = next(run for run, trigger in started.items() if trigger == shop.TRIGGERS[shop.SLOT_HOLDER])
    backups = server.send(*({"name": shop.TRIGGERS[shop.QUEUED_PAST_FINISH], "data": {"backup": i}} for i in range(scale)))
    queued = [_first_run(server, event, queued=True) for event in backups]
    # with a concurrency limit of one, the first report run holds the slot; the others wait past their start timeout
    eventually(lambda: len(set(report_runs) & set(started)) >= 1, timeout=30)
    busy = [run for run in report_runs if run in started]
    # past its finish timeout by scheduling time, and never started: cancelled by hand
    for run in queued:
        time.sleep(max(0.0, ulid.ULID.from_str(run).milliseconds / 1000 + shop.FINISH_TIMEOUT_S + 2 - time.time()))
        assert run not in started
        server.cancel_v1(run)
    runs = [
        *(CancelledRun(run, shop.CANCEL_ON, "cancelOn event", "event") for run in order_runs),
        *(CancelledRun(run, shop.START_TIMEOUT, "start timeout", "timeout") for run in report_runs if run not in busy),
        *(CancelledRun(run, shop.FINISH_TIMEOUT, "finish timeout", "timeout") for run in export_runs),
        *(CancelledRun(run, shop.SINGLETON, "singleton cancel mode", "singleton") for run in singleton_runs),
        *(CancelledRun(run, shop.BATCHED if "batched" in path else shop.PLAIN, path, "manual") for _, run, path in by_hand),
        *(CancelledRun(run, shop.QUEUED_PAST_FINISH, "REST v1 DELETE (queued)", "manual") for run in queued),
    ]
    return runs, {*busy, *second_runs, holder_run}


def _runs_of(started: dict[str, str], function: str) -> int:
    """How many runs of the shop's `function` the app saw start."""
    return sum(trigger == shop.TRIGGERS[function] for trigger in started.values())


def _sources(stack: Stack) -> dict[str, list[str]]:
    """The source the exporter gave each run it reported, by run id (a list: a run reported twice shows twice)."""
    sources: dict[str, list[str]] = {}
    for span in stack.spans.spans():
        attributes = span.attributes
        sources.setdefault(attributes["inngest.run.id"], []).append(attributes["inngest.cancellation.source"])
    return sources


def test_every_cancellation_path_through_the_real_server(stack: Stack) -> None:
    runs, not_cancelled = _cancel_by_every_path(stack)
    sources = _counted_once_and_never_wrong(stack, runs, not_cancelled)
    # the evidence that reached the exporter through Inngest decides: signals, timeouts and singleton triggers are
    # not left unknown
    for run in runs:
        if run.true_source in ("event", "timeout", "singleton"):
            assert sources[run.run_id] == [run.true_source], (run, sources[run.run_id])
    exporter = stack.exporter
    # each timeout proven by asking the server when the run started, and so was the queued run's age ruled out
    found = exporter.metric("inngest_cancellation_exporter_run_lookups_total", {"outcome": "found"}) or 0
    assert found >= sum(run.true_source == "timeout" for run in runs) + 1
    assert (exporter.metric("inngest_cancellation_exporter_events_received_total", {"ingress": "inngest", "outcome": "signal"}) or 0) >= 3
    # these servers have no bulk cancellation list: said once, in a metric, and nothing waits for it
    assert exporter.metric("inngest_cancellation_exporter_bulk_list_available") == 0
    assert exporter.log().count("does not offer the bulk cancellation list") == 1, exporter.log()[-3000:]
    _check_fixtures(stack.app.outcomes, runs)


def test_a_labelled_mix_of_runs_on_a_server_declared_without_bulk_cancellation(declared_stack: Stack) -> None:
    """Over 200 runs of every path, interleaved, a share queued behind concurrency limits: each gets its true source.

    Declared without bulk cancellation, as `inngest start` is, so `manual` is concluded by
    elimination; every run's evidence reaches the exporter, so none is left `unknown`.
    """
    runs, not_cancelled = _cancel_by_every_path(declared_stack, scale=12)
    assert len(runs) >= 200
    sources = _counted_once_and_never_wrong(declared_stack, runs, not_cancelled)
    assert [run for run in runs if sources[run.run_id] != [run.true_source]] == []


def _counted_once_and_never_wrong(stack: Stack, runs: list[CancelledRun], not_cancelled: set[str]) -> dict[str, list[str]]:
    """What every real-server test asserts once the runs are cancelled; each run's source(s), by run id.

    Every run is reported once (its span) and counted once (/metrics, which promtool accepts),
    with its true source or `unknown`, never another; no run that was not cancelled is reported.
    Prints the table of sources per path.
    """
    server, exporter = stack.inngest, stack.exporter
    eventually(lambda: all(server.run(run.run_id)["status"] == "Cancelled" for run in runs), timeout=120)
    eventually(lambda: {run.run_id for run in runs} <= set(_sources(stack)), timeout=120)
    eventually(lambda: exporter.metric("inngest_cancellation_exporter_pending_classifications") == 0, timeout=60)

    sources = _sources(stack)
    table = Counter((run.path, run.true_source, sources[run.run_id][0]) for run in runs)
    print("\n".join(f"{path:32} true {true:9} exporter {given:9} x{count}" for (path, true, given), count in sorted(table.items())))
    wrong = [(run, sources[run.run_id]) for run in runs if sources[run.run_id][0] not in (run.true_source, "unknown")]
    assert not wrong, f"a source the evidence does not support: {wrong}"
    assert all(len(given) == 1 for given in sources.values()), f"a run reported twice: {sources}"
    assert not not_cancelled & set(sources), "a run that was not cancelled was reported"
    assert set(sources) == {run.run_id for run in runs}

    expected = Counter(f"{shop.APP_ID}-{run.function}" for run in runs)
    for function_id, count in expected.items():
        counted = sum(
            exporter.metric("inngest_function_cancellations_total", {"function_id": function_id, "source": source}) or 0
            for source in ("event", "timeout", "bulk", "singleton", "manual", "unknown")
        )
        assert counted == count, (function_id, counted, count)
    assert_promtool_passes(requests.get(f"{exporter.url}/metrics", timeout=5).content)
    assert "Traceback" not in exporter.log()
    return sources


FIXTURE_FILES = {
    "cancelOn event": "function-cancelled-cancel-on.json",
    "start timeout": "function-cancelled-start-timeout.json",
    "finish timeout": "function-cancelled-finish-timeout.json",
    "singleton cancel mode": "function-cancelled-singleton.json",
    "REST v1 DELETE (batched run)": "function-cancelled-batch.json",
    "REST v1 DELETE": "function-cancelled-rest-v1.json",
    "REST v1 DELETE (queued)": "function-cancelled-rest-v1.json",
    "API v2 cancel": "function-cancelled-api-v2.json",
    "GraphQL cancelRun": "function-cancelled-graphql.json",
}
FINISHED_FIXTURE = "function-finished-cancelled.json"
RECORD_ENV = "RECORD_REAL_SERVER_FIXTURES"


def _shape(value: Any) -> Any:
    """A payload's structure (keys and value types, lists by their first item), without the values that differ per run."""
    if isinstance(value, dict):
        return {key: _shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_shape(value[0])] if value else []
    return type(value).__name__


def _check_fixtures(outcomes: list[dict[str, Any]], runs: list[CancelledRun]) -> None:
    """What the real server sent, one payload per path, matches the recorded fixtures' structure (RECORD_REAL_SERVER_FIXTURES=1 rewrites them)."""
    cancelled = {event["data"]["run_id"]: event for event in outcomes if event["name"] == "inngest/function.cancelled"}
    finished = {event["data"]["run_id"]: event for event in outcomes if event["name"] == "inngest/function.finished"}
    live: dict[str, dict[str, Any]] = {}
    for run in runs:
        live.setdefault(FIXTURE_FILES[run.path], cancelled[run.run_id])
        if run.run_id in finished:
            live.setdefault(FINISHED_FIXTURE, finished[run.run_id])
    assert set(live) == {*FIXTURE_FILES.values(), FINISHED_FIXTURE}, sorted(live)
    for name, event in live.items():
        path = REAL_SERVER_FIXTURES / name
        if os.environ.get(RECORD_ENV):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(event, indent=2, sort_keys=True) + "\n")
        assert _shape(event) == _shape(json.loads(path.read_text())), f"{name}: the real server's payload changed shape"
