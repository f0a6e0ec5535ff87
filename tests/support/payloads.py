"""Test keys and the documented payloads from tests/fixtures (the project's own copy: a clone needs nothing beside it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import ulid

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"
SIGNING_KEY = "signkey-test-8ee2262a15e8d3b0b5a5bd0d1d5e8a5c9f5b7a8b9c0d1e2f3a4b5c6d7e8f9a0b"
FALLBACK_KEY = "signkey-test-0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9"
INGEST_TOKEN = "test-ingest-token-5d41402abc4b2a76b9719d911017c592"
OTHER_KEY = "signkey-test-" + "7" * 64
"""A well-formed signing key the exporter under test does not know."""


def fixture_event(name: str) -> dict[str, Any]:
    """A payload from tests/fixtures: the older documented shapes at the top, the real server's under real-server/."""
    return json.loads((FIXTURES / name).read_text())


REAL_CANCELLED = "real-server/function-cancelled-rest-v1.json"
"""What Inngest v1.43 sent for a run cancelled through the REST API (tests/test_real_inngest.py keeps it true)."""


def cancellation(run_id: str = "01JDJKGTGDVV4DTXHY6XYB7BKK", function_id: str = "demo-app-export") -> dict[str, Any]:
    """The real server's `inngest/function.cancelled` for another run (and function), as old as the captured run was.

    As the server writes it: the event id is the run id, no `data.error`, and `ts` is
    when the run was cancelled. Every time in it moves with the run id's, so the age
    and the order of trigger, run and cancellation stay as captured.
    """
    event = fixture_event(REAL_CANCELLED)
    data = event["data"]
    if _is_ulid(run_id):
        shift = ulid.ULID.from_str(run_id).milliseconds - ulid.ULID.from_str(data["run_id"]).milliseconds
        for moved in (event, data["event"], *data["events"]):
            moved["ts"] += shift
    data.update(run_id=run_id, function_id=function_id)
    event["id"] = run_id
    return event


def _is_ulid(text: str) -> bool:
    try:
        ulid.ULID.from_str(text)
    except ValueError:
        return False
    return True
