"""One cancelled run as an OTLP protobuf span, and batches of them as an export request.

Every span has the same shape, so the SDK's own OTLP encoder is run once, at startup,
on a prototype span; its output (the resource, the scope, a span with the fixed
fields and every attribute) becomes the template each run's span is copied from, and
only the run's own values are set. The spans are therefore exactly what the SDK
would send, at a tenth of the cost: its generic encoder (attribute type dispatch,
resource hashing per span) took about 40 µs per span, more than the rest of a
cancellation's handling together.

The provider's sampler is asked per span only when it is not one of the constant
samplers: the spans are roots, so `parentbased_always_on` (the default) and
`always_on` sample every span, and their `off` twins none.

The work is split in two: `facts` (what a span says, and whether it is sampled) runs
where the run is ingested; `encode` and `request` run in the span export process
(`span_export_process`), which sends what they build.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, sampling
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.util.types import AttributeValue

from exporter import __version__
from exporter.records import Classified, Source
from exporter.run_ids import trace_id_for_run
from exporter.run_links import RunLinks

SPAN_NAME = "inngest.function.cancelled"
RUN_URL_ATTRIBUTE = "inngest.run.url"
"""The run's page in the Inngest dashboard, when EXPORTER_INNGEST_DASHBOARD_URL is set."""
STATUS_DESCRIPTION = "function cancelled"
SCOPE_NAME = "exporter.sinks.otel"

_ALWAYS = (sampling.ALWAYS_ON, sampling.DEFAULT_ON)
_NEVER = (sampling.ALWAYS_OFF, sampling.DEFAULT_OFF)


class SpanFacts(NamedTuple):
    """What one run's span says, worked out where the run is ingested; small, so it crosses to the export process cheaply."""

    run_id: str
    function_id: str
    source: str
    age_seconds: float | None
    trigger_name: str | None
    trigger_id: str | None
    start_ms: int
    end_ms: int

    @classmethod
    def of(cls, item: Classified) -> "SpanFacts":
        cancellation = item.cancellation
        end_ms = cancellation.ended_at_ms
        scheduled_ms = cancellation.scheduled_at_ms
        return cls(
            cancellation.run_id,
            cancellation.function_id,
            item.source.value,
            cancellation.age_seconds,
            cancellation.trigger_name,
            cancellation.trigger_id,
            min(end_ms, end_ms if scheduled_ms is None else scheduled_ms),
            end_ms,
        )


def _attributes(facts: SpanFacts, links: RunLinks | None) -> dict[str, AttributeValue]:
    """The span's attributes; the optional ones only when known (OpenTelemetry has no null)."""
    attributes: dict[str, AttributeValue] = {
        "inngest.function.id": facts.function_id,
        "inngest.run.id": facts.run_id,
        "inngest.cancellation.source": facts.source,
    }
    if links is not None:
        attributes[RUN_URL_ATTRIBUTE] = links.url(facts.run_id)
    for key, value in (
        ("inngest.run.age_seconds", facts.age_seconds),
        ("inngest.event.name", facts.trigger_name),
        ("inngest.event.id", facts.trigger_id),
    ):
        if value is not None:
            attributes[key] = value
    return attributes


def _set(field: AnyValue, value: AttributeValue) -> None:
    if isinstance(value, float):
        field.double_value = value
    else:
        field.string_value = value


class SpanEncoder:
    """Builds each run's span from the template the SDK's encoder made for this resource."""

    def __init__(self, resource: Resource, sampler: sampling.Sampler, links: RunLinks | None = None) -> None:
        self._links = links
        # a run with every optional fact known, so the template holds every attribute, in `_attributes` order
        every_fact = SpanFacts("prototype", "prototype", Source.UNKNOWN.value, 0.0, "", "", 0, 0)
        prototype = encode_spans(
            [
                ReadableSpan(
                    name=SPAN_NAME,
                    context=SpanContext(1, 1, is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED)),
                    resource=resource,
                    attributes=_attributes(every_fact, links),
                    kind=SpanKind.INTERNAL,
                    status=Status(StatusCode.ERROR, STATUS_DESCRIPTION),
                    start_time=0,
                    end_time=0,
                    instrumentation_scope=InstrumentationScope(SCOPE_NAME, __version__),
                )
            ]
        )
        scope_spans = prototype.resource_spans[0].scope_spans[0]
        self._span = Span()
        self._span.CopyFrom(scope_spans.spans[0])
        del scope_spans.spans[:]
        self._request = prototype
        self._sampler = sampler
        self._sample_all = sampler in _ALWAYS
        self._sample_none = sampler in _NEVER
        self._span_ids = RandomIdGenerator()

    def facts(self, item: Classified) -> SpanFacts | None:
        """What the run's span will say, or None when the sampler leaves it out."""
        if self._sample_none:
            return None
        facts = SpanFacts.of(item)
        if self._sample_all:
            return facts
        trace_id = int.from_bytes(trace_id_for_run(facts.run_id), "big")
        result = self._sampler.should_sample(None, trace_id, SPAN_NAME, SpanKind.INTERNAL, _attributes(facts, self._links))
        return facts if result.decision.is_sampled() else None

    def encode(self, facts: SpanFacts) -> Span:
        """The run's span: the template with the run's own values."""
        attributes = _attributes(facts, self._links)
        span = Span()
        span.CopyFrom(self._span)
        span.trace_id = trace_id_for_run(facts.run_id)
        span.span_id = self._span_ids.generate_span_id().to_bytes(8, "big")
        span.start_time_unix_nano = facts.start_ms * 1_000_000
        span.end_time_unix_nano = facts.end_ms * 1_000_000
        slots = span.attributes
        if len(attributes) == len(slots):  # every fact known: the template's slots take the values, in order
            for slot, value in zip(slots, attributes.values()):
                _set(slot.value, value)
        else:
            del slots[:]
            for key, value in attributes.items():
                _set(slots.add(key=key).value, value)
        return span

    def request(self, spans: Sequence[Span]) -> ExportTraceServiceRequest:
        """The export request carrying `spans` under this exporter's resource and scope."""
        request = ExportTraceServiceRequest()
        request.CopyFrom(self._request)
        request.resource_spans[0].scope_spans[0].spans.extend(spans)
        return request
