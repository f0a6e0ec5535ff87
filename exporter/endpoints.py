"""Operational endpoints: `/metrics`, `/healthz`, `/readyz`, and JSON errors for everything else."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify, request
from prometheus_client.exposition import choose_encoder
from werkzeug.exceptions import HTTPException

from exporter.core import Exporter

blueprint = Blueprint("endpoints", __name__)


@blueprint.get("/metrics")
def metrics() -> Response:
    exporter: Exporter = current_app.extensions["exporter"]
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    return Response(encoder(exporter.registry), content_type=content_type)


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


@blueprint.app_errorhandler(HTTPException)
def http_error(err: HTTPException) -> tuple[Response, int]:
    """Every HTTP error as JSON with a message a client can act on."""
    status = err.code or 500
    message = err.description or err.name
    if status == 413:
        limit = current_app.config.get("MAX_CONTENT_LENGTH")
        message = f"body is larger than the limit of {limit} bytes"
    return jsonify(error=message), status
