"""Start and finish timeouts as Inngest's server applies them, and what a cancelled run's times prove about them.

What the server does (v1.43, pkg/execution/executor): a **start timeout** cancels a
run that has not started executing once `start` has passed since it was scheduled
(its run id's time); an eager job set for that moment does it. Batched runs get no
eager job: they are cancelled when dequeued, however much later. A **finish timeout** cancels a
run once `finish` has passed since it started executing (the first attempt of its
first step); its eager job is set when the run starts. So a run that never started
cannot end by its finish timeout, and a run that started cannot end by its start
timeout.

The cancellation event tells when the run was scheduled and when it was cancelled,
not when (or whether) it started. Its age since scheduling can rule a timeout out:
below `finish` (less FINISH_TIMEOUT_TOLERANCE) it has not run that long; away from
`start` (by more than START_TIMEOUT_TOLERANCE) no eager job fired then, and younger
than `start` (less the tolerance) a batched run was not dequeued past it. It can
never prove one: a run that waited in the queue reaches `finish` by scheduling time
without having run that long, and a run cancelled by hand at its start timeout's
age may have been running for most of it. Where the age leaves a timeout possible,
only the run's start decides (looked up by exporter.attribution.run_lookups).

An eager job later than START_TIMEOUT_TOLERANCE is outside this model; the README says so.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from exporter.config import FunctionConfig
from exporter.records import Cancellation

START_TIMEOUT_TOLERANCE = 5.0
"""Seconds either side of a start timeout in which a cancellation can be its eager job's (queueing and clock lag)."""
FINISH_TIMEOUT_TOLERANCE = 1.0
"""Seconds before a finish timeout at which a run's time since it started already counts as reaching it (rounding)."""


class TimeoutEvidence(enum.Enum):
    """What a run's times say about its timeouts."""

    RULED_OUT = "ruled out"
    """No timeout of the function can have ended it (or it has none)."""
    PROVEN = "proven"
    """One did: the run never started and its start timeout fired, or it ran as long as its finish timeout."""
    UNDECIDED = "undecided"
    """Its age since scheduling admits a timeout, and when it started is not known."""


@dataclass(frozen=True)
class RunStart:
    """When Inngest says a run started executing."""

    started_at_ms: int | None
    """Epoch milliseconds of its first step's first attempt; None: it never started."""


def weigh(fn: FunctionConfig, cancellation: Cancellation, start: RunStart | None) -> TimeoutEvidence:
    """Whether a timeout of the function `fn` ended the run, given its `start` (None: not known).

    A run with no usable times (no `ts`, or neither a ULID run id nor a trigger time) is
    RULED_OUT here, as no evidence; the classifier does not take that for the absence of a
    timeout when it reasons by elimination.
    """
    age = cancellation.age_seconds
    if age is None or cancellation.cancelled_at_ms is None:
        return TimeoutEvidence.RULED_OUT
    finish, start_after = fn.timeouts.finish, fn.timeouts.start
    finish_possible = finish is not None and age >= finish - FINISH_TIMEOUT_TOLERANCE
    start_possible = start_after is not None and (
        age >= start_after - START_TIMEOUT_TOLERANCE if fn.batch_events else abs(age - start_after) <= START_TIMEOUT_TOLERANCE
    )
    if not finish_possible and not start_possible:
        return TimeoutEvidence.RULED_OUT
    if start is None:
        return TimeoutEvidence.UNDECIDED
    if start.started_at_ms is None:
        return TimeoutEvidence.PROVEN if start_possible else TimeoutEvidence.RULED_OUT
    running = max(0.0, (cancellation.cancelled_at_ms - start.started_at_ms) / 1000.0)
    if finish_possible and finish is not None and running >= finish - FINISH_TIMEOUT_TOLERANCE:
        return TimeoutEvidence.PROVEN
    return TimeoutEvidence.RULED_OUT
