"""Inngest's ids are ULIDs: a run id's first 48 bits are when the run was scheduled, an event id's
(the one the server gives an event sent without its own) when the server received it.

Checked with one regular expression and read with `int(..., 32)` after mapping each
Crockford character to Python's base-32 digit of the same value, both built from
python-ulid's own alphabet and decode table: the library's decoder works character
by character in Python, and ran twice per cancellation (its age, its trace id).
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from ulid import base32

_ULID = re.compile(f"[0-7][{re.escape(base32.DECODE_ALPHABET)}]{{25}}")
"""26 Crockford base32 characters, the first at most 7 (larger would overflow 128 bits)."""
_BASE32_DIGITS = "0123456789abcdefghijklmnopqrstuv"
_TO_BASE32_DIGITS = str.maketrans({char: _BASE32_DIGITS[base32.DECODE[ord(char)]] for char in base32.DECODE_ALPHABET})
_RANDOMNESS_BITS = 80


def ulid_int(run_id: str) -> int | None:
    """The run id's 128 bits, or None when it is not a ULID."""
    if not _ULID.fullmatch(run_id):
        return None
    return int(run_id.translate(_TO_BASE32_DIGITS), 32)


def ulid_ms(ident: str) -> int | None:
    """The ULID's time (epoch milliseconds): when the run was scheduled, or the event received; None when not a ULID."""
    bits = ulid_int(ident)
    return None if bits is None else bits >> _RANDOMNESS_BITS


def received_ms(event_id: Any, ts_ms: int | None, now_ms: int) -> int:
    """When Inngest received an event, as far as the event shows: its id's time when the id is a ULID, else its
    `ts`, else `now_ms`.

    Inngest gives an event sent without an id its internal id, a ULID made on receipt, and matches
    cancel events by that; a sender's own id says nothing of the receipt, and its `ts` is the sender's clock.
    """
    received = ulid_ms(event_id) if isinstance(event_id, str) else None
    if received is not None:
        return received
    return now_ms if ts_ms is None else ts_ms


def trace_id_for_run(run_id: str) -> bytes:
    """The run id's 128 bits when it is a ULID (as Inngest's are), else the first 128 bits of its SHA-256.

    Derived, not random, so every delivery of one run's cancellation lands in the same trace, and the
    Prometheus series' exemplars name the span's trace without asking the span exporter (spans may be off).
    """
    bits = ulid_int(run_id)
    if bits:  # not the all-zero ULID, which would be OpenTelemetry's invalid trace id
        return bits.to_bytes(16, "big")
    return hashlib.sha256(run_id.encode()).digest()[:16]
