"""OTLP/gRPC export of requests built by `otel_encoding`; a module of its own so grpcio loads only when used."""

from __future__ import annotations

import logging

from grpc import StatusCode
from opentelemetry.exporter.otlp.proto.grpc.exporter import logger as sdk_logger
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace.export import SpanExportResult

from exporter.sinks.otlp_senders import SendFailure


class GrpcRequestSender(GrpcSpanExporter):
    """OTLP/gRPC; the SDK's `_export` retries transient failures until its timeout."""

    def __init__(self) -> None:
        super().__init__()
        self._last_words = _LastWords()
        sdk_logger.addHandler(self._last_words)
        sdk_logger.setLevel(logging.WARNING)
        sdk_logger.propagate = False

    @property
    def endpoint(self) -> str:
        return str(self._endpoint)

    def send(self, request: ExportTraceServiceRequest) -> SendFailure | None:
        self._last_words.failure = None
        if self._export(request) is SpanExportResult.SUCCESS:  # type: ignore[arg-type]
            return None
        return self._last_words.failure or SendFailure("failed", "the export failed without saying why")

    def _translate_data(self, data: ExportTraceServiceRequest) -> ExportTraceServiceRequest:  # type: ignore[override]
        return data

    def _count_data(self, data: ExportTraceServiceRequest) -> int:  # type: ignore[override]
        return sum(len(scope.spans) for resource in data.resource_spans for scope in resource.scope_spans)


class _LastWords(logging.Handler):
    """Keeps what the SDK's gRPC exporter last said of a failure (it returns only FAILURE), instead of logging it.

    Its lines name the gRPC status (`StatusCode.UNAVAILABLE`) and the details among their arguments.
    """

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.failure: SendFailure | None = None

    def emit(self, record: logging.LogRecord) -> None:
        args = record.args if isinstance(record.args, tuple) else ()
        code = next((arg for arg in args if isinstance(arg, StatusCode)), None)
        if code is None:
            self.failure = SendFailure(record.msg if isinstance(record.msg, str) else "failed", record.getMessage())
            return
        details = args[-1] if args and isinstance(args[-1], str) else ""
        self.failure = SendFailure(f"gRPC {code.name}", f"gRPC {code.name}: {details}".rstrip(": "))
