"""The bulk cancellation list's items, read as Inngest's server writes them: what each shows about why a run ended.

`GET /v1/cancellations` lists every kind of cancellation the server keeps
(`cqrs.Cancellation`): only `bulk_run` items are windows (a function's runs in a
time range, perhaps filtered by an `if`); a `run` item names the one run it
cancelled, evidence that this run was cancelled on its own; a `backlog` item
cancelled a function's queued runs without saying which. Times are RFC 3339,
read here on every Python the project supports.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Mapping

import ulid

from exporter.attribution import expressions

NO_LOWER_BOUND_MS = -(2**63)
"""`started_after_ms` of a window listed with no `started_after` (null): open at the start, it covers every run
scheduled up to `started_before`. The smallest SQLite integer."""
_NOT_EVIDENCE = frozenset({"start_timeout", "finish_timeout"})
"""Kinds of listed cancellation that show nothing the classifier uses: the server's own jobs for a run's timeouts."""
_UUID = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]+))?(?:([Zz])|([+-])([0-9]{2}):([0-9]{2}))?"
)


@dataclass(frozen=True)
class _Listed:
    """What every listed cancellation has: an id, a ULID whose time is when it was created."""

    id: str

    @property
    def created_at_ms(self) -> int | None:
        """When the cancellation was created: its id is a ULID (None when it is not)."""
        try:
            return ulid.ULID.from_str(self.id).milliseconds if len(self.id) == 26 else None
        except ValueError:
            return None

    def made_by(self, at_ms: int) -> bool:
        """Whether it existed at `at_ms` (an unknown creation time counts as yes): one made later did not end a run then."""
        created = self.created_at_ms
        return created is None or created <= at_ms


@dataclass(frozen=True)
class _OfFunction(_Listed):
    """A listed cancellation of one function's runs, named as the list names it."""

    function_id: str
    """As listed: the server writes the full `<app-id>-<function-id>` slug; documentation shows the bare function id."""
    app_id: str | None
    """As listed: the server writes the app's UUID; a request body (and documentation built from one) the app's own id."""

    @functools.cached_property
    def slug(self) -> str | None:
        """The function's full slug, as `data.function_id` spells it in the event; None when the item names no app.

        Beside a UUID (the server's `app_id`), `function_id` is the full slug already; beside
        the app's own id it is the bare function id. Cached: it is asked for every run.
        """
        if self.app_id is None:
            return None
        return self.function_id if _UUID.fullmatch(self.app_id) else f"{self.app_id}-{self.function_id}"

    def applies_to(self, function_slug: str) -> bool:
        """Whether this cancellation is of the function with `function_slug`.

        When the item names an app (either form), only that one slug: read as a bare id, the
        server's full slug `acme-fn` would also take the runs of `other-acme-fn`. With no app
        (the documented response), `function_id` is the full slug or a bare function id of an
        app the item does not say: it applies to that slug and to every slug ending in
        `-<function_id>`.
        """
        slug = self.slug
        if slug is not None:
            return function_slug == slug
        return function_slug == self.function_id or function_slug.endswith(f"-{self.function_id}")


@dataclass(frozen=True)
class BulkWindow(_OfFunction):
    """One bulk cancellation: runs of the function scheduled in [started_after, started_before] whose trigger matches `expression`."""

    started_after_ms: int
    """NO_LOWER_BOUND_MS when the window is open at the start."""
    started_before_ms: int
    expression: str | None
    """CEL on the run's triggering `event`; None cancels every run in the range."""


@dataclass(frozen=True)
class BacklogCancellation(_OfFunction):
    """A function's queued runs cancelled at once (kind `backlog`); which runs, the list does not say."""


@dataclass(frozen=True)
class RunCancellation(_Listed):
    """One run cancelled on its own (kind `run`), from the REST API or the dashboard: positive evidence of `manual`."""

    run_id: str


Listed = BulkWindow | RunCancellation | BacklogCancellation
"""The evidence one listed cancellation gives."""


class _Unusable(ValueError):
    """One field of one listed cancellation that the exporter cannot use."""


def parse_cancellations(body: Any) -> tuple[list[Listed], list[str]]:
    """The evidence of a list body (windows, single-run cancellations), and one problem line per unusable item.

    The server answers `{"data": [...], "metadata": {...}}`, and `"data": null` for an empty
    list (Go's nil slice); a bare array is read too. One odd item must not hide the others'
    evidence, so it is reported and skipped; an item of a kind that is no evidence is skipped
    without a word. A body of no known shape raises ValueError.
    """
    if isinstance(body, dict) and "data" in body:
        items = [] if body["data"] is None else body["data"]
    else:
        items = body
    if not isinstance(items, list):
        raise ValueError('expected a JSON array or an object with a "data" array (or null)')
    listed: list[Listed] = []
    problems: list[str] = []
    for index, item in enumerate(items):
        try:
            evidence = _evidence(item)
        except _Unusable as err:
            ident = item.get("id") if isinstance(item, dict) else None
            where = f"cancellation {ident!r}" if isinstance(ident, str) and ident else f"cancellation [{index}]"
            problems.append(f"{where}: {err}")
            continue
        if evidence is not None:
            listed.append(evidence)
    return listed, problems


def _evidence(item: Any) -> Listed | None:
    """What one item shows, by its `kind`; None for a kind that shows nothing about why a run ended."""
    if not isinstance(item, dict):
        raise _Unusable("expected an object")
    kind = _optional(item, "kind")
    if kind is None or kind == "bulk_run":  # no kind: the documented shape, which lists bulk cancellations only
        return _window(item)
    if kind == "run":
        return _run_cancellation(item)
    if kind == "backlog":
        return BacklogCancellation(id=_required(item, "id"), function_id=_required(item, "function_id"), app_id=_optional(item, "app_id"))
    if kind in _NOT_EVIDENCE:
        return None
    raise _Unusable(f"kind: {kind!r} is not a kind of cancellation the exporter knows")


def _run_cancellation(item: Mapping[str, Any]) -> RunCancellation | None:
    """The run a `run` item cancelled; None when its cause is `Event`: the server's own jobs, no person's cancel."""
    listed = RunCancellation(id=_required(item, "id"), run_id=_required(item, "target_id"))
    return None if _optional(item, "cause") == "Event" else listed


def _window(item: Mapping[str, Any]) -> BulkWindow:
    window = BulkWindow(
        id=_required(item, "id"),
        function_id=_required(item, "function_id"),
        app_id=_optional(item, "app_id"),
        started_after_ms=_timestamp_ms(item, "started_after", absent=NO_LOWER_BOUND_MS),
        started_before_ms=_timestamp_ms(item, "started_before"),
        expression=_expression(_optional(item, "if")),
    )
    if window.started_after_ms > window.started_before_ms:
        raise _Unusable("started_after is later than started_before")
    return window


def _optional(item: Mapping[str, Any], key: str) -> str | None:
    """A string field; absent, null or empty is None."""
    value = item.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _Unusable(f"{key}: expected a string")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # the state database could not store it
        raise _Unusable(f"{key}: not valid Unicode (lone surrogate escape)") from None
    return value or None


def _required(item: Mapping[str, Any], key: str) -> str:
    value = _optional(item, key)
    if value is None:
        raise _Unusable(f"{key}: missing")
    return value


def _timestamp_ms(item: Mapping[str, Any], key: str, *, absent: int | None = None) -> int:
    """The field's time in epoch milliseconds; `absent` when it is absent or null, if the field may be."""
    text = _optional(item, key)
    if text is None:
        if absent is None:
            raise _Unusable(f"{key}: missing")
        return absent
    try:
        return rfc3339_ms(text)
    except ValueError as err:
        raise _Unusable(f"{key}: {err}") from None


def rfc3339_ms(text: str) -> int:
    """Epoch milliseconds of an RFC 3339 timestamp (sub-millisecond digits dropped); ValueError when it is not one.

    Read by hand because Inngest's server writes Go's RFC 3339 (`Z`, up to nine fraction
    digits), which `datetime.fromisoformat` reads on Python 3.11 but not on 3.10, which the
    exporter supports. A time without a zone is refused: it would name a different instant
    on every machine.
    """
    match = _RFC3339.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not an RFC 3339 timestamp")
    *fields, fraction, zulu, sign, offset_hours, offset_minutes = match.groups()
    if zulu is None and sign is None:
        raise ValueError(f"{text!r} has no time zone")
    offset = timedelta(0) if zulu else timedelta(hours=int(offset_hours), minutes=int(offset_minutes))
    try:
        zone = timezone(-offset if sign == "-" else offset)
        moment = datetime(*map(int, fields), int((fraction or "")[:6].ljust(6, "0")), tzinfo=zone)
    except ValueError:  # a field out of range: month 13, hour 24, an offset of a day or more
        raise ValueError(f"{text!r} is not an RFC 3339 timestamp") from None
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def _expression(expression: str | None) -> str | None:
    """The `if` expression, once it is known to compile: one that cannot would fail every lookup."""
    if expression is not None:
        try:
            expressions.check(expression)
        except ValueError as err:
            raise _Unusable(f"if: {err}") from None
    return expression
