"""`/api/inngest`: the exporter as an Inngest app, served by the official SDK.

Inngest syncs the app (PUT) and invokes `record-cancellation` (POST) for every
`inngest/function.cancelled` event. Each request's signature is verified once,
before the SDK: a fresh timestamp (the SDK checks only the MAC; we refuse replays
older than five minutes, as on `/events`) and a matching MAC. An authentic
invocation of our functions, the request Inngest sends most, is then answered
here as the SDK's handler would answer it (`exporter.inngest_sdk`), without the
SDK verifying it again; syncs, probes and unauthenticated requests go on to the
SDK, which answers them (and refuses a MAC that does not match). Besides: the SDK
answers 500 to authentic requests that are malformed (we answer 400 first);
Inngest's HTTP driver retries every answer, 4xx included, unless it carries
`X-Inngest-No-Retry: true` (our refusals of what can never succeed say so); and
the SDK reads some settings from `INNGEST_*` variables by itself (we hand it
ours, so `create_app(settings)` means what the settings say).
"""

from __future__ import annotations

import io
import logging
import urllib.parse
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Collection, Iterable, Sequence

import inngest
import pydantic
from flask import Flask, Response, jsonify, request
from werkzeug.datastructures import EnvironHeaders

from exporter import inngest_sdk, signature
from exporter.core_api import Core
from exporter.inngest_registration import ServedFunctions
from exporter.parsing import CANCELLED, InvalidInput
from exporter.settings import Settings
from exporter.state import StateUnavailable

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

log = logging.getLogger(__name__)

APP_ID = "inngest-cancellation-exporter"
FUNCTION_ID = "record-cancellation"
SIGNAL_FUNCTION_ID = "record-cancel-signals"
SERVE_PATH = "/api/inngest"
NO_RETRY_HEADER = "X-Inngest-No-Retry"
RETRIED_REFUSALS = frozenset({401})
"""Refusals Inngest should retry: a signature that fails now may pass once the key or clock is put right."""
INGRESS = "inngest"
MAX_TRIGGERS = 10
"""Inngest's limit on one function's triggers: a longer signal list is split over several functions."""


def build_client(settings: Settings) -> inngest.Inngest:
    """An SDK client that follows `settings`, whatever the process environment says.

    The mode and API origin are passed explicitly. In dev mode the SDK finds the
    dev server itself (INNGEST_DEV may be its URL, which settings reduce to a
    flag). inngest 0.5 takes the fallback signing key only from
    INNGEST_SIGNING_KEY_FALLBACK, so it is set on the client after construction
    (the rotation test guards this). No event key: the exporter never sends events.
    """
    client = inngest.Inngest(
        app_id=APP_ID,
        is_production=not settings.dev,
        signing_key=settings.signing_key,
        api_base_url=None if settings.dev else settings.api_base_url,
        logger=log,
    )
    client._signing_key_fallback = settings.signing_key_fallback
    client._http_client._signing_key_fallback = settings.signing_key_fallback
    return client


def build_functions(
    client: inngest.Inngest, exporter: Core, evidence_names: Sequence[str]
) -> list[inngest.Function[dict[str, int]]]:
    """`record-cancellation`, plus `record-cancel-signals[-N]` for the evidence events: the config's cancel signals
    and the triggers of its cancelling singletons.

    Subscribing to them lets Inngest deliver the evidence too, so users need
    no forwarder for it; Inngest allows MAX_TRIGGERS per function, hence the chunks.
    """
    functions = [_build_function(client, exporter, FUNCTION_ID, "Record cancellation", [CANCELLED])]
    signals = sorted(evidence_names)
    chunks = [signals[i : i + MAX_TRIGGERS] for i in range(0, len(signals), MAX_TRIGGERS)]
    for number, chunk in enumerate(chunks, start=1):
        fn_id = SIGNAL_FUNCTION_ID if number == 1 else f"{SIGNAL_FUNCTION_ID}-{number}"
        functions.append(_build_function(client, exporter, fn_id, "Record cancellation evidence", chunk))
    return functions


def _build_function(
    client: inngest.Inngest, exporter: Core, fn_id: str, name: str, events: list[str]
) -> inngest.Function[dict[str, int]]:
    """One function that hands its triggering event to the pipeline; its output is the ingest summary.

    No `ctx.step.run`: the body is one transactional `ingest` call, and a retried
    or redelivered run finds the run id already claimed and counts a duplicate,
    so memoising it in a step would only add a round trip to Inngest.
    """

    @client.create_function(
        fn_id=fn_id,
        name=name,
        trigger=[inngest.TriggerEvent(event=event) for event in events],
    )
    def record(ctx: inngest.ContextSync) -> dict[str, int]:
        return _record(exporter, inngest_sdk.event_as_sent(ctx.event))

    return record


def _record(exporter: Core, event: dict[str, Any]) -> dict[str, int]:
    """What each of our functions does with its triggering event (as sent): hand it to the pipeline; the summary is
    its output."""
    try:
        return exporter.ingest_event(event, INGRESS)
    except InvalidInput as err:
        # the same event would fail the same way on every retry
        _count_refusal(exporter, "invalid")
        raise inngest.NonRetriableError(str(err)) from None
    except StateUnavailable:
        # nothing was recorded: a plain exception makes Inngest retry later
        _count_refusal(exporter, "unavailable")
        raise


def _count_refusal(exporter: Core, outcome: str) -> None:
    """The one place a request or event refused on this endpoint is counted (`events_received_total{outcome}`)."""
    exporter.count_received(INGRESS, outcome)


@dataclass(frozen=True)
class _Refusal:
    """An answer the front door gives instead of the SDK: `status` with `{"error": message}`."""

    status: int
    message: str
    invalid: bool = True
    """Counted as `invalid` here; a 401 is counted with the SDK's own, after the answer (`_finish_answer`)."""


@dataclass(frozen=True)
class _Call:
    """An authentic invocation of one of our functions, to be answered by calling it."""

    event: dict[str, Any]
    signing_key: str | None


_Screened = _Refusal | _Call | None
"""What the front door makes of a request; None: the SDK's turn."""
SCREENED = "exporter.inngest_screened"
"""The WSGI environ key under which the fast lane leaves its screening for the Flask app (`_front_door`)."""


def _screen(
    settings: Settings, functions: Collection[str], method: str, header: Callable[[str], str | None],
    arg: Callable[[str], str | None], body: Callable[[], bytes],
) -> _Screened:
    """Before the SDK: verify the signature once; refuse stale and malformed signatures (401) and authentic requests
    the SDK would fail on with a 500 (400/404); pick out authentic invocations of our functions. None: the SDK's turn.

    A missing signature (outside dev mode) or a MAC that does not match is the SDK's to refuse, with its 401.
    The request's parts are asked through `header`, `arg` and `body`, so that Flask's request and the fast lane's
    WSGI environ are screened alike.
    """
    signing_key = None
    if not settings.dev:
        signed = header(signature.HEADER)
        if signed is None:
            return None
        try:
            timestamp, mac = signature.parse_header(signed)
            signature.check_age(timestamp)
        except signature.SignatureError as err:
            return _Refusal(401, str(err), invalid=False)
        if method not in ("POST", "PUT"):
            return None
        try:
            signing_key = signature.matching_key(body(), timestamp, mac, settings.signing_keys)
        except signature.SignatureError:
            return None
    if method == "PUT":
        return _sync_problem(settings.dev, header, body)
    if method != "POST":
        return None
    probe = arg(inngest_sdk.PROBE_PARAM)
    if probe:
        return None if probe in inngest_sdk.PROBES else _Refusal(400, f"unsupported probe {probe!r}")
    fn_id = arg(inngest_sdk.FUNCTION_ID_PARAM)
    if not fn_id:
        return _Refusal(400, "the fnId query parameter is missing")
    if fn_id not in functions and f"{APP_ID}-{fn_id}" not in functions:  # the SDK's lookup, old ids included
        return _Refusal(404, f"function {fn_id!r} is not served by this app")
    execution = inngest_sdk.parse_execution(body())
    if isinstance(execution, Exception):
        return _Refusal(400, f"not an Inngest execution request: {_summary(execution)}")
    if execution.use_api:
        return None  # the event is too large to be sent: the SDK fetches it from Inngest's API
    if not execution.has_events:
        return _Refusal(400, "not an Inngest execution request: events: missing")
    return _Call(execution.event, signing_key)


def _sync_problem(dev: bool, header: Callable[[str], str | None], body: Callable[[], bytes]) -> _Refusal | None:
    """Why the SDK would fail on this authentic sync with a 500: an in-band sync without a `url`."""
    if dev or header(inngest_sdk.SYNC_KIND_HEADER) != inngest_sdk.IN_BAND_SYNC:
        return None  # an out-of-band sync (the only kind in dev mode) does not read the body
    sync = inngest_sdk.parse_sync(body())
    return _Refusal(400, f"not an in-band sync request: {_summary(sync)}") if isinstance(sync, Exception) else None


def _front_door(exporter: Core, invoke: inngest_sdk.Invoker, functions: Collection[str]) -> Response | tuple[Response, int] | None:
    """Flask's turn at `/api/inngest`, before the SDK's route: answer what `_screen` makes of the request, or leave
    it to the SDK (None). The fast lane may have screened it already."""
    if request.path != SERVE_PATH:
        return None
    screened = request.environ.get(SCREENED, ...)
    if screened is ...:
        screened = _screen(exporter.settings, functions, request.method, request.headers.get, request.args.get, request.get_data)
    if isinstance(screened, _Call):
        return _answer(exporter, invoke, screened)
    if isinstance(screened, _Refusal):
        if screened.invalid:
            _count_refusal(exporter, "invalid")
        return jsonify(error=screened.message), screened.status
    return None


def _answer(exporter: Core, invoke: inngest_sdk.Invoker, call: _Call) -> Response:
    """Call our function's body with the invocation's event, answered as the SDK answers."""
    return invoke(lambda: _record(exporter, call.event), signing_key=call.signing_key)


class _FastLane:
    """WSGI in front of the Flask app: an authentic invocation of our functions, most of what Inngest sends, is
    answered here without Flask's request handling (most of what was left of an invocation's cost in the worker).

    Taken only where Flask would add nothing: a POST to `/api/inngest` with a declared length within the limit
    (Flask's checks of the body are then moot; it is read whole here) that `_screen` finds to be such an
    invocation. Everything else goes on to Flask, the body put back and the screening left in the environ
    (SCREENED), so it is screened once and then refused or handed to the SDK there, as before.
    """

    def __init__(
        self, app: Flask, exporter: Core, invoke: inngest_sdk.Invoker, functions: Callable[[], Collection[str]]
    ) -> None:
        self._wsgi_app = app.wsgi_app
        self._exporter = exporter
        self._invoke = invoke
        self._functions = functions

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        length = environ.get("CONTENT_LENGTH", "")
        if (
            environ.get("PATH_INFO") != SERVE_PATH or environ.get("REQUEST_METHOD") != "POST" or not length.isdigit()
            or int(length) > self._exporter.settings.max_body_bytes
        ):
            return self._wsgi_app(environ, start_response)
        body = environ["wsgi.input"].read(int(length))
        environ["wsgi.input"], environ["CONTENT_LENGTH"] = io.BytesIO(body), str(len(body))
        query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""))
        screened = _screen(
            self._exporter.settings, self._functions(), "POST", EnvironHeaders(environ).get,
            lambda name: query.get(name, [None])[0], lambda: body,
        )
        if isinstance(screened, _Call):
            return _answer(self._exporter, self._invoke, screened)(environ, start_response)
        environ[SCREENED] = screened
        return self._wsgi_app(environ, start_response)


def _summary(err: Exception) -> str:
    """The first problems a validation error names, without the pydantic boilerplate (or the input's values)."""
    if not isinstance(err, pydantic.ValidationError):
        return str(err)
    problems = [
        f"{'.'.join(str(part) for part in error['loc']) or 'body'}: {error['msg']}"
        for error in err.errors(include_url=False, include_input=False)
    ]
    return "; ".join(problems[:3]) + ("; ..." if len(problems) > 3 else "")


def _finish_answer(exporter: Core, response: Response) -> Response:
    """Count every 401 on the endpoint (ours and the SDK's); mark every other refusal not to be retried.

    Inngest retries a 4xx unless told not to, and a malformed request, an unknown
    function or an oversized body fails the same way every time. A 401 stays
    retriable: the signing key or the clock may be fixed before the retries run out,
    and then nothing is lost.
    """
    if request.path != SERVE_PATH:
        return response
    status = response.status_code
    if status == 401:
        _count_refusal(exporter, "unauthorized")
    if 400 <= status < 500 and status not in RETRIED_REFUSALS and NO_RETRY_HEADER not in response.headers:
        response.headers[NO_RETRY_HEADER] = "true"
    return response


def register(app: Flask, exporter: Core) -> None:
    """Serve the exporter's Inngest app on /api/inngest.

    In production without a signing key the SDK could verify nothing (and
    refuses to start), so the endpoint answers 503 naming the missing setting,
    while `POST /events` with a bearer token keeps working.
    """
    settings = exporter.settings
    if not settings.dev and settings.signing_key is None:

        @app.route(SERVE_PATH, methods=["GET", "PUT", "POST"])
        def inngest_unconfigured() -> tuple[Response, int]:
            return jsonify(error="INNGEST_SIGNING_KEY is not set, so Inngest requests cannot be verified"), 503

        return

    client = build_client(settings)
    served = ServedFunctions(
        app, client, exporter, lambda names: build_functions(client, exporter, names), serve_path=SERVE_PATH
    )
    invoker = inngest_sdk.Invoker(client)
    app.before_request(lambda: _front_door(exporter, invoker, served.ids()))
    app.wsgi_app = _FastLane(app, exporter, invoker, served.ids)  # type: ignore[method-assign]
    app.after_request(lambda response: _finish_answer(exporter, response))
