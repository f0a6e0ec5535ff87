"""Inngest's signature scheme, checked against the official SDK's own signer."""

from __future__ import annotations

import json
import time
from typing import Callable

import pytest
from inngest._internal import net

from exporter import signature
from tests.support.payloads import FALLBACK_KEY, SIGNING_KEY

BODY = json.dumps({"name": "x", "data": {"b": 1.0, "a": "é"}}).encode()


def test_accepts_what_the_inngest_sdk_signs() -> None:
    header = net.sign_request(BODY, SIGNING_KEY)
    signature.verify(BODY, header, [SIGNING_KEY])


def test_signs_what_the_inngest_sdk_accepts() -> None:
    header = signature.sign(BODY, SIGNING_KEY)
    result = net.validate_request_sig(
        body=BODY, headers={"x-inngest-signature": header}, mode=net.server_lib.ServerKind.CLOUD,
        signing_key=SIGNING_KEY, signing_key_fallback=None,
    )
    assert result == SIGNING_KEY


def test_signature_covers_the_canonical_body_not_its_whitespace() -> None:
    header = signature.sign(BODY, SIGNING_KEY)
    signature.verify(json.dumps(json.loads(BODY), indent=2).encode(), header, [SIGNING_KEY])


def test_integers_beyond_two_to_the_53_verify_as_inngest_signs_them() -> None:
    body = json.dumps({"name": "x", "data": {"id": 12345678901234567890}}).encode()
    signature.verify(body, net.sign_request(body, SIGNING_KEY), [SIGNING_KEY])


def test_fallback_key_is_accepted_during_rotation_and_named_as_the_one_that_matched() -> None:
    """The SDK signs its answer with the key that verified the request: `verify` says which one that was."""
    assert signature.verify(BODY, signature.sign(BODY, FALLBACK_KEY), [SIGNING_KEY, FALLBACK_KEY]) == FALLBACK_KEY
    assert signature.verify(BODY, signature.sign(BODY, SIGNING_KEY), [SIGNING_KEY, FALLBACK_KEY]) == SIGNING_KEY


def test_a_body_sent_canonical_is_verified_without_canonicalising_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Inngest's executor sends JCS-canonical bodies: their raw MAC matches, so the costly canonical form is never made."""
    canonical = signature.canonical_body(BODY)
    header = signature.sign(canonical, SIGNING_KEY)
    monkeypatch.setattr(signature, "canonical_body", lambda body: pytest.fail("canonicalised a canonical body"))
    assert signature.verify(canonical, header, [SIGNING_KEY]) == SIGNING_KEY


@pytest.mark.parametrize(
    ("make_header", "message"),
    [
        (lambda: "garbage", "malformed"),
        (lambda: "t=abc&s=00", "malformed"),
        (lambda: signature.sign(BODY, "signkey-test-other"), "does not match"),
        (lambda: signature.sign(BODY, SIGNING_KEY, now=time.time() - 301), "more than 300 seconds"),
        (lambda: signature.sign(BODY, SIGNING_KEY, now=time.time() + 301), "more than 300 seconds"),
    ],
)
def test_refusals_say_why_without_revealing_the_key(make_header: Callable[[], str], message: str) -> None:
    header = make_header()
    with pytest.raises(signature.SignatureError, match=message) as err:
        signature.verify(BODY, header, [SIGNING_KEY])
    assert SIGNING_KEY.split("-")[-1] not in str(err.value)


def test_tampered_body_is_refused() -> None:
    header = signature.sign(BODY, SIGNING_KEY)
    with pytest.raises(signature.SignatureError):
        signature.verify(BODY.replace(b'"x"', b'"y"'), header, [SIGNING_KEY])
