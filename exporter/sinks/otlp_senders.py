"""The SDK's OTLP exporters, sending export requests that `otel_encoding` has already built.

Endpoint, headers, TLS, compression, timeout and retries stay the SDK's, read from
the standard OTEL_* variables; only the encoding step is replaced. The gRPC exporter
has a hook for it (`_translate_data`, see `otlp_grpc_sender`); the HTTP exporter
encodes inside `export`, so `send` posts through its HTTP client itself. Both lean on the SDK's internals of the
1.45 line, which pyproject.toml pins and the OTLP tests (a real HTTP and a real gRPC
receiver) check.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from exporter.failure_log import plain_reason

PROTOCOLS = ("http/protobuf", "grpc")
"""The OTLP protocols spans are exported with; the first is the specification's default."""
SDK_LOGGER = "opentelemetry.exporter.otlp"
"""The SDK's exporters log every failed try and retry here; the export process says a failure once instead."""


@dataclass(frozen=True)
class SendFailure:
    """Why the collector did not take a request: `kind` is the same for every repeat of one failure."""

    kind: str
    reason: str


class RequestSender(Protocol):
    """Sends one export request; None when the collector accepted it, else why not."""

    @property
    def endpoint(self) -> str: ...

    def send(self, request: ExportTraceServiceRequest) -> SendFailure | None: ...

    def shutdown(self) -> None: ...


class HttpRequestSender(HttpSpanExporter):
    """OTLP/HTTP with protobuf bodies."""

    @property
    def endpoint(self) -> str:
        return str(self._endpoint)

    def send(self, request: ExportTraceServiceRequest) -> SendFailure | None:
        if self._shutdown:
            return SendFailure("shut down", "the exporter is shutting down")
        result = self._client.export(request.SerializeToString())
        if result.success:
            return None
        if result.status_code is not None:
            return SendFailure(f"HTTP {result.status_code}", f"answered HTTP {result.status_code} {result.reason or ''}".rstrip())
        if result.error is not None:
            return SendFailure(*plain_reason(result.error))
        return SendFailure("timeout", "no answer within OTEL_EXPORTER_OTLP_TIMEOUT, retries included")


def request_sender(protocol: str) -> RequestSender:
    """The sender for `protocol` (one of PROTOCOLS), configured by the OTEL_* variables in os.environ.

    The SDK's own warnings (a line per failed try and per retry, for every batch) are
    silenced: the sender returns the failure and the export process tells it once.
    """
    logging.getLogger(SDK_LOGGER).setLevel(logging.CRITICAL)
    if protocol == "grpc":
        from exporter.sinks.otlp_grpc_sender import GrpcRequestSender  # grpcio is loaded only when it is used

        return GrpcRequestSender()
    return HttpRequestSender()
