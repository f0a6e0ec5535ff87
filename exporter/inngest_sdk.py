"""The Inngest SDK's internals the exporter relies on, in one place (inngest 0.5: `inngest._internal`).

`/api/inngest` answers the one request Inngest sends most, an invocation of one of
our functions, without the SDK's handler: that handler verifies the signature
again (canonicalising the body), builds a middleware manager, a context and a step
machine for a function that has no steps. What it answers is built here from the
SDK's own pieces, exactly as its handler builds it (`comm_lib.utils.wrap_handler_sync`
around `CommHandler.post_sync`), so Inngest sees the same status, body and headers,
signed with the key that verified the request. The SDK's models parse the requests,
so a request is malformed here exactly when the SDK would fail on it.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from typing import Any, Callable

import inngest
import inngest.flask
from flask import Flask, Response
from inngest._internal import comm_lib, const, execution_lib, net, server_lib, transforms

ExecutionRequest = server_lib.ServerRequest
InBandSync = server_lib.InBandSynchronizeRequest
FUNCTION_ID_PARAM = server_lib.QueryParamKey.FUNCTION_ID.value
PROBE_PARAM = server_lib.QueryParamKey.PROBE.value
PROBES = frozenset(member.value for member in server_lib.Probe)
SYNC_KIND_HEADER = server_lib.HeaderKey.SYNC_KIND.value
IN_BAND_SYNC = server_lib.SyncKind.IN_BAND.value


@dataclass(frozen=True)
class Invocation:
    """What answering an executor's body needs of it."""

    event: dict[str, Any]
    """The triggering event as sent (`event_as_sent`)."""
    use_api: bool
    """The event was too large to send: the SDK fetches it from Inngest's API."""
    has_events: bool
    """`events` is there: the SDK's handler fails (500) on a body without it."""


def parse_execution(body: bytes) -> Invocation | Exception:
    """The executor's body as the SDK parses it, or why it cannot be.

    A body in the shape the executor sends is read with `json.loads` and checked
    field by field (`_plain_invocation`), several times faster than the SDK's
    pydantic model; anything else, malformed bodies included, is left to the model,
    so what is refused, and the reason given, is the SDK's own.
    """
    plain = _plain_invocation(body)
    if plain is not None:
        return plain
    request = ExecutionRequest.from_raw(body)
    if isinstance(request, Exception):
        return request
    return Invocation(event_as_sent(request.event), request.use_api, request.events is not None)


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
"""`\\uD800`-`\\uDFFF`: json.loads takes a lone surrogate the SDK's parser refuses (and pairs are rare)."""
_MAX_BRACKETS = 100
"""The SDK's parser refuses nesting past about 200 levels; a body with at most this many brackets cannot nest that deep."""


def _plain_invocation(body: bytes) -> Invocation | None:
    """The invocation, when `body` is one the SDK's model (strict, `ServerRequest`) certainly accepts; None: ask it.

    Only what the model accepts may pass here, and it must read the same: exact
    types as strict mode wants them (`bool` is not an `int`), every required field,
    the optional ones absent or null, the event read as the model reads it. The
    text checks keep out what `json.loads` reads but the SDK's parser does not.
    Guarded by a property test against the model itself (tests/test_inngest_answers.py).
    """
    if body.count(b"{") + body.count(b"[") > _MAX_BRACKETS or _SURROGATE_ESCAPE.search(body):
        return None
    try:
        raw = json.loads(body.decode("utf-8"))  # strict UTF-8: no BOM, no encoded surrogates, as the SDK's parser
    except (ValueError, RecursionError):
        return None
    if type(raw) is not dict or type(raw.get("steps")) is not dict or type(raw.get("use_api")) is not bool:
        return None
    ctx, events = raw.get("ctx"), raw.get("events")
    if not _plain_ctx(ctx) or not (events is None or (type(events) is list and all(map(_plain_event, events)))):
        return None
    event = _plain_event(raw.get("event"))
    if event is None:
        return None
    return Invocation(event, raw["use_api"], events is not None)


def _plain_ctx(ctx: object) -> bool:
    """`ServerRequestCtx` in strict mode, without its optional fields' coercions."""
    if type(ctx) is not dict or type(ctx.get("attempt")) is not int or type(ctx.get("run_id")) is not str:
        return False
    if type(ctx.get("disable_immediate_execution")) is not bool or type(ctx.get("max_attempts", None)) not in (int, type(None)):
        return False
    stack = ctx.get("stack")
    if type(stack) is not dict:
        return False
    frames = stack.get("stack")
    return frames is None or (type(frames) is list and all(type(frame) is str for frame in frames))


def _plain_event(raw: object) -> dict[str, Any] | None:
    """The event as `event_as_sent` gives it, when the SDK's `Event` takes `raw` as it is; None otherwise.

    `data` absent is `{}`; any other falsy `data` the model turns into `{}` is left to it."""
    if type(raw) is not dict or type(raw.get("name")) is not str:
        return None
    data, event_id, ts = raw.get("data", {}), raw.get("id", ""), raw.get("ts", 0)
    if type(data) is not dict or type(event_id) is not str or type(ts) is not int:
        return None
    event: dict[str, Any] = {"data": data}
    if event_id:
        event["id"] = event_id
    event["name"] = raw["name"]
    if ts:
        event["ts"] = ts
    return event


def parse_sync(body: bytes) -> InBandSync | Exception:
    return InBandSync.from_raw(body)


class Invoker:
    """Calls a function's body as the SDK's handler does, and answers as it does, for one client.

    A return is 200 with the output as JSON; an exception 500 with the SDK's error body,
    and `X-Inngest-No-Retry: true` for a NonRetriableError. Then the headers every answer
    of the handler carries, and its signature with the key that verified the request
    (none in dev mode). A return's headers are the same every time: made once here
    (what `CommResponse.from_call_result` and the handler's wrapper add up to), and
    its output serialised once, where the SDK serialises it three times.
    """

    def __init__(self, client: inngest.Inngest) -> None:
        self._client = client
        framework = inngest.flask.FRAMEWORK
        self._returned_headers = {
            **net.create_headers(env=client.env, framework=framework, server_kind=None),
            **net.create_headers(env=client.env, framework=framework, server_kind=client._mode),
            server_lib.HeaderKey.SDK_HANDLED.value: "true",
        }

    def __call__(self, call: Callable[[], object], *, signing_key: str | None) -> Response:
        timings = net.ServerTimings()
        failure: Exception | None = None
        with timings.comm_handler:
            # the SDK's middleware (only its default, which gives ctx a logger) runs around the call; none runs
            # here, and its two timings are reported as the SDK reports them, so Server-Timing names the same steps
            with timings.mw_transform_input:
                pass
            try:
                with timings.function:
                    output = call()
            except Exception as err:  # the SDK answers any exception of a function with a 500 naming it
                transforms.remove_first_traceback_frame(err)  # as the SDK does: the frame that called the function
                failure = err
            with timings.mw_transform_output:
                pass
        if failure is not None:
            return self._failed(failure, timings, signing_key)
        body = json.dumps(output).encode("utf-8")
        headers = {**self._returned_headers, server_lib.HeaderKey.SERVER_TIMING.value: timings.to_header()}
        if signing_key is not None:
            signed = net.sign_response(body, signing_key)
            if isinstance(signed, Exception):
                self._client.logger.error(signed)  # as the SDK does: the answer goes out unsigned
            else:
                headers[server_lib.HeaderKey.SIGNATURE.value] = signed
        return Response(body, status=200, headers=headers)

    def _failed(self, err: Exception, timings: net.ServerTimings, signing_key: str | None) -> Response:
        """The SDK's answer to a function that raised `err`, built by the SDK's own code."""
        client = self._client
        comm_res = comm_lib.CommResponse.from_call_result(
            client.logger, execution_lib.CallResult(err), client.env, inngest.flask.FRAMEWORK, None
        )
        comm_res.headers = {**comm_res.headers, **self._returned_headers}
        comm_res.headers[server_lib.HeaderKey.SERVER_TIMING.value] = timings.to_header()
        if signing_key is not None:
            error = comm_res.sign(signing_key)
            if error is not None:
                client.logger.error(error)
        response: Response = inngest.flask._to_response(client, comm_res)
        return response


def event_as_sent(event: inngest.Event) -> dict[str, Any]:
    """The event as Inngest sent it: the SDK fills an absent `id`/`ts` with ""/0, which are not real values."""
    raw = event.model_dump(mode="json")
    if raw["id"] == "":
        del raw["id"]
    if raw["ts"] == 0:
        del raw["ts"]
    return raw


class ServedApp:
    """The SDK's handler of our app on a Flask route, as `inngest.flask.serve` builds it, but kept, so its functions
    can be replaced while it serves (the SDK reads them on every request) and it can register itself again."""

    def __init__(
        self, app: Flask, client: inngest.Inngest, functions: list[inngest.Function[Any]], *, serve_path: str
    ) -> None:
        self._serve_path = serve_path
        self._handler = comm_lib.CommHandler(
            client=client,
            # an unsigned PUT would make the SDK register this app at the URL of the
            # request's Host header: only signed syncs (or dev mode) may do that
            enable_unauthed_sync=False,
            framework=inngest.flask.FRAMEWORK,
            functions=functions,
            streaming=const.Streaming.DISABLE,
        )
        self._ids = frozenset(self._handler._fns)
        inngest.flask._create_handler_sync(app, client, self._handler, public_path=None, serve_origin=None, serve_path=serve_path)

    def ids(self) -> frozenset[str]:
        """The ids of the functions served now; asked on every request, so kept rather than made each time."""
        return self._ids

    def replace(self, functions: list[inngest.Function[Any]]) -> None:
        self._handler._fns = {function.get_id(): function for function in functions}
        self._ids = frozenset(self._handler._fns)

    def register(self, url: str, logger: logging.Logger) -> tuple[str, str] | None:
        """Register the app at `url` with Inngest, as an out-of-band sync does (`POST /fn/register`).

        None when it took, else the failure's kind and why. The request is the SDK's, signed as it signs it;
        its answer's status is read here: the SDK's `out_of_band_sync` (inngest 0.5.19) reports Inngest's JSON
        error answers, `{"error": ...}` with a 4xx or 5xx, as a success, so a failed registration would never
        be retried and the new evidence events never delivered."""
        sync = comm_lib.CommRequest(
            body=b"", headers={}, public_path=None, query_params={}, raw_request=None, request_url=url,
            serve_origin=None, serve_path=self._serve_path,
        )
        request = comm_lib.handler.Syncer(logger=logger)._create_out_of_band_request(self._handler, sync)
        if isinstance(request, comm_lib.CommResponse):  # refused before it was sent
            return f"HTTP {request.status_code}", f"HTTP {request.status_code} {request.body!r}"
        if isinstance(request, Exception):
            return type(request).__name__, str(request)
        answer = net.fetch_with_auth_fallback_sync(
            self._handler._http_client._http_client_sync, request,
            signing_key=self._handler._signing_key, signing_key_fallback=self._handler._signing_key_fallback,
        )
        if isinstance(answer, Exception):
            return type(answer).__name__, str(answer)
        if answer.status_code >= 300:
            return f"HTTP {answer.status_code}", f"HTTP {answer.status_code} {answer.text[:300]!r}"
        return None
