"""Shared pieces of the local HTTP servers the tests stand up in place of Datadog and a collector."""

from __future__ import annotations

from http.server import BaseHTTPRequestHandler
from typing import Any, Mapping


class QuietHandler(BaseHTTPRequestHandler):
    """A request handler that writes answers safely and logs nothing: what it records is the evidence."""

    def answer(self, status: int, body: bytes, content_type: str, headers: Mapping[str, str] = {}) -> None:
        """Send a complete answer; a client that already gave up waiting is not an error."""
        try:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""
