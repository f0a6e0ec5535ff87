"""Keeps the exporter's function definitions in step with Inngest's: read on a schedule, and on demand after a sync.

Each reading that succeeds replaces the last one (saved in the state directory) and,
when it differs, hands the new effective config to `on_change` and logs each change:
a function added, changed (naming its fields) or gone, and a function left out as
not understood. A reading that fails changes nothing: the last good definitions stay
in use, and the failure is logged as the other REST readers log theirs.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from typing import Callable

from exporter import clock
from exporter.attribution.definition_store import DefinitionStore
from exporter.attribution.definitions import APPS_PATH, FUNCTIONS_PATH, Definitions, read_definitions
from exporter.attribution.effective import effective_config
from exporter.attribution.inngest_api import ApiFailure, InngestApi
from exporter.failure_log import FailureLog
from exporter.config import Config, FunctionConfig
from exporter.health import HealthMetrics
from exporter.periodic import PeriodicTask
from exporter.settings import Settings

log = logging.getLogger(__name__)

REQUEST_TIMEOUT_SECONDS = 10.0
OUTCOMES = ("ok", "error")
CONFIRMATION_SPACING_MS = 5_000
"""Least time between two readings when held runs ask for one sooner than the interval: a storm of new runs costs
one reading per this, and their cancellations wait about this long for the reading that confirms their definitions."""


def changed_fields(old: FunctionConfig, new: FunctionConfig) -> list[str]:
    """The fields, as the config file names them, whose values differ."""
    return sorted(
        info.alias or name for name, info in FunctionConfig.model_fields.items() if getattr(old, name) != getattr(new, name)
    )


def latest_definitions(settings: Settings, own_app: str) -> tuple[Definitions, str | None]:
    """The definitions as Inngest answers them now, else as last saved; and why Inngest's were not read, if not."""
    saved = DefinitionStore(settings.state_dir).load() or Definitions()
    if not settings.discovers:
        return saved, "discovery is off (EXPORTER_DISCOVERY)"
    api = InngestApi(settings, timeout=REQUEST_TIMEOUT_SECONDS)
    try:
        return read_definitions(api, settings.discovery_apps, own_app), None
    except (ApiFailure, ValueError) as err:
        return saved, f"reading Inngest's failed: {api.redacted(str(err))}"


class Discovery:
    """The discovered definitions and the task that refreshes them."""

    def __init__(
        self,
        settings: Settings,
        declared: Config,
        store: DefinitionStore,
        health: HealthMetrics,
        own_app: str,
        on_change: Callable[[Config], None],
        on_read: Callable[[], object] = lambda: None,
    ) -> None:
        """`on_change` gets the new effective config when a reading changed it; `on_read` is told after every reading
        that succeeded (runs held until their function's definition is confirmed can go)."""
        self._declared = declared
        self._store = store
        self._own_app = own_app
        self._apps = settings.discovery_apps
        self._on_change = on_change
        self._on_read = on_read
        self._api = InngestApi(settings, timeout=REQUEST_TIMEOUT_SECONDS)
        self._failures = FailureLog(
            log, f"function definitions: reading GET {self._api.base_url}{APPS_PATH} and {FUNCTIONS_PATH}", "readings"
        )
        self.definitions = store.load() or Definitions()
        self._readings = health.counter(
            "discovery_readings", "Readings of the functions' definitions from Inngest, by outcome (ok, error).", ["outcome"]
        )
        for outcome in OUTCOMES:
            self._readings.labels(outcome)
        health.gauge_from(
            "discovered_functions",
            "Functions whose definitions were read from Inngest (the last good reading, kept across restarts).",
            lambda: float(len(self.definitions.functions)),
        )
        health.gauge_from(
            "discovery_skipped_functions",
            "Functions read from Inngest but left out (a setting the exporter does not understand): reported unknown.",
            lambda: float(len(self.definitions.skipped)),
        )
        self._last_attempt_ms = 0
        self._stopping = threading.Event()
        self._task = PeriodicTask("function-discovery", settings.discovery_interval, self._spaced_refresh, run_first=True)

    @property
    def config(self) -> Config:
        """The effective config: the declared one completed by the discovered functions."""
        return effective_config(self._declared, self.definitions.functions)

    def start(self) -> None:
        self._task.start()

    def stop(self, timeout: float) -> None:
        self._stopping.set()
        self._task.stop(timeout)

    def refresh_soon(self) -> None:
        """Read the definitions again now rather than at the next interval (the exporter was just synced)."""
        self._task.wake()

    def _spaced_refresh(self) -> None:
        """A reading, CONFIRMATION_SPACING_MS at least after the last one began."""
        wait_ms = self._last_attempt_ms + CONFIRMATION_SPACING_MS - clock.now_ms()
        if wait_ms > 0 and self._stopping.wait(wait_ms / 1000):
            return
        self.refresh()

    def refresh(self) -> bool:
        """Read every app's functions; apply and save them when they changed. False when the reading failed."""
        now_ms = self._last_attempt_ms = clock.now_ms()
        try:
            found = read_definitions(self._api, self._apps, self._own_app)
        except (ApiFailure, ValueError) as err:
            self._readings.labels("error").inc()
            failure = err if isinstance(err, ApiFailure) else ApiFailure(str(err), kind="answer shape")
            self._failures.failed(failure.kind, self._api.redacted(str(failure)), now_ms)
            return False
        self._readings.labels("ok").inc()
        self._failures.recovered(now_ms)
        previous = self.definitions
        found = dataclasses.replace(found, read_at_ms=now_ms, since_ms={
            slug: previous.since_ms.get(slug, now_ms) if previous.functions.get(slug) == config else now_ms
            for slug, config in found.functions.items()
        })
        self.definitions = found
        if found != previous:
            self._log_changes(previous, found)
            try:
                self._store.save(found)
            except OSError as err:
                log.warning("function definitions: cannot save them in %s (%s): a restart reads Inngest again", self._store.path, err)
            self._on_change(self.config)
        self._on_read()
        return True

    def holds_for(self, function_id: str, scheduled_at_ms: int | None) -> bool:
        """Whether a run of `function_id` scheduled then can be attributed with its effective definition: always for a
        function only the config declares; for a discovered one, when its definition is known to have held then."""
        definitions = self.definitions
        if function_id not in definitions.functions:
            return True
        if definitions.holds_for(function_id, scheduled_at_ms):
            return True
        if scheduled_at_ms is not None and scheduled_at_ms > definitions.read_at_ms:
            self._task.wake()  # the next reading may confirm it: sooner than the interval
        return False

    def _log_changes(self, previous: Definitions, found: Definitions) -> None:
        old, new = previous.functions, found.functions
        for slug in sorted(new.keys() - old.keys()):
            log.info("function definitions: added %s", slug)
        for slug in sorted(old.keys() & new.keys()):
            fields = changed_fields(old[slug], new[slug])
            if fields:
                log.info("function definitions: changed %s: %s", slug, ", ".join(fields))
        for slug in sorted(old.keys() - new.keys() - found.skipped.keys()):
            log.info("function definitions: gone %s (no longer listed by Inngest)", slug)
        for slug, why in sorted(found.skipped.items()):
            if previous.skipped.get(slug) != why:
                log.warning(
                    "function definitions: left out %s: %s; its cancellations are reported unknown unless the config "
                    "declares it", slug, why,
                )
