"""OTLP/gRPC export of requests built by `otel_encoding`; a module of its own so grpcio loads only when used."""

from __future__ import annotations

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace.export import SpanExportResult


class GrpcRequestSender(GrpcSpanExporter):
    """OTLP/gRPC; the SDK's `_export` retries transient failures until its timeout."""

    def send(self, request: ExportTraceServiceRequest) -> bool:
        return self._export(request) is SpanExportResult.SUCCESS  # type: ignore[arg-type]

    def _translate_data(self, data: ExportTraceServiceRequest) -> ExportTraceServiceRequest:  # type: ignore[override]
        return data

    def _count_data(self, data: ExportTraceServiceRequest) -> int:  # type: ignore[override]
        return sum(len(scope.spans) for resource in data.resource_spans for scope in resource.scope_spans)
