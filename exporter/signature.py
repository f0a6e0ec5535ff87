"""Inngest's request signature: `X-Inngest-Signature: t=<unix seconds>&s=<hex>`.

The MAC is HMAC-SHA256 over the JCS-canonical (RFC 8785) body followed by the
timestamp, keyed with the signing key minus its `signkey-<env>-` prefix. The
canonical form comes from `jcs`, the library the Inngest SDK itself uses, so a
body canonicalises here exactly as Inngest signed it (integers beyond 2^53 as
doubles included). Unlike the Python SDK, verification here also refuses
timestamps outside the replay window.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
import urllib.parse
from typing import Any

import jcs

from exporter.settings import SIGNATURE_MAX_AGE_SECONDS

HEADER = "X-Inngest-Signature"
_KEY_PREFIX = re.compile(r"^signkey-\w+-")
_TIMESTAMP = re.compile(r"[0-9]{1,20}")
_MAC = re.compile(r"[0-9a-fA-F]{1,128}")


class SignatureError(Exception):
    """Why a signature was refused; the message never contains a key or a MAC."""


def _key_bytes(signing_key: str) -> bytes:
    return _KEY_PREFIX.sub("", signing_key, count=1).encode("utf-8")


def canonical_body(body: bytes) -> bytes:
    """The JCS form Inngest signs; an empty body stays empty. ValueError when it has none (not JSON, a huge number)."""
    if not body:
        return body
    try:
        return bytes(jcs.canonicalize(json.loads(body)))
    except OverflowError:  # JCS writes numbers as doubles: one beyond a double's range has no canonical form
        raise ValueError("a number in the body is too large for JSON canonicalization") from None


def _mac(canonical: bytes, timestamp: str, signing_key: str) -> str:
    mac = hmac.new(_key_bytes(signing_key), canonical, hashlib.sha256)
    mac.update(timestamp.encode("utf-8"))
    return mac.hexdigest()


def sign(body: bytes | Any, signing_key: str, now: float | None = None) -> str:
    """The header value Inngest would send for `body` (bytes, or a JSON-serialisable value)."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode("utf-8")
    timestamp = str(int(time.time() if now is None else now))
    return f"t={timestamp}&s={_mac(canonical_body(raw), timestamp, signing_key)}"


def parse_header(header: str) -> tuple[int, str]:
    """(timestamp, mac) from a header value; SignatureError when malformed."""
    malformed = SignatureError(f"{HEADER} header is malformed: expected t=<unix seconds>&s=<hex>")
    fields = urllib.parse.parse_qs(header, keep_blank_values=True)
    try:
        (timestamp,), (mac,) = fields["t"], fields["s"]
    except (KeyError, ValueError):
        raise malformed from None
    # ASCII digits and hex only: int() and hmac.compare_digest (ours and the SDK's) fail on anything else
    if not _TIMESTAMP.fullmatch(timestamp) or not _MAC.fullmatch(mac):
        raise malformed
    return int(timestamp), mac


def check_age(timestamp: int, now: float | None = None) -> None:
    """Refuse a timestamp outside the replay window (either direction, for clock skew)."""
    now = time.time() if now is None else now
    if abs(now - timestamp) > SIGNATURE_MAX_AGE_SECONDS:
        raise SignatureError(
            f"{HEADER} timestamp is more than {SIGNATURE_MAX_AGE_SECONDS} seconds from now: refused as a possible replay"
        )


def verify(body: bytes, header: str, keys: list[str], now: float | None = None) -> str:
    """The key among `keys` whose MAC the fresh header carries (a response is signed with it); SignatureError otherwise.

    Inngest's executor sends bodies that are already JCS-canonical, so a MAC over the
    raw bytes that matches proves the body as it is (it is the canonical form the MAC
    was made over) and canonicalising, most of a check's cost, is left for bodies
    whose raw MAC does not match. Nor can digits of the timestamp be moved to the end
    of the body (the MAC covers the body, then the timestamp): what would be left of
    the timestamp is decades old.
    """
    timestamp, given = parse_header(header)
    check_age(timestamp, now)
    return matching_key(body, timestamp, given, keys)


def matching_key(body: bytes, timestamp: int, given: str, keys: list[str]) -> str:
    """`verify` once the header is parsed and its timestamp found fresh."""
    key = _matching_key(body, str(timestamp), given, keys)
    if key is None:
        try:
            canonical = canonical_body(body)
        except RecursionError:
            raise SignatureError("body is nested too deeply for its signature to be checked") from None
        except ValueError:
            raise SignatureError("body is not JSON, so its signature cannot be checked") from None
        key = _matching_key(canonical, str(timestamp), given, keys) if canonical != body else None
    if key is None:
        raise SignatureError(f"{HEADER} does not match the signing key")
    return key


def _matching_key(signed: bytes, timestamp: str, given: str, keys: list[str]) -> str | None:
    """The first of `keys` whose MAC over `signed` is `given`, or None.

    Every key is compared, in constant time, so timing does not tell which key is in use.
    """
    matched = None
    for key in keys:
        if hmac.compare_digest(_mac(signed, timestamp, key), given) and matched is None:
            matched = key
    return matched
