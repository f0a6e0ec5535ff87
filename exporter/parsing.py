"""Parse and validate request bodies into typed records (`exporter.records`).

Tolerant of the real payload's variations (`data.error` absent, `data._inngest`
present, a cancelled `inngest/function.finished`), strict about what the
exporter relies on, and precise in its errors: each names the event's index
and the key at fault, so a forwarder can fix the one bad event.
"""

from __future__ import annotations

import json
import math
from typing import Any, Collection, Mapping

from exporter.records import Cancellation, Ignored, ParsedEvent, Signal
from exporter.run_ids import received_ms, ulid_ms

CANCELLED = "inngest/function.cancelled"
FINISHED = "inngest/function.finished"
MAX_ID_LENGTH = 512
"""Longest accepted run id or function id: longer ones would bloat every series and tag."""


class InvalidInput(ValueError):
    """A body or event the exporter cannot use; the message names the problem and where."""


def decode_body(body: bytes) -> Any:
    """JSON from a request body, with the reason when it is not JSON."""
    if not body.strip():
        raise InvalidInput("body is empty: expected an event object or an array of events")
    try:
        return json.loads(body)
    except RecursionError:
        raise InvalidInput("body is nested too deeply to be an Inngest event") from None
    except UnicodeDecodeError:
        raise InvalidInput("body is not valid UTF-8 text") from None
    except ValueError as err:
        raise InvalidInput(f"body is not valid JSON: {err}") from None


def _where(index: int | None, key: str) -> str:
    return f"events[{index}].{key}" if index is not None else key


def _text(value: Any, index: int | None, key: str, *, required: bool, max_length: int | None = None) -> str | None:
    """A string field that must be valid Unicode (no lone surrogates) and, if given, not too long.

    Where the field is (`index`, `key`) is put into words only for an error: most fields are fine.
    """
    if value is None:
        if required:
            raise InvalidInput(f"{_where(index, key)}: missing: expected a non-empty string")
        return None
    if not isinstance(value, str) or (required and not value):
        raise InvalidInput(f"{_where(index, key)}: expected a non-empty string, got {_type_name(value)}")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidInput(f"{_where(index, key)}: not valid Unicode (lone surrogate escape)") from None
    if max_length is not None and len(value) > max_length:
        raise InvalidInput(f"{_where(index, key)}: longer than {max_length} characters")
    return value


def _epoch_ms(value: Any, index: int | None, key: str) -> int | None:
    if value is None:
        return None
    # an int is finite however large (math.isfinite would overflow on it); the range check below refuses it
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (isinstance(value, float) and not math.isfinite(value)):
        raise InvalidInput(f"{_where(index, key)}: expected epoch milliseconds (a finite number), got {_type_name(value)}")
    if not 0 <= value < 2**53:
        raise InvalidInput(f"{_where(index, key)}: epoch milliseconds out of range")
    return int(value)


def _type_name(value: Any) -> str:
    """What the value is, in JSON's words; NaN and the infinities (which Python's parser accepts) by name."""
    if value is None:
        return "null"
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if value != value else ("Infinity" if value > 0 else "-Infinity")
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}.get(type(value), "a number")


def _trigger(data: Mapping[str, Any], index: int | None) -> Mapping[str, Any] | None:
    event = data.get("event")
    if event is None:
        batch = data.get("events")
        if isinstance(batch, list) and batch and isinstance(batch[0], dict):
            event = batch[0]
    if event is None:
        return None
    if not isinstance(event, dict):
        raise InvalidInput(f"{_where(index, 'data.event')}: expected an object, got {_type_name(event)}")
    _text(event.get("name"), index, "data.event.name", required=False)
    _text(event.get("id"), index, "data.event.id", required=False)
    _epoch_ms(event.get("ts"), index, "data.event.ts")
    return event


def is_cancellation(name: str, data: Mapping[str, Any]) -> bool:
    """`function.cancelled`, or `function.finished` whose `_inngest.status` says Cancelled."""
    if name == CANCELLED:
        return True
    if name != FINISHED:
        return False
    meta = data.get("_inngest")
    return isinstance(meta, dict) and meta.get("status") == "Cancelled"


def parse_event(raw: Any, *, evidence_names: Collection[str], now_ms: int, index: int | None = None) -> ParsedEvent:
    """One Inngest event object → Cancellation, Signal (named in `evidence_names`) or Ignored; InvalidInput when unusable."""
    if not isinstance(raw, dict):
        raise InvalidInput(f"{'events[%d]' % index if index is not None else 'body'}: expected an event object, got {_type_name(raw)}")
    name = _text(raw.get("name"), index, "name", required=True)
    assert name is not None
    data = raw.get("data", {})
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InvalidInput(f"{_where(index, 'data')}: expected an object, got {_type_name(data)}")
    ts_ms = _epoch_ms(raw.get("ts"), index, "ts")

    if is_cancellation(name, data):
        run_id = _text(data.get("run_id"), index, "data.run_id", required=True, max_length=MAX_ID_LENGTH)
        function_id = _text(data.get("function_id"), index, "data.function_id", required=True, max_length=MAX_ID_LENGTH)
        assert run_id is not None and function_id is not None
        trigger = _trigger(data, index)
        scheduled_ms = ulid_ms(run_id)
        if scheduled_ms is None and trigger is not None:
            scheduled_ms = _epoch_ms(trigger.get("ts"), index, "data.event.ts")
        return Cancellation(
            run_id=run_id,
            function_id=function_id,
            event_name=name,
            event_id=_text(raw.get("id"), index, "id", required=False),
            cancelled_at_ms=ts_ms,
            scheduled_at_ms=scheduled_ms,
            trigger=trigger,
            received_at_ms=now_ms,
        )
    if name in evidence_names:
        return Signal(name=name, received_ms=received_ms(raw.get("id"), ts_ms, now_ms), event=raw)
    return Ignored(name=name)


def parse_body(body: bytes, *, evidence_names: Collection[str], now_ms: int, max_events: int) -> list[ParsedEvent]:
    """A `POST /events` body: one event or an array of at most `max_events`; all valid or InvalidInput."""
    decoded = decode_body(body)
    if isinstance(decoded, list):
        if not decoded:
            raise InvalidInput("body is an empty array: expected at least one event")
        if len(decoded) > max_events:
            raise InvalidInput(f"batch has {len(decoded)} events, more than the limit of {max_events}")
        return [parse_event(item, evidence_names=evidence_names, now_ms=now_ms, index=i) for i, item in enumerate(decoded)]
    return [parse_event(decoded, evidence_names=evidence_names, now_ms=now_ms)]
