"""The exporter's one clock: wall-clock epoch milliseconds, the unit of every time it stores or compares."""

from __future__ import annotations

import time


def now_ms() -> int:
    """Wall-clock milliseconds, not monotonic: stored times (outbox, dedupe, held runs) must mean the same after a restart."""
    return int(time.time() * 1000)
