"""Classified cancellations built directly, for the sink tests that need no parsing."""

from __future__ import annotations

from typing import Any, Mapping

from exporter.records import Cancellation, Classified, Source

CANCELLED_AT_MS = 1_732_570_030_000
TRIGGER = {"name": "contacts/import.requested", "id": "01JDJK451Y9KFGE5TTM2FHDEDN", "ts": 1_732_569_900_000}


def make_classified(
    run_id: str = "01JDJKGTGDVV4DTXHY6XYB7BKK",
    *,
    function_id: str = "newsletter-app-import-all-contacts",
    source: Source = Source.EVENT,
    cancelled_at_ms: int | None = CANCELLED_AT_MS,
    scheduled_at_ms: int | None = CANCELLED_AT_MS - 90_500,
    trigger: Mapping[str, Any] | None = TRIGGER,
    received_at_ms: int = CANCELLED_AT_MS + 250,
) -> Classified:
    """A cancelled run 90.5 s old, triggered by TRIGGER, unless told otherwise."""
    cancellation = Cancellation(
        run_id=run_id,
        function_id=function_id,
        event_name="inngest/function.cancelled",
        event_id=run_id,
        cancelled_at_ms=cancelled_at_ms,
        scheduled_at_ms=scheduled_at_ms,
        trigger=trigger,
        received_at_ms=received_at_ms,
    )
    return Classified(cancellation, source)
