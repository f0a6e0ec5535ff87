"""A forwarder pushing events to a running exporter's `POST /events`, authenticated as the README says."""

from __future__ import annotations

import json
from typing import Any

import requests

from tests.support.payloads import INGEST_TOKEN

HEADERS = {"Authorization": f"Bearer {INGEST_TOKEN}", "Content-Type": "application/json"}


def post_events(base_url: str, body: Any, session: requests.Session | None = None, timeout: float = 30) -> requests.Response:
    """POST one event or a batch as JSON (non-ASCII escaped, so lone surrogates travel as `\\udXXX`)."""
    return (session or requests).post(f"{base_url}/events", data=json.dumps(body).encode(), headers=HEADERS, timeout=timeout)
