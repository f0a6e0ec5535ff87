"""What the HTTP endpoints ask of the exporter core, wherever it runs.

`serve` runs the core in a process of its own (`exporter.core_process.RemoteCore`);
tests and `create_app()` without a core run it in the caller's process
(`exporter.core.Exporter`). Both answer these calls with the same code: the
remote one forwards each call to an `Exporter`. Arguments and results are plain
data (bytes, dicts, strings), so a call costs one round trip and no parsing on
the HTTP side.
"""

from __future__ import annotations

from typing import Any, Protocol

from exporter.config import Config
from exporter.settings import Settings


class Core(Protocol):
    """The exporter core as the endpoints see it."""

    settings: Settings
    config: Config

    def ingest_body(self, body: bytes, ingress: str) -> bytes:
        """Parse and record a request body (an event or an array); the answer's body, the summary as JSON.

        JSON here rather than in the endpoint: in `serve` the core's process has CPU to spare and
        the HTTP worker's does not. Raises InvalidInput (nothing recorded, the message names the problem) or
        StateUnavailable (nothing recorded, the sender should retry).
        """
        ...

    def ingest_event(self, raw: dict[str, Any], ingress: str) -> dict[str, int]:
        """Parse and record one event already decoded from JSON; the summary. Raises as `ingest_body`."""
        ...

    def count_received(self, ingress: str, outcome: str) -> None:
        """Count a request refused before it reached the core (unauthorized, too large, invalid)."""
        ...

    def render_metrics(self, accept: str) -> tuple[bytes, str]:
        """The metrics in the format `accept` asks for: (body, Content-Type)."""
        ...

    def problems(self) -> list[str]:
        """Why the exporter is not ready to take events; empty when it is."""
        ...

    def signal_subscription(self) -> tuple[list[str], str | None]:
        """The events the exporter's Inngest app must subscribe to, and the URL at which Inngest last synced it."""
        ...

    def refresh_definitions(self) -> None:
        """Read the functions' definitions from Inngest again soon (when discovery is on)."""
        ...

    def stop(self, timeout: float = 10.0) -> None:
        """Flush spans and stop background work within about `timeout`."""
        ...
