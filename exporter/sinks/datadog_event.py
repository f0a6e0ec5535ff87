"""The Datadog event for one cancelled run: a plain JSON payload, turned into the client's model at send time.

The payload is a plain dict so that it can wait in the durable outbox as JSON and
survive a restart or a client upgrade; `to_request` converts it only when it is sent,
which is also when Datadog's limits on `date_happened` can be judged.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from typing import Any, Mapping

from datadog_api_client.v1.model.event_create_request import EventCreateRequest

from exporter.records import Classified
from exporter.run_age import age_tag

AGGREGATION_KEY_PREFIX = "inngest.function.cancelled:"
AGGREGATION_KEY_MAX = 100
"""Datadog refuses a longer aggregation_key."""
TEXT_MAX = 4000
"""Datadog refuses a longer text; a huge trigger name must not make the event undeliverable."""
# Datadog accepts `date_happened` from 18 hours before to 2 hours after now; kept 10 minutes inside.
_DATE_MAX_PAST_S = 18 * 3600 - 600
_DATE_MAX_FUTURE_S = 2 * 3600 - 600


def build_payload(item: Classified, labels: Mapping[str, str]) -> dict[str, Any]:
    """The Events API (v1) body for one cancelled run, as JSON-serialisable data."""
    cancellation = item.cancellation
    source = item.source.value
    age = cancellation.age_seconds
    happened_ms = cancellation.cancelled_at_ms if cancellation.cancelled_at_ms is not None else cancellation.received_at_ms
    tags = [
        f"function_id:{cancellation.function_id}",
        f"cancellation_source:{source}",
        f"run_age:{age_tag(age)}",
        *(f"{name}:{value}" for name, value in labels.items()),
    ]
    return {
        "title": f"Inngest run cancelled: {cancellation.function_id} ({source})",
        "text": _text(item, happened_ms)[:TEXT_MAX],
        "tags": tags,
        "aggregation_key": aggregation_key(cancellation.function_id),
        "date_happened": happened_ms // 1000,
        "alert_type": "warning",
    }


def _text(item: Classified, happened_ms: int) -> str:
    """Names the run, its trigger and its exact age: the details too fine-grained to be tags."""
    cancellation = item.cancellation
    age = cancellation.age_seconds
    trigger = cancellation.trigger_name or "unknown"
    if cancellation.trigger_id:
        trigger += f" (id {cancellation.trigger_id})"
    return "\n".join(
        (
            f"Run {cancellation.run_id} of {cancellation.function_id} was cancelled.",
            f"Cancellation source: {item.source.value}",
            f"Triggering event: {trigger}",
            f"Run age: {'unknown' if age is None else f'{age:.3f} s'}",
            f"Cancelled at: {datetime.fromtimestamp(happened_ms / 1000, timezone.utc).isoformat(timespec='milliseconds')}",
        )
    )


def aggregation_key(function_id: str) -> str:
    """Groups a function's events; a slug too long for Datadog's limit is replaced by its hash."""
    key = AGGREGATION_KEY_PREFIX + function_id
    if len(key) <= AGGREGATION_KEY_MAX:
        return key
    return AGGREGATION_KEY_PREFIX + hashlib.sha256(function_id.encode()).hexdigest()


def to_request(payload: Mapping[str, Any], now_s: float) -> EventCreateRequest:
    """The client model for a stored payload.

    An event that waited in the outbox (or a backfilled one) may fall outside the window
    Datadog accepts for `date_happened`; it is then sent without one, so Datadog stamps it
    on arrival, and the text still carries the real cancellation time.
    """
    body = dict(payload)
    happened = body.get("date_happened")
    if happened is not None and not now_s - _DATE_MAX_PAST_S <= happened <= now_s + _DATE_MAX_FUTURE_S:
        del body["date_happened"]
    return EventCreateRequest(**body)
