"""Hypothesis strategies for what broken or hostile clients send, and the two ways to send it.

A `FuzzRequest` is one HTTP request to `/events` or `/api/inngest`: a body that is
JSON, nearly an Inngest event, or not JSON at all, in odd encodings; a Content-Type
that may be wrong; and credentials that may be right (correctly signed junk is the
interesting case: it gets past authentication), wrong, stale or malformed. The same
requests drive the in-process Flask app (for volume) and the real `serve` process
(for what the WSGI server and the process add).

The property every fuzz test checks is `assert_survived`: never a 5xx, except the
one 500 the Inngest protocol prescribes for a run that failed for good.
"""

from __future__ import annotations

import json
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, TypeVar

import requests
import ulid
from flask.testing import FlaskClient
from hypothesis import settings
from hypothesis import strategies as st
from requests.structures import CaseInsensitiveDict

from exporter import signature
from exporter.parsing import CANCELLED, FINISHED, MAX_ID_LENGTH
from tests.support.inngest_driver import NO_RETRY, SYNC_KIND, execution_request
from tests.support.payloads import FALLBACK_KEY, INGEST_TOKEN, OTHER_KEY, SIGNING_KEY, cancellation

SIGNAL = "integrations/export.cancelled"
CONFIGURED_FUNCTION = "demo-app-export"
FUZZ_CONFIG: dict[str, Any] = {
    "functions": {
        CONFIGURED_FUNCTION: {
            "cancel_on": [{"event": SIGNAL, "if": "async.data.job == event.data.job", "timeout": "1h"}],
            "timeouts": {"start": "30s", "finish": "2h"},
        }
    }
}
"""A function with a cancel_on rule and timeouts, so fuzzed events reach the held-cancellation and CEL paths."""
FUZZ_ENV = {"EXPORTER_ATTRIBUTION_GRACE": "1s", "EXPORTER_MAX_BODY_BYTES": str(1024 * 1024)}
"""A short grace, so held cancellations are released (and counted) during the test; a 1 MiB body limit that huge values cross."""


T = TypeVar("T")


def weighted(*choices: tuple[int, st.SearchStrategy[T]]) -> st.SearchStrategy[T]:
    """Draw from one of `choices`, picked in proportion to its weight (`st.one_of` promises no proportions)."""
    pool = [strategy for weight, strategy in choices for _ in range(weight)]
    return st.sampled_from(pool).flatmap(lambda strategy: strategy)


def examples(share: float) -> int:
    """`share` times the active hypothesis profile's `max_examples` (`ci` or `soak`, see conftest)."""
    return max(1, int(settings().max_examples * share))


# ---------------------------------------------------------------- JSON values


@dataclass(frozen=True)
class Raw:
    """JSON text spliced in verbatim where `json.dumps` cannot write it: deep nesting, huge numbers, odd literals."""

    text: str


_PLACEHOLDER = f"raw-{uuid.uuid4().hex}-"


def render(value: Any, *, ensure_ascii: bool = True) -> str:
    """`value` as JSON text (NaN and Infinity included, as Python writes them), Raw leaves spliced in."""
    raws: list[str] = []

    def swap(node: Any) -> Any:
        if isinstance(node, Raw):
            raws.append(node.text)
            return f"{_PLACEHOLDER}{len(raws) - 1}"
        if isinstance(node, dict):
            return {key: swap(item) for key, item in node.items()}
        if isinstance(node, list):
            return [swap(item) for item in node]
        return node

    text = json.dumps(swap(value), ensure_ascii=ensure_ascii)
    for index, raw in enumerate(raws):
        text = text.replace(f'"{_PLACEHOLDER}{index}"', raw, 1)
    return text


def deep(depth: int, kind: str) -> Raw:
    """An array or object nested `depth` levels: past json's recursion limit (about 1000) when `depth` is."""
    if kind == "array":
        return Raw("[" * depth + "]" * depth)
    return Raw('{"a":' * depth + "null" + "}" * depth)


lone_surrogates = st.builds(
    lambda before, cp, after: before + chr(cp) + after,
    st.text(max_size=4), st.integers(0xD800, 0xDFFF), st.text(max_size=4),
)
"""Text with a lone surrogate: valid as a JSON `\\udXXX` escape, not valid Unicode."""

huge_text = st.builds(
    lambda unit, count: unit * count,
    st.sampled_from(["x", "é", "😀", "\\", '"', "\n", "\u2028", "\x00", "{"]),
    st.integers(1_000, 600_000),
)
"""Up to 2.4 MB of one character: across the 1 MiB body limit of FUZZ_ENV, built cheaply."""

long_ids = st.builds(lambda unit, count: unit * count, st.sampled_from(["r", "é", "😀"]), st.sampled_from(
    [MAX_ID_LENGTH - 1, MAX_ID_LENGTH, MAX_ID_LENGTH + 1, 4 * MAX_ID_LENGTH]
))
deep_values = st.builds(deep, st.one_of(st.integers(2, 200), st.integers(900, 1100), st.integers(1100, 100_000)),
                        st.sampled_from(["array", "object"]))
odd_numbers = st.one_of(
    st.integers(300, 6_000).map(lambda digits: Raw("9" * digits)),
    st.sampled_from([Raw("1e999"), Raw("-1e999"), Raw("-0"), Raw("1E400"), Raw("NaN"), Raw("-Infinity"), Raw("0.1e-999")]),
)
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**53), 2**53), st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20), lone_surrogates,
    st.sampled_from(["", " ", "Cancelled", "cancelled", CANCELLED, FINISHED, SIGNAL, CONFIGURED_FUNCTION, "_overflow"]),
)
keys = st.one_of(st.text(max_size=10), st.sampled_from(["name", "data", "run_id", "function_id", "ts", "id", "event", "_inngest"]))
json_trees = st.recursive(
    weighted((8, scalars), (1, huge_text), (1, long_ids), (1, deep_values), (1, odd_numbers)),
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(keys, children, max_size=4)),
    max_leaves=12,
)
"""Any JSON value, with the pathological leaves (huge, deep, not Unicode, not representable) among the ordinary ones."""


# ---------------------------------------------------------------- Inngest events, nearly valid

EVENT_PATHS: tuple[tuple[str | int, ...], ...] = (
    ("name",), ("id",), ("ts",), ("data",), ("data", "run_id"), ("data", "function_id"), ("data", "event"),
    ("data", "events"), ("data", "events", 0), ("data", "error"), ("data", "_inngest"), ("data", "_inngest", "status"),
    ("data", "event", "ts"), ("data", "event", "id"), ("data", "event", "name"), ("data", "event", "data"),
    ("data", "event", "data", "job"), ("user",),
)
"""Every field the exporter reads (and a few it does not), each of which gets wrong types in turn."""

run_ids = weighted(
    (2, st.sampled_from([f"run-{i}" for i in range(5)])),  # repeats: duplicates
    (2, st.integers(0, 2**128 - 1).map(lambda n: str(ulid.ULID.from_int(n)))),  # any time, past or future
    (2, st.text(min_size=1, max_size=30)),
    (1, lone_surrogates), (1, long_ids),
)
function_ids = weighted(
    (3, st.sampled_from([CONFIGURED_FUNCTION, "other-app-fn", "_overflow"])),
    (2, st.text(min_size=1, max_size=20)), (1, lone_surrogates), (1, long_ids),
    (1, st.sampled_from(['quo"te', "new\nline", "back\\slash", "{}=,", "ünïcødé-😀", "\x00", "\u2028"])),
)


def _replace(tree: Any, path: tuple[str | int, ...], value: Any, delete: bool) -> None:
    """Set (or delete) `path` in `tree`, when the path still leads somewhere after earlier changes."""
    *parents, last = path
    for step in parents:
        try:
            tree = tree[step]
        except (KeyError, IndexError, TypeError):
            return
    if isinstance(tree, dict) and isinstance(last, str):
        if delete:
            tree.pop(last, None)
        else:
            tree[last] = value
    elif isinstance(tree, list) and isinstance(last, int) and last < len(tree):
        tree[last] = None if delete else value


@st.composite
def mutated(draw: st.DrawFn, base: Any, paths: Iterable[tuple[str | int, ...]], max_changes: int = 3) -> Any:
    """`base` with up to `max_changes` of `paths` replaced by any JSON value, or deleted."""
    for path in draw(st.lists(st.sampled_from(list(paths)), max_size=max_changes, unique=True)):
        _replace(base, path, draw(json_trees), delete=draw(st.booleans()))
    return base


@st.composite
def near_valid_events(draw: st.DrawFn) -> dict[str, Any]:
    """The real server's cancellation, renamed and re-keyed, with wrong types in some fields (or none: then valid)."""
    event = cancellation(run_id=draw(run_ids), function_id=draw(function_ids))
    event["name"] = draw(st.sampled_from([CANCELLED, FINISHED, SIGNAL, "app/user.created"]))
    if event["name"] == FINISHED:
        event["data"]["_inngest"] = {"status": draw(st.sampled_from(["Cancelled", "Completed", "Failed"]))}
    if event["name"] == SIGNAL:
        event["data"]["job"] = event["data"]["event"]["data"]["job"]
    return draw(mutated(event, EVENT_PATHS))


event_bodies = st.one_of(near_valid_events(), st.lists(near_valid_events(), min_size=1, max_size=4))


# ---------------------------------------------------------------- bytes on the wire

ENCODINGS = ("utf-8", "utf-8", "utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "utf-32", "latin-1")
"""Weighted toward UTF-8; the others are what misconfigured clients send (json.loads detects some of them)."""


def _encode(text: str, encoding: str) -> bytes:
    if encoding == "latin-1":
        return text.encode(encoding, errors="replace")
    return text.encode(encoding, errors="surrogatepass")


@st.composite
def encoded(draw: st.DrawFn, values: st.SearchStrategy[Any]) -> bytes:
    """A JSON value as bytes: an encoding, then maybe a NUL, an invalid UTF-8 sequence, a cut or trailing junk."""
    body = _encode(render(draw(values), ensure_ascii=draw(st.booleans())), draw(st.sampled_from(ENCODINGS)))
    damage = draw(st.sampled_from(["none", "none", "none", "nul", "invalid-utf8", "surrogate-utf8", "cut", "suffix"]))
    at = draw(st.integers(0, len(body)))
    if damage == "nul":
        body = body[:at] + b"\x00" + body[at:]
    elif damage == "invalid-utf8":
        body = body[:at] + draw(st.sampled_from([b"\xff", b"\xc0\x80", b"\xe2\x82", b"\xf8\x88\x80\x80\x80"])) + body[at:]
    elif damage == "surrogate-utf8":
        body = body[:at] + b"\xed\xa0\x80" + body[at:]
    elif damage == "cut":
        body = body[:at]
    elif damage == "suffix":
        body += draw(st.sampled_from([b"}", b",", b" x", b"\n{}", b"\x00"]))
    return body


not_json = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=100).map(lambda text: text.encode("utf-8", errors="surrogatepass")),
    st.sampled_from([
        b"", b" ", b"\n\t", b"null", b"true", b"0", b'"x"', b"[]", b"{}", b"[[]]", b"[null]", b"[{}]",
        b"a=b&c=d", b"<event/>", b"\xef\xbb\xbf{}", b"\xfe\xff", b"\x00" * 8, b"{" * 50, b"--x\r\n\r\n--x--",
        b"[" + b"{}," * 5_000 + b"{}]",  # over the default batch limit of 5000 events
    ]),
)
"""Bodies that are not an event at all: binary, text, forms, markup, empty, a batch too long."""

header_text = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=40
).map(str.strip)
"""What an HTTP header value can carry: Latin-1 text without control characters."""

content_types = weighted(
    (6, st.sampled_from([None, "application/json", "application/json; charset=utf-8"])),
    (1, st.sampled_from([
        "application/json", "application/json; charset=utf-8", "application/json; charset=utf-16",
        "APPLICATION/JSON", "application/cloudevents+json", "application/vnd.api+json", "text/plain", "text/json",
        "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "multipart/form-data",
        "application/octet-stream", "", ";", "application/json;;;", "*/*", "application/", "/json",
    ])),
    (1, header_text),
)


# ---------------------------------------------------------------- credentials


@dataclass(frozen=True)
class Auth:
    """How a request is authenticated; headers are built when it is sent, so signatures are fresh."""

    kind: str
    value: str = ""

    def headers(self, body: bytes) -> dict[str, str]:
        if self.kind == "token":
            return {"Authorization": f"Bearer {INGEST_TOKEN}"}
        if self.kind in ("signed", "fallback", "other-key", "stale"):
            key = {"signed": SIGNING_KEY, "fallback": FALLBACK_KEY, "stale": SIGNING_KEY}.get(self.kind, OTHER_KEY)
            now = time.time() - (int(self.value) if self.kind == "stale" else 0)
            return {signature.HEADER: sign_anything(body, key, now)}
        if self.kind == "raw-signature":
            return {signature.HEADER: self.value.replace("{now}", str(int(time.time())))}
        if self.kind == "raw-authorization":
            return {"Authorization": self.value}
        return {}


def sign_anything(body: bytes, key: str, now: float) -> str:
    """Inngest's signature of `body`; of `{}` when `body` has no canonical form (not JSON, not Unicode, too deep)."""
    try:
        return signature.sign(body, key, now=now)
    except (ValueError, RecursionError):
        return signature.sign(b"{}", key, now=now)


MALFORMED_SIGNATURES = (
    "t={now}&s=\u00e9", "t={now}&s=%FF", "t={now}&s=", "t=&s=00", "s=00", "t={now}", "t=\u00b2&s=00", "t=-5&s=00",
    "t=1e9&s=00", "t={now}&t=1&s=00", "t={now}&s=00&s=11", "t=99999999999999999999999&s=00", "&&&", "=", "t={now}&s=0" * 3,
)
"""Hand-picked header shapes: non-ASCII and percent-encoded MACs, missing fields, odd digits, repeats."""

credentials = weighted(
    (6, st.sampled_from([Auth("signed"), Auth("signed"), Auth("fallback"), Auth("token")])),
    (1, st.sampled_from([Auth("none"), Auth("other-key")])),
    (1, st.integers(301, 10**7).map(lambda age: Auth("stale", str(age)))),
    (1, st.one_of(st.sampled_from(MALFORMED_SIGNATURES), header_text).map(lambda value: Auth("raw-signature", value))),
    (1, st.one_of(header_text, st.sampled_from(["Bearer", "Bearer ", "bearer x", "Basic dXNlcjpwYXNz", f"Bearer {INGEST_TOKEN}x"])).map(
        lambda value: Auth("raw-authorization", value)
    )),
)
"""Mostly credentials that get in (the body is then what is tested), the rest every way of getting them wrong."""


# ---------------------------------------------------------------- requests


@dataclass(frozen=True, repr=False)
class FuzzRequest:
    """One request; `kind` names how it was made, for the statistics and a failure's message."""

    method: str
    path: str
    body: bytes
    auth: Auth
    content_type: str | None = "application/json"
    extra_headers: Mapping[str, str] = field(default_factory=dict)
    chunked: bool = False
    kind: str = ""

    def headers(self) -> dict[str, str]:
        headers = {**self.extra_headers, **self.auth.headers(self.body)}
        if self.content_type is not None:
            headers["Content-Type"] = self.content_type
        return headers

    def describe(self) -> str:
        return f"{self.method} {self.path} [{self.kind}, auth {self.auth.kind}, {len(self.body)} bytes] {self.body[:200]!r}"

    def __repr__(self) -> str:
        """Short: hypothesis prints a failing example, and a body can weigh megabytes."""
        return f"FuzzRequest({self.describe()}, content_type={self.content_type!r}, headers={dict(self.extra_headers)!r})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        """What hypothesis' pretty-printer calls (it would otherwise print every field in full)."""
        printer.text(repr(self))


@dataclass(frozen=True)
class Answer:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            return None


Sender = Callable[[FuzzRequest], Answer]


def flask_sender(client: FlaskClient) -> Sender:
    """Send through the Flask test client: the app alone, thousands of requests a minute."""

    def send(request: FuzzRequest) -> Answer:
        response = client.open(request.path, method=request.method, data=request.body, headers=request.headers())
        return Answer(response.status_code, CaseInsensitiveDict(response.headers.items()), response.get_data())

    return send


def http_sender(base_url: str, session: requests.Session) -> Sender:
    """Send over HTTP to a real server; `chunked` requests go without a Content-Length."""

    def send(request: FuzzRequest) -> Answer:
        data: bytes | Iterable[bytes] = iter([request.body]) if request.chunked else request.body
        response = session.request(request.method, base_url + request.path, data=data, headers=request.headers(), timeout=60)
        if response.status_code == 413:
            # the body was not read, so gunicorn closes the connection (though it said keep-alive): do not reuse it
            session.close()
        return Answer(response.status_code, response.headers, response.content)

    return send


@st.composite
def events_requests(draw: st.DrawFn) -> FuzzRequest:
    """A `POST /events` with a malformed, nearly valid or valid body and any credentials."""
    kind, body = draw(weighted(
        (3, encoded(event_bodies).map(lambda body: ("near-valid", body))),
        (1, encoded(json_trees).map(lambda body: ("json-tree", body))),
        (1, not_json.map(lambda body: ("not-json", body))),
    ))
    return FuzzRequest(
        "POST", "/events", body, draw(credentials), draw(content_types), chunked=draw(st.booleans()), kind=kind
    )


ENVELOPE_PATHS: tuple[tuple[str | int, ...], ...] = (
    ("event",), ("events",), ("events", 0), ("steps",), ("ctx",), ("ctx", "attempt"), ("ctx", "run_id"),
    ("ctx", "stack"), ("ctx", "stack", "stack"), ("ctx", "disable_immediate_execution"), ("ctx", "max_attempts"),
    ("version",),
)
"""The executor body's fields, except `use_api`: true makes the SDK fetch the run from Inngest's API, whose answer is not the body's."""


@st.composite
def inngest_requests(draw: st.DrawFn, function_ids: list[str]) -> FuzzRequest:
    """A request to `/api/inngest` as a confused or hostile Inngest would send it: invocations, syncs, inspections.

    A signed out-of-band sync (a PUT without the in-band header) is left out: it
    registers the app with Inngest's API whatever its body, so its answer is the API's.
    """
    method = draw(st.sampled_from(["POST", "POST", "POST", "PUT", "GET"]))
    auth = draw(credentials)
    headers: dict[str, str] = {"X-Inngest-Server-Kind": draw(st.sampled_from(["cloud", "cloud", "dev", "junk"]))}
    query = ""
    if method == "POST":
        fn_id = draw(st.sampled_from(function_ids))
        query = draw(st.one_of(
            st.just(f"?fnId={fn_id}&stepId=step"),
            st.sampled_from(["", "?fnId=", "?fnId=nope", "?probe=trust", "?probe=junk", f"?fnId={fn_id}&probe=nope"]),
            st.text(max_size=20).map(lambda text: f"?fnId={fn_id}&stepId=" + urllib.parse.quote(text, errors="surrogatepass")),
        ))
        event = draw(st.one_of(near_valid_events(), json_trees))
        envelope = execution_request(fn_id, event, str(ulid.ULID()))
        kind, body = draw(weighted(
            (3, encoded(mutated(envelope, ENVELOPE_PATHS)).map(lambda body: ("envelope", body))),
            (1, encoded(json_trees).map(lambda body: ("json-tree", body))),
            (1, not_json.map(lambda body: ("not-json", body))),
        ))
    elif method == "PUT":
        signed = auth.kind in ("signed", "fallback")
        if signed or draw(st.booleans()):
            headers[SYNC_KIND] = "in_band"
        kind, body = draw(weighted(
            (2, encoded(st.fixed_dictionaries({"url": json_trees})).map(lambda body: ("sync", body))),
            (1, encoded(json_trees).map(lambda body: ("json-tree", body))),
            (1, not_json.map(lambda body: ("not-json", body))),
        ))
    else:
        kind, body = "inspection", draw(st.sampled_from([b"", b"{}"]))
    return FuzzRequest(method, "/api/inngest" + query, body, auth, draw(content_types), headers, kind=kind)


def is_deliberate_run_failure(request: FuzzRequest, answer: Answer) -> bool:
    """Inngest's protocol for a run that failed for good: 500, `X-Inngest-No-Retry: true`, a NonRetriableError.

    The exporter answers so when Inngest hands it an event it refuses (the
    SDK has no other way to report a failed run); it is a verdict, not a crash.
    """
    body = answer.json()
    return (
        request.path.startswith("/api/inngest")
        and answer.status == 500
        and answer.headers.get(NO_RETRY) == "true"
        and isinstance(body, dict)
        and body.get("name") == "NonRetriableError"
    )


def assert_survived(request: FuzzRequest, answer: Answer) -> None:
    """Never a 5xx (but a deliberate run failure): a client's mistake is answered, never crashed on.

    On /api/inngest a refusal other than 401 says `X-Inngest-No-Retry: true`, or
    Inngest would send the same doomed request again (it retries any 4xx without it).
    """
    assert answer.status < 500 or is_deliberate_run_failure(request, answer), (
        f"{answer.status} for {request.describe()}: {answer.body[:500]!r}"
    )
    if request.path.startswith("/api/inngest") and 400 <= answer.status < 500 and answer.status != 401:
        assert answer.headers.get(NO_RETRY) == "true", f"{answer.status} without {NO_RETRY} for {request.describe()}"


def accepted(answer: Answer) -> int:
    """How many cancellations an answer says were accepted (0 when it is not an ingest summary)."""
    body = answer.json()
    if answer.status == 200 and isinstance(body, dict) and isinstance(body.get("accepted"), int):
        return int(body["accepted"])
    return 0
