"""Test keys and the documented payloads from tests/fixtures (the project's own copy: a clone needs nothing beside it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"
SIGNING_KEY = "signkey-test-8ee2262a15e8d3b0b5a5bd0d1d5e8a5c9f5b7a8b9c0d1e2f3a4b5c6d7e8f9a0b"
FALLBACK_KEY = "signkey-test-0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9"
INGEST_TOKEN = "test-ingest-token-5d41402abc4b2a76b9719d911017c592"
OTHER_KEY = "signkey-test-" + "7" * 64
"""A well-formed signing key the exporter under test does not know."""


def fixture_event(name: str) -> dict[str, Any]:
    """A payload from tests/fixtures, as documented by Inngest."""
    return json.loads((FIXTURES / name).read_text())


def cancellation(run_id: str = "01JDJKGTGDVV4DTXHY6XYB7BKK", function_id: str = "demo-app-export") -> dict[str, Any]:
    """The documented `inngest/function.cancelled` fixture for another run (and function)."""
    event = fixture_event("seed-cancelled-export.json")
    event["data"].update(run_id=run_id, function_id=function_id)
    return event
