"""Operational endpoints: `/metrics`, `/healthz`, `/readyz`, and JSON errors for everything else."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from exporter.core_api import Core
from exporter.refusals import RefusalLog, sdk_refusal
from exporter.state import StateUnavailable

blueprint = Blueprint("endpoints", __name__)
INGRESS_BY_PATH = {"/events": "events", "/api/inngest": "inngest"}
"""The ingresses whose refusals are counted in `events_received`, and told in the log."""
REFUSALS = "refusals"
"""The app's `RefusalLog`, in `app.extensions` (`create_app` puts it there)."""


@blueprint.get("/metrics")
def metrics() -> Response:
    exporter: Core = current_app.extensions["exporter"]
    body, content_type = exporter.render_metrics(request.headers.get("Accept", ""))
    return Response(body, content_type=content_type)


@blueprint.get("/healthz")
def healthz() -> tuple[Response, int]:
    return jsonify(status="ok"), 200


@blueprint.get("/readyz")
def readyz() -> tuple[Response, int]:
    exporter: Core = current_app.extensions["exporter"]
    problems = exporter.problems()
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


@blueprint.after_app_request
def log_refusals(response: Response) -> Response:
    """Tell every 4xx of an ingress, ours and the Inngest SDK's alike, with the reason its body gives."""
    if 400 <= response.status_code < 500 and request.path in INGRESS_BY_PATH and not response.is_streamed:
        body = response.get_json(silent=True)
        reason = sdk_refusal() or (body.get("error") or body.get("message") if isinstance(body, dict) else None)
        text = str(reason) if reason else response.get_data(as_text=True)[:200] or "no reason given"
        refusals: RefusalLog = current_app.extensions[REFUSALS]
        refusals.refused(request.path, response.status_code, text)
    return response


@blueprint.app_errorhandler(StateUnavailable)
def unavailable(err: StateUnavailable) -> tuple[Response, int]:
    """503 when the core cannot answer (its state cannot be written, or its process is gone): a scraper or probe retries."""
    return retry_later(str(err) or "the exporter's state is unavailable; retry later")


def retry_later(message: str) -> tuple[Response, int]:
    """503 with `message` and a Retry-After: nothing was done, and the same request may succeed in a few seconds."""
    response = jsonify(error=message)
    response.headers["Retry-After"] = "5"
    return response, 503


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
            exporter: Core = current_app.extensions["exporter"]
            exporter.count_received(ingress, "too_large")
    return jsonify(error=message), status
