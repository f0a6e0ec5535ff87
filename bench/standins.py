"""The exporter's remote peers during the benchmark, in a process of their own: Datadog (healthy or hanging) and an
OTLP collector.

They are the test suite's stand-ins (tests.support), told to keep only counts:
a benchmark sends them hundreds of thousands of events. Running them in their own
process keeps their work off the load generator's interpreter (its latencies)
and their memory out of every figure.

    python -m bench.standins    # prints one JSON line of URLs, then answers `stats` lines until stdin closes
"""

from __future__ import annotations

import json
import subprocess
import sys
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any, Iterator

from tests.support.otlp_receiver import OtlpHttpReceiver
from tests.support.payloads import REPO
from tests.support.recording_server import RecordingServer, hang

HANG_SECONDS = 3600.0
HANGS = 10_000
"""Scripted hangs: every request hangs, as the sender makes one attempt per timeout plus backoff (a handful a minute)."""


@dataclass(frozen=True)
class StandinUrls:
    datadog: str
    """Answers every event 202, as Datadog does."""
    datadog_hanging: str
    """Answers no request (for an hour, far past the exporter's request timeout)."""
    otlp: str
    """OTLP/HTTP collector accepting every span."""


class Standins:
    """The stand-in process, started and stopped by the benchmark; a context manager."""

    def __init__(self) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "bench.standins"], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self._proc.stdout is not None and self._proc.stdin is not None
        self._stdin, self._stdout = self._proc.stdin, self._proc.stdout
        self.urls = StandinUrls(**json.loads(self._stdout.readline()))

    def stats(self) -> dict[str, int]:
        """Requests and spans received so far, by stand-in."""
        self._stdin.write("stats\n")
        self._stdin.flush()
        return dict(json.loads(self._stdout.readline()))

    def __enter__(self) -> "Standins":
        return self

    def __exit__(self, *exc: object) -> None:
        self._stdin.close()
        self._proc.wait(timeout=30)


def _serve() -> Iterator[str]:
    """Runs the stand-ins; yields each line of output (the URLs, then answers to `stats`)."""
    with ExitStack() as stack:
        healthy = stack.enter_context(RecordingServer(keep_requests=False))
        hanging = stack.enter_context(RecordingServer(keep_requests=False))
        hanging.script(*[hang(HANG_SECONDS)] * HANGS)
        collector = stack.enter_context(OtlpHttpReceiver(keep_spans=False))
        urls = StandinUrls(datadog=healthy.url, datadog_hanging=hanging.url, otlp=collector.endpoint)
        yield json.dumps(urls.__dict__)
        for command in sys.stdin:
            if command.strip() == "stats":
                counts: dict[str, Any] = {
                    "datadog_requests": healthy.received,
                    "datadog_hanging_requests": hanging.received,
                    "otlp_spans": collector.accepted_spans,
                }
                yield json.dumps(counts)


def main() -> None:
    for line in _serve():
        print(line, flush=True)


if __name__ == "__main__":
    main()
