"""Plays the Inngest server against an app's serve endpoint, over real HTTP.

What Inngest does, in the order it does it:
- in-band sync: a signed `PUT` with `X-Inngest-Sync-Kind: in_band` and the body
  `{"url": <the URL it called>}`; the SDK answers, signed, with the app's id and
  function configs (id, triggers, and each step's runtime URL to invoke);
- invocation: a signed `POST` to a function's runtime URL
  (`?fnId=<id>&stepId=step`) with the executor's body (event, events, memoised
  `steps`, `ctx` with run id, attempt and stack). 206 means "these steps ran or
  are planned": their outputs are memoised into `steps` and the function called
  again; a planned step is called by its id. Any other answer is retried with
  the next attempt unless it carries `X-Inngest-No-Retry: true`, as Inngest's
  HTTP driver does (4xx included, without the backoff); 200 or a no-retry
  answer ends the run.
Responses are checked against the SDK's signature (HMAC of the raw body) when it signs them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Callable

import requests
import ulid

from exporter import signature

SYNC_KIND = "X-Inngest-Sync-Kind"
NO_RETRY = "X-Inngest-No-Retry"
MAX_ATTEMPTS = 5
"""Inngest's default: the first attempt and 4 retries."""


class DriverError(AssertionError):
    """The app answered in a way the Inngest server would not accept."""


@dataclass(frozen=True)
class SyncedFunction:
    """A function as the in-band sync registered it."""

    id: str
    triggers: list[str]
    url: str
    """The root step's runtime URL: where Inngest sends invocations."""


@dataclass(frozen=True)
class SyncedApp:
    app_id: str
    functions: list[SyncedFunction]
    body: dict[str, Any]

    def function_for(self, event_name: str) -> SyncedFunction:
        """The one function that `event_name` triggers."""
        matching = [fn for fn in self.functions if event_name in fn.triggers]
        if len(matching) != 1:
            raise DriverError(f"expected one function triggered by {event_name}, found {[fn.id for fn in matching]}")
        return matching[0]


@dataclass
class Invocation:
    """How one run of a function ended: the last response, and how many requests it took."""

    status: int
    body: Any
    headers: requests.structures.CaseInsensitiveDict[str]
    requests: int
    run_id: str

    @property
    def no_retry(self) -> bool:
        return self.headers.get(NO_RETRY) == "true"


@dataclass
class InngestDriver:
    """An Inngest server for one serve endpoint; `signing_key=None` sends unsigned requests."""

    base_url: str
    signing_key: str | None
    path: str = "/api/inngest"
    clock: Callable[[], float] = time.time
    """When requests are signed: shift it to send stale signatures."""
    session: requests.Session = field(default_factory=requests.Session)

    @property
    def url(self) -> str:
        return self.base_url.rstrip("/") + self.path

    def send(self, method: str, url: str, body: Any, headers: dict[str, str] | None = None) -> requests.Response:
        """One request as Inngest sends it: JSON, signed when the driver has a key, server kind cloud."""
        data = json.dumps(body).encode("utf-8")
        sent = {"Content-Type": "application/json", "X-Inngest-Server-Kind": "cloud", **(headers or {})}
        if self.signing_key is not None:
            sent[signature.HEADER] = signature.sign(data, self.signing_key, now=self.clock())
        return self.session.request(method, url, data=data, headers=sent, timeout=30)

    def in_band_sync(self) -> requests.Response:
        """The raw answer to Inngest's in-band sync request."""
        return self.send("PUT", self.url, {"url": self.url}, {SYNC_KIND: "in_band"})

    def sync(self) -> SyncedApp:
        """An in-band sync that must succeed, as Inngest Cloud checks it; DriverError otherwise."""
        response = self.in_band_sync()
        if response.status_code != 200 or response.headers.get(SYNC_KIND) != "in_band":
            raise DriverError(f"in-band sync failed: {response.status_code} {response.text}")
        self._check_signature(response)
        body = response.json()
        functions = [
            SyncedFunction(
                id=config["id"],
                triggers=[trigger["event"] for trigger in config["triggers"] if "event" in trigger],
                url=config["steps"]["step"]["runtime"]["url"],
            )
            for config in body["functions"]
        ]
        if not functions:
            raise DriverError("in-band sync listed no functions")
        return SyncedApp(app_id=body["app_id"], functions=functions, body=body)

    def invoke(self, function: SyncedFunction, event: dict[str, Any], *, max_requests: int = 50) -> Invocation:
        """One new run of `function` for `event`, driven to its end."""
        run_id = str(ulid.ULID())
        steps: dict[str, Any] = {}
        stack: list[str] = []
        attempt = 0
        step_id = "step"
        for count in range(1, max_requests + 1):
            body = execution_request(function.id, event, run_id, step_id=step_id, steps=steps, stack=stack, attempt=attempt)
            response = self.send("POST", _with_step(function.url, step_id), body)
            self._check_signature(response)
            result = Invocation(response.status_code, _json_or_text(response), response.headers, count, run_id)
            if response.status_code == 206:
                step_id = _memoise(result.body, steps, stack)
            elif response.status_code != 200 and should_retry(response) and attempt + 1 < MAX_ATTEMPTS:
                attempt += 1
            else:
                return result
        raise DriverError(f"run {run_id} did not finish in {max_requests} requests")

    def _check_signature(self, response: requests.Response) -> None:
        """A successful answer to a signed request must carry the SDK's signature of its raw body."""
        header = response.headers.get(signature.HEADER)
        if self.signing_key is None or (header is None and not response.ok):
            return
        if header is None:
            raise DriverError(f"{response.status_code} answer to a signed request is not signed")
        timestamp, given = signature.parse_header(header)
        key = re.sub(r"^signkey-\w+-", "", self.signing_key).encode("utf-8")
        expected = hmac.new(key, response.content + str(timestamp).encode("utf-8"), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(given, expected):
            raise DriverError("response signature does not match the signing key")


def should_retry(response: requests.Response) -> bool:
    """Inngest's rule for an app's answer that is not a success: the no-retry header decides, else it is retried.

    Its HTTP driver makes one exception, 4xx answers of old inngest-js versions; for
    the Python SDK and for answers without an SDK header every status is retried.
    """
    header = response.headers.get(NO_RETRY)
    return header != "true" if header else True


def execution_request(
    fn_id: str,
    event: Any,
    run_id: str,
    *,
    step_id: str = "step",
    steps: dict[str, Any] | None = None,
    stack: list[str] | None = None,
    attempt: int = 0,
) -> dict[str, Any]:
    """The executor's body for one call of a function: the event, the memoised steps, the run's context."""
    stack = list(stack or [])
    return {
        "event": event,
        "events": [event],
        "steps": dict(steps or {}),
        "ctx": {
            "fn_id": fn_id,
            "run_id": run_id,
            "step_id": step_id,
            "attempt": attempt,
            "max_attempts": MAX_ATTEMPTS,
            "disable_immediate_execution": False,
            "use_api": False,
            "stack": {"stack": stack, "current": len(stack)},
        },
        "use_api": False,
        "version": 1,
    }


def _with_step(url: str, step_id: str) -> str:
    parts = urllib.parse.urlsplit(url)
    query = dict(urllib.parse.parse_qsl(parts.query))
    query["stepId"] = step_id
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


def _memoise(ops: list[dict[str, Any]], steps: dict[str, Any], stack: list[str]) -> str:
    """Record the steps a 206 reports as run; the step id to call next ("step" unless one was planned)."""
    next_step = "step"
    for op in ops:
        if op["op"] == "StepRun":
            steps[op["id"]] = {"data": op.get("data")}
            stack.append(op["id"])
        elif op["op"] == "StepPlanned":
            next_step = op["id"]
        else:
            raise DriverError(f"the driver does not play opcode {op['op']!r}")
    return next_step


def _json_or_text(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text
