"""`POST /events`: cancellations, cancel signals and singleton triggers pushed by forwarders and backfills.

Authenticated by Inngest's signature scheme (fresh timestamps only) or a bearer
token, both compared in constant time; validated as a whole before anything is
recorded, so a batch with one bad event changes nothing and says which one.
"""

from __future__ import annotations

import hmac

from flask import Blueprint, Response, current_app, jsonify, request

from exporter import signature
from exporter.core_api import Core
from exporter.endpoints import retry_later
from exporter.parsing import InvalidInput
from exporter.state import StateUnavailable

blueprint = Blueprint("events", __name__)
INGRESS = "events"


class Unauthorized(Exception):
    """Credentials missing or wrong; the message says which, never what was expected."""


AUTHENTICATE = 'Bearer realm="inngest-cancellation-exporter"'
"""The challenge of a 401 (RFC 9110): a bearer token is one way in; an Inngest signature is the other."""


def _error(exporter: Core, status: int, outcome: str, message: str) -> tuple[Response, int]:
    exporter.count_received(INGRESS, outcome)
    response = jsonify(error=message)
    if status == 401:
        response.headers["WWW-Authenticate"] = AUTHENTICATE
    return response, status


def authenticate(exporter: Core, body: bytes) -> None:
    """Accept a valid signature or bearer token (or anything in dev mode); Unauthorized otherwise."""
    settings = exporter.settings
    if settings.dev:
        return
    header = request.headers.get(signature.HEADER)
    authorization = request.headers.get("Authorization", "")
    keys = settings.signing_keys
    if header is not None:
        if not keys:
            raise Unauthorized(f"{signature.HEADER} given but this exporter has no INNGEST_SIGNING_KEY")
        try:
            signature.verify(body, header, keys)
        except signature.SignatureError as err:
            raise Unauthorized(str(err)) from None
        return
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token:
        expected = settings.ingest_token
        if expected is None:
            raise Unauthorized("bearer token given but this exporter has no EXPORTER_INGEST_TOKEN")
        if not hmac.compare_digest(token.strip().encode("utf-8"), expected.encode("utf-8")):
            raise Unauthorized("bearer token does not match")
        return
    raise Unauthorized(f"missing credentials: send {signature.HEADER} or Authorization: Bearer <token>")


def _is_json_content_type(value: str | None) -> bool:
    if not value:
        return True  # forwarders often omit it; the body is checked as JSON anyway
    mime = value.split(";", 1)[0].strip().lower()
    return mime == "application/json" or (mime.startswith("application/") and mime.endswith("+json"))


@blueprint.post("/events")
def post_events() -> tuple[Response, int]:
    exporter: Core = current_app.extensions["exporter"]
    if not _is_json_content_type(request.content_type):
        return _error(exporter, 415, "invalid", f"unsupported Content-Type {request.content_type!r}: send application/json")
    body = request.get_data(cache=False)
    try:
        authenticate(exporter, body)
    except Unauthorized as err:
        return _error(exporter, 401, "unauthorized", str(err))
    try:
        answer = exporter.ingest_body(body, INGRESS)
    except InvalidInput as err:
        return _error(exporter, 400, "invalid", str(err))
    except StateUnavailable as err:  # the disk refused the write, or the core process is being replaced
        current_app.logger.error("refusing events so the sender retries: %s", err)
        exporter.count_received(INGRESS, "unavailable")
        return retry_later(f"nothing was recorded: {err}")
    return Response(answer, mimetype="application/json"), 200
