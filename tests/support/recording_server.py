"""A local stand-in for Datadog's API: records every request and answers as scripted.

Tests point the real `datadog-api-client` at it, so what is checked is what would go
over the wire: method, path, headers and JSON body, and how the sender reacts to
Datadog's answers (accepted, 5xx, 429 with a reset header, or no answer at all).
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from dataclasses import dataclass, field
from email.message import Message
from http.server import ThreadingHTTPServer
from typing import Any

from tests.support.http import QuietHandler


@dataclass(frozen=True)
class Reply:
    """One scripted answer; `delay` seconds of silence first (a hang, when longer than the client's timeout)."""

    status: int = 202
    headers: dict[str, str] = field(default_factory=dict)
    body: dict[str, Any] | None = None
    delay: float = 0.0


def accepted() -> Reply:
    """Datadog's answer to a good event: 202 with the event echoed back (the body is built per request)."""
    return Reply(202)


def server_error() -> Reply:
    return Reply(500, body={"errors": ["Internal Server Error"]})


def rate_limited(reset_seconds: float) -> Reply:
    return Reply(429, headers={"X-RateLimit-Reset": str(reset_seconds)}, body={"errors": ["Rate limit exceeded"]})


def bad_request() -> Reply:
    return Reply(400, body={"errors": ["Event too old"]})


def forbidden() -> Reply:
    """Datadog's answer to a wrong or revoked API key."""
    return Reply(403, body={"errors": ["Forbidden"]})


def hang(seconds: float) -> Reply:
    """No answer for `seconds`, then an acceptance that the timed-out client never reads."""
    return Reply(202, delay=seconds)


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: Message
    """Case-insensitive, as HTTP headers are: `headers["DD-API-KEY"]`."""
    json: Any
    at: float
    """`time.monotonic()` when the request arrived."""


class RecordingServer:
    """An HTTP server on 127.0.0.1 (a free port) in a thread; use as a context manager."""

    def __init__(self, *, keep_requests: bool = True) -> None:
        self.requests: list[RecordedRequest] = []
        self.acknowledged: list[RecordedRequest] = []
        """Requests answered 2xx at once: deliveries the client certainly saw succeed."""
        self.received = 0
        """Requests received, also when `keep_requests` is False (under load, the benchmark keeps only counts)."""
        self._keep = keep_requests
        self._script: list[Reply] = []
        self._outage_until = 0.0
        self._changed = threading.Condition()
        self._closing = threading.Event()
        self._ids = itertools.count(1)
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="recording-server", daemon=True
        )

    def __enter__(self) -> "RecordingServer":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closing.set()  # cut any hang short
        self._httpd.shutdown()
        self._httpd.server_close()

    def script(self, *replies: Reply) -> None:
        """Answer the next requests with `replies`, in order; after them, `accepted()`."""
        with self._changed:
            self._script.extend(replies)

    def outage(self, seconds: float) -> None:
        """Answer every request with a server error for the next `seconds`, whatever the script says."""
        with self._changed:
            self._outage_until = time.monotonic() + seconds

    def clear_script(self) -> None:
        """Forget the replies not used yet: from now on, `accepted()`."""
        with self._changed:
            self._script.clear()

    def wait_for(self, count: int, timeout: float = 10.0) -> list[RecordedRequest]:
        """The first `count` requests, waiting for them to arrive; AssertionError after `timeout`."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.requests) >= count, timeout):
                raise AssertionError(f"expected {count} requests, got {len(self.requests)}")
            return self.requests[:count]

    def _record(self, request: RecordedRequest) -> Reply:
        with self._changed:
            self.received += 1
            if self._keep:
                self.requests.append(request)
            self._changed.notify_all()
            if time.monotonic() < self._outage_until:
                return server_error()
            return self._script.pop(0) if self._script else accepted()

    def _answer_body(self, reply: Reply, request: RecordedRequest) -> dict[str, Any]:
        if reply.body is not None:
            return reply.body
        event_id = next(self._ids)
        return {
            "status": "ok",
            "event": {
                **(request.json or {}),
                "id": event_id,
                "id_str": str(event_id),
                "url": f"https://app.datadoghq.com/event/event?id={event_id}",
            },
        }

    def _handler_class(self) -> type[QuietHandler]:
        server = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                request = RecordedRequest(
                    self.command, self.path, self.headers, json.loads(raw) if raw else None, time.monotonic()
                )
                reply = server._record(request)
                if server._closing.wait(reply.delay):
                    return
                body = json.dumps(server._answer_body(reply, request)).encode()
                if 200 <= reply.status < 300 and not reply.delay and server._keep:
                    with server._changed:
                        server.acknowledged.append(request)
                        server._changed.notify_all()
                self.answer(reply.status, body, "application/json", reply.headers)

        return Handler
