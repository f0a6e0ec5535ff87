"""A bounded queue of spans (each as the facts it will say) and the thread that exports them in batches.

It does what the SDK's BatchSpanProcessor does (OTEL_BSP_MAX_QUEUE_SIZE,
OTEL_BSP_SCHEDULE_DELAY, OTEL_BSP_MAX_EXPORT_BATCH_SIZE) for spans the SDK never
sees, and it accounts for every span: the SDK's processor evicts the
oldest queued span when full and says so only in a log line, where here a span
that does not fit is refused and counted as dropped, and each batch counts as
exported or dropped by the collector's answer.
"""

from __future__ import annotations

import collections
import logging
import threading
from typing import Callable, Generic, Sequence, TypeVar

from prometheus_client import Counter

log = logging.getLogger(__name__)

Span = TypeVar("Span")
"""What is queued for one span: whatever `export` takes."""


class SpanBatcher(Generic[Span]):
    """Queues spans from any thread; one daemon thread exports them, `max_export_batch_size` at a time."""

    def __init__(
        self,
        export: Callable[[Sequence[Span]], bool],
        spans: Counter,
        *,
        max_queue_size: int,
        schedule_delay_millis: int,
        max_export_batch_size: int,
    ) -> None:
        self._export = export
        self._exported = spans.labels(outcome="exported")
        self._dropped = spans.labels(outcome="dropped")
        self._capacity = max_queue_size
        self._delay = schedule_delay_millis / 1000
        self._batch = max_export_batch_size
        self._queue: collections.deque[Span] = collections.deque()
        self._closed = False
        """No span is admitted any more; the worker exports what is queued, then ends."""
        self._wake = threading.Condition(threading.Lock())
        self._worker = threading.Thread(target=self._run, name="otel-span-export", daemon=True)
        self._worker.start()

    def add(self, span: Span) -> None:
        """Queue `span` for export; when the queue is full or closed it is refused and counted as dropped."""
        with self._wake:
            admitted = not self._closed and len(self._queue) < self._capacity
            if admitted:
                self._queue.append(span)
                if len(self._queue) == self._batch:
                    self._wake.notify()
        if not admitted:
            self._dropped.inc()

    def drop(self) -> None:
        """Count a span that could not be made at all."""
        self._dropped.inc()

    def close(self) -> None:
        """Admit nothing more, and return once what is queued has been exported (however long that takes)."""
        with self._wake:
            self._closed = True
            self._wake.notify()
        self._worker.join()

    def abandon(self) -> None:
        """Give up what is still queued (counted as dropped); a batch in flight is counted when its export ends."""
        with self._wake:
            self._closed = True
            left_behind = len(self._queue)
            self._queue.clear()
        self._dropped.inc(left_behind)

    def _run(self) -> None:
        while True:
            with self._wake:
                if not self._closed and len(self._queue) < self._batch:
                    self._wake.wait(self._delay)  # a full batch or close() wakes it early
                if not self._queue:
                    if self._closed:
                        return
                    continue
                batch = [self._queue.popleft() for _ in range(min(self._batch, len(self._queue)))]
            self._send(batch)

    def _send(self, batch: list[Span]) -> None:
        try:
            exported = self._export(batch)
        except Exception:  # the thread must live on, and the spans still be counted
            log.exception("OTLP span export failed")
            exported = False
        (self._exported if exported else self._dropped).inc(len(batch))
