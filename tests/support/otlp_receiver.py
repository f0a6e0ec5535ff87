"""Local OTLP trace receivers, over HTTP/protobuf and gRPC, for tests of the real OpenTelemetry SDK.

They decode what the SDK's OTLP exporters put on the wire, so a test checks the spans
a collector would see, and they can be told to fail or to hang like a sick collector.
"""

from __future__ import annotations

import enum
import threading
from concurrent import futures
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from typing import Any, Iterable

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tests.support.http import QuietHandler

TRACES_PATH = "/v1/traces"


class Mode(enum.Enum):
    ACCEPT = "accept"
    FAIL = "fail"
    """Answer 503 (gRPC: UNAVAILABLE), which the exporter retries until its timeout."""
    HANG = "hang"
    """Answer nothing until `release()` (or closing), then as the mode is by then; once released, never hang again."""


@dataclass(frozen=True)
class ReceivedSpan:
    span: Span
    resource: dict[str, Any]
    """The resource's attributes, as Python values."""

    @property
    def attributes(self) -> dict[str, Any]:
        return attribute_values(self.span.attributes)


def attribute_values(attributes: Iterable[KeyValue]) -> dict[str, Any]:
    """OTLP `KeyValue`s as a dict of Python values (scalars only: all a span here carries)."""
    return {item.key: _scalar(item) for item in attributes}


def _scalar(item: KeyValue) -> Any:
    kind = item.value.WhichOneof("value")
    return getattr(item.value, kind) if kind else None


class OtlpReceiver:
    """What both transports share: the mode, the received spans, and waiting for them. A context manager."""

    protocol: str
    """The `OTEL_EXPORTER_OTLP_PROTOCOL` value that reaches this receiver."""
    endpoint: str
    """The `OTEL_EXPORTER_OTLP_ENDPOINT` value that reaches this receiver."""

    def __init__(self, *, keep_spans: bool = True) -> None:
        self.mode = Mode.ACCEPT
        self.hung_requests = 0
        self.accepted_spans = 0
        """Spans accepted, also when `keep_spans` is False (under load, the benchmark keeps only counts)."""
        self._keep = keep_spans
        self._spans: list[ReceivedSpan] = []
        self._changed = threading.Condition()
        self._released = threading.Event()

    def __enter__(self) -> OtlpReceiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.release()

    def release(self) -> None:
        """Let the hung requests answer, as the current mode says."""
        self._released.set()

    def spans(self) -> list[ReceivedSpan]:
        with self._changed:
            return list(self._spans)

    def wait_for_spans(self, count: int, timeout: float = 10.0) -> list[ReceivedSpan]:
        """The first `count` spans received, waiting for them; AssertionError after `timeout`."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self._spans) >= count, timeout):
                raise AssertionError(f"expected {count} spans, received {len(self._spans)}")
            return self._spans[:count]

    def wait_for_hung_requests(self, count: int, timeout: float = 10.0) -> None:
        with self._changed:
            if not self._changed.wait_for(lambda: self.hung_requests >= count, timeout):
                raise AssertionError(f"expected {count} hung requests, got {self.hung_requests}")

    def _receive(self, request: ExportTraceServiceRequest) -> bool:
        """Apply the mode to one export request; True when it is accepted (and its spans recorded)."""
        if self.mode is Mode.HANG:
            with self._changed:
                self.hung_requests += 1
                self._changed.notify_all()
            self._released.wait()
        if self.mode is not Mode.ACCEPT:
            return False
        with self._changed:
            self.accepted_spans += sum(len(scope.spans) for spans in request.resource_spans for scope in spans.scope_spans)
            if not self._keep:
                return True
            for resource_spans in request.resource_spans:
                resource = attribute_values(resource_spans.resource.attributes)
                self._spans.extend(
                    ReceivedSpan(span, resource) for scope_spans in resource_spans.scope_spans for span in scope_spans.spans
                )
            self._changed.notify_all()
        return True


class OtlpHttpReceiver(OtlpReceiver):
    """OTLP/HTTP with protobuf bodies: `POST /v1/traces` on 127.0.0.1, a free port, in a thread."""

    protocol = "http/protobuf"

    def __init__(self, *, keep_spans: bool = True) -> None:
        super().__init__(keep_spans=keep_spans)
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="otlp-http-receiver", daemon=True
        ).start()

    def close(self) -> None:
        super().close()
        self._httpd.shutdown()
        self._httpd.server_close()

    def _handler_class(self) -> type[QuietHandler]:
        receiver = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                if self.path != TRACES_PATH:
                    self.send_error(404)
                    return
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if not receiver._receive(ExportTraceServiceRequest.FromString(body)):
                    self.answer(503, b"", "application/x-protobuf")
                    return
                self.answer(200, ExportTraceServiceResponse().SerializeToString(), "application/x-protobuf")

        return Handler


class OtlpGrpcReceiver(OtlpReceiver, trace_service_pb2_grpc.TraceServiceServicer):
    """OTLP/gRPC `TraceService.Export` on 127.0.0.1, a free port, without TLS."""

    protocol = "grpc"

    def __init__(self) -> None:
        super().__init__()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self, self._server)
        port = self._server.add_insecure_port("127.0.0.1:0")
        self.endpoint = f"http://127.0.0.1:{port}"
        self._server.start()

    def close(self) -> None:
        super().close()
        self._server.stop(grace=None)

    def Export(self, request: ExportTraceServiceRequest, context: grpc.ServicerContext) -> ExportTraceServiceResponse:
        if not self._receive(request):
            context.abort(grpc.StatusCode.UNAVAILABLE, "the test receiver was told to fail")
        return ExportTraceServiceResponse()
