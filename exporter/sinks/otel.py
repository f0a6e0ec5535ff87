"""OpenTelemetry sink: one span per cancelled run, batch-exported over OTLP by the SDK.

Configured only by the standard OTEL_* variables, so it drops into any collector
setup without exporter-specific settings. It uses a private TracerProvider: the
exporter's spans never mix with whatever else in the process may use the global one.

Every span ends up counted in `health.spans` as exported or dropped. The SDK's
BatchSpanProcessor drops the oldest queued span when its queue is full and says
so only in a log line, so `_SpanLedger` bounds the queue itself and counts what it
refuses; `_CountingExporter` counts what the OTLP exporter delivered or failed.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from typing import Mapping, Sequence

from opentelemetry.sdk.resources import SERVICE_NAME, OTELResourceDetector, Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.util.types import AttributeValue
from prometheus_client import Counter

from exporter import __version__
from exporter.health import HealthMetrics
from exporter.run_ids import ulid_bits
from exporter.records import Classified

log = logging.getLogger(__name__)

SPAN_NAME = "inngest.function.cancelled"
STATUS_DESCRIPTION = "function cancelled"
DEFAULT_SERVICE_NAME = "inngest-cancellation-exporter"

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
PROTOCOL_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
"""Signal-specific first: the OpenTelemetry specification lets it override the generic one."""
PROTOCOLS = ("http/protobuf", "grpc")
"""The OTLP protocols the SDK exports with; the first is the specification's default."""

BSP_SETTINGS: Mapping[str, tuple[str, int]] = {
    "OTEL_BSP_MAX_QUEUE_SIZE": ("max_queue_size", 2048),
    "OTEL_BSP_SCHEDULE_DELAY": ("schedule_delay_millis", 5000),
    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": ("max_export_batch_size", 512),
    "OTEL_BSP_EXPORT_TIMEOUT": ("export_timeout_millis", 30000),
}
"""BatchSpanProcessor arguments by variable, with the specification's defaults.

Read here rather than by the SDK because the ledger must know the queue size, and
because the SDK logs a bad value and carries on, where a bad setting must stop startup.
"""

def check_otel_settings(environ: Mapping[str, str]) -> None:
    """Raise ValueError naming the variable when an OTEL_* setting cannot be used; builds nothing.

    `serve` calls it before it forks, so a bad setting stops startup with a clear line.
    """
    if _export_wanted(environ):
        _protocol(environ)
        _batch_settings(environ)


def build_otel_sink(environ: Mapping[str, str], health: HealthMetrics) -> OtelSink | None:
    """The span sink configured by the OTEL_* variables, or None when no OTLP export is asked for.

    Export is asked for by an OTLP endpoint or `OTEL_TRACES_EXPORTER=otlp`, and turned off by
    `OTEL_TRACES_EXPORTER=none` or `OTEL_SDK_DISABLED=true`. `environ` decides that and the
    batching; the SDK reads the rest (endpoint, headers, timeout, resource, sampler) from
    `os.environ` itself, so an `environ` that turns export on must be `os.environ`.
    Raises ValueError naming the variable for a setting that cannot be used.
    """
    if not _export_wanted(environ):
        return None
    if environ is not os.environ:
        raise ValueError(
            "OTEL_*: the OpenTelemetry SDK reads its settings from os.environ; pass os.environ to build_otel_sink"
        )
    protocol = _protocol(environ)
    batching = _batch_settings(environ)
    ledger = _SpanLedger(batching["max_queue_size"], health.spans)
    provider = TracerProvider(resource=_resource())
    processor = _AdmittingBatchSpanProcessor(_CountingExporter(_otlp_exporter(protocol), ledger), ledger, **batching)
    provider.add_span_processor(processor)
    return OtelSink(provider, processor, ledger)


def trace_id_for_run(run_id: str) -> int:
    """The run id's 128 bits when it is a ULID (as Inngest's are), else the first 128 bits of its SHA-256.

    Derived, not random, so every delivery of one run's cancellation lands in the same trace.
    """
    return ulid_bits(run_id) or int.from_bytes(hashlib.sha256(run_id.encode()).digest()[:16], "big")


class OtelSink:
    """A `LiveSink` that records one span per cancelled run; the SDK's batch processor exports them.

    The span is finished before it is made (its start and end are known), so it is built
    as the SDK's `ReadableSpan` and handed to the batch processor directly, after the
    provider's sampler: the tracer's path (context, locks, attribute cleaning of values
    already clean) cost more than the rest of a cancellation's handling.
    """

    def __init__(self, provider: TracerProvider, processor: _AdmittingBatchSpanProcessor, ledger: _SpanLedger) -> None:
        self._provider = provider
        self._processor = processor
        self._ledger = ledger
        self._span_ids = RandomIdGenerator()
        self._scope = InstrumentationScope(__name__, __version__)
        self._status = Status(StatusCode.ERROR, STATUS_DESCRIPTION)

    def emit(self, item: Classified) -> None:
        """Record the run's span; it only joins an in-memory queue, so this never waits on the network."""
        try:
            self._record(item)
        except Exception:  # a LiveSink must never fail the ingest that called it
            log.exception("could not record the span of run %s", item.cancellation.run_id)
            self._ledger.drop()

    def shutdown(self, timeout: float = 10.0) -> None:
        """Export what is queued and stop the worker, waiting at most `timeout` seconds.

        The SDK's own shutdown can wait up to 30 s on a silent collector, longer than a
        server's grace period, so it runs in a daemon thread that is abandoned when the
        time is up. Spans still queued then count as dropped; a batch already being sent
        is counted when its export ends.
        """
        stopping = threading.Thread(target=self._provider.shutdown, name="otel-sink-shutdown", daemon=True)
        stopping.start()
        stopping.join(timeout)
        self._ledger.close()

    def _record(self, item: Classified) -> None:
        cancellation = item.cancellation
        end_ms = cancellation.cancelled_at_ms if cancellation.cancelled_at_ms is not None else cancellation.received_at_ms
        start_ms = min(end_ms, cancellation.scheduled_at_ms if cancellation.scheduled_at_ms is not None else end_ms)
        trace_id = trace_id_for_run(cancellation.run_id)
        attributes = _attributes(item)
        sampling = self._provider.sampler.should_sample(None, trace_id, SPAN_NAME, SpanKind.INTERNAL, attributes)
        if not sampling.decision.is_sampled():
            return
        context = SpanContext(
            trace_id, self._span_ids.generate_span_id(), is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED)
        )
        self._processor.on_end(
            ReadableSpan(
                name=SPAN_NAME,
                context=context,
                resource=self._provider.resource,
                attributes=attributes,
                kind=SpanKind.INTERNAL,
                status=self._status,
                start_time=_ms_to_ns(start_ms),
                end_time=_ms_to_ns(end_ms),
                instrumentation_scope=self._scope,
            )
        )


def _attributes(item: Classified) -> dict[str, AttributeValue]:
    """The span's attributes; the optional ones only when known (OpenTelemetry has no null)."""
    cancellation = item.cancellation
    optional = {
        "inngest.run.age_seconds": cancellation.age_seconds,
        "inngest.event.name": cancellation.trigger_name,
        "inngest.event.id": cancellation.trigger_id,
    }
    return {
        "inngest.function.id": cancellation.function_id,
        "inngest.run.id": cancellation.run_id,
        "inngest.cancellation.source": item.source.value,
        **{key: value for key, value in optional.items() if value is not None},
    }


def _ms_to_ns(epoch_ms: int) -> int:
    return epoch_ms * 1_000_000


class _SpanLedger:
    """Admits spans into the batch queue up to its capacity and counts every span's outcome.

    `queued` counts spans admitted but not yet taken by the exporter, which is at least
    what the processor's queue holds, so that queue never overflows: a span that would
    overflow it is refused here, and counted, instead of silently evicting an older one.
    """

    def __init__(self, capacity: int, spans: Counter) -> None:
        self._capacity = capacity
        self._exported = spans.labels(outcome="exported")
        self._dropped = spans.labels(outcome="dropped")
        self._queued = 0
        self._closed = False
        self._lock = threading.Lock()

    def admit(self) -> bool:
        """Whether a span may join the queue; a refused span (queue full, or shut down) counts as dropped."""
        with self._lock:
            admitted = not self._closed and self._queued < self._capacity
            if admitted:
                self._queued += 1
        if not admitted:
            self._dropped.inc()
        return admitted

    def take(self, count: int) -> bool:
        """The exporter takes `count` queued spans; False if `close` has already counted them as dropped."""
        with self._lock:
            if self._closed:
                return False
            self._queued -= count
            return True

    def settle(self, count: int, exported: bool) -> None:
        (self._exported if exported else self._dropped).inc(count)

    def drop(self) -> None:
        self._dropped.inc()

    def close(self) -> None:
        """Refuse new spans, and count those still queued as dropped: the processor has stopped, or been abandoned."""
        with self._lock:
            self._closed = True
            left_behind, self._queued = self._queued, 0
        self._dropped.inc(left_behind)


class _AdmittingBatchSpanProcessor(BatchSpanProcessor):
    """A BatchSpanProcessor that queues a sampled span only when the ledger admits it."""

    def __init__(self, exporter: SpanExporter, ledger: _SpanLedger, **batching: int) -> None:
        self._ledger = ledger
        super().__init__(exporter, **batching)

    def on_end(self, span: ReadableSpan) -> None:
        # Unsampled spans are never queued (the SDK skips them too), so they take no place in the ledger.
        if span.context is not None and span.context.trace_flags.sampled and self._ledger.admit():
            super().on_end(span)


class _CountingExporter(SpanExporter):
    """Wraps the OTLP exporter: a batch it reports SUCCESS for counts as exported, any other as dropped."""

    def __init__(self, inner: SpanExporter, ledger: _SpanLedger) -> None:
        self._inner = inner
        self._ledger = ledger

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if not self._ledger.take(len(spans)):
            return SpanExportResult.FAILURE
        try:
            result = self._inner.export(spans)
        except Exception:  # the processor would log it, but the spans must still be counted
            log.exception("OTLP span export failed")
            result = SpanExportResult.FAILURE
        self._ledger.settle(len(spans), exported=result is SpanExportResult.SUCCESS)
        return result

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)


def _export_wanted(environ: Mapping[str, str]) -> bool:
    exporters = {name.strip().lower() for name in environ.get("OTEL_TRACES_EXPORTER", "").split(",") if name.strip()}
    unsupported = sorted(exporters - {"otlp", "none"})
    if unsupported:
        raise ValueError(f"OTEL_TRACES_EXPORTER: unsupported exporter {', '.join(unsupported)}; use otlp or none")
    if "none" in exporters or environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return "otlp" in exporters or any(environ.get(variable, "").strip() for variable in ENDPOINT_VARIABLES)


def _protocol(environ: Mapping[str, str]) -> str:
    for variable in PROTOCOL_VARIABLES:
        value = environ.get(variable, "").strip().lower()
        if not value:
            continue
        if value not in PROTOCOLS:
            raise ValueError(f"{variable}: unsupported protocol {value!r}; use one of {', '.join(PROTOCOLS)}")
        return value
    return PROTOCOLS[0]


def _batch_settings(environ: Mapping[str, str]) -> dict[str, int]:
    """BatchSpanProcessor arguments from OTEL_BSP_*, each a positive integer, the batch no larger than the queue."""
    settings = {}
    for variable, (argument, default) in BSP_SETTINGS.items():
        raw = environ.get(variable, "").strip()
        try:
            value = int(raw) if raw else default
        except ValueError:
            value = 0
        if value <= 0:
            raise ValueError(f"{variable}: must be a positive integer, got {raw!r}")
        settings[argument] = value
    if settings["max_export_batch_size"] > settings["max_queue_size"]:
        raise ValueError("OTEL_BSP_MAX_EXPORT_BATCH_SIZE: must not exceed OTEL_BSP_MAX_QUEUE_SIZE")
    return settings


def _resource() -> Resource:
    """The SDK's resource (OTEL_RESOURCE_ATTRIBUTES, OTEL_SERVICE_NAME), with our service.name unless they set one."""
    from_environment = OTELResourceDetector().detect().attributes
    return Resource.create({} if SERVICE_NAME in from_environment else {SERVICE_NAME: DEFAULT_SERVICE_NAME})


def _otlp_exporter(protocol: str) -> SpanExporter:
    """The SDK's OTLP exporter for the protocol; it reads endpoint, headers, TLS and timeout from os.environ.

    Imported here so that grpcio is loaded only when gRPC export is configured.
    """
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        return GrpcExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

    return HttpExporter()
