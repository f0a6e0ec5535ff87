"""Inngest's request signature: `X-Inngest-Signature: t=<unix seconds>&s=<hex>`.

The MAC is HMAC-SHA256 over the JCS-canonical (RFC 8785) body followed by the
timestamp, keyed with the signing key minus its `signkey-<env>-` prefix. Unlike
the Python SDK, verification here also refuses timestamps outside the replay window.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
import urllib.parse
from typing import Any

import rfc8785

from exporter.settings import SIGNATURE_MAX_AGE_SECONDS

HEADER = "X-Inngest-Signature"
_KEY_PREFIX = re.compile(r"^signkey-\w+-")


class SignatureError(Exception):
    """Why a signature was refused; the message never contains a key or a MAC."""


def _key_bytes(signing_key: str) -> bytes:
    return _KEY_PREFIX.sub("", signing_key, count=1).encode("utf-8")


def canonical_body(body: bytes) -> bytes:
    """The JCS form Inngest signs; an empty body stays empty. ValueError when not JSON."""
    if not body:
        return body
    return rfc8785.dumps(json.loads(body))


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
    fields = urllib.parse.parse_qs(header, keep_blank_values=True)
    timestamps, macs = fields.get("t"), fields.get("s")
    if not timestamps or not macs or not timestamps[0].isdigit() or not macs[0]:
        raise SignatureError(f"{HEADER} header is malformed: expected t=<unix seconds>&s=<hex>")
    return int(timestamps[0]), macs[0]


def check_age(timestamp: int, now: float | None = None) -> None:
    """Refuse a timestamp outside the replay window (either direction, for clock skew)."""
    now = time.time() if now is None else now
    if abs(now - timestamp) > SIGNATURE_MAX_AGE_SECONDS:
        raise SignatureError(
            f"{HEADER} timestamp is more than {SIGNATURE_MAX_AGE_SECONDS} seconds from now: refused as a possible replay"
        )


def verify(body: bytes, header: str, keys: list[str], now: float | None = None) -> None:
    """Accept when the header is fresh and its MAC matches any of `keys`; SignatureError otherwise."""
    timestamp, given = parse_header(header)
    check_age(timestamp, now)
    try:
        canonical = canonical_body(body)
    except ValueError:
        raise SignatureError("body is not JSON, so its signature cannot be checked") from None
    matched = False
    for key in keys:
        # compare every key, in constant time, so timing does not tell which key is in use
        matched |= hmac.compare_digest(_mac(canonical, str(timestamp), key), given)
    if not matched:
        raise SignatureError(f"{HEADER} does not match the signing key")
