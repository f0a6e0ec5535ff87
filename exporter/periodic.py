"""A background task run every few seconds until stopped: housekeeping that must not touch the request path."""

from __future__ import annotations

import logging
import threading
from typing import Callable

log = logging.getLogger(__name__)


class PeriodicTask:
    """Calls `action` every `interval` seconds on a daemon thread; an exception is logged, never fatal.

    With `run_first`, the first call happens at start rather than after one interval; `wake` makes the next call
    happen now.
    """

    def __init__(self, name: str, interval: float, action: Callable[[], object], *, run_first: bool = False) -> None:
        self._name = name
        self._interval = interval
        self._action = action
        self._run_first = run_first
        self._stopping = threading.Event()
        self._woken = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        """Call the action now, without waiting for the end of the interval (the interval then starts again)."""
        self._woken.set()

    def stop(self, timeout: float) -> None:
        self._stopping.set()
        self._woken.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _loop(self) -> None:
        if self._run_first:
            self._run_once()
        while True:
            self._woken.wait(self._interval)
            self._woken.clear()
            if self._stopping.is_set():
                return
            self._run_once()

    def _run_once(self) -> None:
        try:
            self._action()
        except Exception:
            log.exception("%s failed; retrying in %.0fs", self._name, self._interval)
