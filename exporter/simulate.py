"""`simulate`: realistic, correctly signed cancellation traffic, so a newcomer can watch metrics move.

For each function of the config it plays the cancellations its evidence can
explain: cancel signals that satisfy a `cancel_on` rule (sent first, as Inngest
would see them), runs that hit their start or finish timeout, and runs
cancelled for no visible reason (`unknown`).
"""

from __future__ import annotations

import json
import random
import re
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import requests
import ulid

from exporter import signature
from exporter.config import CancelOn, Config
from exporter.parsing import CANCELLED
from exporter.records import Source

_EQUALITY = re.compile(r"^\s*async\.data\.(\w+)\s*==\s*event\.data\.(\w+)\s*$")


@dataclass(frozen=True)
class Plan:
    """One simulated cancellation: which events to send, and the source they should yield."""

    source: Source
    events: list[dict[str, Any]]


def _signal_fields(rule: CancelOn) -> tuple[str, str] | None:
    """(signal key, trigger key) that make the rule's expression hold, when it is a simple equality."""
    if rule.if_ is None:
        return ("ref", "ref")
    match = _EQUALITY.match(rule.if_)
    return (match.group(1), match.group(2)) if match else None


class Simulator:
    """Plans and sends simulated traffic to a running exporter's `POST /events`."""

    def __init__(self, url: str, config: Config, *, signing_key: str | None, token: str | None, seed: int | None) -> None:
        if not config.functions:
            raise ValueError("the config declares no functions to simulate")
        self._url = url.rstrip("/") + "/events"
        self._config = config
        self._signing_key = signing_key
        self._token = token
        self._random = random.Random(seed)
        self._session = requests.Session()

    def _cancellation(self, function_id: str, age: float, trigger_data: dict[str, Any], now: float) -> dict[str, Any]:
        scheduled = now - age
        trigger = {
            "name": f"{function_id.split('-')[0]}/run.requested",
            "id": str(ulid.ULID.from_timestamp(scheduled)),
            "ts": int(scheduled * 1000),
            "data": trigger_data,
        }
        return {
            "name": CANCELLED,
            "id": str(ulid.ULID()),
            "ts": int(now * 1000),
            "data": {
                "function_id": function_id,
                "run_id": str(ulid.ULID.from_timestamp(scheduled)),
                "event": trigger,
                "events": [trigger],
                "_inngest": {"status": "Cancelled"},
            },
        }

    def plan(self, now: float) -> Plan:
        """A random cancellation of a random configured function, with the evidence for its source."""
        function_id = self._random.choice(sorted(self._config.functions))
        fn = self._config.functions[function_id]
        choices: list[Source] = [Source.UNKNOWN]
        if fn.timeouts.finish or fn.timeouts.start:
            choices += [Source.TIMEOUT] * 2
        usable_rules = [rule for rule in fn.cancel_on if _signal_fields(rule) is not None]
        if usable_rules:
            choices += [Source.EVENT] * 3
        source = self._random.choice(choices)
        ref = str(ulid.ULID())
        if source is Source.TIMEOUT:
            age = fn.timeouts.finish if fn.timeouts.finish else fn.timeouts.start
            assert age is not None
            return Plan(source, [self._cancellation(function_id, age + self._random.uniform(0, 0.5), {"ref": ref}, now)])
        ceiling = min(x for x in (fn.timeouts.finish, fn.timeouts.start, 3600.0) if x) * 0.8
        age = self._random.uniform(min(2.0, ceiling / 2), ceiling)
        if fn.timeouts.start and abs(age - fn.timeouts.start) < 10:
            age = fn.timeouts.start + 10
        if source is Source.EVENT:
            rule = self._random.choice(usable_rules)
            fields = _signal_fields(rule)
            assert fields is not None
            signal_key, trigger_key = fields
            cancellation = self._cancellation(function_id, age, {trigger_key: ref}, now)
            signal = {"name": rule.event, "id": str(ulid.ULID()), "ts": int((now - age / 2) * 1000), "data": {signal_key: ref}}
            if rule.timeout is not None:
                signal["ts"] = int((now - age + min(rule.timeout, age) / 2) * 1000)
            return Plan(source, [signal, cancellation])
        return Plan(Source.UNKNOWN, [self._cancellation(function_id, age, {"ref": ref}, now)])

    def send(self, event: dict[str, Any]) -> None:
        body = json.dumps(event).encode("utf-8")
        headers = {"Content-Type": "application/json"}
        if self._signing_key:
            headers[signature.HEADER] = signature.sign(body, self._signing_key)
        elif self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        response = self._session.post(self._url, data=body, headers=headers, timeout=10)
        if response.status_code >= 300:
            raise RuntimeError(f"{self._url} answered {response.status_code}: {response.text.strip()}")

    def run(self, *, count: int, rate: float) -> Counter[str]:
        """Send `count` cancellations at about `rate` per second; the intended sources, counted."""
        totals: Counter[str] = Counter()
        interval = 1.0 / rate
        next_at = time.monotonic()
        for _ in range(count):
            plan = self.plan(time.time())
            for event in plan.events:
                self.send(event)
            totals[plan.source.value] += 1
            next_at += interval
            time.sleep(max(0.0, next_at - time.monotonic()))
        return totals
