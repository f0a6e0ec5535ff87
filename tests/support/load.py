"""Background load on a running exporter: threads pushing valid cancellations until stopped."""

from __future__ import annotations

import collections
import threading
from typing import TYPE_CHECKING

import requests
import ulid

from tests.support.forwarder import post_events
from tests.support.payloads import cancellation
from tests.support.waiting import eventually

if TYPE_CHECKING:
    from tests.conftest import ServeProcess


class Load:
    """Threads sending unique cancellations, one per request, until stopped; remembers what got a 2xx."""

    def __init__(self, proc: ServeProcess, threads: int = 4) -> None:
        self._proc = proc
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self.acknowledged: list[str] = []
        self.attempted: list[str] = []
        self.statuses: collections.Counter[int | str] = collections.Counter()
        self._threads = [threading.Thread(target=self._send, daemon=True) for _ in range(threads)]

    def __enter__(self) -> "Load":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        for thread in self._threads:
            thread.join(15)

    def _send(self) -> None:
        with requests.Session() as session:
            while not self._stopping.is_set():
                run_id = str(ulid.ULID())
                with self._lock:
                    self.attempted.append(run_id)
                try:
                    outcome: int | str = post_events(self._proc.url, cancellation(run_id), session, timeout=10).status_code
                except requests.RequestException as err:
                    outcome = type(err).__name__
                with self._lock:
                    self.statuses[outcome] += 1
                    if outcome == 200:
                        self.acknowledged.append(run_id)

    def wait_for(self, count: int) -> None:
        eventually(lambda: len(self.acknowledged) >= count, timeout=30)
