"""Operational endpoints: `/metrics`, `/healthz`, `/readyz`, and JSON errors for everything else."""

from __future__ import annotations

from typing import Callable, Iterable

from flask import Blueprint, Response, current_app, jsonify, request
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.exposition import ALLOWUTF8, UNDERSCORES
from prometheus_client.registry import Collector
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from exporter.core import Exporter
from exporter.sinks.cancellation_series import SeriesFamily

blueprint = Blueprint("endpoints", __name__)
INGRESS_BY_PATH = {"/events": "events", "/api/inngest": "inngest"}
"""The ingresses whose refusals are counted in `events_received`."""


@blueprint.get("/metrics")
def metrics() -> Response:
    exporter: Exporter = current_app.extensions["exporter"]
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    return Response(exposition(exporter.registry, encoder, content_type), content_type=content_type)


def exposition(registry: CollectorRegistry, encoder: Callable[[Collector], bytes], content_type: str) -> bytes:
    """The registry in the negotiated format: the cancellation families written by themselves, the rest by prometheus_client.

    prometheus_client's rendering comes last, so OpenMetrics' `# EOF` ends the whole answer. The
    cancellation families write metric and label names as they are, which is what the
    `underscores` and `allow-utf-8` escapings make of them; for the others (`dots`, `values`)
    prometheus_client renders everything, slowly but right.
    """
    if content_type.partition("escaping=")[2] not in ("", UNDERSCORES, ALLOWUTF8):
        return encoder(registry)
    openmetrics = content_type.startswith("application/openmetrics-text")
    own: list[str] = []
    others: list[Metric] = []
    for family in registry.collect():
        if isinstance(family, SeriesFamily):
            own.append(family.exposition(openmetrics))
        else:
            others.append(family)
    return "".join(own).encode() + encoder(_Families(others))


class _Families:
    """Families already collected, as the collector prometheus_client's encoders take."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families


@blueprint.get("/healthz")
def healthz() -> tuple[Response, int]:
    return jsonify(status="ok"), 200


@blueprint.get("/readyz")
def readyz() -> tuple[Response, int]:
    exporter: Exporter = current_app.extensions["exporter"]
    problems = []
    if not exporter.started:
        problems.append("not started")
    if not exporter.state.writable():
        problems.append(f"state directory {exporter.settings.state_dir} is not writable")
    if problems:
        return jsonify(status="unavailable", problems=problems), 503
    return jsonify(status="ready"), 200


@blueprint.before_app_request
def refuse_bodies_over_the_limit() -> None:
    """413 for any body over the limit, before anything else is said about the request.

    A declared length over the limit is refused at once: answered otherwise (a
    stale signature, a wrong Content-Type), its body would stay unread and the
    connection be closed behind the answer (see `read_unread_body`). A chunked
    body (no Content-Length) is read up to the limit: werkzeug stops there and
    hands the app the first `limit` bytes without an error, which became a 400
    for truncated JSON or a 401 for a MAC that no longer matched.
    """
    limit = current_app.config.get("MAX_CONTENT_LENGTH")
    if limit is None:
        return
    if request.content_length is not None:
        if request.content_length > limit:
            raise RequestEntityTooLarge()
        return
    if request.environ.get("wsgi.input_terminated") and len(request.get_data()) >= limit and request.environ["wsgi.input"].read(1):
        raise RequestEntityTooLarge()


@blueprint.after_app_request
def read_unread_body(response: Response) -> Response:
    """Read what is left of the request body before answering, so the connection can carry the next request.

    Answers given without reading the body (a wrong Content-Type, a stale
    signature, an unknown path) left it on the socket: gunicorn drains at most
    64 KiB of it, then closes the connection it had just announced as
    keep-alive, and the client's next request on it fails. A body over the
    limit (413) is not read: that connection is closed.
    """
    try:
        request.get_data(cache=False)
    except RequestEntityTooLarge:
        pass
    return response


@blueprint.app_errorhandler(HTTPException)
def http_error(err: HTTPException) -> tuple[Response, int]:
    """Every HTTP error as JSON with a message a client can act on."""
    status = err.code or 500
    message = err.description or err.name
    if status == 413:
        limit = current_app.config.get("MAX_CONTENT_LENGTH")
        message = f"body is larger than the limit of {limit} bytes"
        ingress = INGRESS_BY_PATH.get(request.path)
        if ingress is not None:
            exporter: Exporter = current_app.extensions["exporter"]
            exporter.health.count_received(ingress, "too_large")
    return jsonify(error=message), status
