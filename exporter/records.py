"""The typed records that flow through the pipeline, from parsing to the sinks.

Every later stage works on these instead of raw JSON, so the tolerance for the
real payload's variations lives in one place (`exporter.parsing`).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Mapping


class Source(str, enum.Enum):
    """Why a run was cancelled, as far as the evidence shows."""

    EVENT = "event"
    TIMEOUT = "timeout"
    BULK = "bulk"
    SINGLETON = "singleton"
    MANUAL = "manual"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Cancellation:
    """One cancelled run, parsed from `inngest/function.cancelled` or a cancelled `function.finished`."""

    run_id: str
    function_id: str
    event_name: str
    """Name of the event that reported the cancellation."""
    event_id: str | None
    """Id of the event that reported the cancellation (may equal the run id)."""
    cancelled_at_ms: int | None
    """`ts` of the reporting event: when the run was cancelled. None when absent."""
    scheduled_at_ms: int | None
    """When the run was scheduled: the run id's ULID time, else the trigger's `ts`."""
    trigger: Mapping[str, Any] | None
    """`data.event`, the run's triggering event (the first of `data.events` when absent)."""
    received_at_ms: int
    """When the exporter received it; stands in for the end time when `ts` is absent."""

    @property
    def ended_at_ms(self) -> int:
        """When the run was cancelled (`ts`), else when the exporter received it: a span's end, an event's date."""
        return self.received_at_ms if self.cancelled_at_ms is None else self.cancelled_at_ms

    @property
    def age_seconds(self) -> float | None:
        """Run age: cancellation time minus scheduled time, never negative; None without both."""
        if self.cancelled_at_ms is None or self.scheduled_at_ms is None:
            return None
        return max(0.0, (self.cancelled_at_ms - self.scheduled_at_ms) / 1000.0)

    @property
    def trigger_name(self) -> str | None:
        name = self.trigger.get("name") if self.trigger else None
        return name if isinstance(name, str) else None

    @property
    def trigger_id(self) -> str | None:
        ident = self.trigger.get("id") if self.trigger else None
        return ident if isinstance(ident, str) else None


@dataclass(frozen=True, slots=True)
class Signal:
    """An event that can cancel runs: named in a `cancel_on` rule, or triggering a singleton function in `cancel` mode
    (the newer run cancels the running one)."""

    name: str
    received_ms: int
    """When Inngest received it, which is what its matching compares with a run's scheduling: the time of the event's
    id when that is a ULID (the id Inngest gives an event sent without one), else the event's `ts`, else when the
    exporter received it."""
    event: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Ignored:
    """An event that is neither a cancellation nor a configured signal."""

    name: str


ParsedEvent = Cancellation | Signal | Ignored


@dataclass(frozen=True, slots=True)
class Classified:
    """A cancellation with its inferred source: what every sink receives."""

    cancellation: Cancellation
    source: Source


@dataclass(slots=True)
class IngestSummary:
    """What happened to a request's events; the JSON answer of `POST /events`."""

    accepted: int = 0
    """New runs: emitted now, or held for late evidence (`pending`)."""
    duplicates: int = 0
    ignored: int = 0
    signals: int = 0
    pending: int = 0
    classified: list[Classified] = field(default_factory=list)

    def as_json(self) -> dict[str, int]:
        return {
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "ignored": self.ignored,
            "signals": self.signals,
            "pending": self.pending,
        }
