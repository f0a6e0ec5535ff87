"""Function definitions read from Inngest: what each function's code declared when its app synced.

Every SDK sends its functions' configs when an app syncs, and the server answers
them on `GET /v1/apps/{app}/functions` (a bare JSON array of `{id (the slug),
config: {triggers, cancel, timeouts, batchEvents, singleton, ...}}`). The apps
come from `GET /v2/apps` (paged, under `data`), or from EXPORTER_DISCOVERY_APPS.
API v2's own function list is not used: it has no timeouts, and a function whose
timeouts are unknown would have its timed-out runs concluded `manual`.

A config is mapped to the exporter's `FunctionConfig` only when every part of it is
understood: a setting this module does not know (a new way Inngest may cancel runs),
an expression that does not compile or a shape it does not expect leaves the
function out, `unknown` as when it was never declared, rather than guessed.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from pydantic import ValidationError

from exporter.attribution.inngest_api import ApiFailure, InngestApi
from exporter.config import FunctionConfig

APPS_PATH = "/v2/apps"
FUNCTIONS_PATH = "/v1/apps/{app}/functions"
APPS_PAGE_LIMIT = 100
MAX_APP_PAGES = 100
_IGNORED_SETTINGS = frozenset({
    "id", "fv", "name", "slug", "steps", "edges", "concurrency", "priority", "rateLimit", "throttle", "debounce",
    "idempotency", "retries",
})
"""Settings of a function's config that never cancel a run: they limit, delay or skip runs, or describe its steps."""
_MAPPED_SETTINGS = frozenset({"triggers", "cancel", "timeouts", "batchEvents", "singleton"})


class Unmappable(ValueError):
    """A function config that cannot be mapped with certainty; the message says what."""


@dataclass(frozen=True)
class Definitions:
    """One reading of every app's functions."""

    functions: dict[str, FunctionConfig] = field(default_factory=dict)
    """By slug (`<app-id>-<function-id>`, as `data.function_id` names it in events)."""
    skipped: dict[str, str] = field(default_factory=dict)
    """Functions left out, by slug, with why."""
    own_url: str | None = None
    """The URL of the exporter's own app as Inngest last synced it, when the app list was read."""
    read_at_ms: int = field(default=0, compare=False)
    """When the reading began: each definition held then."""
    since_ms: dict[str, int] = field(default_factory=dict, compare=False)
    """By slug, when the reading that first found the function's definition as it is now began."""

    def holds_for(self, slug: str, scheduled_at_ms: int | None) -> bool:
        """Whether the function's definition is known to be the one a run scheduled at `scheduled_at_ms` got: read
        as it is both before and after that time. Inngest gives a run its function's definition when it schedules it;
        a run scheduled before the definition was first read, or after the last reading, may have had another."""
        since = self.since_ms.get(slug)
        return since is not None and scheduled_at_ms is not None and since <= scheduled_at_ms <= self.read_at_ms


def function_config(config: Mapping[str, Any]) -> FunctionConfig:
    """The exporter's config of a function, from the server's `config`; Unmappable when any part is not understood."""
    unknown = sorted(name for name, value in config.items() if value is not None and name not in _IGNORED_SETTINGS | _MAPPED_SETTINGS)
    if unknown:
        raise Unmappable(f"unrecognised setting(s) {', '.join(unknown)}: they may cancel runs in ways not modelled")
    mapped: dict[str, Any] = {"triggers": [_trigger(trigger) for trigger in _list(config, "triggers")]}
    mapped["cancel_on"] = [_cancel(rule) for rule in _list(config, "cancel")]
    timeouts = _object(config, "timeouts")
    if timeouts:
        mapped["timeouts"] = _only(timeouts, {"start", "finish"}, "timeouts")
    if config.get("batchEvents") is not None:
        mapped["batch_events"] = True
    singleton = _object(config, "singleton")
    if singleton:
        mode = singleton.get("mode")
        mapped["singleton"] = {
            **_only(singleton, {"key"}, "singleton", also={"mode"}),
            "mode": mode.lower() if isinstance(mode, str) else mode,
        }
    try:
        return FunctionConfig.model_validate(mapped)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in item['loc'])}: {item['msg'].removeprefix('Value error, ')}"
            for item in err.errors()
        )
        raise Unmappable(problems) from None


def _list(config: Mapping[str, Any], key: str) -> list[Any]:
    value = config.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise Unmappable(f"{key}: expected a list")
    return value


def _object(config: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = config.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise Unmappable(f"{key}: expected an object")
    return value


def _only(value: Any, fields: set[str], where: str, *, also: set[str] = set()) -> dict[str, Any]:
    """`value`'s non-null `fields`; Unmappable when it holds anything else (beyond `also`, which the caller reads)."""
    if not isinstance(value, dict):
        raise Unmappable(f"{where}: expected an object")
    extra = sorted(name for name, item in value.items() if item is not None and name not in fields | also)
    if extra:
        raise Unmappable(f"{where}: unrecognised {', '.join(extra)}")
    return {name: item for name, item in value.items() if name in fields and item is not None}


def _trigger(trigger: Any) -> dict[str, Any]:
    """An event trigger (its `expression` is the exporter's `if`) or a cron schedule."""
    mapped = _only(trigger, {"event", "expression", "cron"}, "triggers")
    if "expression" in mapped:
        mapped["if"] = mapped.pop("expression")
    return mapped


def _cancel(rule: Any) -> dict[str, Any]:
    return _only(rule, {"event", "if", "timeout"}, "cancel")


def parse_functions(body: Any) -> tuple[dict[str, FunctionConfig], dict[str, str]]:
    """An app's functions from `GET /v1/apps/{app}/functions` (an array, or one under `data`): mapped and skipped, by slug.

    ValueError when the answer is not a list of functions at all.
    """
    items = body.get("data") if isinstance(body, dict) else body
    if not isinstance(items, list):
        raise ValueError("the function list is not a JSON array")
    functions: dict[str, FunctionConfig] = {}
    skipped: dict[str, str] = {}
    for item in items:
        slug = item.get("id") if isinstance(item, dict) else None
        config = item.get("config") if isinstance(item, dict) else None
        if not isinstance(slug, str) or not slug:
            raise ValueError("a listed function has no id")
        if not isinstance(config, dict):
            skipped[slug] = "no config"
            continue
        try:
            functions[slug] = function_config(config)
        except Unmappable as err:
            skipped[slug] = str(err)
    return functions, skipped


def _apps(api: InngestApi) -> list[dict[str, Any]]:
    """Every app the server lists (`GET /v2/apps`, every page)."""
    apps: list[dict[str, Any]] = []
    params = {"limit": str(APPS_PAGE_LIMIT)}
    for _ in range(MAX_APP_PAGES):
        body = api.get_json(APPS_PATH, params)
        items = body.get("data") if isinstance(body, dict) else body
        if not isinstance(items, list):
            raise ApiFailure(f"GET {APPS_PATH}: the app list is not a JSON array", kind="app list shape")
        apps += [item for item in items if isinstance(item, dict) and isinstance(item.get("id"), str)]
        page = body.get("page") if isinstance(body, dict) else None
        cursor = page.get("cursor") if isinstance(page, dict) and page.get("hasMore") else None
        if not isinstance(cursor, str) or not cursor:
            return apps
        params = {"limit": str(APPS_PAGE_LIMIT), "cursor": cursor}
    raise ApiFailure(f"GET {APPS_PATH}: the app list goes on past {MAX_APP_PAGES} pages", kind="too many pages")


def _sync_url(app: Mapping[str, Any]) -> str | None:
    latest = app.get("latestSync")
    url = latest.get("url") if isinstance(latest, dict) else None
    return url if isinstance(url, str) and url else None


def read_definitions(api: InngestApi, apps: Sequence[str], own_app: str) -> Definitions:
    """Every function of `apps` (empty: of every app the server lists), but `own_app`'s.

    Raises ApiFailure or ValueError when any app cannot be read: a partial reading would
    make the functions of the app not read disappear.
    """
    try:
        listed = _apps(api)
    except ApiFailure:
        if not apps:
            raise
        listed = []  # the named apps are read all the same; only the exporter's own URL stays unknown
    own_url = next((_sync_url(app) for app in listed if app["id"] == own_app), None)
    names = list(apps) or [app["id"] for app in listed]
    functions: dict[str, FunctionConfig] = {}
    skipped: dict[str, str] = {}
    for name in names:
        if name == own_app:
            continue
        app_functions, app_skipped = parse_functions(
            api.get_json(FUNCTIONS_PATH.format(app=urllib.parse.quote(name, safe="")))
        )
        functions |= app_functions
        skipped |= app_skipped
    return Definitions(functions, skipped, own_url)
