"""The OpenTelemetry sink with the real SDK, exporting OTLP (HTTP/protobuf and gRPC) to a local receiver."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import signal
import threading
import time
from typing import Callable, Iterator

import pytest
import ulid
from opentelemetry.proto.trace.v1.trace_pb2 import Status
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry

from exporter.health import HealthMetrics
from exporter.records import Source
from exporter.sinks.otel import DEFAULT_SERVICE_NAME, OtelSink, build_otel_sink
from tests.support.classified import CANCELLED_AT_MS, TRIGGER, make_classified
from tests.support.otlp_receiver import Mode, OtlpGrpcReceiver, OtlpHttpReceiver, OtlpReceiver, ReceivedSpan

SPANS = "inngest_cancellation_exporter_spans_total"
FAST_EXPORT = {"OTEL_BSP_SCHEDULE_DELAY": "50", "OTEL_EXPORTER_OTLP_TIMEOUT": "0.5"}
"""Export 50 ms after a span ends, and give up on a silent collector after half a second."""
SCHEDULED_AT_MS = CANCELLED_AT_MS - 90_500
RECEIVED_AT_MS = CANCELLED_AT_MS + 250


@pytest.fixture(autouse=True)
def _no_otel_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDK reads os.environ: each test sets the OTEL_* variables it means, none leak in from the shell."""
    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def health(registry: CollectorRegistry) -> HealthMetrics:
    return HealthMetrics(registry)


@pytest.fixture(params=[OtlpHttpReceiver, OtlpGrpcReceiver], ids=["http", "grpc"])
def receiver(request: pytest.FixtureRequest) -> Iterator[OtlpReceiver]:
    with request.param() as receiver:
        yield receiver


@pytest.fixture
def make_sink(
    monkeypatch: pytest.MonkeyPatch, health: HealthMetrics, receiver: OtlpReceiver
) -> Iterator[Callable[..., OtelSink]]:
    """Build sinks exporting to `receiver` (fast, unless the variables say otherwise); all are shut down after the test."""
    sinks: list[OtelSink] = []

    def make(**variables: str) -> OtelSink:
        for name, value in {
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": receiver.protocol,
            **FAST_EXPORT,
            **variables,
        }.items():
            monkeypatch.setenv(name, value)
        sink = build_otel_sink(os.environ, health)
        assert sink is not None
        sinks.append(sink)
        return sink

    yield make
    for sink in sinks:
        sink.shutdown()


def counted(registry: CollectorRegistry) -> tuple[float, float]:
    """(exported, dropped) from the health counter."""
    exported, dropped = (registry.get_sample_value(SPANS, {"outcome": outcome}) or 0.0 for outcome in ("exported", "dropped"))
    return exported, dropped


def wait_for_counts(registry: CollectorRegistry, exported: int, dropped: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while counted(registry) != (exported, dropped):
        if time.monotonic() > deadline:
            raise AssertionError(f"(exported, dropped) spans: {counted(registry)}, expected {(exported, dropped)}")
        time.sleep(0.02)


def ulid_bytes(run_id: str) -> bytes:
    return int(ulid.ULID.from_str(run_id)).to_bytes(16, "big")


def emit_runs(sink: OtelSink, *run_ids: str) -> None:
    for run_id in run_ids:
        sink.emit(make_classified(run_id))


def run_ids(received: list[ReceivedSpan]) -> list[str]:
    return [span.attributes["inngest.run.id"] for span in received]


def test_span_describes_the_cancelled_run(
    make_sink: Callable[..., OtelSink], receiver: OtlpReceiver, registry: CollectorRegistry
) -> None:
    item = make_classified(source=Source.TIMEOUT)
    make_sink().emit(item)

    [received] = receiver.wait_for_spans(1)
    span = received.span
    assert span.name == "inngest.function.cancelled"
    assert (span.start_time_unix_nano, span.end_time_unix_nano) == (SCHEDULED_AT_MS * 10**6, CANCELLED_AT_MS * 10**6)
    assert (span.status.code, span.status.message) == (Status.STATUS_CODE_ERROR, "function cancelled")
    assert received.attributes == {
        "inngest.function.id": "newsletter-app-import-all-contacts",
        "inngest.run.id": item.cancellation.run_id,
        "inngest.cancellation.source": "timeout",
        "inngest.run.age_seconds": 90.5,
        "inngest.event.name": TRIGGER["name"],
        "inngest.event.id": TRIGGER["id"],
    }
    assert span.trace_id == ulid_bytes(item.cancellation.run_id)
    assert span.parent_span_id == b""
    assert received.resource["service.name"] == DEFAULT_SERVICE_NAME
    wait_for_counts(registry, exported=1, dropped=0)


def test_unknown_facts_are_left_out_and_a_non_ulid_run_id_still_gives_a_stable_trace(
    make_sink: Callable[..., OtelSink], receiver: OtlpReceiver
) -> None:
    make_sink().emit(make_classified("run-42", cancelled_at_ms=None, scheduled_at_ms=None, trigger=None))

    [received] = receiver.wait_for_spans(1)
    assert received.attributes == {
        "inngest.function.id": "newsletter-app-import-all-contacts",
        "inngest.run.id": "run-42",
        "inngest.cancellation.source": "event",
    }
    assert received.span.trace_id == hashlib.sha256(b"run-42").digest()[:16]


@pytest.mark.parametrize(
    ("cancelled_at_ms", "scheduled_at_ms", "start_ms", "end_ms"),
    [
        (CANCELLED_AT_MS, None, CANCELLED_AT_MS, CANCELLED_AT_MS),
        (None, SCHEDULED_AT_MS, SCHEDULED_AT_MS, RECEIVED_AT_MS),
        (None, None, RECEIVED_AT_MS, RECEIVED_AT_MS),
        (CANCELLED_AT_MS, CANCELLED_AT_MS + 5_000, CANCELLED_AT_MS, CANCELLED_AT_MS),
    ],
    ids=["unscheduled", "no-cancel-time", "neither", "clock-skew"],
)
def test_span_times_fall_back_when_a_time_is_unknown(
    make_sink: Callable[..., OtelSink],
    receiver: OtlpReceiver,
    cancelled_at_ms: int | None,
    scheduled_at_ms: int | None,
    start_ms: int,
    end_ms: int,
) -> None:
    item = make_classified(cancelled_at_ms=cancelled_at_ms, scheduled_at_ms=scheduled_at_ms, received_at_ms=RECEIVED_AT_MS)
    make_sink().emit(item)

    [received] = receiver.wait_for_spans(1)
    assert (received.span.start_time_unix_nano, received.span.end_time_unix_nano) == (start_ms * 10**6, end_ms * 10**6)


def test_a_redelivered_run_lands_in_the_same_trace(make_sink: Callable[..., OtelSink], receiver: OtlpReceiver) -> None:
    sink = make_sink()
    sink.emit(make_classified())
    sink.emit(make_classified())

    first, second = receiver.wait_for_spans(2)
    assert first.span.trace_id == second.span.trace_id == ulid_bytes(make_classified().cancellation.run_id)


def test_concurrent_emits_each_get_their_own_runs_trace(
    make_sink: Callable[..., OtelSink], receiver: OtlpReceiver, registry: CollectorRegistry
) -> None:
    sink = make_sink()
    batches = [[str(ulid.ULID()) for _ in range(25)] for _ in range(8)]
    threads = [threading.Thread(target=emit_runs, args=(sink, *batch)) for batch in batches]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    received = receiver.wait_for_spans(200)
    assert sorted(run_ids(received)) == sorted(run_id for batch in batches for run_id in batch)
    assert all(span.span.trace_id == ulid_bytes(span.attributes["inngest.run.id"]) for span in received)
    wait_for_counts(registry, exported=200, dropped=0)


def test_the_span_is_a_root_even_inside_another_trace(make_sink: Callable[..., OtelSink], receiver: OtlpReceiver) -> None:
    sink = make_sink()
    other_tracer = TracerProvider().get_tracer("request-instrumentation")
    with other_tracer.start_as_current_span("POST /events"):
        sink.emit(make_classified())

    [received] = receiver.wait_for_spans(1)
    assert received.span.parent_span_id == b""
    assert received.span.trace_id == ulid_bytes(make_classified().cancellation.run_id)


@pytest.mark.parametrize(
    ("variables", "expected"),
    [
        ({"OTEL_SERVICE_NAME": "cancellations"}, {"service.name": "cancellations"}),
        (
            {"OTEL_RESOURCE_ATTRIBUTES": "service.name=from-attributes,deployment.environment=production"},
            {"service.name": "from-attributes", "deployment.environment": "production"},
        ),
        ({"OTEL_RESOURCE_ATTRIBUTES": "team=platform"}, {"service.name": DEFAULT_SERVICE_NAME, "team": "platform"}),
    ],
    ids=["service-name", "resource-attributes", "default-beside-attributes"],
)
def test_resource_comes_from_the_otel_variables(
    make_sink: Callable[..., OtelSink], receiver: OtlpReceiver, variables: dict[str, str], expected: dict[str, str]
) -> None:
    make_sink(**variables).emit(make_classified())

    [received] = receiver.wait_for_spans(1)
    assert expected.items() <= received.resource.items()


def test_shutdown_exports_what_is_queued(
    make_sink: Callable[..., OtelSink], receiver: OtlpReceiver, registry: CollectorRegistry
) -> None:
    sink = make_sink(OTEL_BSP_SCHEDULE_DELAY="60000")
    emit_runs(sink, "run-1", "run-2", "run-3")

    sink.shutdown()
    assert sorted(run_ids(receiver.spans())) == ["run-1", "run-2", "run-3"]
    assert counted(registry) == (3, 0)


def test_a_span_emitted_after_shutdown_is_counted_as_dropped(
    make_sink: Callable[..., OtelSink], receiver: OtlpReceiver, registry: CollectorRegistry
) -> None:
    sink = make_sink()
    sink.shutdown()
    sink.emit(make_classified())

    assert counted(registry) == (0, 1)
    assert receiver.spans() == []


@pytest.mark.parametrize("mode", [Mode.FAIL, Mode.HANG], ids=["failing", "silent"])
def test_spans_a_sick_collector_does_not_take_are_counted_as_dropped(
    make_sink: Callable[..., OtelSink], receiver: OtlpReceiver, registry: CollectorRegistry, mode: Mode
) -> None:
    receiver.mode = mode
    emit_runs(make_sink(), "run-1", "run-2", "run-3")

    wait_for_counts(registry, exported=0, dropped=3)
    assert receiver.spans() == []


def stuck_sending_run_1(make_sink: Callable[..., OtelSink], receiver: OtlpReceiver, **variables: str) -> OtelSink:
    """A sink exporting one span per batch, whose export of run-1 the collector holds (until `receiver.release()`)."""
    sink = make_sink(OTEL_EXPORTER_OTLP_TIMEOUT="30", OTEL_BSP_MAX_EXPORT_BATCH_SIZE="1", **variables)
    receiver.mode = Mode.HANG
    sink.emit(make_classified("run-1"))
    receiver.wait_for_hung_requests(1)
    return sink


def test_a_hung_collector_neither_blocks_emit_nor_loses_a_span_uncounted(
    make_sink: Callable[..., OtelSink], receiver: OtlpReceiver, registry: CollectorRegistry
) -> None:
    sink = stuck_sending_run_1(make_sink, receiver, OTEL_BSP_MAX_QUEUE_SIZE="2")

    emit_runs(sink, "run-2", "run-3", "run-4", "run-5", "run-6")  # at once: two fill the queue, three are refused
    assert counted(registry) == (0, 3)

    receiver.mode = Mode.ACCEPT
    receiver.release()
    wait_for_counts(registry, exported=3, dropped=3)
    assert sorted(run_ids(receiver.spans())) == ["run-1", "run-2", "run-3"]


def test_shutdown_gives_up_on_a_hung_collector_in_time_and_still_counts_every_span(
    make_sink: Callable[..., OtelSink], receiver: OtlpReceiver, registry: CollectorRegistry
) -> None:
    sink = stuck_sending_run_1(make_sink, receiver)
    emit_runs(sink, "run-2", "run-3")

    sink.shutdown(timeout=0.2)  # returns while run-1 is still being sent
    assert counted(registry) == (0, 2)

    receiver.mode = Mode.ACCEPT
    receiver.release()
    wait_for_counts(registry, exported=1, dropped=2)
    assert run_ids(receiver.spans()) == ["run-1"]


def span_export_processes() -> list[multiprocessing.Process]:
    return [child for child in multiprocessing.active_children() if child.name == "otel-span-export"]


def test_a_span_export_process_that_dies_is_replaced_and_its_batch_counted_as_dropped(
    make_sink: Callable[..., OtelSink], receiver: OtlpReceiver, registry: CollectorRegistry
) -> None:
    sink = stuck_sending_run_1(make_sink, receiver)
    (first,) = span_export_processes()

    os.kill(first.pid, signal.SIGKILL)
    wait_for_counts(registry, exported=0, dropped=1)
    receiver.mode = Mode.ACCEPT
    receiver.release()
    sink.emit(make_classified("run-2"))
    wait_for_counts(registry, exported=1, dropped=1)
    assert "run-2" in run_ids(receiver.spans())
    (second,) = span_export_processes()
    assert second.pid != first.pid

    sink.shutdown()
    assert span_export_processes() == []


def test_unsampled_spans_are_neither_exported_nor_counted(
    make_sink: Callable[..., OtelSink], receiver: OtlpReceiver, registry: CollectorRegistry
) -> None:
    sink = make_sink(OTEL_TRACES_SAMPLER="always_off")
    sink.emit(make_classified())
    sink.shutdown()

    assert counted(registry) == (0, 0)
    assert receiver.spans() == []


def test_the_signal_specific_endpoint_is_used_as_given(
    monkeypatch: pytest.MonkeyPatch, health: HealthMetrics
) -> None:
    with OtlpHttpReceiver() as receiver:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", f"{receiver.endpoint}/v1/traces")
        sink = build_otel_sink(os.environ, health)
        assert sink is not None
        sink.emit(make_classified())
        sink.shutdown()
        assert run_ids(receiver.spans()) == [make_classified().cancellation.run_id]


@pytest.mark.parametrize(
    "variables",
    [
        {},
        {"OTEL_SERVICE_NAME": "cancellations", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
        {"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"},
        {"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"},
    ],
    ids=["nothing-set", "no-endpoint", "exporter-none", "sdk-disabled"],
)
def test_nothing_is_built_unless_otlp_export_is_asked_for(
    monkeypatch: pytest.MonkeyPatch, health: HealthMetrics, registry: CollectorRegistry, variables: dict[str, str]
) -> None:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    threads = set(threading.enumerate())

    assert build_otel_sink(os.environ, health) is None
    assert set(threading.enumerate()) == threads
    assert counted(registry) == (0, 0)


def test_otel_traces_exporter_otlp_alone_builds_a_sink(monkeypatch: pytest.MonkeyPatch, health: HealthMetrics) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    sink = build_otel_sink(os.environ, health)
    assert isinstance(sink, OtelSink)
    sink.shutdown()


@pytest.mark.parametrize(
    ("variables", "named"),
    [
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, "OTEL_EXPORTER_OTLP_PROTOCOL"),
        ({"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "udp"}, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"),
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER"),
        ({"OTEL_BSP_MAX_QUEUE_SIZE": "lots"}, "OTEL_BSP_MAX_QUEUE_SIZE"),
        ({"OTEL_BSP_SCHEDULE_DELAY": "0"}, "OTEL_BSP_SCHEDULE_DELAY"),
        ({"OTEL_BSP_MAX_QUEUE_SIZE": "100"}, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE"),
    ],
)
def test_an_unusable_setting_is_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, health: HealthMetrics, variables: dict[str, str], named: str
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    for name, value in variables.items():
        monkeypatch.setenv(name, value)

    with pytest.raises(ValueError, match=named):
        build_otel_sink(os.environ, health)


def test_settings_the_sdk_cannot_see_are_refused(health: HealthMetrics) -> None:
    with pytest.raises(ValueError, match="os.environ"):
        build_otel_sink({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, health)
    assert build_otel_sink({}, health) is None
