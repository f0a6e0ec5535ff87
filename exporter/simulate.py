"""`simulate`: realistic, correctly signed cancellation traffic, so a newcomer can watch metrics move.

For each function of the config it plays the cancellations its evidence can
explain: cancel signals that satisfy a `cancel_on` rule (sent first, as Inngest
would see them), newer triggers of a singleton in `cancel` mode with the running
run's key, runs that hit their start or finish timeout, bulk cancellations, runs
cancelled by hand (`manual`, by elimination), and runs of a function the config
does not describe (`unknown`). Bulk cancellations, and when each timed-out run
started, are told by a small stand-in for Inngest's REST API, which the exporter
asks when `INNGEST_API_BASE_URL` points at it; without it no run is planned to
time out (the exporter could not tell).
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

import requests
import ulid

from exporter import signature
from exporter.config import CancelOn, Config, FunctionConfig
from exporter.parsing import CANCELLED
from exporter.records import Source

_EQUALITY = re.compile(r"^\s*async\.data\.(\w+)\s*==\s*event\.data\.(\w+)\s*$")
_TRIGGER_FIELD = re.compile(r"^\s*event\.data\.(\w+)\s*$")
_RUN_PATH = re.compile(r"/v2/runs/(?P<run_id>[0-9A-Z]{26})(?P<trace>/trace)?")
UNDESCRIBED_FUNCTION = "legacy-app-nightly-cleanup"
"""A function the config does not describe: nothing can explain its cancellations."""


@dataclass(frozen=True)
class TimedOut:
    """A run that timed out, as the stand-in API tells it (epoch seconds)."""

    run_id: str
    scheduled: float
    started: float | None
    """None: it never started."""


@dataclass
class Plan:
    """One simulated cancellation: the bulk windows to publish, the events to send, the source they should yield."""

    source: Source
    events: list[dict[str, Any]]
    windows: list[dict[str, Any]] = field(default_factory=list)
    timed_out: TimedOut | None = None


def _signal_fields(rule: CancelOn) -> tuple[str, str] | None:
    """(signal key, trigger key) that make the rule's expression hold, when it is a simple equality."""
    if rule.if_ is None:
        return ("ref", "ref")
    match = _EQUALITY.match(rule.if_)
    return (match.group(1), match.group(2)) if match else None


def _singleton_fields(fn: FunctionConfig) -> tuple[str, str | None] | None:
    """(a trigger that always starts a run, the trigger field holding the singleton key, None without a key) of a
    singleton in `cancel` mode, when its key is a plain field; None when simulate cannot play its cancellations."""
    trigger = next((t.event for t in fn.event_triggers if t.if_ is None), None) if fn.cancels_singleton else None
    if trigger is None or fn.singleton is None:
        return None
    if fn.singleton.key is None:
        return trigger, None
    match = _TRIGGER_FIELD.match(fn.singleton.key)
    return (trigger, match.group(1)) if match else None


def _iso(epoch_s: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch_s)) + f".{int(epoch_s * 1000) % 1000:03d}Z"


class StandInApi:
    """A stand-in for Inngest's REST API: `GET /v1/cancellations` serves the bulk windows the simulation created,
    `GET /v2/runs/{id}` (and its `/trace`) when each of its timed-out runs started."""

    def __init__(self, port: int) -> None:
        self.windows: list[dict[str, Any]] = []
        self._runs: dict[str, dict[str, Any]] = {}
        self._unasked: set[str] = set()
        lock = threading.Lock()
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with lock:
                    body = api._answer(self.path.split("?")[0])
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: the exporter's metrics show the polls."""

        self._lock = lock
        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        threading.Thread(target=self._httpd.serve_forever, name="simulated-inngest-api", daemon=True).start()

    def _answer(self, path: str) -> bytes | None:
        """The JSON answer to `GET path`; None for a path or a run it does not know. With the lock held."""
        if path == "/v1/cancellations":
            return json.dumps({"data": self.windows}).encode()
        match = _RUN_PATH.fullmatch(path)
        run = None if match is None else self._runs.get(match["run_id"])
        if match is None or run is None:
            return None
        self._unasked.discard(match["run_id"])
        if match["trace"]:
            root = {field: value for field, value in run.items() if field in ("queuedAt", "startedAt", "endedAt", "status")}
            return json.dumps({"data": {"rootSpan": root, "runId": match["run_id"]}}).encode()
        return json.dumps({"data": run}).encode()

    def publish(self, windows: list[dict[str, Any]]) -> None:
        with self._lock:
            self.windows.extend(windows)

    def tell_run(self, run: TimedOut, *, ended: float) -> None:
        """Answer for a run cancelled at `ended` (epoch seconds) from now on."""
        answer = {"id": run.run_id, "status": "CANCELLED", "queuedAt": _iso(run.scheduled), "endedAt": _iso(ended)}
        if run.started is not None:
            answer["startedAt"] = _iso(run.started)
        with self._lock:
            self._runs[run.run_id] = answer
            self._unasked.add(run.run_id)

    def unasked(self) -> int:
        """How many of the runs told so far the exporter has not asked about yet."""
        with self._lock:
            return len(self._unasked)

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


class Simulator:
    """Plans and sends simulated traffic to a running exporter's `POST /events`."""

    def __init__(
        self,
        url: str,
        config: Config,
        *,
        signing_key: str | None,
        token: str | None,
        seed: int | None,
        api: StandInApi | None = None,
    ) -> None:
        if not config.functions:
            raise ValueError("the config declares no functions to simulate")
        self._url = url.rstrip("/") + "/events"
        self._config = config
        self._signing_key = signing_key
        self._token = token
        self._random = random.Random(seed)
        self._session = requests.Session()
        self._api = api
        polled = config.bulk_cancellations is not None and config.bulk_cancellations.polled
        self._bulk = polled and api is not None

    def _cancellation(self, function_id: str, age: float, trigger_data: dict[str, Any], now: float) -> dict[str, Any]:
        scheduled = now - age
        fn = self._config.functions.get(function_id)
        declared = fn.event_triggers if fn is not None else []
        trigger = {
            "name": declared[0].event if declared else f"{function_id.split('-')[0]}/run.requested",
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

    def _quiet_age(self, fn: FunctionConfig) -> float:
        """An age no timeout explains: below the finish timeout, away from the start timeout."""
        ceiling = min(x for x in (fn.timeouts.finish, fn.timeouts.start, 3600.0) if x) * 0.8
        age = self._random.uniform(min(2.0, ceiling / 2), ceiling)
        if fn.timeouts.start and abs(age - fn.timeouts.start) < 10:
            age = fn.timeouts.start + 10
        return age

    def _trigger_data(self, fn: FunctionConfig, ref: str) -> dict[str, Any]:
        """Trigger data carrying every key the function's `cancel_on` expressions and singleton key read, as real triggers do."""
        keys = {fields[1] for rule in fn.cancel_on if (fields := _signal_fields(rule)) is not None}
        singleton = _singleton_fields(fn)
        if singleton is not None and singleton[1] is not None:
            keys.add(singleton[1])
        return {"ref": ref, **{key: str(ulid.ULID()) for key in keys}}

    def plan(self, now: float) -> Plan:
        """A random cancellation of a random function, with the evidence for its source."""
        function_id = self._random.choice([*sorted(self._config.functions), UNDESCRIBED_FUNCTION])
        ref = str(ulid.ULID())
        if function_id == UNDESCRIBED_FUNCTION:
            return Plan(Source.UNKNOWN, [self._cancellation(function_id, self._random.uniform(5, 600), {"ref": ref}, now)])
        fn = self._config.functions[function_id]
        usable_rules = [rule for rule in fn.cancel_on if _signal_fields(rule) is not None]
        singleton = _singleton_fields(fn)
        choices = [Source.MANUAL if self._bulk else Source.UNKNOWN]
        if (fn.timeouts.finish or fn.timeouts.start) and self._api is not None:
            choices += [Source.TIMEOUT] * 2
        if usable_rules:
            choices += [Source.EVENT] * 3
        if singleton is not None:
            choices += [Source.SINGLETON] * 3
        if self._bulk:
            choices += [Source.BULK] * 2
        source = self._random.choice(choices)
        if source is Source.TIMEOUT:
            # a finish timeout, counted from a start a moment after scheduling; else the start timeout of a run that never started
            age = (fn.timeouts.finish or fn.timeouts.start or 0.0) + self._random.uniform(0, 0.5)
            cancellation = self._cancellation(function_id, age, self._trigger_data(fn, ref), now)
            run = TimedOut(cancellation["data"]["run_id"], now - age, now - age + 0.05 if fn.timeouts.finish else None)
            return Plan(source, [cancellation], timed_out=run)
        age = self._quiet_age(fn)
        if source is Source.EVENT:
            rule = self._random.choice(usable_rules)
            fields = _signal_fields(rule)
            assert fields is not None
            signal_key, trigger_key = fields
            within = min(rule.timeout, age) if rule.timeout is not None else age
            received = now - age + within / 2  # after the run was scheduled, within the rule's timeout
            signal = {
                "name": rule.event,
                "id": str(ulid.ULID.from_timestamp(received)),  # the id Inngest makes on receipt
                "ts": int(received * 1000),
                "data": {signal_key: ref},
            }
            data = {**self._trigger_data(fn, ref), trigger_key: ref}
            return Plan(source, [signal, self._cancellation(function_id, age, data, now)])
        if source is Source.SINGLETON:
            assert singleton is not None
            trigger_name, key_field = singleton
            data = {**self._trigger_data(fn, ref), **({key_field: ref} if key_field else {})}
            received = now - age / 2  # a newer run of the same key, started half-way through this one
            newer = {"name": trigger_name, "id": str(ulid.ULID.from_timestamp(received)), "ts": int(received * 1000), "data": data}
            return Plan(source, [newer, self._cancellation(function_id, age, data, now)])
        cancellation = self._cancellation(function_id, age, self._trigger_data(fn, ref), now)
        if source is Source.BULK:
            scheduled = now - age
            window = {
                # created a second before the cancellation it causes: its id's ULID time says so
                "id": str(ulid.ULID.from_timestamp(now - 1)),
                "function_id": function_id,
                "started_after": _iso(scheduled - 1),
                "started_before": _iso(scheduled + 1),
                "if": f"event.data.ref == '{ref}'",
            }
            return Plan(source, [cancellation], [window])
        return Plan(source, [cancellation])

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

    def run(self, *, count: int, rate: float, progress: Callable[[Counter[str]], None] | None = None) -> Counter[str]:
        """Send `count` cancellations at about `rate` per second; the intended sources, counted.

        `progress` is told the counts so far after each cancellation."""
        totals: Counter[str] = Counter()
        interval = 1.0 / rate
        next_at = time.monotonic()
        for _ in range(count):
            now = time.time()
            plan = self.plan(now)
            if self._api is not None:
                if plan.windows:
                    self._api.publish(plan.windows)
                if plan.timed_out is not None:
                    self._api.tell_run(plan.timed_out, ended=now)
            for event in plan.events:
                self.send(event)
            totals[plan.source.value] += 1
            if progress is not None:
                progress(totals)
            next_at += interval
            time.sleep(max(0.0, next_at - time.monotonic()))
        return totals
