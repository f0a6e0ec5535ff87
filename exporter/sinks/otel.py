"""OpenTelemetry sink: one span per cancelled run, batch-exported over OTLP.

Configured by the standard OTEL_* variables, so it drops into any collector setup
without exporter-specific settings; the one exporter setting it reads is optional
(EXPORTER_INNGEST_DASHBOARD_URL, a link to the run's page). The SDK supplies the resource, the
sampler, the span encoding (as a template, `otel_encoding`) and the OTLP
transport (`otlp_senders`); `span_batcher` queues and batches, and counts every
span in `health.spans` as exported or dropped; spans are built and sent in a
process of their own (`span_export_process`).
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Mapping

from opentelemetry.sdk.resources import SERVICE_NAME, OTELResourceDetector, Resource
from opentelemetry.sdk.trace import TracerProvider

from exporter.health import HealthMetrics
from exporter.records import Classified
from exporter.run_links import RunLinks
from exporter.sinks.otel_encoding import SpanEncoder, SpanFacts
from exporter.sinks.otlp_senders import PROTOCOLS
from exporter.sinks.span_batcher import SpanBatcher
from exporter.sinks.span_export_process import SpanExportProcess

log = logging.getLogger(__name__)

DEFAULT_SERVICE_NAME = "inngest-cancellation-exporter"

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
PROTOCOL_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
"""Signal-specific first: the OpenTelemetry specification lets it override the generic one."""
BSP_SETTINGS: Mapping[str, tuple[str, int]] = {
    "OTEL_BSP_MAX_QUEUE_SIZE": ("max_queue_size", 2048),
    "OTEL_BSP_SCHEDULE_DELAY": ("schedule_delay_millis", 5000),
    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": ("max_export_batch_size", 512),
}
"""Batching by variable, with the specification's defaults.

A bad value stops startup, where the SDK would log it and carry on. OTEL_BSP_EXPORT_TIMEOUT
is not read: the Python SDK does not use it either; OTEL_EXPORTER_OTLP_TIMEOUT bounds an export.
"""


def check_otel_settings(environ: Mapping[str, str]) -> None:
    """Raise ValueError naming the variable when an OTEL_* setting cannot be used; builds nothing.

    `serve` calls it before it forks, so a bad setting stops startup with a clear line.
    """
    if _export_wanted(environ):
        _protocol(environ)
        _batch_settings(environ)


def otlp_destination(environ: Mapping[str, str]) -> str | None:
    """Where spans go, as `<endpoint> (<protocol>)`, or None when no OTLP export is asked for; for the start-up line."""
    if not _export_wanted(environ):
        return None
    endpoint = next((environ[v].strip() for v in ENDPOINT_VARIABLES if environ.get(v, "").strip()), "the SDK's default endpoint")
    return f"{endpoint} ({_protocol(environ)})"


def build_otel_sink(environ: Mapping[str, str], health: HealthMetrics, links: RunLinks | None = None) -> OtelSink | None:
    """The span sink configured by the OTEL_* variables, or None when no OTLP export is asked for.

    With `links` (EXPORTER_INNGEST_DASHBOARD_URL), each span carries the run page's URL.

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
    provider = TracerProvider(resource=_resource(), shutdown_on_exit=False)  # only its resource and sampler are used
    encoder = SpanEncoder(provider.resource, provider.sampler, links)
    exports = SpanExportProcess(encoder, protocol)
    batcher = SpanBatcher(exports.export, health.spans, **batching)
    return OtelSink(encoder, batcher, exports)


class OtelSink:
    """A `LiveSink` that records one span per cancelled run; `emit` only queues it, never waiting on the network."""

    def __init__(self, encoder: SpanEncoder, batcher: SpanBatcher[SpanFacts], exports: SpanExportProcess) -> None:
        self._encoder = encoder
        self._batcher = batcher
        self._exports = exports

    def emit(self, item: Classified) -> None:
        """Queue the run's span (unless the sampler leaves it out); the export process builds and sends it."""
        try:
            facts = self._encoder.facts(item)
        except Exception:  # a LiveSink must never fail the ingest that called it
            log.exception("could not record the span of run %s", item.cancellation.run_id)
            self._batcher.drop()
            return
        if facts is not None:
            self._batcher.add(facts)

    def shutdown(self, timeout: float = 10.0) -> None:
        """Export what is queued and stop, waiting at most `timeout` seconds.

        A silent collector can hold an export for OTEL_EXPORTER_OTLP_TIMEOUT, longer than a
        server's grace period, so the flush runs in a daemon thread that is abandoned when the
        time is up. Spans still queued then count as dropped; a batch already being sent is
        counted when its export ends.
        """
        stopping = threading.Thread(target=self._flush_and_close, name="otel-sink-shutdown", daemon=True)
        stopping.start()
        stopping.join(timeout)
        self._batcher.abandon()

    def _flush_and_close(self) -> None:
        self._batcher.close()
        self._exports.shutdown()


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
    """SpanBatcher arguments from OTEL_BSP_*, each a positive integer, the batch no larger than the queue."""
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
