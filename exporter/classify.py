"""Cancellation source attribution: which evidence explains a cancelled run?

Inngest does not say why a run was cancelled. `SourceClassifier` is the seam the
attribution work extends; `EvidenceClassifier` is the first version:
- `timeout` when the run's age reaches its configured finish timeout, or matches
  its start timeout within `START_TIMEOUT_TOLERANCE`;
- `event` when a configured `cancel_on` signal arrived between the trigger and
  the cancellation (inside the rule's `timeout`) and its `if` expression holds;
- `unknown` otherwise, and also when the evidence points at more than one source:
  a claim the evidence does not single out is never made.
"""

from __future__ import annotations

import logging
import sqlite3
from typing import Any, Callable, Mapping, Protocol

import cel

from exporter.config import CancelOn, Config, FunctionConfig
from exporter.records import Cancellation, Source
from exporter.signals import SignalStore

log = logging.getLogger(__name__)

START_TIMEOUT_TOLERANCE = 5.0
"""Seconds either side of a start timeout in which an age is attributed to it (queueing lag)."""
FINISH_TIMEOUT_TOLERANCE = 1.0
"""Seconds before a finish timeout at which an age already counts as reaching it (clock rounding)."""


class SourceClassifier(Protocol):
    """Decides the source of one cancellation, reading evidence inside the ingest transaction."""

    def classify(self, tx: sqlite3.Connection, cancellation: Cancellation) -> Source: ...


class CompiledRule:
    """A `cancel_on` rule with its expression compiled once."""

    def __init__(self, rule: CancelOn) -> None:
        self.event = rule.event
        self.timeout_ms = int(rule.timeout * 1000) if rule.timeout is not None else None
        self.program = cel.compile(rule.if_) if rule.if_ else None

    def matches(self, trigger: Mapping[str, Any] | None, signal: Mapping[str, Any]) -> bool:
        """The rule's expression on (event=trigger, async=signal); raises when it cannot be evaluated."""
        if self.program is None:
            return True
        return self.program.execute({"event": dict(trigger or {}), "async": dict(signal)}) is True


def _timed_out(fn: FunctionConfig, age: float | None) -> bool:
    if age is None:
        return False
    finish, start = fn.timeouts.finish, fn.timeouts.start
    if finish is not None and age >= finish - FINISH_TIMEOUT_TOLERANCE:
        return True
    return start is not None and abs(age - start) <= START_TIMEOUT_TOLERANCE


class EvidenceClassifier:
    """First version of attribution, from configured timeouts and recorded cancel signals."""

    def __init__(
        self,
        config: Config,
        signals: SignalStore,
        on_expression_error: Callable[[str], None] = lambda function_id: None,
    ) -> None:
        self._functions = config.functions
        self._rules = {fid: [CompiledRule(rule) for rule in fn.cancel_on] for fid, fn in config.functions.items()}
        self._signals = signals
        self._on_expression_error = on_expression_error

    def classify(self, tx: sqlite3.Connection, cancellation: Cancellation) -> Source:
        fn = self._functions.get(cancellation.function_id)
        if fn is None:
            return Source.UNKNOWN
        found = set()
        if _timed_out(fn, cancellation.age_seconds):
            found.add(Source.TIMEOUT)
        if self._signalled(tx, cancellation):
            found.add(Source.EVENT)
        return found.pop() if len(found) == 1 else Source.UNKNOWN

    def _signalled(self, tx: sqlite3.Connection, cancellation: Cancellation) -> bool:
        rules = self._rules.get(cancellation.function_id, [])
        started = cancellation.trigger_ts_ms or cancellation.scheduled_at_ms
        ended = cancellation.cancelled_at_ms
        if not rules or started is None or ended is None:
            return False
        for rule in rules:
            latest = ended if rule.timeout_ms is None else min(ended, started + rule.timeout_ms)
            for signal in self._signals.between(tx, rule.event, started, latest):
                try:
                    if rule.matches(cancellation.trigger, signal):
                        return True
                except Exception as err:  # a failed expression is no match, never a crash
                    log.warning("cancel_on expression for %s failed: %s", cancellation.function_id, err)
                    self._on_expression_error(cancellation.function_id)
        return False
