"""Fuzzing both ingresses: whatever a client sends, it gets an answer, and nothing acknowledged is lost.

Thousands of malformed requests (random JSON trees; nearly valid Inngest events
with wrong types in every field; huge strings; nesting past json's recursion
limit; UTF-16, BOMs, NUL bytes, invalid UTF-8, lone surrogates; non-JSON; wrong
Content-Types; missing, wrong, stale, malformed and correct credentials) go
through the Flask app in-process for volume, and a few hundred through the real
`serve` process over HTTP. Valid cancellations ("canaries") are sent in between.

Checked: never a 5xx (but the Inngest protocol's deliberate run failure), the
process alive and healthy after, `promtool check metrics` passing, and every
cancellation the exporter acknowledged counted, the canaries exactly. The
example counts follow the hypothesis profile (`ci`, or `soak` with --soak).
"""

from __future__ import annotations

import collections
import itertools
import json
import re
from pathlib import Path
from typing import Callable

import pytest
import requests
import ulid
from flask import Flask
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.ingress_inngest import APP_ID, FUNCTION_ID, SIGNAL_FUNCTION_ID
from exporter.parsing import CANCELLED
from tests.conftest import ServeProcess, free_port
from tests.support.exposition import assert_promtool_passes, samples, scrape
from tests.support.fuzzing import (
    FUZZ_CONFIG,
    FUZZ_ENV,
    Answer,
    Auth,
    FuzzRequest,
    Sender,
    accepted,
    assert_survived,
    events_requests,
    examples,
    flask_sender,
    http_sender,
    inngest_requests,
)
from tests.support.inngest_driver import InngestDriver
from tests.support.load import Load
from tests.support.payloads import FALLBACK_KEY, SIGNING_KEY, cancellation
from tests.support.waiting import eventually

CANARY = "fuzz-app-canary"
"""The function id of the valid cancellations sent between fuzzed requests; no strategy draws it."""
CANCELLATIONS = "inngest_function_cancellations_total"
RECEIVED = "inngest_cancellation_exporter_events_received_total"
IN_PROCESS_FUNCTIONS = [f"{APP_ID}-{FUNCTION_ID}", f"{APP_ID}-{SIGNAL_FUNCTION_ID}"]
"""The function ids a sync of FUZZ_CONFIG's app lists, for the in-process runs that do not sync."""
SETTINGS = {
    "INNGEST_SIGNING_KEY_FALLBACK": FALLBACK_KEY,
    # an out-of-band sync or a `use_api` run would call Inngest's API: here a closed port, never the Internet
    "INNGEST_API_BASE_URL": f"http://127.0.0.1:{free_port()}",
    **FUZZ_ENV,
}


class Ledger:
    """What the fuzz run sent and was told: statuses by endpoint, cancellations acknowledged, canaries sent."""

    def __init__(self, send: Sender, metrics: Callable[[], bytes]) -> None:
        self._send = send
        self._metrics = metrics
        self.statuses: collections.Counter[tuple[str, str, int]] = collections.Counter()
        self.acknowledged = 0
        self.canaries = 0

    def send(self, request: FuzzRequest) -> Answer:
        """Send one request, check it was answered (not crashed on), and book its outcome."""
        answer = self._send(request)
        assert_survived(request, answer)
        self.statuses[(request.method, request.path.split("?")[0], answer.status)] += 1
        self.acknowledged += accepted(answer)
        return answer

    def canary(self) -> None:
        """A valid cancellation of a fresh run: it must be accepted, then counted."""
        body = json.dumps(cancellation(str(ulid.ULID()), CANARY)).encode()
        answer = self.send(FuzzRequest("POST", "/events", body, Auth("token"), kind="canary"))
        assert (answer.status, accepted(answer)) == (200, 1), answer
        self.canaries += 1

    def check_nothing_lost(self) -> None:
        """Once held cancellations are released: every acknowledged one counted, canaries exactly; promtool passes."""

        def released() -> bool:
            pending = samples(self._metrics().decode(), "inngest_cancellation_exporter_pending_classifications")
            return pending == {(): 0.0}

        eventually(released, timeout=15)
        exposition = self._metrics()
        assert_promtool_passes(exposition)
        counts = samples(exposition.decode(), CANCELLATIONS)
        assert sum(counts.values()) == self.acknowledged
        assert sum(value for labels, value in counts.items() if ("function_id", CANARY) in labels) == self.canaries
        received = samples(exposition.decode(), RECEIVED)
        assert sum(value for labels, value in received.items() if ("outcome", "accepted") in labels) == self.acknowledged

    def summary(self, title: str) -> str:
        """One line of figures: requests, acknowledged cancellations, canaries, and the answers by endpoint and status."""
        by_status = {f"{method} {path} {status}": n for (method, path, status), n in sorted(self.statuses.items())}
        return (
            f"{title}: {sum(self.statuses.values())} requests, {self.acknowledged} cancellations acknowledged, "
            f"{self.canaries} canaries; {by_status}"
        )


def fuzz(ledger: Ledger, requests_: st.SearchStrategy[FuzzRequest], share: float, canary_every: int = 10) -> None:
    """Send `share` x max_examples fuzzed requests through `ledger`, and a canary after every `canary_every`."""
    sent = itertools.count(1)

    @settings(max_examples=examples(share))
    @given(request=requests_)
    def run(request: FuzzRequest) -> None:
        ledger.send(request)
        if next(sent) % canary_every == 0:
            ledger.canary()

    run()


def test_events_ingress_answers_every_malformed_request(make_app: Callable[..., Flask]) -> None:
    client = make_app(FUZZ_CONFIG, **SETTINGS).test_client()
    ledger = Ledger(flask_sender(client), lambda: client.get("/metrics").data)
    ledger.canary()
    fuzz(ledger, events_requests(), share=15)
    ledger.check_nothing_lost()
    print(ledger.summary("in-process /events"))


def test_inngest_ingress_answers_every_malformed_request(make_app: Callable[..., Flask]) -> None:
    client = make_app(FUZZ_CONFIG, **SETTINGS).test_client()
    ledger = Ledger(flask_sender(client), lambda: client.get("/metrics").data)
    ledger.canary()
    fuzz(ledger, inngest_requests(IN_PROCESS_FUNCTIONS), share=10)
    ledger.check_nothing_lost()
    print(ledger.summary("in-process /api/inngest"))


class FuzzedServer:
    """The real `serve` process with FUZZ_CONFIG, synced once by a signed Inngest, and a ledger of what it was sent."""

    def __init__(self, serve: Callable[..., ServeProcess], http: requests.Session, config: Path) -> None:
        config.write_text(json.dumps(FUZZ_CONFIG))  # JSON is YAML
        self.server = serve("--config", str(config), **SETTINGS)
        self.driver = InngestDriver(self.server.url, SIGNING_KEY, session=http)
        self.app = self.driver.sync()
        self.ledger = Ledger(http_sender(self.server.url, http), lambda: scrape(self.server.url))
        self.ledger.canary()

    def fuzz(self, share: float) -> None:
        function_ids = [function.id for function in self.app.functions]
        fuzz(self.ledger, st.one_of(events_requests(), inngest_requests(function_ids)), share)

    def check_survived(self) -> None:
        """A canary through Inngest goes through the SDK; then the process is alive and healthy, and lost nothing."""
        invocation = self.driver.invoke(self.app.function_for(CANCELLED), cancellation(str(ulid.ULID()), CANARY))
        assert (invocation.status, invocation.body["accepted"]) == (200, 1)
        self.ledger.acknowledged += 1
        self.ledger.canaries += 1
        assert self.server.proc is not None and self.server.proc.poll() is None, self.server.log()
        assert requests.get(f"{self.server.url}/healthz", timeout=5).status_code == 200
        self.ledger.check_nothing_lost()
        assert "Traceback" not in self.server.log(), self.server.log()[-5000:]

    def rss_mib(self) -> float:
        """Resident memory of gunicorn's worker and the exporter core it forked, added up, from /proc."""
        statuses = [Path(f"/proc/{pid}/status").read_text() for pid in self.server.worker_and_core()]
        return sum(int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) for status in statuses) / 1024  # type: ignore[union-attr]


def test_real_server_survives_fuzzing_over_http(
    serve: Callable[..., ServeProcess], http: requests.Session, tmp_path: Path
) -> None:
    fuzzed = FuzzedServer(serve, http, tmp_path / "config.yaml")
    fuzzed.fuzz(share=3)
    fuzzed.check_survived()
    print(fuzzed.ledger.summary("serve over HTTP"))


@pytest.mark.soak
def test_real_server_survives_sustained_fuzzing_under_load(
    serve: Callable[..., ServeProcess], http: requests.Session, tmp_path: Path
) -> None:
    """Soak: ten times the CI run's fuzzing while two threads push valid cancellations; memory levels off."""
    fuzzed = FuzzedServer(serve, http, tmp_path / "config.yaml")
    with Load(fuzzed.server, threads=2) as load:
        fuzzed.fuzz(share=1)  # warm up: caches, SQLite pages, the function id guard
        warm = fuzzed.rss_mib()
        fuzzed.fuzz(share=10)
        end = fuzzed.rss_mib()
    assert set(load.statuses) == {200}, load.statuses
    fuzzed.ledger.acknowledged += len(load.acknowledged)
    fuzzed.check_survived()
    print(fuzzed.ledger.summary("soak, serve over HTTP"), f"+ {len(load.acknowledged)} under load; "
          f"worker + core RSS {warm:.0f} MiB after warm-up, {end:.0f} MiB at the end")
    assert end < warm * 1.5 + 32, (warm, end)
