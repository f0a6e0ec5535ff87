"""Evidence that makes every cancellation source appear for each of many functions (the `/metrics` figure).

The exporter infers a source only from evidence, so series for all five sources
need, per function, five runs laid out around now (T) with evidence that singles
each out under the rules of exporter/attribution/classify.py, given the config below
(a `cancel_on` signal of the function's own, a one-hour finish timeout, bulk polling):

| run     | scheduled | cancelled | evidence                                             |
| ---     | ---       | ---       | ---                                                  |
| event   | T-20m     | T-5m      | the function's signal at T-10m                       |
| unknown | T-2h      | T-1m      | that signal *and* a run as long as the timeout: two sources |
| timeout | T-5h      | T-3h      | started when scheduled, so it ran 2 h; no signal in its window |
| bulk    | T-30h     | T-29.5h   | a bulk window [T-31h, T-29.7h] created at T-29.6h    |
| manual  | T-3m      | T-2m      | none, and the bulk list read since                   |

The two runs past the timeout are looked up (`GET /v2/runs/{id}`): the stand-in API
says each started when it was scheduled.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import ulid

from bench.workload import FUNCTION_FORMAT, LABELS, EventTemplate
from exporter.records import Source
from tests.support.fake_inngest_api import RunRecord

SIGNAL_FORMAT = "bench/cancel-%04d"
MINUTE = 60_000
HOUR = 60 * MINUTE
RUNS: dict[Source, tuple[int, int]] = {
    Source.EVENT: (20 * MINUTE, 5 * MINUTE),
    Source.UNKNOWN: (2 * HOUR, 1 * MINUTE),
    Source.TIMEOUT: (5 * HOUR, 3 * HOUR),
    Source.BULK: (30 * HOUR, 29 * HOUR + 30 * MINUTE),
    Source.MANUAL: (3 * MINUTE, 2 * MINUTE),
}
"""Per source: how long before T its run was scheduled, and cancelled."""
SIGNAL_BEFORE = 10 * MINUTE
BULK_WINDOW = (31 * HOUR, 29 * HOUR + 42 * MINUTE)
"""started_after and started_before, before T."""
BULK_CREATED_BEFORE = 29 * HOUR + 36 * MINUTE
POLL_INTERVAL = "1s"
GRACE = "60s"
"""EXPORTER_ATTRIBUTION_GRACE: held runs (timeout, bulk, manual) are emitted this long after they arrive; the runs
looked up (two a function, about 100 a second against the stand-in API) are all answered within it."""
LOOKUP_RATE = "500"
"""EXPORTER_RUN_LOOKUP_RATE: the default (10 a second, kind to Inngest's API) would take 200 s for 1,000 functions'
two lookups, so most would still wait when the grace period ends and their runs be emitted as `unknown`."""
LOOKED_UP = (Source.UNKNOWN, Source.TIMEOUT)
"""The runs whose age is past the finish timeout: the exporter asks when they started."""


def config(functions: int) -> dict[str, Any]:
    return {
        "labels": LABELS,
        "functions": {
            FUNCTION_FORMAT % i: {"cancel_on": [{"event": SIGNAL_FORMAT % i}], "timeouts": {"finish": "1h"}}
            for i in range(functions)
        },
        "bulk_cancellations": {"poll_interval": POLL_INTERVAL, "retention": "24h"},
    }


def bulk_windows(functions: int, now_ms: int) -> list[dict[str, Any]]:
    """The REST API's bulk cancellation list: one window per function."""
    return [
        {
            "id": str(ulid.ULID.from_timestamp((now_ms - BULK_CREATED_BEFORE) / 1000)),
            "function_id": FUNCTION_FORMAT % i,
            "started_after": _rfc3339(now_ms - BULK_WINDOW[0]),
            "started_before": _rfc3339(now_ms - BULK_WINDOW[1]),
        }
        for i in range(functions)
    ]


def signals(functions: int, now_ms: int) -> list[dict[str, Any]]:
    return [{"name": SIGNAL_FORMAT % i, "ts": now_ms - SIGNAL_BEFORE, "data": {}} for i in range(functions)]


def runs(template: EventTemplate, functions: int, now_ms: int) -> tuple[list[str], dict[str, RunRecord]]:
    """Five cancellations per function, one per source, as JSON texts; and what the REST API says of the runs
    looked up (by run id)."""
    events = []
    looked_up = {}
    for i in range(functions):
        for source, (scheduled_before, cancelled_before) in RUNS.items():
            scheduled = now_ms - scheduled_before
            run_id = str(ulid.ULID.from_timestamp(scheduled / 1000))
            events.append(template.render(run_id, FUNCTION_FORMAT % i, now_ms - cancelled_before, scheduled))
            if source in LOOKED_UP:
                looked_up[run_id] = RunRecord(scheduled, scheduled, now_ms - cancelled_before)
    return events, looked_up


def _rfc3339(epoch_ms: int) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
