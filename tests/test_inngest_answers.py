"""`/api/inngest` answers an invocation exactly as the SDK's own handler answers it.

The exporter answers invocations of its functions itself (exporter.inngest_sdk), so
its signature check and the executor body's parse run once. Here the same signed
requests go to the exporter's app and to the SDK's plain handler serving the same
functions over the same core: status, body, every header and the answer's
signature must agree (Server-Timing's durations aside).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, Callable

import inngest.flask
import pytest
import ulid
from hypothesis import given, settings
from hypothesis import strategies as st
from flask import Flask
from inngest._internal import net
from werkzeug.test import TestResponse

from exporter import inngest_sdk, signature
from exporter.app import create_app
from exporter.config import Config
from exporter.ingress_inngest import APP_ID, SERVE_PATH, build_client, build_functions
from exporter.parsing import InvalidInput
from exporter.settings import Settings, load_settings
from exporter.state import StateUnavailable
from tests.support.inngest_driver import execution_request
from tests.support.payloads import FALLBACK_KEY, SIGNING_KEY, cancellation

FUNCTION_ID = f"{APP_ID}-record-cancellation"
SUMMARY = {"accepted": 1, "duplicates": 0, "ignored": 0, "signals": 0, "pending": 0}


class StubCore:
    """The core as both apps see it: answers `outcome` (a summary, or an exception to raise), counts refusals."""

    def __init__(self, settings: Settings, outcome: dict[str, int] | Exception) -> None:
        self.settings = settings
        self.config = Config()
        self.outcome = outcome
        self.events: list[dict[str, Any]] = []
        self.refused: list[tuple[str, str]] = []

    def ingest_event(self, raw: dict[str, Any], ingress: str) -> dict[str, int]:
        self.events.append(raw)
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return self.outcome

    def count_received(self, ingress: str, outcome: str) -> None:
        self.refused.append((ingress, outcome))

    def signal_subscription(self) -> tuple[list[str], str | None]:
        return sorted(self.config.evidence_names), None


def sdk_app(core: StubCore) -> Flask:
    """The exporter's functions served by the SDK's handler alone, as the exporter served them before."""
    app = Flask("sdk-only")
    client = build_client(core.settings)
    inngest.flask.serve(app, client, build_functions(client, core, sorted(core.config.evidence_names)), enable_unauthed_sync=False, serve_path=SERVE_PATH)
    return app


def invoke(app: Flask, body: bytes, key: str | None) -> TestResponse:
    headers = {"Content-Type": "application/json", "X-Inngest-Server-Kind": "cloud"}
    if key is not None:
        headers[signature.HEADER] = signature.sign(body, key)
    return app.test_client().post(f"{SERVE_PATH}?fnId={FUNCTION_ID}&stepId=step", data=body, headers=headers)


def executor_body(indent: int | None = None) -> bytes:
    """What Inngest's executor sends (JCS-canonical), or the same request re-indented."""
    request = execution_request(FUNCTION_ID, cancellation(), str(ulid.ULID()))
    return json.dumps(request, indent=indent).encode() if indent else signature.canonical_body(json.dumps(request).encode())


def comparable(response: TestResponse, key: str | None) -> dict[str, Any]:
    """Status, body and headers; Server-Timing by its names, the signature checked against `key` and set aside,
    an error's traceback (and so the body's length) left out."""
    headers = {name.lower(): value for name, value in response.headers.items()}
    headers["server-timing"] = [part.split(";")[0].strip() for part in headers["server-timing"].split(",")]
    given = headers.pop(signature.HEADER.lower(), None)
    if key is None:
        assert given is None
    else:
        assert given is not None
        timestamp, _ = signature.parse_header(given)
        assert given == net.sign_response(response.get_data(), key, timestamp)  # the SDK's own signer
    body = response.get_json()
    if isinstance(body, dict) and "stack" in body:
        del body["stack"], headers["content-length"]  # the traceback names each path's own frames
    return {"status": response.status_code, "body": body, "headers": headers}


@pytest.mark.parametrize(
    ("outcome", "status"),
    [(SUMMARY, 200), (InvalidInput("data.run_id: missing"), 500), (StateUnavailable("disk full"), 500)],
    ids=["counted", "invalid-event", "state-unavailable"],
)
@pytest.mark.parametrize("key", [SIGNING_KEY, FALLBACK_KEY], ids=["signing-key", "fallback-key"])
def test_an_invocation_is_answered_as_the_sdk_answers_it(
    tmp_path: Path, outcome: dict[str, int] | Exception, status: int, key: str
) -> None:
    settings = load_settings({
        "INNGEST_SIGNING_KEY": SIGNING_KEY, "INNGEST_SIGNING_KEY_FALLBACK": FALLBACK_KEY, "EXPORTER_STATE_DIR": str(tmp_path),
    })
    ours, sdks = StubCore(settings, outcome), StubCore(settings, outcome)
    body = executor_body()
    answered = invoke(create_app(settings, Config(), core=ours), body, key)
    expected = invoke(sdk_app(sdks), body, key)
    assert answered.status_code == status
    assert comparable(answered, key) == comparable(expected, key)
    assert (ours.events, ours.refused) == (sdks.events, sdks.refused)
    assert ours.events[0]["data"]["run_id"] == json.loads(body)["event"]["data"]["run_id"]


@pytest.mark.parametrize(
    ("env", "key", "make_body"),
    [
        ({"INNGEST_DEV": "1"}, None, executor_body),
        ({"INNGEST_SIGNING_KEY": SIGNING_KEY}, SIGNING_KEY, lambda: executor_body(indent=2)),
    ],
    ids=["dev-mode-unsigned", "body-not-canonical"],
)
def test_other_invocations_are_answered_as_the_sdk_answers_them_too(
    tmp_path: Path, env: dict[str, str], key: str | None, make_body: Callable[[], bytes]
) -> None:
    settings = load_settings({**env, "EXPORTER_STATE_DIR": str(tmp_path)})
    ours, sdks = StubCore(settings, SUMMARY), StubCore(settings, SUMMARY)
    body = make_body()
    answered = invoke(create_app(settings, Config(), core=ours), body, key)
    assert answered.status_code == 200
    assert comparable(answered, key) == comparable(invoke(sdk_app(sdks), body, key), key)
    assert ours.events == sdks.events


def test_an_invocation_without_a_declared_length_is_answered_as_the_sdk_answers_it(tmp_path: Path) -> None:
    """A chunked body is left to Flask (the fast lane takes only declared lengths): the answer is the same."""
    settings = load_settings({"INNGEST_SIGNING_KEY": SIGNING_KEY, "EXPORTER_STATE_DIR": str(tmp_path)})
    ours, sdks = StubCore(settings, SUMMARY), StubCore(settings, SUMMARY)
    body = executor_body()

    def chunked(app: Flask) -> TestResponse:
        headers = {"Content-Type": "application/json", "X-Inngest-Server-Kind": "cloud", "Transfer-Encoding": "chunked",
                   signature.HEADER: signature.sign(body, SIGNING_KEY)}
        return app.test_client().post(
            f"{SERVE_PATH}?fnId={FUNCTION_ID}&stepId=step", input_stream=io.BytesIO(body), headers=headers,
            environ_overrides={"wsgi.input_terminated": True},
        )

    answered = chunked(create_app(settings, Config(), core=ours))
    assert answered.status_code == 200
    assert comparable(answered, SIGNING_KEY) == comparable(chunked(sdk_app(sdks)), SIGNING_KEY)
    assert ours.events == sdks.events and len(ours.events) == 1


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=8,
)
"""Any JSON value: what a field of the executor's body may be replaced with."""
CONFUSABLE = st.sampled_from([True, False, 0, 1, -1, 1.0, 0.0, "", "1", "true", None, [], {}, ["x"], {"name": "x"}, 2**70])
"""Values of one JSON type standing in for another, as strict and lax readings tell apart."""


def _field_paths(value: Any, path: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    """Every place in a JSON tree, the root included."""
    paths = [path]
    if isinstance(value, dict):
        for key, item in value.items():
            paths += _field_paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            paths += _field_paths(item, (*path, index))
    return paths


@st.composite
def executor_bodies(draw: st.DrawFn) -> bytes:
    """The executor's body, then a few of its fields replaced, removed or nulled: mostly valid, often not quite."""
    request: Any = json.loads(executor_body())
    for _ in range(draw(st.integers(0, 3))):
        path = draw(st.sampled_from(_field_paths(request)))
        if not path:
            continue
        *parents, last = path
        parent = request
        for part in parents:
            parent = parent[part]
        change = draw(st.sampled_from(["replace", "remove", "null"]))
        if change == "remove":
            del parent[last]
        else:
            parent[last] = None if change == "null" else draw(CONFUSABLE | JSON_VALUES)
    text = json.dumps(request, indent=draw(st.sampled_from([None, 1])))
    return draw(st.sampled_from([text.encode(), signature.canonical_body(text.encode())]))


@settings(max_examples=1000)
@given(body=executor_bodies())
def test_an_executor_body_is_read_as_the_sdks_model_reads_it(body: bytes) -> None:
    """The fast read of the executor's body (`json.loads` and checks) takes only what the SDK's own model takes, and
    reads the same event from it; the rest is refused or answered by the model itself."""
    model = inngest_sdk.ExecutionRequest.from_raw(body)
    read = inngest_sdk.parse_execution(body)
    if isinstance(model, Exception):
        assert isinstance(read, Exception)
    else:
        assert read == inngest_sdk.Invocation(inngest_sdk.event_as_sent(model.event), model.use_api, model.events is not None)


def _in_data(member: bytes) -> Callable[[bytes], bytes]:
    return lambda body: body.replace(b'"data":{', b'"data":{' + member + b",", 1)


@pytest.mark.parametrize(
    "oddity",
    [
        _in_data(b'"odd":"\\ud800"'), _in_data(b'"deep":' + b"[" * 300 + b"]" * 300), lambda body: b"\xef\xbb\xbf" + body,
        lambda body: body.decode().encode("utf-16"), lambda body: body + b"\x00",
    ],
    ids=["lone-surrogate", "deep-nesting", "utf-8-bom", "utf-16", "trailing-nul"],
)
def test_bodies_json_loads_reads_but_the_sdk_does_not_are_refused(oddity: Callable[[bytes], bytes]) -> None:
    """The executor's body with what Python's `json.loads` takes and the SDK's parser refuses: refused alike."""
    body = oddity(executor_body())
    assert body != executor_body()
    assert isinstance(inngest_sdk.ExecutionRequest.from_raw(body), Exception)
    assert isinstance(inngest_sdk.parse_execution(body), Exception)
