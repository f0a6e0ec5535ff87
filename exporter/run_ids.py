"""Inngest run ids are ULIDs: their first 48 bits are when the run was scheduled.

Checked with one regular expression and read with `int(..., 32)` after mapping each
Crockford character to Python's base-32 digit of the same value, both built from
python-ulid's own alphabet and decode table: the library's decoder works character
by character in Python, and ran twice per cancellation (its age, its trace id).
"""

from __future__ import annotations

import re

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


def scheduled_at_ms(run_id: str) -> int | None:
    """When the run was scheduled (the ULID's time, epoch milliseconds), or None when it is not a ULID."""
    bits = ulid_int(run_id)
    return None if bits is None else bits >> _RANDOMNESS_BITS
