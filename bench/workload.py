"""What the performance benchmark sends: unique cancellations, batches of them, signed Inngest invocations.

Every request carries runs never seen before (real ULID run ids whose time is the
run's scheduling), so the exporter does its full work for each: dedupe claims a new
row, the classifier decides, every sink is told. The payload is the documented
`inngest/function.cancelled` fixture (tests.support.payloads) with four fields
replaced; the same template, written to a file, feeds the wrk Lua scripts in
bench/wrk/, so the Python load generators and wrk send the same bytes.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ulid
import yaml

from exporter import signature
from tests.support.inngest_driver import execution_request
from tests.support.payloads import INGEST_TOKEN, SIGNING_KEY, cancellation

FUNCTION_FORMAT = "bench-app-fn-%04d"
"""The function ids runs are spread over (`FUNCTION_FORMAT % i`), as `<app-id>-<function-id>` slugs."""
AGE_SPREAD_MS = 2 * 3600 * 1000
"""Run ages are spread over 0..2 h (a multiplicative hash of the run's number), so every histogram bucket up to 2 h moves."""
AGE_STEP_MS = 7919
"""The hash's multiplier (a prime): consecutive runs get far-apart ages."""
TIMEOUTS = {"finish": "1d"}
"""The declared functions' timeout, longer than any run's age (AGE_SPREAD_MS): no run admits a timeout, so none awaits
a run lookup (Inngest's API allows about ten a second). Each is decided as it is recorded (`unknown`: no evidence
of any source) and reaches every sink while its figure runs."""
LABELS = {"environment": "bench"}
BEARER_HEADER = f"Bearer {INGEST_TOKEN}"
FIELDS = ("RUN_ID", "FUNCTION_ID", "TS", "TRIGGER_TS")
"""The template's placeholders, written `@NAME@` (numbers unquoted)."""
_PLACEHOLDER = re.compile(r"@([A-Z_]+)@")
CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def function_id(number: int, functions: int) -> str:
    return FUNCTION_FORMAT % (number % functions)


def run_age_ms(number: int) -> int:
    return number * AGE_STEP_MS % AGE_SPREAD_MS


def nonce(length: int = 6) -> str:
    """Random Crockford base32 characters: makes one wrk run's ULIDs differ from every other run's."""
    return "".join(secrets.choice(CROCKFORD) for _ in range(length))


@dataclass(frozen=True)
class EventTemplate:
    """The fixture cancellation as text with placeholders, rendered by plain concatenation (no JSON encoding per event)."""

    text: str

    @classmethod
    def from_fixture(cls) -> "EventTemplate":
        event = cancellation(run_id="@RUN_ID@", function_id="@FUNCTION_ID@")
        event["ts"] = "@TS@"
        # the trigger's time is the run's start: the fixture's fixed 2024 date would make every run days old
        for trigger in (event["data"]["event"], *event["data"]["events"]):
            trigger["ts"] = "@TRIGGER_TS@"
        text = json.dumps(event, separators=(",", ":"))
        return cls(text.replace('"@TS@"', "@TS@").replace('"@TRIGGER_TS@"', "@TRIGGER_TS@"))

    def render(self, run_id: str, function: str, ts_ms: int, trigger_ts_ms: int) -> str:
        values = {"RUN_ID": run_id, "FUNCTION_ID": function, "TS": str(ts_ms), "TRIGGER_TS": str(trigger_ts_ms)}
        return _PLACEHOLDER.sub(lambda match: values[match.group(1)], self.text)

    def write(self, path: Path) -> Path:
        """For the Lua scripts, which split it at the same placeholders."""
        path.write_text(self.text, encoding="utf-8")
        return path


class Cancellations:
    """Numbered unique cancellations of runs spread over `functions` functions, cancelled now."""

    def __init__(self, template: EventTemplate, functions: int) -> None:
        self._template = template
        self._functions = functions
        self._next = 0

    def event(self, now_ms: int | None = None) -> str:
        """One new cancellation as JSON text."""
        number, self._next = self._next, self._next + 1
        ts_ms = int(time.time() * 1000) if now_ms is None else now_ms
        scheduled_ms = ts_ms - run_age_ms(number)
        run_id = str(ulid.ULID.from_timestamp(scheduled_ms / 1000))
        return self._template.render(run_id, function_id(number, self._functions), ts_ms, scheduled_ms)

    def body(self, batch: int = 1) -> bytes:
        """A `POST /events` body: one event object, or an array of `batch` events."""
        if batch == 1:
            return self.event().encode()
        now_ms = int(time.time() * 1000)
        return ("[" + ",".join(self.event(now_ms) for _ in range(batch)) + "]").encode()


def http_request(method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> bytes:
    """A complete HTTP/1.1 request for a persistent connection to 127.0.0.1."""
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if body or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def events_request(body: bytes) -> bytes:
    """`POST /events` with the bearer token, as a forwarder sends it."""
    return http_request("POST", "/events", body, {"Content-Type": "application/json", "Authorization": BEARER_HEADER})


def write_signed_invocations(path: Path, url_path: str, fn_id: str, source: Cancellations, count: int) -> Path:
    """`count` signed `/api/inngest` invocations as Inngest sends them, one per line: `<X-Inngest-Signature>\\t<body>`.

    Signed now, so they stay within the exporter's 5-minute replay window for the
    benchmark's few seconds; each invokes a new run for a new cancellation. The
    wrk replay script reads its share of the lines; `url_path` is kept in the first line.
    """
    with path.open("w", encoding="utf-8") as out:
        out.write(url_path + "\n")
        for _ in range(count):
            # JCS-canonical, as Inngest's executor sends its bodies (v1.43: every MAC in the real-server suite matches the raw body)
            body = signature.canonical_body(json.dumps(execution_request(fn_id, json.loads(source.event()), str(ulid.ULID()))).encode())
            out.write(signature.sign(body, SIGNING_KEY) + "\t" + body.decode() + "\n")
    return path


def storm_config(functions: int) -> dict[str, Any]:
    """The config of the ingestion figures: `functions` declared functions with timeouts, constant labels.

    No `cancel_on`, no bulk polling and no timeout a run reaches, so every cancellation is decided and emitted to
    every sink at once (held runs would reach the sinks only later; `check_accepted` sees none).
    """
    return {"labels": LABELS, "functions": {FUNCTION_FORMAT % i: {"timeouts": TIMEOUTS} for i in range(functions)}}


def write_config(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path
