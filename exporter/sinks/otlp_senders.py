"""The SDK's OTLP exporters, sending export requests that `otel_encoding` has already built.

Endpoint, headers, TLS, compression, timeout and retries stay the SDK's, read from
the standard OTEL_* variables; only the encoding step is replaced. The gRPC exporter
has a hook for it (`_translate_data`, see `otlp_grpc_sender`); the HTTP exporter
encodes inside `export`, so `send` posts through its HTTP client itself. Both lean on the SDK's internals of the
1.45 line, which pyproject.toml pins and the OTLP tests (a real HTTP and a real gRPC
receiver) check.
"""

from __future__ import annotations

from typing import Protocol

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

PROTOCOLS = ("http/protobuf", "grpc")
"""The OTLP protocols spans are exported with; the first is the specification's default."""


class RequestSender(Protocol):
    """Sends one export request; True when the collector accepted it."""

    def send(self, request: ExportTraceServiceRequest) -> bool: ...

    def shutdown(self) -> None: ...


class HttpRequestSender(HttpSpanExporter):
    """OTLP/HTTP with protobuf bodies."""

    def send(self, request: ExportTraceServiceRequest) -> bool:
        if self._shutdown:
            return False
        return self._client.export(request.SerializeToString()).success


def request_sender(protocol: str) -> RequestSender:
    """The sender for `protocol` (one of PROTOCOLS), configured by the OTEL_* variables in os.environ."""
    if protocol == "grpc":
        from exporter.sinks.otlp_grpc_sender import GrpcRequestSender  # grpcio is loaded only when it is used

        return GrpcRequestSender()
    return HttpRequestSender()
