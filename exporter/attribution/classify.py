"""Cancellation source attribution: which evidence explains a cancelled run?

Inngest does not say why a run was cancelled. Each source has its evidence:
- `timeout`: the run never started and its age reached its start timeout (within
  START_TIMEOUT_TOLERANCE; past it too for a batched function), or it ran (since it
  started) as long as its finish timeout (exporter.attribution.timeouts); when it
  started is looked up (exporter.attribution.run_lookups) for the runs whose age
  admits a timeout;
- `event`: a configured `cancel_on` signal was received after the run was scheduled
  and by its cancellation, inside the rule's `timeout` from the scheduling, it is
  not the run's own trigger, and its `if` expression holds: what Inngest's server
  matches (it compares its own receipt id with the run id, which the signal's
  receipt time and the run's scheduled time stand for);
- `bulk`: a polled bulk cancellation of the function covers the run's scheduled
  time, and its `if` expression holds for the run's trigger;
- `singleton`: the function is a singleton in `cancel` mode, and a newer trigger
  of it (received after the run was scheduled and by its cancellation, not the
  run's own, its trigger's `if` holding) has the run's singleton key: Inngest
  cancels the running run when it starts the new one;
- `manual`: the polled list names this very run as cancelled on its own (kind
  `run`); or by elimination, only when every other source can be ruled out: the
  function is declared in the config (no newer run of it can start unseen, from a
  cron schedule), bulk polling is on and has read
  the list since the cancellation, and the run's times are known;
- `unknown`: anything else, including evidence for two sources at once, and a run
  of a function whose definition, read from Inngest, is not known to be the one
  the run got (exporter.attribution.discovery): it is held for a reading that
  confirms it first.

A run is *undecided* while evidence that would change its answer can still
arrive (signals, triggers and bulk windows are delivered asynchronously): a
cancel signal, for a function with `cancel_on` rules not yet explained by one; a
newer trigger, for a cancelling singleton not yet explained by one; a bulk window,
while bulk polling has not read the list since the cancellation (unless the
list was found unavailable: no poll will read it); the answer to its lookup,
while a timeout is possible and not yet decided. Looked up or not, a possible
timeout that stays undecided leaves only `unknown`. The pipeline
holds it for a grace period and asks again with `final=True`, when the evidence
then seen decides. A listed cancellation created after the run was cancelled
(its id is a ULID) is not its cause; a signal search cut short by a storm of
signals, or a singleton key that could not be evaluated, proves no absence, so
it never leads to `manual`.
"""

from __future__ import annotations

import logging
import sqlite3
from typing import Any, Callable, Iterator, Mapping, Protocol

from exporter.attribution.bulk import BulkWindowStore
from exporter.attribution import expressions
from exporter.attribution.run_lookups import Lookup, LookupState, RunLookupStore
from exporter.attribution.timeouts import TimeoutEvidence, weigh
from exporter.config import CancelOn, Config, FunctionConfig
from exporter.records import Cancellation, Source
from exporter.attribution.signals import SignalStore

log = logging.getLogger(__name__)

_FAILED = object()
"""What an expression that could not be evaluated yields: it matches nothing, and proves no absence either."""


class SourceClassifier(Protocol):
    """Decides the source of one cancellation, reading evidence inside the ingest transaction."""

    def classify(self, tx: sqlite3.Connection, cancellation: Cancellation, *, final: bool) -> Source | None:
        """The source; None when no evidence has arrived yet and `final` is False (hold and ask again)."""
        ...


class _Rule:
    """A `cancel_on` rule in the units the classifier compares (milliseconds)."""

    def __init__(self, rule: CancelOn) -> None:
        self.event = rule.event
        self.timeout_ms = int(rule.timeout * 1000) if rule.timeout is not None else None
        self.expression = rule.if_


def _same_key(newer: Any, held: Any) -> bool:
    """Whether two singleton keys are the same, as Inngest compares their hashes: `false` is no key, and a boolean is
    never a number (Python's `True == 1` aside)."""
    if newer is _FAILED or newer is False:
        return False
    return isinstance(newer, bool) == isinstance(held, bool) and newer == held


class EvidenceClassifier:
    """Attribution from configured timeouts, recorded signals (cancel signals, singleton triggers) and polled bulk
    windows."""

    def __init__(
        self,
        config: Config,
        signals: SignalStore,
        bulk: BulkWindowStore | None,
        on_expression_error: Callable[[str], None] = lambda function_id: None,
        *,
        lookups: RunLookupStore | None = None,
        definition_holds: Callable[[str, int | None], bool] | None = None,
    ) -> None:
        """`lookups` None: run lookups are off, and a run whose age admits a timeout is `unknown`.

        `definition_holds(function_id, scheduled_at_ms)` says whether the function's definition is the one a run
        scheduled then got (one read from Inngest may have changed since, or before): when it is not, the run is held
        for a reading that confirms it, and `unknown` if none does within the grace period. None: the config's
        definitions always are.
        """
        self._functions = config.functions
        self._rules = {fid: [_Rule(rule) for rule in fn.cancel_on] for fid, fn in config.functions.items()}
        self._signals = signals
        self._bulk = bulk
        declared = config.bulk_cancellations
        self._server_has_no_bulk = declared is not None and not declared.available
        """Declared in the config: no bulk cancellation exists to rule out."""
        self._on_expression_error = on_expression_error
        self._lookups = lookups
        self._definition_holds = definition_holds

    def classify(self, tx: sqlite3.Connection, cancellation: Cancellation, *, final: bool) -> Source | None:
        fn = self._functions.get(cancellation.function_id)
        confirmed = self._definition_holds
        if fn is not None and confirmed is not None and not confirmed(cancellation.function_id, cancellation.scheduled_at_ms):
            return Source.UNKNOWN if final else None  # its evidence would be weighed against another definition
        found = set()
        timeout, lookup = self._timeout(tx, cancellation, fn)
        if timeout is TimeoutEvidence.PROVEN:
            found.add(Source.TIMEOUT)
        signalled, signals_inconclusive = self._signalled(tx, cancellation)
        if signalled:
            found.add(Source.EVENT)
        superseded, singleton_inconclusive = self._superseded(tx, cancellation, fn)
        if superseded:
            found.add(Source.SINGLETON)
        bulk_cancelled, bulk_inconclusive = self._bulk_cancelled(tx, cancellation)
        if bulk_cancelled:
            found.add(Source.BULK)
        if self._cancelled_alone(cancellation):
            found.add(Source.MANUAL)
        if len(found) > 1:
            return Source.UNKNOWN  # evidence for two sources: neither is claimed
        if timeout is TimeoutEvidence.UNDECIDED:
            if not final and self._awaits_lookup(tx, cancellation, lookup):
                return None
            return Source.UNKNOWN  # a timeout may have ended it: no other source can be claimed
        if not final and self._evidence_may_still_arrive(tx, cancellation, fn, found):
            return None
        if found:
            return found.pop()
        inconclusive = signals_inconclusive or singleton_inconclusive or bulk_inconclusive
        if not inconclusive and self._manual_by_elimination(tx, cancellation, fn):
            return Source.MANUAL
        return Source.UNKNOWN

    def _timeout(
        self, tx: sqlite3.Connection, cancellation: Cancellation, fn: FunctionConfig | None
    ) -> tuple[TimeoutEvidence, Lookup | None]:
        """What the run's times say about the function's timeouts, with its start when it was looked up; and its
        lookup, when its age admits a timeout and one was requested."""
        if fn is None:
            return TimeoutEvidence.RULED_OUT, None
        evidence = weigh(fn, cancellation, None)
        if evidence is not TimeoutEvidence.UNDECIDED or self._lookups is None:
            return evidence, None
        lookup = self._lookups.lookup(tx, cancellation.run_id)
        if lookup is not None and lookup.state is LookupState.FOUND:
            return weigh(fn, cancellation, lookup.start), lookup
        return evidence, lookup

    def _awaits_lookup(self, tx: sqlite3.Connection, cancellation: Cancellation, lookup: Lookup | None) -> bool:
        """Whether the run's lookup may still decide its timeout; requested now (written in `tx`, asked by the
        lookup worker once it commits) when it has none."""
        if self._lookups is None:
            return False
        if lookup is None:
            lookup = self._lookups.request(tx, cancellation)
        return lookup.state is LookupState.WAITING

    def _evidence_may_still_arrive(
        self, tx: sqlite3.Connection, cancellation: Cancellation, fn: FunctionConfig | None, found: set[Source]
    ) -> bool:
        """Whether a cancel signal, a newer singleton trigger or a bulk window that would change the answer can still be
        delivered."""
        late_signal = fn is not None and bool(fn.cancel_on) and Source.EVENT not in found
        late_trigger = fn is not None and fn.cancels_singleton and Source.SINGLETON not in found
        late_bulk = (
            self._bulk is not None and Source.BULK not in found
            and self._bulk.list_available() and not self._polled_since(tx, cancellation)
        )
        return late_signal or late_trigger or late_bulk

    def _polled_since(self, tx: sqlite3.Connection, cancellation: Cancellation) -> bool:
        """Whether the bulk list was read at or after the cancellation, so it shows any bulk cancellation behind it."""
        assert self._bulk is not None
        last_poll = self._bulk.last_success_ms()
        return last_poll is not None and last_poll >= cancellation.ended_at_ms

    def _manual_by_elimination(self, tx: sqlite3.Connection, cancellation: Cancellation, fn: FunctionConfig | None) -> bool:
        """True only when every other source is ruled out by evidence that would have been seen.

        Bulk is ruled out by a poll since the cancellation that lists no backlog cancellation
        of the function (which may have ended the run, and says nothing of which runs), or by
        the config's word that the server has no bulk cancellation at all.
        """
        if fn is None or cancellation.scheduled_at_ms is None:
            return False
        if (fn.timeouts.start or fn.timeouts.finish) and cancellation.age_seconds is None:
            return False
        if (fn.cancel_on or fn.cancels_singleton) and cancellation.cancelled_at_ms is None:
            return False
        if fn.cancels_singleton and fn.cron_triggered:
            return False  # a newer run may have started from the schedule, unseen
        if self._server_has_no_bulk:
            return True
        return (
            self._bulk is not None and self._polled_since(tx, cancellation)
            and not self._bulk.backlog_cancelled(cancellation.function_id, cancellation.ended_at_ms)
        )

    def _value(self, expression: str, variables: Mapping[str, Any], function_id: str) -> Any:
        """The expression's value; _FAILED, logged and counted, when it cannot be evaluated (never a crash)."""
        try:
            return expressions.value(expression, variables)
        except Exception as err:
            log.warning("expression %r for %s failed: %s", expression, function_id, err)
            self._on_expression_error(function_id)
            return _FAILED

    def _holds(self, expression: str | None, variables: Mapping[str, Any], function_id: str) -> Any:
        """True when the expression holds (no expression: it does); _FAILED when it cannot be evaluated, which is no
        match and no proof of absence either: a run whose evidence failed so is never `manual` by elimination."""
        return True if expression is None else self._value(expression, variables, function_id)

    def _signalled(self, tx: sqlite3.Connection, cancellation: Cancellation) -> tuple[bool, bool]:
        """(a matching signal was found, the search proves no absence: cut short by a signal storm, or an expression
        that could not be evaluated)."""
        rules = self._rules.get(cancellation.function_id)
        if not rules:
            return False, False
        scheduled = cancellation.scheduled_at_ms
        ended = cancellation.cancelled_at_ms
        if scheduled is None or ended is None:
            return False, False
        trigger = cancellation.trigger or {}
        inconclusive = False
        for rule in rules:
            latest = ended if rule.timeout_ms is None else min(ended, scheduled + rule.timeout_ms)
            candidates, truncated = self._signals.received(tx, rule.event, scheduled, latest)
            inconclusive |= truncated
            for signal in self._not_own_trigger(candidates, cancellation):
                holds = self._holds(rule.expression, {"event": trigger, "async": signal}, cancellation.function_id)
                if holds is True:
                    return True, False
                inconclusive |= holds is _FAILED
        return False, inconclusive

    @staticmethod
    def _not_own_trigger(signals: list[Mapping[str, Any]], cancellation: Cancellation) -> Iterator[Mapping[str, Any]]:
        """`signals` but the run's own trigger, which Inngest never lets cancel its run (its receipt, before the
        scheduling, rules it out already unless its id is the sender's and its `ts` late)."""
        own = cancellation.trigger_id
        return (signal for signal in signals if own is None or signal.get("id") != own)

    def _superseded(
        self, tx: sqlite3.Connection, cancellation: Cancellation, fn: FunctionConfig | None
    ) -> tuple[bool, bool]:
        """(a newer run of this cancelling singleton took the run's key, the search proves no absence: cut short by
        a storm, or an expression that could not be evaluated).

        As Inngest decides it: a trigger starts a new run when its `if` holds; that run's key (the
        function's id without a key expression) releases the run holding the same key, whose
        cancellation follows; a key that is `false` holds no singleton.
        """
        if fn is None or fn.singleton is None or not fn.cancels_singleton:
            return False, False
        scheduled, ended = cancellation.scheduled_at_ms, cancellation.cancelled_at_ms
        if scheduled is None or ended is None:
            return False, False
        function_id = cancellation.function_id
        key = self._singleton_key(fn.singleton.key, cancellation.trigger or {}, function_id)
        if key is _FAILED or key is False:
            return False, key is _FAILED
        inconclusive = False
        for trigger in fn.event_triggers:
            assert trigger.event is not None
            candidates, truncated = self._signals.received(tx, trigger.event, scheduled, ended)
            inconclusive |= truncated
            for newer in self._not_own_trigger(candidates, cancellation):
                started = True if trigger.if_ is None else self._value(trigger.if_, {"event": newer}, function_id)
                newer_key = self._singleton_key(fn.singleton.key, newer, function_id) if started is True else False
                if _same_key(newer_key, key):
                    return True, False
                inconclusive |= started is _FAILED or newer_key is _FAILED
        return False, inconclusive

    def _singleton_key(self, expression: str | None, event: Mapping[str, Any], function_id: str) -> Any:
        """The singleton key of a run triggered by `event`: one key for the whole function without an expression."""
        return function_id if expression is None else self._value(expression, {"event": event}, function_id)

    def _bulk_cancelled(self, tx: sqlite3.Connection, cancellation: Cancellation) -> tuple[bool, bool]:
        """(a bulk cancellation made before the run was cancelled covers it, a window's `if` could not be evaluated).

        One made later is not the cause.
        """
        if self._bulk is None or cancellation.scheduled_at_ms is None:
            return False, False
        trigger = cancellation.trigger or {}
        inconclusive = False
        for window in self._bulk.covering(cancellation.function_id, cancellation.scheduled_at_ms):
            if window.made_by(cancellation.ended_at_ms):
                holds = self._holds(window.expression, {"event": trigger}, cancellation.function_id)
                if holds is True:
                    return True, False
                inconclusive |= holds is _FAILED
        return False, inconclusive

    def _cancelled_alone(self, cancellation: Cancellation) -> bool:
        """The list names this run as cancelled on its own, by a cancellation made before it ended."""
        listed = None if self._bulk is None else self._bulk.run_cancellation(cancellation.run_id)
        return listed is not None and listed.made_by(cancellation.ended_at_ms)
