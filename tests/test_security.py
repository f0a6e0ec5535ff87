"""Security of both ingresses on the real `serve` process: replays, key rotation, constant-time checks, no leaked secret.

- A signed request whose timestamp is more than 5 minutes off is refused, on
  `/events` and on `/api/inngest`, whether the clock is behind or ahead.
- During a rotation the fallback key works on both ingresses; any other key does
  not, nor does the old key once the rotation is over.
- Tokens and MACs are compared with `hmac.compare_digest` (a static check).
- With DEBUG logging and every secret in use (and refused), no secret, nor a form
  derived from it, appears in the log or in a response body.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import json
import math
import re
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import requests
import ulid
from inngest._internal import net as sdk_net

from exporter import ingress_events, signature
from exporter.parsing import CANCELLED
from tests.conftest import ServeProcess
from tests.support.fake_inngest_api import FakeInngestApi
from tests.support.inngest_driver import InngestDriver, SyncedFunction
from tests.support.payloads import FALLBACK_KEY, OTHER_KEY, REPO, SIGNING_KEY, cancellation
from tests.support.recording_server import RecordingServer, forbidden
from tests.support.waiting import eventually

WINDOW = 300
"""The replay window, in seconds (fixed by the contract)."""


def post_signed(server: ServeProcess, event: dict[str, Any], key: str, now: float | None = None) -> requests.Response:
    """`POST /events` signed with `key` as of `now`, as a forwarder that signs like Inngest would send it."""
    body = json.dumps(event).encode()
    headers = {"Content-Type": "application/json", signature.HEADER: signature.sign(body, key, now=now)}
    return requests.post(f"{server.url}/events", data=body, headers=headers, timeout=10)


def seconds_from_now(offset: int) -> float:
    """A whole second at least `offset` seconds from now, in its direction: a signature's timestamp is whole seconds,
    and `int()` would bring a time ahead of now up to a second closer, inside the window it is meant to be outside."""
    moved = time.time() + offset
    return float(math.ceil(moved) if offset > 0 else math.floor(moved))


def counted(server: ServeProcess) -> float:
    return server.metric("inngest_function_cancellations_total") or 0.0


# ---------------------------------------------------------------- replay


@pytest.mark.parametrize("offset", [-(WINDOW + 1), WINDOW + 1], ids=["301s-old", "301s-ahead"])
def test_a_signed_events_request_outside_the_window_is_refused(serve: Callable[..., ServeProcess], offset: int) -> None:
    server = serve()
    response = post_signed(server, cancellation(), SIGNING_KEY, now=seconds_from_now(offset))
    assert response.status_code == 401
    assert "more than 300 seconds from now" in response.json()["error"]
    assert counted(server) == 0.0


def test_a_replay_inside_the_window_changes_no_count(serve: Callable[..., ServeProcess]) -> None:
    """What the window lets through is a redelivery: the run id is remembered, so a replay counts nothing twice."""
    server = serve()
    body = json.dumps(cancellation()).encode()
    headers = {"Content-Type": "application/json", signature.HEADER: signature.sign(body, SIGNING_KEY, now=time.time() - WINDOW + 5)}
    first, replay = (requests.post(f"{server.url}/events", data=body, headers=headers, timeout=10) for _ in range(2))
    assert (first.status_code, first.json()["accepted"]) == (200, 1)
    assert (replay.status_code, replay.json()["duplicates"]) == (200, 1)
    assert counted(server) == 1.0


@pytest.mark.parametrize("offset", [-(WINDOW + 1), WINDOW + 1], ids=["301s-old", "301s-ahead"])
def test_a_signed_inngest_request_outside_the_window_is_refused(
    serve: Callable[..., ServeProcess], http: requests.Session, offset: int
) -> None:
    server = serve()
    function = InngestDriver(server.url, SIGNING_KEY, session=http).sync().function_for(CANCELLED)
    shifted = InngestDriver(server.url, SIGNING_KEY, clock=lambda: seconds_from_now(offset), session=http)
    invocation = shifted.invoke(function, cancellation())
    assert invocation.status == 401 and "more than 300 seconds from now" in invocation.body["error"]
    assert shifted.in_band_sync().status_code == 401
    assert counted(server) == 0.0


# ---------------------------------------------------------------- rotation


def accepted_on_both_ingresses(
    server: ServeProcess, http: requests.Session, function: SyncedFunction, key: str
) -> tuple[int, int, int]:
    """The statuses of a signed `/events` push, an in-band sync and an invocation, all signed with `key`."""
    driver = InngestDriver(server.url, key, session=http)
    events = post_signed(server, cancellation(str(ulid.ULID())), key).status_code
    return events, driver.in_band_sync().status_code, driver.invoke(function, cancellation(str(ulid.ULID()))).status


def test_rotation_accepts_the_fallback_key_on_both_ingresses_and_no_other(
    serve: Callable[..., ServeProcess], http: requests.Session
) -> None:
    server = serve(INNGEST_SIGNING_KEY_FALLBACK=FALLBACK_KEY)
    function = InngestDriver(server.url, SIGNING_KEY, session=http).sync().function_for(CANCELLED)
    assert accepted_on_both_ingresses(server, http, function, SIGNING_KEY) == (200, 200, 200)
    assert accepted_on_both_ingresses(server, http, function, FALLBACK_KEY) == (200, 200, 200)
    assert accepted_on_both_ingresses(server, http, function, OTHER_KEY) == (401, 401, 401)
    assert counted(server) == 4.0


def test_the_old_key_is_refused_once_the_rotation_is_over(serve: Callable[..., ServeProcess], http: requests.Session) -> None:
    server = serve(INNGEST_SIGNING_KEY=FALLBACK_KEY)  # the new key; the old one (SIGNING_KEY) no longer configured
    function = InngestDriver(server.url, FALLBACK_KEY, session=http).sync().function_for(CANCELLED)
    assert accepted_on_both_ingresses(server, http, function, SIGNING_KEY) == (401, 401, 401)
    assert accepted_on_both_ingresses(server, http, function, FALLBACK_KEY) == (200, 200, 200)


# ---------------------------------------------------------------- constant time

SECRET_WORDS = {"token", "tokens", "signature", "signatures", "sig", "mac", "macs", "hmac", "digest", "secret", "password",
                "key", "keys", "credential", "credentials", "authorization"}


def _words(name: str) -> set[str]:
    return {word.lower() for word in re.findall(r"[A-Za-z][a-z0-9]*", name)}


def _secret_names(node: ast.AST) -> list[str]:
    """Names of values in `node` that look like secrets; CamelCase names are types (an enum `HeaderKey`), not values."""
    found = []
    for child in ast.walk(node):
        name = child.id if isinstance(child, ast.Name) else child.attr if isinstance(child, ast.Attribute) else None
        if name and not name[0].isupper() and _words(name) & SECRET_WORDS:
            found.append(name)
    return found


def test_no_secret_is_compared_with_a_timing_dependent_operator() -> None:
    """Static: no `==`, `!=`, `in` or `not in` in exporter/ has an operand named like a token, key, MAC or signature.

    It reads names, not data flow: a secret renamed `x` would escape it. It is a
    tripwire for the obvious mistake, with the comparisons that matter checked below.
    """
    offenders = []
    for path in sorted((REPO / "exporter").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Compare) and any(isinstance(op, (ast.Eq, ast.NotEq, ast.In, ast.NotIn)) for op in node.ops):
                names = [name for operand in (node.left, *node.comparators) for name in _secret_names(operand)]
                if names:
                    offenders.append(f"{path.relative_to(REPO)}:{node.lineno}: {ast.unparse(node)}")
    assert offenders == []


@pytest.mark.parametrize(
    "function", [signature._matching_key, ingress_events.authenticate, sdk_net._validate_sig],
    ids=["exporter.signature._matching_key", "exporter.ingress_events.authenticate", "inngest SDK _validate_sig"],
)
def test_tokens_and_macs_are_compared_with_compare_digest(function: Callable[..., Any]) -> None:
    """Static: each place that checks a credential calls `hmac.compare_digest` (the SDK's own MAC check included)."""
    calls = [node for node in ast.walk(ast.parse(inspect.getsource(function).strip()))
             if isinstance(node, ast.Call) and ast.unparse(node.func) == "hmac.compare_digest"]
    assert calls


# ---------------------------------------------------------------- no secret in logs or answers

DISTINCT_SIGNING_KEY = "signkey-prod-" + "5ec7e75ec7e7" * 5 + "a1b2"
DISTINCT_FALLBACK_KEY = "signkey-prod-" + "fa11bacc" * 8
DISTINCT_TOKEN = "ingest-token-Zq8wV3mK7pLx2Rt9"
DISTINCT_DD_API_KEY = "ddapikey9f8e7d6c5b4a39281706"


def forbidden_forms() -> dict[str, str]:
    """Every secret, and every form of one an attacker could use: keys without prefix, and as the SDK hashes them."""
    forms = {"ingest token": DISTINCT_TOKEN, "DD_API_KEY": DISTINCT_DD_API_KEY}
    for name, key in (("signing key", DISTINCT_SIGNING_KEY), ("fallback key", DISTINCT_FALLBACK_KEY)):
        bare = key.removeprefix("signkey-prod-")
        forms[name] = key
        forms[f"{name} without prefix"] = bare
        forms[f"{name}, SHA-256 as the SDK sends it to Inngest's API"] = hashlib.sha256(bytes.fromhex(bare)).hexdigest()
    return forms


INSPECTION_HASHES = ("signing_key_hash", "signing_key_fallback_hash")
"""Where the SDK puts the keys' SHA-256 in its answer to a correctly signed sync or inspection (see the test)."""


def leaks(text: str) -> list[str]:
    return [name for name, form in forbidden_forms().items() if form in text]


@pytest.fixture
def datadog_refusing() -> Iterator[RecordingServer]:
    """Datadog answering 403 (a revoked key) to every event, so the sender logs its failures."""
    with RecordingServer() as datadog:
        datadog.script(*[forbidden()] * 1000)
        yield datadog


@pytest.fixture
def inngest_api_refusing() -> Iterator[FakeInngestApi]:
    """Inngest's REST API refusing both keys, so the bulk poller retries with the fallback key and logs the failure."""
    api = FakeInngestApi()
    with api:
        yield api


def test_no_secret_appears_in_the_log_or_any_answer(
    serve: Callable[..., ServeProcess],
    http: requests.Session,
    tmp_path: Path,
    datadog_refusing: RecordingServer,
    inngest_api_refusing: FakeInngestApi,
) -> None:
    """Good, bad and unauthenticated traffic on both ingresses, Datadog and Inngest's API refusing the keys.

    One exception, the SDK's by design: its answer to a correctly signed sync or
    inspection carries the keys' SHA-256 (`signing_key_hash`), which is also what
    it sends Inngest's API as a bearer token. Only a holder of the key gets it;
    these answers are checked with those two fields removed, so any other leak fails.
    """
    config = tmp_path / "config.yaml"
    config.write_text("bulk_cancellations:\n  poll_interval: 1s\n")
    server = serve(
        "--log-level", "debug", "--config", str(config),
        INNGEST_SIGNING_KEY=DISTINCT_SIGNING_KEY, INNGEST_SIGNING_KEY_FALLBACK=DISTINCT_FALLBACK_KEY,
        EXPORTER_INGEST_TOKEN=DISTINCT_TOKEN, DD_API_KEY=DISTINCT_DD_API_KEY,
        EXPORTER_DATADOG_URL=datadog_refusing.url, INNGEST_API_BASE_URL=inngest_api_refusing.url,
        EXPORTER_ATTRIBUTION_GRACE="1s",
    )
    answers: list[tuple[str, requests.Response | str]] = []

    def events(name: str, headers: dict[str, str], body: Any = None) -> None:
        data = json.dumps(body or cancellation(str(ulid.ULID()))).encode()
        if headers.get(signature.HEADER) == "sign":
            headers = {**headers, signature.HEADER: signature.sign(data, DISTINCT_SIGNING_KEY)}
        headers = {"Content-Type": "application/json", **headers}
        answers.append((name, http.post(f"{server.url}/events", data=data, headers=headers, timeout=10)))

    events("token", {"Authorization": f"Bearer {DISTINCT_TOKEN}"})
    events("signed", {signature.HEADER: "sign"})
    events("wrong token", {"Authorization": f"Bearer {DISTINCT_TOKEN[:-1]}"})
    events("no credentials", {})
    events("wrong key", {signature.HEADER: signature.sign(b"{}", OTHER_KEY)})
    events("stale", {signature.HEADER: signature.sign(b"{}", DISTINCT_SIGNING_KEY, now=time.time() - 3600)})
    events("malformed signature", {signature.HEADER: "t=1&s=\u00e9"})
    events("invalid event", {"Authorization": f"Bearer {DISTINCT_TOKEN}"}, {"name": CANCELLED, "data": {}})
    events("wrong content type", {"Authorization": f"Bearer {DISTINCT_TOKEN}", "Content-Type": "text/plain"})

    drivers = {name: InngestDriver(server.url, key, session=http) for name, key in (
        ("signed", DISTINCT_SIGNING_KEY), ("fallback", DISTINCT_FALLBACK_KEY), ("wrong key", OTHER_KEY), ("unsigned", None),
    )}
    synced = drivers["signed"].sync()
    function = synced.function_for(CANCELLED)
    bad = cancellation()
    del bad["data"]["run_id"]
    for name, driver in drivers.items():
        answers.append((f"inngest {name} sync", driver.in_band_sync()))
        answers.append((f"inngest {name} inspection", driver.send("GET", driver.url, None)))
        answers.append((f"inngest {name} out-of-band sync", driver.send("PUT", driver.url, {})))
        for event_name, event in (("good", cancellation(str(ulid.ULID()))), ("invalid", bad)):
            invocation = driver.invoke(function, event)
            answers.append((f"inngest {name} {event_name} invocation", json.dumps(invocation.body)))

    # the secrets were used and refused: Datadog saw the API key, Inngest's API both signing keys
    datadog_refusing.wait_for(2, timeout=20)
    assert datadog_refusing.requests[0].headers["DD-API-KEY"] == DISTINCT_DD_API_KEY
    eventually(lambda: {r.headers["Authorization"] for r in inngest_api_refusing.requests} >= {
        f"Bearer {DISTINCT_SIGNING_KEY}", f"Bearer {DISTINCT_FALLBACK_KEY}"
    }, timeout=20)
    http.close()
    server.stop()

    log = server.log()
    assert " DEBUG " in log and "bulk cancellations" in log and "Datadog" in log, log[-3000:]
    assert leaks(log) == [], [line for line in log.splitlines() if leaks(line)][:10]
    for name, answer in answers:
        body = answer if isinstance(answer, str) else answer.text
        if name in ("inngest signed sync", "inngest fallback sync", "inngest signed inspection", "inngest fallback inspection"):
            body = without_inspection_hashes(body)
        assert leaks(body) == [], f"{name}: {body[:1000]}"


def without_inspection_hashes(body: str) -> str:
    """An authenticated sync or inspection answer without the SDK's two key-hash fields (the rest is checked)."""
    document = json.loads(body)
    inspection = document.get("inspection", document)
    for field in INSPECTION_HASHES:
        inspection.pop(field, None)
    return json.dumps(document)
