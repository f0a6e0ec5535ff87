"""A local stand-in for Inngest's REST API: `GET /v1/cancellations`, the bulk cancellation list.

Tests point the real poller at it, so what is checked is what goes over the wire
(path, query, the exact `Authorization` header) and how the poller copes with the
answers Inngest may give: either list shape, pages chained by a cursor, a refused
key, a server error, a hang, or a body that is not the list at all.
"""

from __future__ import annotations

import enum
import json
import time
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from tests.support.http import QuietHandler
from tests.support.recording_server import RecordedRequest, RecordingServer

LIST_PATH = "/v1/cancellations"
CURSOR_PLACES = ("cursor", "next_cursor", "metadata.cursor", "metadata.next_cursor")
"""Where a paginated answer may carry the next page's cursor."""


class Mode(enum.Enum):
    LIST = "list"
    """Answer with the list, as `shape` and `page_size` say."""
    ERROR = "error"
    """500 with a JSON error."""
    HANG = "hang"
    """No answer until the server is closed."""
    NOT_JSON = "not_json"
    """200 with an HTML page, as a proxy in the way might answer."""
    WRONG_SHAPE = "wrong_shape"
    """200 with JSON that is neither an array nor an object with a `data` array."""


def query(request: RecordedRequest) -> dict[str, str]:
    """A recorded request's query parameters."""
    return dict(parse_qsl(urlsplit(request.path).query))


class FakeInngestApi(RecordingServer):
    """An HTTP server on 127.0.0.1 (a free port) in a thread, accepting `Bearer <key>` for `keys`; a context manager.

    Set `cancellations` (the items), `shape` ("array" or "data"), `page_size` (pages
    chained by a cursor at `cursor_place`, always in the "data" shape) and `mode`.
    Requests are recorded, and awaited, as by the Datadog stand-in it extends.
    """

    def __init__(self, *keys: str) -> None:
        super().__init__()
        self.keys = set(keys)
        self.cancellations: list[Any] = []
        self.shape = "array"
        self.page_size: int | None = None
        self.cursor_place = "cursor"
        self.mode = Mode.LIST

    def _answer(self, request: RecordedRequest) -> tuple[int, Any] | None:
        """The status and JSON body (or, for NOT_JSON, text) for `request`; None after a hang."""
        if urlsplit(request.path).path != LIST_PATH:
            return 404, {"error": "not found"}
        if request.headers["Authorization"] not in {f"Bearer {key}" for key in self.keys}:
            return 401, {"error": "unauthorized"}
        if self.mode is Mode.HANG:
            self._closing.wait()
            return None
        if self.mode is Mode.ERROR:
            return 500, {"error": "internal server error"}
        if self.mode is Mode.NOT_JSON:
            return 200, "<html><body>502 Bad Gateway</body></html>"
        if self.mode is Mode.WRONG_SHAPE:
            return 200, {"cancellations": self.cancellations}
        return 200, self._list(query(request).get("cursor"))

    def _list(self, cursor: str | None) -> Any:
        metadata = {"fetched_at": "2024-01-22T14:30:00Z", "cached_until": None}
        if self.page_size is None:
            return self.cancellations if self.shape == "array" else {"data": self.cancellations, "metadata": metadata}
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
                if isinstance(body, str):
                    self.answer(status, body.encode(), "text/html")
                else:
                    self.answer(status, json.dumps(body).encode(), "application/json")

        return Handler
