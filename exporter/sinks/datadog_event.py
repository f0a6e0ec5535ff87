"""The Datadog event for one cancelled run: the facts it is made of, and the Events API body made from them.

Staging runs inside the ingest transaction for every cancellation, so what waits in the
durable outbox is only `EventFacts`, the few values the event is derived from, as plain
columns; the title, text and tags are formatted by `build_payload` when the event is sent,
on the sender's thread, not on ingestion's. `request_body` judges Datadog's limits on
`date_happened` at that moment too, as they depend on when the event goes out.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from typing import Any, Mapping, NamedTuple

from exporter.records import Classified
from exporter.run_age import age_tag
from exporter.run_links import RunLinks

AGGREGATION_KEY_PREFIX = "inngest.function.cancelled:"
AGGREGATION_KEY_MAX = 100
"""Datadog refuses a longer aggregation_key."""
TEXT_MAX = 4000
"""Datadog refuses a longer text; a huge trigger name must not make the event undeliverable."""
# Datadog accepts `date_happened` from 18 hours before to 2 hours after now; kept 10 minutes inside.
_DATE_MAX_PAST_S = 18 * 3600 - 600
_DATE_MAX_FUTURE_S = 2 * 3600 - 600


class EventFacts(NamedTuple):
    """What one run's event is built from, in the outbox's column order.

    A tuple, so that staging binds it to the INSERT as it is and reading a row rebuilds it
    without a conversion: both run once per cancellation. The field names are the outbox's
    column names.
    """

    run_id: str
    function_id: str
    source: str
    """The `Source` value."""
    age_seconds: float | None
    trigger_name: str | None
    trigger_id: str | None
    happened_ms: int
    """The cancellation time, else when the exporter received the run (its `date_happened`)."""

    @classmethod
    def of(cls, item: Classified) -> EventFacts:
        cancellation = item.cancellation
        # _make, not the constructor: it skips a Python-level __new__, a third of the cost, on the ingest path
        return cls._make(
            (
                cancellation.run_id,
                cancellation.function_id,
                item.source.value,
                cancellation.age_seconds,
                _bounded(cancellation.trigger_name),
                _bounded(cancellation.trigger_id),
                cancellation.ended_at_ms,
            )
        )


def _bounded(value: str | None) -> str | None:
    """At most TEXT_MAX characters: the text is cut there anyway, so a huge trigger cannot bloat the outbox."""
    return None if value is None else value[:TEXT_MAX]


def build_payload(facts: EventFacts, labels: Mapping[str, str], links: RunLinks | None = None) -> dict[str, Any]:
    """The Events API (v1) body for one cancelled run, as JSON-serialisable data; its text links to the run's page in
    the Inngest dashboard when `links` are set."""
    tags = [
        f"function_id:{facts.function_id}",
        f"cancellation_source:{facts.source}",
        f"run_age:{age_tag(facts.age_seconds)}",
        *(f"{name}:{value}" for name, value in labels.items()),
    ]
    return {
        "title": f"Inngest run cancelled: {facts.function_id} ({facts.source})",
        "text": _text(facts, links)[:TEXT_MAX],
        "tags": tags,
        "aggregation_key": aggregation_key(facts.function_id),
        "date_happened": facts.happened_ms // 1000,
        "alert_type": "warning",
    }


def _text(facts: EventFacts, links: RunLinks | None) -> str:
    """Names the run, its page, its trigger and its exact age: the details too fine-grained to be tags.

    The link comes before the trigger, whose name may be long enough to have the text cut.
    """
    age = facts.age_seconds
    trigger = facts.trigger_name or "unknown"
    if facts.trigger_id:
        trigger += f" (id {facts.trigger_id})"
    happened = datetime.fromtimestamp(facts.happened_ms / 1000, timezone.utc)
    lines = [f"Run {facts.run_id} of {facts.function_id} was cancelled."]
    if links is not None:
        lines.append(f"Run in Inngest: {links.url(facts.run_id)}")
    lines.extend(
        (
            f"Cancellation source: {facts.source}",
            f"Triggering event: {trigger}",
            f"Run age: {'unknown' if age is None else f'{age:.3f} s'}",
            f"Cancelled at: {happened.isoformat(timespec='milliseconds')}",
        )
    )
    return "\n".join(lines)


def aggregation_key(function_id: str) -> str:
    """Groups a function's events; a slug too long for Datadog's limit is replaced by its hash."""
    key = AGGREGATION_KEY_PREFIX + function_id
    if len(key) <= AGGREGATION_KEY_MAX:
        return key
    return AGGREGATION_KEY_PREFIX + hashlib.sha256(function_id.encode()).hexdigest()


def request_body(payload: Mapping[str, Any], now_s: float) -> dict[str, Any]:
    """The body to send now for a payload.

    An event that waited in the outbox (or a backfilled one) may fall outside the window
    Datadog accepts for `date_happened`; it is then sent without one, so Datadog stamps it
    on arrival, and the text still carries the real cancellation time.
    """
    body = dict(payload)
    happened = body.get("date_happened")
    if happened is not None and not now_s - _DATE_MAX_PAST_S <= happened <= now_s + _DATE_MAX_FUTURE_S:
        del body["date_happened"]
    return body
