"""Saying a repeating failure once: when it starts, when its kind changes, as a reminder, and when it ends.

Every background task that talks to something else (the bulk poller and the run
lookups to Inngest's REST API, the Datadog sender, the OTLP span export) retries
for as long as the exporter runs. Logging each failed try would bury the log in one
line per poll or batch; logging none would hide an outage. So each tells it here,
and the counters in /metrics keep counting every try.

`plain_reason` turns the HTTP clients' exceptions (urllib3's "HTTPConnectionPool(...):
Max retries exceeded ... (Caused by NewConnectionError(...))") into the few words
that matter: what could not be done and the operating system's reason.
"""

from __future__ import annotations

import logging
import socket
import ssl
from dataclasses import dataclass

FAILURE_REMINDER_MS = 10 * 60_000
"""While requests keep failing the same way, a reminder is logged this often rather than a warning every time."""


@dataclass
class Outage:
    """Requests failing in a row since `since_ms`, and what was last logged about them."""

    since_ms: int
    failures: int = 0
    told_kind: str | None = None
    told_at_ms: int = 0

    def minutes(self, now_ms: int) -> int:
        return (now_ms - self.since_ms) // 60_000


class FailureLog:
    """Tells a lasting failure through `logger` when it starts, when its kind changes and every FAILURE_REMINDER_MS.

    `what` names the request in the warnings (`bulk cancellations: polling GET <url>`),
    `attempts` counts them (`polls`), `advice` says what the failure means and what to set:
    `<what> failed: <reason>. <advice>`, then
    `<what> still fails: <reason> (<n> <attempts> in a row, for <m> minutes). <advice>`.
    `recovered` tells its end; a caller with words of its own for it uses `ended`.
    Not thread-safe: a caller with several threads holds a lock around it.
    """

    def __init__(self, logger: logging.Logger, what: str, attempts: str, advice: str = "") -> None:
        self._log = logger
        self._what = what
        self._attempts = attempts
        self._advice = f". {advice}" if advice else ""
        self._outage: Outage | None = None

    def count(self, now_ms: int) -> Outage:
        """One more failure: the outage it belongs to (a new one when requests had succeeded)."""
        outage = self._outage = self._outage or Outage(since_ms=now_ms)
        outage.failures += 1
        return outage

    def tell(self, kind: str, reason: str, now_ms: int) -> None:
        """Warn about the failure just counted, if it is new, changed or due for a reminder."""
        outage = self._outage
        assert outage is not None, "count the failure first"
        if kind != outage.told_kind:
            self._log.warning("%s failed: %s%s", self._what, reason, self._advice)
        elif now_ms - outage.told_at_ms >= FAILURE_REMINDER_MS:
            self._log.warning(
                "%s still fails: %s (%d %s in a row, for %d minutes)%s",
                self._what, reason, outage.failures, self._attempts, outage.minutes(now_ms), self._advice,
            )
        else:
            return
        self.told(kind, now_ms)

    def failed(self, kind: str, reason: str, now_ms: int) -> None:
        """Count one failure and tell it if it is due: `count` then `tell`."""
        self.count(now_ms)
        self.tell(kind, reason, now_ms)

    def told(self, kind: str, now_ms: int) -> None:
        """The caller warned about this failure in words of its own: a repeat waits for the reminder."""
        assert self._outage is not None, "count the failure first"
        self._outage.told_kind, self._outage.told_at_ms = kind, now_ms

    def ended(self) -> Outage | None:
        """A request succeeded: the outage that ended, if requests were failing."""
        outage, self._outage = self._outage, None
        return outage

    def recovered(self, now_ms: int) -> Outage | None:
        """A request succeeded: if requests were failing, say `<what> works again after <n> failed <attempts> ...`."""
        outage = self.ended()
        if outage is not None:
            self._log.info(
                "%s works again after %d failed %s over %d minutes",
                self._what, outage.failures, self._attempts, outage.minutes(now_ms),
            )
        return outage


def plain_reason(err: BaseException) -> tuple[str, str]:
    """(kind, reason) of a failed request in plain words, e.g. ("connection refused", "cannot connect: Connection refused").

    The HTTP clients wrap the operating system's error several times over (requests'
    ConnectionError around urllib3's MaxRetryError around NewConnectionError around
    ConnectionRefusedError); the innermost socket, DNS or TLS error says what happened.
    `kind` is the same for every repeat of the same failure, whatever connection it was on.
    """
    cause = _innermost(err)
    if isinstance(cause, socket.gaierror):
        return "name not resolved", f"cannot resolve the host name: {cause.strerror or cause}"
    if isinstance(cause, ssl.SSLError):
        return "TLS failed", f"TLS handshake failed: {cause.reason or cause}"
    if isinstance(cause, (socket.timeout, TimeoutError)) or "timeout" in type(err).__name__.lower():
        return "timeout", "no answer in time"
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror.lower(), f"cannot connect: {cause.strerror}"
    return type(err).__name__, f"{type(err).__name__}: {err}"


def _innermost(err: BaseException) -> BaseException:
    """The error at the bottom of the chain of causes, `reason`s (urllib3) and wrapped arguments (requests)."""
    seen: set[int] = set()
    while id(err) not in seen:
        seen.add(id(err))
        inner = err.__cause__ or getattr(err, "reason", None) or (err.args[0] if err.args else None)
        if not isinstance(inner, BaseException):
            return err
        err = inner
    return err
