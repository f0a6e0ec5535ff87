"""What `simulate` tells its user while it runs: what it has sent, what it waits for, and when the counts will be complete.

A newcomer watching `/metrics` sees the counts lag what `simulate` sent: runs with no
evidence yet are held for late evidence (`EXPORTER_ATTRIBUTION_GRACE`, 2m by default).
Without being told, a silent two minutes and a short count look like a broken exporter.
Every line goes to stderr, one per message (no carriage returns), so it reads the same
in a terminal and in a CI log; stdout keeps the one summary line.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import dataclass
from typing import Callable

import requests
from prometheus_client.parser import text_string_to_metric_families

from exporter.config import Config
from exporter.health import PREFIX
from exporter.simulate import StandInApi

PROGRESS_INTERVAL_SECONDS = 5.0
"""How often `simulate` says how much it has sent."""
LOOKUPS_AWAITED_SECONDS = 60.0
"""How long `simulate` waits, after its last event, for the exporter to look up the runs it timed out."""
HELD = f"{PREFIX}_pending_classifications"
HELD_DUE = f"{PREFIX}_pending_classifications_due_timestamp_seconds"

Say = Callable[[str], None]


def by_source(totals: Counter[str]) -> str:
    """`event: 3, manual: 1`: counts per source, in a stable order."""
    return ", ".join(f"{source}: {n}" for source, n in sorted(totals.items()))


class Progress:
    """Says how many cancellations were sent so far, per source, at most every PROGRESS_INTERVAL_SECONDS."""

    def __init__(self, count: int, say: Say) -> None:
        self._count = count
        self._say = say
        self._next_at = time.monotonic() + PROGRESS_INTERVAL_SECONDS

    def __call__(self, totals: Counter[str]) -> None:
        if time.monotonic() < self._next_at:
            return
        self._next_at = time.monotonic() + PROGRESS_INTERVAL_SECONDS
        self._say(f"simulate: sent {sum(totals.values())}/{self._count} ({by_source(totals)})")


def serve_until_seen(api: StandInApi, config: Config, say: Say) -> None:
    """Keep the stand-in API up until the exporter has looked up every timed-out run (a minute at most) and, when it
    polls bulk cancellations, for two poll intervals, so it sees every window; say what it waits for."""
    unasked = api.unasked()
    if unasked:
        say(
            f"simulate: waiting up to {LOOKUPS_AWAITED_SECONDS:.0f} s for the exporter to look up when {unasked} "
            f"timed-out runs started, at {api.url} (its INNGEST_API_BASE_URL)"
        )
        asked_by = time.monotonic() + LOOKUPS_AWAITED_SECONDS
        while api.unasked() and time.monotonic() < asked_by:
            time.sleep(0.1)
        if unasked := api.unasked():
            say(
                f"simulate: the exporter did not look up {unasked} timed-out runs: they will count as unknown "
                f"unless its INNGEST_API_BASE_URL is {api.url} and EXPORTER_RUN_LOOKUPS is on"
            )
    if config.bulk_cancellations is not None and config.bulk_cancellations.polled:
        serving = 2 * config.bulk_cancellations.poll_interval + 1
        say(
            f"simulate: serving the bulk cancellation list {serving:.0f} s more (two poll intervals), "
            "so the exporter reads every window"
        )
        time.sleep(serving)


@dataclass(frozen=True)
class Held:
    """Runs the exporter holds for late evidence, as its `/metrics` tells."""

    runs: int
    due: float
    """When the last one's grace period ends (epoch seconds): it is in the counts by then at the latest."""


def held_runs(url: str) -> Held:
    """Read the held runs from the exporter's `/metrics`; OSError or ValueError when it cannot tell."""
    response = requests.get(url.rstrip("/") + "/metrics", timeout=10)
    response.raise_for_status()
    values = {
        sample.name: sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
        if sample.name in (HELD, HELD_DUE)
    }
    if len(values) < 2:
        raise ValueError(f"it serves no {HELD} and {HELD_DUE}")
    return Held(int(values[HELD]), values[HELD_DUE])


def held_line(url: str) -> str:
    """Whether `/metrics` already counts every run, or how many the exporter still holds and until when."""
    try:
        held = held_runs(url)
    except (OSError, ValueError) as err:
        return (
            f"simulate: could not read how many runs the exporter still holds from {url}/metrics ({err}); "
            "held runs show when their EXPORTER_ATTRIBUTION_GRACE ends (2m by default)"
        )
    if held.runs == 0:
        return "simulate: the exporter holds no run for late evidence: /metrics counts every run sent"
    wait = max(0, math.ceil(held.due - time.time()))
    return (
        f"simulate: the exporter still holds {held.runs} runs for late evidence (EXPORTER_ATTRIBUTION_GRACE); "
        f"/metrics counts them within {wait} s, by {time.strftime('%H:%M:%S', time.localtime(held.due))}"
    )
