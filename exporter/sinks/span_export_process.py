"""Span building and OTLP export in a process of its own, forked from the process that ingests.

Why: a span costs the ingesting process more than the rest of a cancellation's
handling (protobuf messages built field by field, then an HTTP or gRPC export;
BENCHMARKS.md), and a Python process runs one thread at a time. So the ingesting
process works out each span's facts (`otel_encoding.SpanFacts`: a few strings and
numbers) and hands each batch of them here; this process builds the spans, sends
them, and answers whether the collector took them. The machine's other CPU does
that work.

The batcher (`span_batcher`) stays in the ingesting process and counts every span
as before: an export is one batch sent here and one answer back. When this process
dies, the batch in flight counts as dropped and the next export starts a new one.
When the ingesting process is gone, the pipe closes and this process ends.
"""

from __future__ import annotations

import logging
import pickle
import threading
from multiprocessing.connection import Connection
from typing import Sequence

from exporter import clock
from exporter.child_process import detach_from_parent, start_child
from exporter.failure_log import FailureLog, plain_reason
from exporter.sinks.otel_encoding import SpanEncoder, SpanFacts
from exporter.sinks.otlp_senders import SendFailure, request_sender

log = logging.getLogger(__name__)

EXIT_WAIT_SECONDS = 5.0
"""How long `shutdown` waits for the process to close its sender and exit before killing it."""
_EXPORTED, _FAILED = b"1", b"0"


class SpanExportProcess:
    """Builds and sends spans in a child process; `export` is the batcher's export function."""

    def __init__(self, encoder: SpanEncoder, protocol: str) -> None:
        self._encoder = encoder
        self._protocol = protocol
        self._lock = threading.Lock()
        """One batch in the pipe at a time, and no new process once shut down."""
        self._closed = False
        self._start()

    def _start(self) -> None:
        self._process, self._conn = start_child(
            _serve, self._encoder, self._protocol,
            name="otel-span-export",
            daemon=True,  # a parent that exits without shutdown() (its flush timed out) takes it along
        )

    def export(self, batch: Sequence[SpanFacts]) -> bool:
        """Send the batch's spans; True when the collector accepted them."""
        with self._lock:
            if self._closed:
                return False
            try:
                self._conn.send_bytes(pickle.dumps(list(batch), pickle.HIGHEST_PROTOCOL))
                return self._conn.recv_bytes() == _EXPORTED
            except (OSError, EOFError):
                self._process.join(EXIT_WAIT_SECONDS)
                log.error(
                    "the span export process exited (code %s); starting a new one", self._process.exitcode
                )
                self._conn.close()
                self._start()
                return False

    def shutdown(self) -> None:
        """Close the pipe (the process then shuts its sender down and exits) and wait for it."""
        with self._lock:
            self._closed = True
            self._conn.close()
        self._process.join(EXIT_WAIT_SECONDS)
        if self._process.is_alive():
            log.error("the span export process did not exit within %.0f s: killing it", EXIT_WAIT_SECONDS)
            self._process.kill()
            self._process.join()


def _serve(encoder: SpanEncoder, protocol: str, conn: Connection, parent_end: Connection) -> None:
    """The process: one batch of facts in, its spans sent, one answer out, until the pipe closes."""
    detach_from_parent(parent_end)
    sender = request_sender(protocol)  # made here: its connections (and gRPC's threads) belong to this process
    failures = FailureLog(
        log, f"OTLP spans: export to {sender.endpoint}", "batches",
        advice='Spans of these batches are dropped and counted in inngest_cancellation_exporter_spans{outcome="dropped"}; '
        "metrics and Datadog events are not affected. Check that the collector runs at OTEL_EXPORTER_OTLP_ENDPOINT "
        "(or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) and speaks OTEL_EXPORTER_OTLP_PROTOCOL",
    )
    try:
        while True:
            try:
                batch: list[SpanFacts] = pickle.loads(conn.recv_bytes())
            except EOFError:
                return
            try:
                failure = sender.send(encoder.request([encoder.encode(facts) for facts in batch]))
            except Exception as err:  # the process must live on, and the batch be counted by the batcher
                log.debug("OTLP span export raised", exc_info=True)
                failure = SendFailure(*plain_reason(err))
            if failure is None:
                failures.recovered(clock.now_ms())
            else:
                failures.failed(failure.kind, failure.reason, clock.now_ms())
            conn.send_bytes(_FAILED if failure else _EXPORTED)
    finally:
        sender.shutdown()
