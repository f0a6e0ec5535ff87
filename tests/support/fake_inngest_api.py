"""A local stand-in for Inngest's REST API: `GET /v1/cancellations`, the bulk cancellation list.

Tests point the real poller at it, so what is checked is what goes over the wire
(path, query, the exact `Authorization` header) and how the poller copes with the
answers Inngest may give. By default it answers as Inngest's server v1.43 does
(pkg/api/apiv1: `{"data": [...], "metadata": {...}}`, `"data": null` for an empty
list; items as `cqrs.Cancellation` writes them, see `server_item`); it can also
answer a bare array, pages chained by a cursor, a refused key, the 500 of a server
that has no bulk cancellation (self-hosted, dev), another server error, a hang, or
a body that is not the list at all.
"""

from __future__ import annotations

import enum
import json
import time
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import ulid

from tests.support.http import QuietHandler
from tests.support.recording_server import RecordedRequest, RecordingServer

LIST_PATH = "/v1/cancellations"
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


class FakeInngestApi(RecordingServer):
    """An HTTP server on 127.0.0.1 (a free port) in a thread, accepting `Bearer <key>` for `keys`; a context manager.

    Set `cancellations` (the items), `shape` ("data", the server's, or "array"), `page_size`
    (pages chained by a cursor at `cursor_place`, always in the "data" shape) and `mode`.
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

    def _answer(self, request: RecordedRequest) -> tuple[int, Any] | None:
        """The status and JSON body (or, for NOT_JSON, text; bytes as they are) for `request`; None after a hang."""
        if urlsplit(request.path).path != LIST_PATH:
            return 404, {"error": "not found"}
        if request.headers["Authorization"] not in {f"Bearer {key}" for key in self.keys}:
            return 401, {"error": "unauthorized"}
        if self.mode is Mode.HANG:
            self._closing.wait()
            return None
        errors = {Mode.NOT_OFFERED: NOT_OFFERED_BODY, Mode.NOT_OFFERED_EMPTY: b"", Mode.ERROR: OTHER_ERROR_BODY}
        if self.mode in errors:
            return 500, errors[self.mode]
        if self.mode is Mode.NOT_JSON:
            return 200, "<html><body>502 Bad Gateway</body></html>"
        if self.mode is Mode.WRONG_SHAPE:
            return 200, {"cancellations": self.cancellations}
        return 200, self._list(query(request).get("cursor"))

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
