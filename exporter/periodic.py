"""A background task run every few seconds until stopped: housekeeping that must not touch the request path."""

from __future__ import annotations

import logging
import threading
from typing import Callable

log = logging.getLogger(__name__)


class PeriodicTask:
    """Calls `action` every `interval` seconds on a daemon thread; an exception is logged, never fatal."""

    def __init__(self, name: str, interval: float, action: Callable[[], object]) -> None:
        self._name = name
        self._interval = interval
        self._action = action
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stopping.wait(self._interval):
            try:
                self._action()
            except Exception:
                log.exception("%s failed; retrying in %.0fs", self._name, self._interval)
