"""Inngest run ids are ULIDs: their first 48 bits are when the run was scheduled.

Decoded with python-ulid's base32 codec; the id is checked first with one
regular expression built from that codec's own alphabet, because the library's
character-by-character check costs more than the rest of a cancellation's parse.
"""

from __future__ import annotations

import re

from ulid import base32

_ULID = re.compile(f"[0-7][{re.escape(base32.DECODE_ALPHABET)}]{{25}}")
"""26 Crockford base32 characters, the first at most 7 (larger would overflow 128 bits)."""


def ulid_bits(run_id: str) -> int | None:
    """The run id's 128 bits, or None when it is not a ULID."""
    if not _ULID.fullmatch(run_id):
        return None
    return int.from_bytes(base32.decode_timestamp(run_id[:10]) + base32.decode_randomness(run_id[10:]), "big")


def scheduled_at_ms(run_id: str) -> int | None:
    """When the run was scheduled (the ULID's time, epoch milliseconds), or None when it is not a ULID."""
    if not _ULID.fullmatch(run_id):
        return None
    return int.from_bytes(base32.decode_timestamp(run_id[:10]), "big")
