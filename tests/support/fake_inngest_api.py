"""A local stand-in for Inngest's REST API: the bulk cancellation list (`GET /v1/cancellations`) and runs
(`GET /v2/runs/{id}`, `GET /v2/runs/{id}/trace`).

Tests point the real poller and the real run lookups at it, so what is checked is
what goes over the wire (path, query, the exact `Authorization` header) and how they
cope with the answers Inngest may give. By default it answers as Inngest's server
v1.43 does (pkg/api/apiv1: `{"data": [...], "metadata": {...}}`, `"data": null` for
an empty list; items as `cqrs.Cancellation` writes them, see `server_item`); it can
also answer a bare array, pages chained by a cursor, a refused key, the 500 of a
server that has no bulk cancellation (self-hosted, dev), another server error, a
hang, or a body that is not the list at all. Runs are answered as v1.43 answers
them too (see `RunRecord`), or in the other shapes API v2's schema allows
(`RunShape`), and `runs_mode` makes their answers fail the same ways.
"""

from __future__ import annotations

import enum
import json
import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit

import ulid

from tests.support.http import QuietHandler
from tests.support.recording_server import RecordedRequest, RecordingServer

LIST_PATH = "/v1/cancellations"
RUN_PATH = re.compile(r"/v2/runs/(?P<run_id>[^/]+)(?P<trace>/trace)?")
CURSOR_PLACES = ("cursor", "next_cursor", "metadata.cursor", "metadata.next_cursor")
"""Where a paginated answer may carry the next page's cursor (the server itself sends none)."""
APP_UUID = "4b7f5c1e-8d2a-4f3b-9c6e-1a2b3c4d5e6f"
"""The `app_id` the server writes: the app's UUID, not the id the SDK gives it."""
NOT_OFFERED_BODY = {"error": "Error listing cancellations", "data": None, "status": 500}
"""publicerr.WriteHTTP's body for `GetCancellations` failing to read the list."""
OTHER_ERROR_BODY = {"error": "Something went wrong.  Please try again", "data": None, "status": 500}
"""publicerr's default 500: nothing in it says that the list is not offered."""


class Mode(enum.Enum):
    LIST = "list"
    """Answer with the list, as `shape` and `page_size` say."""
    NOT_OFFERED = "not_offered"
    """500 with NOT_OFFERED_BODY, as a server with no backend for the list answers."""
    NOT_OFFERED_EMPTY = "not_offered_empty"
    """500 with no body, as `inngest dev` v1.43 answers (seen on the built server; `inngest start` runs the same
    code): it has no store for the list, the handler panics, and chi's Recoverer answers so."""
    ERROR = "error"
    """500 with OTHER_ERROR_BODY."""
    HANG = "hang"
    """No answer until the server is closed."""
    NOT_JSON = "not_json"
    """200 with an HTML page, as a proxy in the way might answer."""
    WRONG_SHAPE = "wrong_shape"
    """200 with JSON that is neither an array nor an object with a `data` array."""
    RATE_LIMITED = "rate_limited"
    """429, as a server past its API rate limit answers."""


def query(request: RecordedRequest) -> dict[str, str]:
    """A recorded request's query parameters."""
    return dict(parse_qsl(urlsplit(request.path).query))


def go_time(ms: int, nanos: int = 0) -> str:
    """An instant as Go's `time.Time` writes it in JSON (RFC 3339 with up to nine fraction digits, trailing zeros cut)."""
    moment = datetime.fromtimestamp(ms // 1000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    fraction = f"{(ms % 1000) * 1_000_000 + nanos:09d}".rstrip("0")
    return f"{moment}.{fraction}Z" if fraction else f"{moment}Z"


def server_item(
    ident: str,
    function_slug: str,
    *,
    started_before_ms: int,
    started_after_ms: int | None = None,
    expression: str | None = None,
    kind: str = "bulk_run",
    cause: str = "API",
    target_id: str | None = None,
) -> dict[str, Any]:
    """A listed cancellation as Inngest's server writes it (`cqrs.Cancellation`'s JSON tags).

    `function_id` is the full slug and `app_id` the app's UUID; `created_at` is the
    ULID `ident`'s time; `started_after` is null when the cancellation has no lower bound; `if` and `target_id` are left out when
    empty (`omitempty`); times carry nanoseconds, as `time.Now()` gives them.
    """
    try:
        created_ms = ulid.ULID.from_str(ident).milliseconds
    except ValueError:  # a test's readable id: no creation time of its own
        created_ms = started_before_ms
    item: dict[str, Any] = {
        "created_at": go_time(created_ms, 123_456),
        "name": None,
        "id": ident,
        "account_id": "0f6d2b4e-3c1a-4e5f-8a7b-9c0d1e2f3a4b",
        "environment_id": "e03843e1-d2df-419e-9b7b-678b03f7398f",
        "app_id": APP_UUID,
        "function_internal_id": "7a8b9c0d-1e2f-4a3b-8c5d-6e7f8a9b0c1d",
        "function_id": function_slug,
        "started_after": None if started_after_ms is None else go_time(started_after_ms, 789),
        "started_before": go_time(started_before_ms, 999_999),
        "kind": kind,
        "cause": cause,
        "queue_name": None,
    }
    if expression is not None:
        item["if"] = expression
    if target_id is not None:
        item["target_id"] = target_id
    return item


RunShape = Literal["server", "omitted", "zero", "bare"]
"""How a run that never started is told: as the self-hosted and dev servers v1.43 do (`startedAt` is when its
trace began, and only the trace says it never started); with `startedAt` left out, as API v2's schema allows (it
is optional); as Go's zero time; or as the server does but with no `data` object around the answers."""


@dataclass(frozen=True)
class RunRecord:
    """A run as the stand-in's API v2 tells it."""

    scheduled_ms: int
    """`queuedAt`: the run id's time."""
    started_ms: int | None
    """When its first step's first attempt began; None: it never started."""
    ended_ms: int | None = None
    """When it ended; None: still queued or running (`status` says so)."""
    status: str = "CANCELLED"

    def summary(self, run_id: str, shape: RunShape) -> dict[str, Any]:
        """`GET /v2/runs/{id}`'s object (apiv2.FunctionRun as protojson writes it: camelCase, empty fields left out)."""
        run: dict[str, Any] = {
            "app": {"id": "e2e-shop"}, "function": {"id": "fn", "name": "fn"}, "id": run_id,
            "queuedAt": go_time(self.scheduled_ms), "status": self.status, "trigger": {"eventIds": [run_id]},
        }
        started = self._started(shape)
        if started is not None:
            run["startedAt"] = started
        if self.ended_ms is not None:
            run["endedAt"] = go_time(self.ended_ms)
        return run

    def _started(self, shape: RunShape) -> str | None:
        if self.started_ms is not None:
            return go_time(self.started_ms)
        if shape == "omitted":
            return None
        if shape == "zero":
            return "0001-01-01T00:00:00Z"
        return go_time(self.scheduled_ms + 3, 40_982)  # the trace's own start: just after scheduling, nanoseconds

    def trace(self, run_id: str) -> dict[str, Any]:
        """`GET /v2/runs/{id}/trace`'s object: the root span has `startedAt` only once the run started."""
        root: dict[str, Any] = {"id": "6a48f39f1e165658", "name": "Run", "queuedAt": go_time(self.scheduled_ms), "status": self.status}
        if self.started_ms is not None:
            root["startedAt"] = go_time(self.started_ms)
            root["children"] = [{"id": "e35347d82e6045cd", "name": "step", "queuedAt": go_time(self.started_ms), "startedAt": go_time(self.started_ms)}]
        if self.ended_ms is not None:
            root["endedAt"] = go_time(self.ended_ms)
        return {"rootSpan": root, "runId": run_id}


class FakeInngestApi(RecordingServer):
    """An HTTP server on 127.0.0.1 (a free port) in a thread, accepting `Bearer <key>` for `keys`; a context manager.

    Set `cancellations` (the items), `shape` ("data", the server's, or "array"), `page_size`
    (pages chained by a cursor at `cursor_place`, always in the "data" shape) and `mode`;
    `runs` (by run id; others are not found), `run_shape` and `runs_mode` for API v2's runs.
    Requests are recorded, and awaited, as by the Datadog stand-in it extends.
    """

    def __init__(self, *keys: str) -> None:
        super().__init__()
        self.keys = set(keys)
        self.cancellations: list[Any] = []
        self.shape = "data"
        self.page_size: int | None = None
        self.cursor_place = "cursor"
        self.mode = Mode.LIST
        self.runs: dict[str, RunRecord] = {}
        self.run_shape: RunShape = "server"
        self.runs_mode = Mode.LIST

    def _answer(self, request: RecordedRequest) -> tuple[int, Any] | None:
        """The status and JSON body (or, for NOT_JSON, text; bytes as they are) for `request`; None after a hang."""
        path = urlsplit(request.path).path
        run = RUN_PATH.fullmatch(path)
        if path != LIST_PATH and run is None:
            return 404, {"error": "not found"}
        if request.headers["Authorization"] not in {f"Bearer {key}" for key in self.keys}:
            return 401, {"error": "unauthorized"}
        mode = self.mode if run is None else self.runs_mode
        if mode is Mode.HANG:
            self._closing.wait()
            return None
        errors = {
            Mode.NOT_OFFERED: (500, NOT_OFFERED_BODY), Mode.NOT_OFFERED_EMPTY: (500, b""), Mode.ERROR: (500, OTHER_ERROR_BODY),
            Mode.RATE_LIMITED: (429, {"errors": [{"code": "rate_limited", "message": "API rate limit exceeded"}]}),
            Mode.NOT_JSON: (200, "<html><body>502 Bad Gateway</body></html>"),
        }
        if mode in errors:
            return errors[mode]
        if run is not None:
            return self._run(run["run_id"], trace=run["trace"] is not None)
        if mode is Mode.WRONG_SHAPE:
            return 200, {"cancellations": self.cancellations}
        return 200, self._list(query(request).get("cursor"))

    def _run(self, run_id: str, *, trace: bool) -> tuple[int, Any]:
        """API v2's answer about one run: its summary, or its trace."""
        try:
            ulid.ULID.from_str(run_id)
        except ValueError:
            return 400, {"errors": [{"code": "invalid_field_format", "message": "Run ID must be a valid ULID"}]}
        record = self.runs.get(run_id)
        if record is None:
            return 404, {"errors": [{"code": "not_found", "message": "Trace not found" if trace else "Run not found"}]}
        body = record.trace(run_id) if trace else record.summary(run_id, self.run_shape)
        if self.run_shape == "bare":
            return 200, body
        return 200, {"data": body, "metadata": {"fetchedAt": go_time(int(time.time() * 1000), 170)}}

    def _list(self, cursor: str | None) -> Any:
        metadata = {"fetched_at": go_time(int(time.time() * 1000), 42), "cached_until": None}
        if self.page_size is None:
            # Go writes an empty (nil) slice as null
            return self.cancellations if self.shape == "array" else {"data": self.cancellations or None, "metadata": metadata}
        start = int(cursor.removeprefix("page-")) if cursor else 0
        end = start + self.page_size
        body: dict[str, Any] = {"data": self.cancellations[start:end], "metadata": metadata}
        if end < len(self.cancellations):
            *parents, key = self.cursor_place.split(".")
            (body[parents[0]] if parents else body)[key] = f"page-{end}"
        return body

    def _handler_class(self) -> type[QuietHandler]:
        api = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                request = RecordedRequest(self.command, self.path, self.headers, None, time.monotonic())
                api._record(request)  # the Datadog script it returns does not apply here
                answer = api._answer(request)
                if answer is None:
                    return
                status, body = answer
                if isinstance(body, bytes):
                    self.answer(status, body, "application/json", {"X-Inngest-Server-Kind": "dev"})
                elif isinstance(body, str):
                    self.answer(status, body.encode(), "text/html")
                else:
                    self.answer(status, json.dumps(body).encode(), "application/json")

        return Handler
