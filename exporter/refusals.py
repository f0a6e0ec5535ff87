"""Refused requests on the ingresses, told in the log: the first of each kind in full, the rest summed up.

A sender with the wrong key or a forwarder posting the wrong body is refused on
every request; counting it in `events_received` alone leaves the user to guess
why. So each refusal's status and reason go to the log, at most once per kind
(ingress path, status, reason) every REMINDER_SECONDS, and the ones not told one
by one are summed up at most once every SUMMARY_SECONDS: a storm of bad requests
costs a few lines a minute, never one per request.
"""

from __future__ import annotations

import collections
import logging
import re
import threading
import time
from typing import Callable

from flask import g, has_request_context

SUMMARY_SECONDS = 60.0
"""Refusals not told one by one are summed up at most this often."""
REMINDER_SECONDS = 600.0
"""A kind of refusal told in full is told in full again after this long, if it still happens."""
MAX_TOLD = 20
"""Kinds told in full per REMINDER_SECONDS: reasons may quote what the client sent, so kinds are not bounded."""
MAX_KINDS_SUMMED = 100
"""Kinds counted apart in a summary; more are counted as `other`."""
SHOWN_IN_SUMMARY = 5
ADVICE = {
    400: "the request is not one the endpoint takes; the reason names the problem",
    401: "check that the sender signs with this exporter's INNGEST_SIGNING_KEY (or sends EXPORTER_INGEST_TOKEN) "
    "and that its clock is right: signatures older than 5 minutes are refused",
    404: "Inngest calls a function this exporter does not serve: sync the app again",
    413: "send smaller batches, or raise EXPORTER_MAX_BODY_BYTES",
    415: "send Content-Type: application/json",
}
"""What to do about a refusal, by status."""

SDK_REFUSAL_PREFIX = "unauthorized: "
"""How the Inngest SDK begins the ERROR line it logs for each request it refuses (a bad or missing signature)."""

Kind = tuple[str, int, str]
"""(path, status, reason with its numbers masked): refusals that differ only in a timestamp or an index are one kind."""


class RefusalLog:
    """Tells the refusals of one app; `refused` is called from any request thread."""

    def __init__(
        self,
        logger: logging.Logger,
        *,
        summary_seconds: float = SUMMARY_SECONDS,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = logger
        self._summary_seconds = summary_seconds
        self._now = now
        self._lock = threading.Lock()
        self._told: set[Kind] = set()
        self._told_since = now()
        self._untold: collections.Counter[Kind] = collections.Counter()
        self._summed_at = now()
        self._summary_due = False

    def refused(self, path: str, status: int, reason: str) -> None:
        """A request to `path` was answered `status` for `reason`: tell it now, or count it for the next summary."""
        kind = (path, status, re.sub(r"\d+", "N", reason[:200]))
        with self._lock:
            now = self._now()
            if now - self._told_since >= REMINDER_SECONDS:
                self._told.clear()
                self._told_since = now
            tell = kind not in self._told and len(self._told) < MAX_TOLD
            if tell:
                self._told.add(kind)
            else:
                self._count(kind)
        if tell:
            advice = ADVICE.get(status)
            self._log.warning(
                "refused a request to %s with HTTP %d: %s%s (the same refusal again is summed up at most once a minute)",
                path, status, reason[:500], f"; {advice}" if advice else "",
            )

    def _count(self, kind: Kind) -> None:
        """Count a refusal not told in full; the first one starts the timer of the next summary. Under the lock."""
        if kind not in self._untold and len(self._untold) >= MAX_KINDS_SUMMED:
            kind = (kind[0], kind[1], "other reasons")
        self._untold[kind] += 1
        if not self._summary_due:
            self._summary_due = True
            delay = max(0.0, self._summed_at + self._summary_seconds - self._now())
            timer = threading.Timer(delay, self._summarize)
            timer.daemon = True
            timer.start()

    def _summarize(self) -> None:
        with self._lock:
            untold, self._untold = self._untold, collections.Counter()
            self._summed_at = self._now()
            self._summary_due = False
        kinds = [f"{count} x {path} HTTP {status} ({reason})" for (path, status, reason), count in untold.most_common()]
        shown = "; ".join(kinds[:SHOWN_IN_SUMMARY]) + (f"; and {len(kinds) - SHOWN_IN_SUMMARY} other kinds" if len(kinds) > SHOWN_IN_SUMMARY else "")
        self._log.warning("%d more refused requests since the last summary: %s", sum(untold.values()), shown)


class SdkRefusals(logging.Filter):
    """Keeps the Inngest SDK's ERROR line about a request it refused out of the log, as that request's reason.

    The SDK logs one such line per refused request and answers only `Unauthorized`; its
    line says why (`cannot validate signature ... without a x-inngest-signature header`).
    Kept in the request's `g`, the reason is told by `RefusalLog`, rate-limited.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.levelno < logging.ERROR or not message.startswith(SDK_REFUSAL_PREFIX) or not has_request_context():
            return True
        g.sdk_refusal = message.removeprefix(SDK_REFUSAL_PREFIX).strip()
        return False


def sdk_refusal() -> str | None:
    """What the SDK said of the request it refused in this request context, if it said anything."""
    return g.get("sdk_refusal") or None


SDK_REFUSALS = SdkRefusals()
"""One filter for every app, so that adding it to the SDK's logger again changes nothing."""
