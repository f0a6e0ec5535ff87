"""Reading Inngest's REST API with the signing key: what the bulk poller and the run lookups share.

Both ask `settings.api_base_url` (Inngest Cloud, a self-hosted server, or in
development mode the dev server) with `Authorization: Bearer <signing key>`,
once more with the fallback key after a 401, within a timeout; both turn every
way a request can fail into one `ApiFailure` whose message never holds a key;
and both tell a failure that lasts through `exporter.failure_log.FailureLog`.
"""

from __future__ import annotations

import threading
from typing import Any, Mapping

import requests

from exporter.failure_log import plain_reason
from exporter.settings import Settings

class ApiFailure(Exception):
    """A request that read nothing usable; the message says why, without the key.

    `kind` names the failure without the details that change from one request to the
    next (a connection's address), so that a repeat is recognised. For an answer that
    is not 2xx: its `status`, the server's own words (`error`) when it gives them, and
    whether it came with no body at all (`empty`).
    """

    def __init__(
        self, message: str, *, kind: str, status: int | None = None, error: str | None = None, empty: bool = False
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status
        self.error = error
        self.empty = empty


class InngestApi:
    """GETs JSON from Inngest's REST API; every failure is an ApiFailure.

    Each thread keeps its own connection (a requests Session is not shared across threads):
    the run lookups ask one request after another, and a new connection for each cost more
    than the request itself.
    """

    def __init__(self, settings: Settings, *, timeout: float) -> None:
        self.base_url = settings.api_base_url.rstrip("/")
        self._keys = settings.signing_keys
        self._timeout = timeout
        self._local = threading.local()

    def get_json(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        """The answer to `GET path`, asked with the signing key and once more with the fallback key after a 401."""
        keys = self._keys or [None]
        response = self._request(path, params, keys[0])
        if response.status_code == 401 and len(keys) > 1:
            response = self._request(path, params, keys[1])
        if not 200 <= response.status_code < 300:
            raise _refusal(response)
        try:
            return response.json()
        except ValueError:
            content_type = response.headers.get("Content-Type")
            raise ApiFailure(f"answer is not JSON (Content-Type {content_type!r})", kind="not JSON") from None

    def _request(self, path: str, params: Mapping[str, str] | None, key: str | None) -> requests.Response:
        headers = {"Accept": "application/json"} | ({"Authorization": f"Bearer {key}"} if key else {})
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        try:
            return session.get(self.base_url + path, params=params, headers=headers, timeout=self._timeout)
        except requests.Timeout:
            raise ApiFailure(f"no answer within {self._timeout:g}s", kind="timeout") from None
        except requests.RequestException as err:
            kind, reason = plain_reason(err)
            raise ApiFailure(reason, kind=kind) from None

    def redacted(self, message: str) -> str:
        """`message` with any signing key masked, as is or escaped (requests quotes a refused header): never log a key."""
        for key in self._keys:
            for form in (key, repr(key)[1:-1]):
                message = message.replace(form, "<signing key>")
        return message


def _refusal(response: requests.Response) -> ApiFailure:
    """The failure of an answer that is not 2xx, with the server's own words when it gives them."""
    status = response.status_code
    empty = not response.content.strip()
    error = _error_field(response)
    if error is not None:
        detail = f" ({error[:200]!r})"
    else:
        detail = " with no body" if empty else ""
    return ApiFailure(f"answered HTTP {status}{detail}", kind=f"HTTP {status}", status=status, error=error, empty=empty)


def _error_field(response: requests.Response) -> str | None:
    """The message of an answer in one of the server's error shapes, if it is one.

    REST v1 answers `{"error": ..., "status": ...}`; API v2 `{"errors": [{"code": ..., "message": ...}]}`.
    """
    try:
        body = response.json()
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    error = body.get("error")
    errors = body.get("errors")
    if error is None and isinstance(errors, list) and errors and isinstance(errors[0], dict):
        error = errors[0].get("message")
    return error if isinstance(error, str) and error else None
