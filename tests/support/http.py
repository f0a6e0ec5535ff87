"""Shared pieces of the local HTTP servers the tests stand up in place of Datadog and a collector, or for apps."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler
from typing import Any, Mapping

from flask import Flask
from werkzeug.serving import BaseWSGIServer, make_server


def serve_in_thread(app: Flask, port: int, name: str) -> tuple[BaseWSGIServer, threading.Thread]:
    """`app` on werkzeug's threaded server on 127.0.0.1:`port`, already serving from a daemon thread called `name`."""
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name=name, daemon=True)
    thread.start()
    return server, thread


class QuietHandler(BaseHTTPRequestHandler):
    """A request handler that writes answers safely and logs nothing: what it records is the evidence.

    HTTP/1.1 with keep-alive, as Datadog, collectors and Inngest answer: a client that reuses its
    connections does so here too, and pays for a new connection only when it would for real.
    """

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    """The head and the body go out in two writes: without this the body waits for the delayed ACK (40 ms)."""

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
