"""Waiting for what a background thread or another process brings about."""

from __future__ import annotations

import time
from typing import Callable


def eventually(check: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait until `check()` holds; AssertionError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)
