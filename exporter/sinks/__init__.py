"""Where classified cancellations go.

A `LiveSink` updates in-memory state after the ingest transaction commits and
must never raise or block; a `DurableSink` writes inside the transaction, so
what it stages is committed together with the dedupe record.
"""

from __future__ import annotations

import sqlite3
from typing import Protocol, Sequence

from exporter.records import Classified


class LiveSink(Protocol):
    def emit(self, item: Classified) -> None: ...


class DurableSink(Protocol):
    def stage_all(self, tx: sqlite3.Connection, items: Sequence[Classified]) -> None: ...
