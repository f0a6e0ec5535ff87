"""Labelled attribution scenarios: simulated cancelled runs, what really cancelled each, and what the evidence supports.

The exporter infers a cancellation's source from evidence that reaches it
asynchronously: cancel signals, bulk windows read from the REST API's list, and
the run's times against its timeouts (its age since scheduling, and when it
started, looked up through the REST API's `GET /v2/runs/{id}`). Measuring that inference needs runs whose
true cause is known, with their evidence delivered as production delivers it:
out of order, late, duplicated, sometimes misleading. This module builds such
runs on a simulated clock (epoch milliseconds) and labels each with

- its true `cause`: what cancelled it in the simulated world;
- its `expected` source: what the documented rules (exporter/attribution/classify.py) must
  infer from the evidence visible before the grace period ends. That is the true
  cause when the evidence is unambiguous, and `unknown` when it is ambiguous or
  missing (a run whose age admits a timeout and whose lookup was not answered in
  time, or not asked: lookups off), or when `manual` cannot be established. It is never a different
  concrete source, except where evidence that applies to the run stayed out of
  the exporter's sight within the grace period (delivered later, bulk polling
  off, function not in the config): no rule can weigh evidence it never sees,
  and the run carries the hazard EVIDENCE_UNSEEN.

The label comes from `_label`, which reasons about the simulated world (which
signals and windows truly apply to a run, and when each became visible), not
from the classifier, so a classifier bug shows up as a mismatch.

Cancel events follow Inngest's server: one cancels a run only if the server
received it after scheduling the run (its id, a ULID made on receipt, against the
run id), and by the rule's `timeout` after that; never the run's own trigger; never
a run of a batched function (the server refuses `cancelOn` there). A singleton in
`cancel` mode loses its run to a newer trigger with the same key, received after
the run was scheduled and by its cancellation. A sender's `ts` is its own clock,
seconds off the receipt either way.

The world honours the assumptions the rules rest on (a generated run that broke
one would be a test of the assumption, not of the code): a run starts executing
(`Run.started_ms`) some time after it is scheduled, or never; a start timeout fires
within START_TIMEOUT_TOLERANCE of its configured age, only on a run that has not
started (so a run of a function with a start timeout starts before then, or is
cancelled otherwise younger than that); a finish timeout fires no earlier than
FINISH_TIMEOUT_TOLERANCE before `finish` has passed since the run started, and a
started run cancelled otherwise has run for less than that, however long it
waited in the queue first; every bulk cancellation stays in the polled list until
a successful poll has listed it. The REST API (tests.support.fake_inngest_api)
tells every run's times, except while a lookup outage lasts.

Runs are laid out in *epochs* of EPOCH_MS. Within an epoch, runs of different
functions (*lanes*) are cancelled around the same moment, so their deliveries
and the scenario's polls interleave; a function has at most one run per epoch
and bulk windows never reach outside their epoch (one open at the start reaches
back, but is created after every earlier run ended), so evidence only meets the
runs the oracle reasons about.

The polled list reads as Inngest's server writes it (tests.support.fake_inngest_api),
or in the documented shapes; beside bulk cancellations it lists cancellations of
single runs, and the server's own jobs for a run's timeouts.
"""

from __future__ import annotations

import bisect
import random
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any, Callable, Literal

import ulid

from exporter.parsing import CANCELLED, FINISHED
from exporter.attribution.run_lookups import FIRST_RETRY_MS, MAX_RETRY_MS
from exporter.attribution.signals import MAX_CANDIDATES
from exporter.attribution.timeouts import FINISH_TIMEOUT_TOLERANCE, START_TIMEOUT_TOLERANCE
from exporter.records import Source
from tests.support.fake_inngest_api import RunRecord, go_time, server_item

SECOND = 1000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
BASE_MS = 1_732_000_000_000
EPOCH_MS = 4 * HOUR
MOMENT_MS = 150 * MINUTE
"""Offset of an epoch's moment, around which its runs are cancelled: room before it for two-hour-old runs."""
MARGIN_MS = SECOND
"""Evidence placed 'within' or 'beyond' the grace period keeps this far from its end: the real exporter
releases held runs once a second (exporter.core.RELEASE_INTERVAL_SECONDS), so the exact edge is not a rule."""
START_TOLERANCE_MS = round(START_TIMEOUT_TOLERANCE * SECOND)
FINISH_TOLERANCE_MS = round(FINISH_TIMEOUT_TOLERANCE * SECOND)

EVIDENCE_UNSEEN = "evidence-unseen"
"""Evidence that applies to the run was not visible within its grace period: it arrived later, or never could
(bulk polling off, function missing from the config). The exporter decided without it."""
CONTRARY_AFTER_DECISION = "contrary-evidence-after-decision"
"""The run had evidence for one source when its cancellation arrived, and evidence for another within the grace period."""
WINDOW_AFTER_CANCELLATION = "bulk-window-created-after-cancellation"
"""A bulk window covering the run was created (its id's ULID time) after the run was already cancelled."""
SIGNAL_STORM = "signal-storm"
"""The matching signal is older than MAX_CANDIDATES newer ones of its name: the search never reaches it."""

ListShape = Literal["array", "data", "mixed"]
IdForm = Literal["server", "app", "slug", "bare"]
"""How a list item names its function: as the server writes it (the full slug, beside the app's UUID); the bare
function id beside the app's own id (a request body's form); the full slug alone; the bare id alone (documented)."""


@dataclass(frozen=True)
class Rule:
    """A `cancel_on` rule; `keyed` ones match the cancel event's key to the trigger's, as `if` expressions do."""

    event: str
    keyed: bool
    timeout_ms: int | None = None

    def declaration(self, key: str) -> dict[str, Any]:
        rule: dict[str, Any] = {"event": self.event}
        if self.keyed:
            rule["if"] = f"async.data.{key} == event.data.{key}"
        if self.timeout_ms is not None:
            rule["timeout"] = f"{self.timeout_ms // SECOND}s"
        return rule


@dataclass(frozen=True)
class Profile:
    """A simulated function: how it can really be cancelled, and whether the config declares that."""

    app: str
    name: str
    trigger: str
    key: str
    """The trigger's data field that identifies the work (and that keyed rules compare)."""
    rules: tuple[Rule, ...] = ()
    start_ms: int | None = None
    finish_ms: int | None = None
    declared: bool = True
    batched: bool = False
    """Runs on batches of events (`batchEvents`): no `cancelOn`, as Inngest requires."""
    singleton: bool = False
    """A singleton in `cancel` mode, keyed by the trigger's `key` field: a newer run cancels the running one."""

    @property
    def slug(self) -> str:
        return f"{self.app}-{self.name}"

    def declaration(self) -> dict[str, Any]:
        """The function's entry in the YAML config."""
        entry: dict[str, Any] = {}
        if self.batched:
            entry["batch_events"] = True
        if self.singleton:
            entry["singleton"] = {"key": f"event.data.{self.key}", "mode": "cancel"}
            entry["triggers"] = [self.trigger]
        if self.rules:
            entry["cancel_on"] = [rule.declaration(self.key) for rule in self.rules]
        timeouts = {k: f"{v // SECOND}s" for k, v in (("start", self.start_ms), ("finish", self.finish_ms)) if v}
        if timeouts:
            entry["timeouts"] = timeouts
        return entry

    @property
    def trigger_recorded(self) -> bool:
        """Whether the exporter records the function's triggers as evidence: a newer run cancels, or its own rules do."""
        return self.singleton or any(rule.event == self.trigger for rule in self.rules)

    def timeout_possible(self, age_ms: int) -> bool:
        """Whether a timeout of this function may end a run at `age_ms` since scheduling, whenever it started: the
        runs the exporter must look up."""
        if self.finish_ms is not None and age_ms >= self.finish_ms - FINISH_TOLERANCE_MS:
            return True
        return self.in_start_band(age_ms)

    def in_start_band(self, age_ms: int) -> bool:
        """Whether the start timeout can end a run that has not started at `age_ms` since scheduling: when its eager
        job fires (the world's band), or for a batched run (no eager job) when it is dequeued, at or past that."""
        if self.start_ms is None:
            return False
        if self.batched:
            return age_ms >= self.start_ms - START_TOLERANCE_MS
        return abs(age_ms - self.start_ms) <= START_TOLERANCE_MS

    def timed_out(self, age_ms: int, running_ms: int | None) -> bool:
        """Whether a timeout of this function ends a run cancelled `age_ms` after it was scheduled and `running_ms`
        after it started (None: it never started)."""
        if running_ms is None:
            return self.in_start_band(age_ms)
        return self.finish_ms is not None and running_ms >= self.finish_ms - FINISH_TOLERANCE_MS

    @property
    def latest_start_ms(self) -> int | None:
        """How long after scheduling a run can still start: before its start timeout fires (None: any time)."""
        return None if self.start_ms is None else self.start_ms - START_TOLERANCE_MS - 1


IMPORT = Profile(
    "shop", "import-contacts", "contacts/import.requested", "importId",
    (Rule("contacts/import.cancelled", keyed=True, timeout_ms=HOUR),), start_ms=30 * SECOND, finish_ms=2 * HOUR,
)
EXPORT = Profile(
    "shop", "export-report", "report/export.requested", "reportId",
    (Rule("report/export.stopped", keyed=True),), finish_ms=10 * MINUTE,
)
SYNC = Profile(
    "crm", "sync-account", "account/sync.requested", "accountId",
    (Rule("account/deleted", keyed=True, timeout_ms=30 * MINUTE), Rule("crm/sync.paused", keyed=False)),
)
DIGEST = Profile("mail", "send-digest", "digest/send.requested", "userId", start_ms=MINUTE)
NOTIFY = Profile("mail", "notify-user", "user/notify.requested", "userId")
LEGACY = Profile(
    "ops", "cleanup-legacy", "legacy/cleanup.requested", "jobId",
    (Rule("legacy/cleanup.stopped", keyed=True),), finish_ms=15 * MINUTE, declared=False,
)
"""Cancellable by a signal and a timeout in reality, but missing from the config."""
REFRESH = Profile(
    "crm", "refresh-contact", "contact/updated", "contactId", (Rule("contact/updated", keyed=True, timeout_ms=HOUR),),
)
"""Cancelled by a newer event of its own trigger's name, for the same contact: its own trigger never counts."""
BATCH = Profile("shop", "import-batch", "contacts/import.queued", IMPORT.key, start_ms=2 * MINUTE, batched=True)
"""Batched: IMPORT's cancel signals, carrying its runs' keys, reach the exporter and never cancel its runs."""
SINGLE = Profile("crm", "sync-contacts", "contacts/sync.requested", "accountId", finish_ms=20 * MINUTE, singleton=True)
"""One sync per account at a time: a newer sync of the account cancels the running one."""
GHOST = Profile("shop", "archive-orders", "orders/archive.requested", "orderId")
"""Never runs: bulk windows for it are distractors for every other function."""
PROFILES = (IMPORT, EXPORT, SYNC, DIGEST, NOTIFY, LEGACY, REFRESH, BATCH, SINGLE)


def config_document(*, bulk_polling: bool, poll_interval_ms: int) -> dict[str, Any]:
    """The YAML config of a scenario: every declared profile, and bulk polling when on."""
    document: dict[str, Any] = {
        "labels": {"environment": "simulation"},
        "functions": {p.slug: p.declaration() for p in (*PROFILES, GHOST) if p.declared},
    }
    if bulk_polling:
        document["bulk_cancellations"] = {"poll_interval": f"{poll_interval_ms // SECOND}s"}
    return document


@dataclass(frozen=True)
class EventDelivery:
    """An Inngest event reaching the exporter at `at_ms`: a cancellation, a cancel signal or noise."""

    at_ms: int
    event: dict[str, Any]


@dataclass(frozen=True)
class PollDelivery:
    """A poll of the bulk cancellation list started at `at_ms`; `body` is the JSON answer, None when it failed."""

    at_ms: int
    body: Any | None


Delivery = EventDelivery | PollDelivery


@dataclass(frozen=True)
class LabelledRun:
    run_id: str
    function_id: str
    case: str
    """The generator case that built it, e.g. `bulk/listed-then-dropped`."""
    cause: Source
    """What really cancelled the run: never `unknown`."""
    expected: Source
    """What the documented rules must infer from the evidence visible within the grace period."""
    hazards: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Scenario:
    name: str
    config: dict[str, Any]
    grace_ms: int
    start_ms: int
    deliveries: tuple[Delivery, ...]
    """In time order: the order the harness feeds them in."""
    runs: tuple[LabelledRun, ...]
    run_lookups: bool
    """EXPORTER_RUN_LOOKUPS: whether the exporter asks when runs started."""
    run_records: dict[str, RunRecord]
    """What the REST API tells of each run, by run id."""
    lookup_outages: tuple[tuple[int, int], ...]
    """[start, end) intervals in which every run lookup fails (HTTP 500)."""


@dataclass(frozen=True)
class Run:
    """One run while its scenario is built: cases place evidence around its times."""

    run_id: str
    profile: Profile
    case: str
    cause: Source
    trigger: dict[str, Any]
    scheduled_ms: int
    """The run id's ULID time."""
    started_ms: int | None
    """When it started executing (its first step's first attempt); None: it never did."""
    cancelled_ms: int
    """The cancellation event's `ts`."""
    delivered_ms: int
    """When its cancellation first reaches the exporter, which then decides or starts holding it."""
    decided_by_ms: int
    """The end of its grace period: evidence visible later cannot count."""

    @property
    def key_value(self) -> str:
        return str(self.trigger["data"][self.profile.key])

    @property
    def age_ms(self) -> int:
        return self.cancelled_ms - self.scheduled_ms

    @property
    def running_ms(self) -> int | None:
        """How long it had been executing when it was cancelled; None: it never started."""
        return None if self.started_ms is None else self.cancelled_ms - self.started_ms

    @property
    def timed_out(self) -> bool:
        """Whether a timeout of its function ended it, in the simulated world."""
        return self.profile.timed_out(self.age_ms, self.running_ms)


@dataclass(frozen=True)
class _Signal:
    event: dict[str, Any]
    received_ms: int
    """When Inngest received it: the time its matching goes by (its id's, when Inngest made the id)."""
    delivered_ms: int


@dataclass(frozen=True)
class _Window:
    id: str
    profile: Profile
    after_ms: int | None
    """None: open at the start (`started_after` null)."""
    before_ms: int
    created_ms: int
    dropped_ms: int | None
    """Gone from the list from then on; None: dropped right after the first successful poll that listed it."""
    condition: tuple[str, str] | None
    """`if event.data.<field> == '<value>'`, or None for every run in the range."""
    id_form: IdForm

    def applies_to(self, run: Run) -> bool:
        """Whether this bulk cancellation really targets `run` (Inngest knows the app, whatever the list says)."""
        if self.profile.slug != run.profile.slug or not run.scheduled_ms <= self.before_ms:
            return False
        if self.after_ms is not None and run.scheduled_ms < self.after_ms:
            return False
        return self.condition is None or run.trigger["data"].get(self.condition[0]) == self.condition[1]

    def listed_at(self, poll_ms: int) -> bool:
        return self.created_ms <= poll_ms and (self.dropped_ms is None or poll_ms < self.dropped_ms)

    def as_json(self, rng: random.Random) -> dict[str, Any]:
        """The list item, with the variations the REST API may use for the same thing."""
        expression = None if self.condition is None else f"event.data.{self.condition[0]} == '{self.condition[1]}'"
        if self.id_form == "server":
            return server_item(
                self.id, self.profile.slug, started_after_ms=self.after_ms, started_before_ms=self.before_ms,
                expression=expression,
            )
        item: dict[str, Any] = {
            "id": self.id,
            "environment_id": "e03843e1-d2df-419e-9b7b-678b03f7398f",
            "function_id": self.profile.slug if self.id_form == "slug" else self.profile.name,
            "started_after": None if self.after_ms is None else _rfc3339(self.after_ms),
            "started_before": _rfc3339(self.before_ms),
        }
        if self.after_ms is None and rng.random() < 0.5:
            del item["started_after"]
        if self.id_form == "app":
            item["app_id"] = self.profile.app
        if expression is not None:
            item["if"] = expression
        elif rng.random() < 0.5:
            item["if"] = rng.choice((None, ""))
        return item


@dataclass(frozen=True)
class _RunItem:
    """A listed cancellation that names one run (`target_id`): a person's (`run`), or the server's own job for a
    run's timeout (`start_timeout`, `finish_timeout`, cause `Event`)."""

    id: str
    profile: Profile
    target_id: str
    created_ms: int
    dropped_ms: int
    kind: str = "run"
    cause: str = "API"

    def cancels_alone(self, run: Run) -> bool:
        """Whether it says that `run` was cancelled on its own, by a person or a program."""
        return self.kind == "run" and self.cause != "Event" and self.target_id == run.run_id

    def listed_at(self, poll_ms: int) -> bool:
        return self.created_ms <= poll_ms < self.dropped_ms

    def as_json(self, rng: random.Random) -> dict[str, Any]:
        return server_item(
            self.id, self.profile.slug, started_before_ms=self.created_ms, kind=self.kind, cause=self.cause,
            target_id=self.target_id,
        )


def _rfc3339(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class ScenarioBuilder:
    """Builds one scenario: runs, their evidence and the scenario's polls, then labels every run.

    Incidental variety that must not change any label (delivery skew, which
    cancellation event arrives first, redeliveries, event ids, list shapes)
    comes from `rng`; cases pass explicit values where a label depends on them.
    """

    def __init__(
        self,
        name: str,
        *,
        seed: int = 0,
        bulk_polling: bool = True,
        run_lookups: bool = True,
        grace_ms: int = 2 * MINUTE,
        poll_interval_ms: int = 30 * SECOND,
        list_shape: ListShape = "array",
        start_ms: int = BASE_MS,
    ) -> None:
        self.name = name
        self.rng = random.Random(seed)
        self.bulk_polling = bulk_polling
        self.run_lookups = run_lookups
        self.grace_ms = grace_ms
        self.poll_interval_ms = poll_interval_ms
        self._list_shape = list_shape
        self._start_ms = start_ms
        self._poll_phase = self.rng.randrange(poll_interval_ms)
        self._events: list[tuple[int, int, dict[str, Any]]] = []
        self._signals: list[_Signal] = []
        self._windows: list[_Window] = []
        self._run_items: list[_RunItem] = []
        self._outages: list[tuple[int, int]] = []
        self._lookup_outages: list[tuple[int, int]] = []
        self._runs: list[Run] = []
        self._spans: list[list[int]] = []
        """Per epoch, the times between which polls matter: a poll elsewhere changes no label or record."""
        self.epoch_start_ms = start_ms - EPOCH_MS
        self.next_epoch()

    @property
    def moment_ms(self) -> int:
        """Around when this epoch's runs are cancelled."""
        return self.epoch_start_ms + MOMENT_MS

    @property
    def epoch_end_ms(self) -> int:
        return self.epoch_start_ms + EPOCH_MS

    @property
    def run_count(self) -> int:
        return len(self._runs)

    def next_epoch(self) -> None:
        self.epoch_start_ms += EPOCH_MS
        self._spans.append([self.moment_ms, self.moment_ms])

    def _touch(self, *times: int) -> None:
        span = self._spans[-1]
        span[0] = min(span[0], *times)
        span[1] = max(span[1], *times)

    def ulid_at(self, ms: int) -> str:
        """A ULID with time `ms` and seeded randomness, so a scenario is the same on every run."""
        return str(ulid.ULID.from_bytes(ms.to_bytes(6, "big") + self.rng.randbytes(10)))

    def run(
        self,
        profile: Profile,
        *,
        case: str,
        cause: Source,
        age_ms: int,
        cancelled_ms: int | None = None,
        queued_ms: int | None = None,
        skew_ms: int | None = None,
        trigger_stamped_ms: int | None = None,
        started_after_ms: int | None = 0,
    ) -> Run:
        """A run of `profile` cancelled `age_ms` after it was scheduled, and the deliveries of its cancellation.

        `queued_ms` is how long after its triggering event the run was scheduled;
        `started_after_ms` how long after it was scheduled it started executing (None: never);
        `skew_ms` how long after the cancellation its first cancellation event arrives;
        `trigger_stamped_ms`, when given, makes the trigger carry its sender's id and that `ts`.
        """
        rng = self.rng
        assert started_after_ms is None or 0 <= started_after_ms <= age_ms, "a run starts between scheduling and cancellation"
        cancelled_ms = self.moment_ms + rng.randint(-3 * MINUTE, 3 * MINUTE) if cancelled_ms is None else cancelled_ms
        scheduled_ms = cancelled_ms - age_ms
        trigger_ms = scheduled_ms - (rng.randint(0, 800) if queued_ms is None else queued_ms)
        if skew_ms is None:
            skew_ms = rng.randint(20, 3 * SECOND) if rng.random() < 0.8 else rng.randint(3 * SECOND, 45 * SECOND)
        # a trigger the exporter records may carry its sender's id, and then its `ts` is all that tells its time
        if trigger_stamped_ms is None and profile.trigger_recorded and rng.random() < 0.3:
            trigger_stamped_ms = self.sender_ts(trigger_ms)
        trigger = {
            "name": profile.trigger,
            "id": self.ulid_at(trigger_ms) if trigger_stamped_ms is None else f"{profile.name}-{len(self._runs)}",
            "ts": trigger_ms if trigger_stamped_ms is None else trigger_stamped_ms,
            "data": {profile.key: f"{profile.key}-{len(self._runs)}", "tier": rng.choice(("free", "pro"))},
            "user": {},
        }
        if profile.trigger_recorded:
            self._deliver_signal(trigger, trigger_ms, trigger_ms + rng.randint(10, 2 * SECOND))
        delivered_ms = cancelled_ms + skew_ms
        run = Run(
            run_id=self.ulid_at(scheduled_ms), profile=profile, case=case, cause=cause, trigger=trigger,
            scheduled_ms=scheduled_ms, started_ms=None if started_after_ms is None else scheduled_ms + started_after_ms,
            cancelled_ms=cancelled_ms, delivered_ms=delivered_ms, decided_by_ms=delivered_ms + self.grace_ms,
        )
        self._runs.append(run)
        first = self._cancellation_event(run, finished=rng.random() < 0.3)
        self._events.append((delivered_ms, 2, first))
        for _ in range(rng.choice((0, 0, 0, 0, 0, 0, 1, 1, 2))):
            again = first if rng.random() < 0.5 else self._cancellation_event(run, finished=first["name"] == CANCELLED)
            self._events.append((delivered_ms + rng.randint(SECOND, 2 * self.grace_ms), 2, again))
        self._touch(cancelled_ms, run.decided_by_ms)
        return run

    def redeliver(self, run: Run, at_ms: int, *, finished: bool) -> None:
        """`run`'s cancellation once more: a retry of `function.cancelled`, or its `function.finished` twin."""
        self._events.append((at_ms, 2, self._cancellation_event(run, finished=finished)))

    def poll_at_or_after(self, at_ms: int) -> int:
        """The first poll time on the scenario's grid at or after `at_ms`."""
        return at_ms + (self._poll_phase - at_ms) % self.poll_interval_ms

    def _cancellation_event(self, run: Run, *, finished: bool) -> dict[str, Any]:
        """`function.cancelled`, or its twin `function.finished` with `_inngest.status: Cancelled`."""
        data: dict[str, Any] = {
            "function_id": run.profile.slug, "run_id": run.run_id, "event": run.trigger, "events": [run.trigger],
        }
        if finished or self.rng.random() < 0.5:
            data["_inngest"] = {"status": "Cancelled"}
        if not finished and self.rng.random() < 0.5:
            data["error"] = {"error": "function cancelled", "message": "function cancelled", "name": "Error"}
        event_id = run.run_id if not finished and self.rng.random() < 0.3 else self.ulid_at(run.cancelled_ms)
        return {"name": FINISHED if finished else CANCELLED, "id": event_id, "ts": run.cancelled_ms, "data": data}

    def sender_ts(self, received_ms: int) -> int:
        """An event's `ts`: its sender's clock, up to two seconds off the moment Inngest received it, either way."""
        return received_ms + self.rng.randint(-2 * SECOND, 2 * SECOND)

    def signal(
        self,
        run: Run,
        received_ms: int,
        *,
        delivered_ms: int,
        rule: int | Rule = 0,
        matching: bool = True,
        ts_ms: int | None = None,
    ) -> None:
        """A cancel event of `run`'s rule number `rule` (or of another function's `rule`, carrying `run`'s key), which
        Inngest received at `received_ms` (its id's time) and its sender stamped `ts_ms` (else `sender_ts`);
        `matching=False` names another run's key."""
        spec = run.profile.rules[rule] if isinstance(rule, int) else rule
        data = {run.profile.key: run.key_value if matching else f"{run.key_value}-other"} if spec.keyed else {}
        ts = self.sender_ts(received_ms) if ts_ms is None else ts_ms
        event = {"name": spec.event, "id": self.ulid_at(received_ms), "ts": ts, "data": data, "user": {}}
        self._deliver_signal(event, received_ms, delivered_ms)

    def newer_trigger(
        self, run: Run, received_ms: int, *, delivered_ms: int, matching: bool = True, ts_ms: int | None = None
    ) -> None:
        """A trigger of `run`'s singleton function, received by Inngest at `received_ms` and stamped `ts_ms` (else
        `sender_ts`), carrying `run`'s key, or another when `matching=False`."""
        key = run.key_value if matching else f"{run.key_value}-other"
        ts = self.sender_ts(received_ms) if ts_ms is None else ts_ms
        data = {run.profile.key: key, "tier": run.trigger["data"]["tier"]}
        event = {"name": run.profile.trigger, "id": self.ulid_at(received_ms), "ts": ts, "data": data, "user": {}}
        self._deliver_signal(event, received_ms, delivered_ms)

    def _deliver_signal(self, event: dict[str, Any], received_ms: int, delivered_ms: int) -> None:
        self._signals.append(_Signal(event, received_ms, delivered_ms))
        self._events.append((delivered_ms, 1, event))
        self._touch(delivered_ms)

    def window(
        self,
        profile: Profile,
        *,
        after_ms: int | None,
        before_ms: int,
        created_ms: int,
        dropped_ms: int | None | Literal["epoch-end"] = "epoch-end",
        condition: tuple[str, str] | None = None,
        id_form: IdForm = "app",
    ) -> None:
        """A bulk cancellation of `profile`'s runs scheduled in [after, before] (None: up to before), listed from
        `created_ms`."""
        lowest = self.epoch_start_ms if after_ms is None else after_ms
        assert self.epoch_start_ms <= lowest <= before_ms < self.epoch_end_ms, "a window ends inside its epoch"
        dropped = self.epoch_end_ms if dropped_ms == "epoch-end" else dropped_ms
        self._windows.append(
            _Window(self.ulid_at(created_ms), profile, after_ms, before_ms, created_ms, dropped, condition, id_form)
        )
        self._touch(created_ms)

    def run_item(
        self, run: Run, *, created_ms: int, kind: str = "run", cause: str = "API", target_id: str | None = None
    ) -> None:
        """A listed cancellation naming `run` (or the run `target_id`), listed from `created_ms` to the epoch's end."""
        self._run_items.append(
            _RunItem(self.ulid_at(created_ms), run.profile, target_id or run.run_id, created_ms, self.epoch_end_ms, kind, cause)
        )
        self._touch(created_ms)

    def outage(self, start_ms: int, end_ms: int) -> None:
        """Every poll started in [start, end) fails."""
        self._outages.append((start_ms, end_ms))
        self._touch(start_ms, end_ms)

    def lookup_outage(self, start_ms: int, end_ms: int) -> None:
        """Every run lookup tried in [start, end) fails."""
        self._lookup_outages.append((start_ms, end_ms))
        self._touch(start_ms, end_ms)

    def noise(self, at_ms: int) -> None:
        """Events that must not count: a run that finished normally, and an event no rule listens to."""
        completed = {"function_id": NOTIFY.slug, "run_id": self.ulid_at(at_ms - MINUTE), "_inngest": {"status": "Completed"}}
        self._events.append((at_ms, 1, {"name": FINISHED, "id": self.ulid_at(at_ms), "ts": at_ms, "data": completed}))
        self._events.append((at_ms + 7, 1, {"name": "user/signed.up", "id": self.ulid_at(at_ms), "ts": at_ms, "data": {}}))

    def build(self) -> Scenario:
        polls = self._polls()
        ok_polls = [at for at, ok in polls if ok]
        windows = [self._resolve_drop(w, ok_polls) for w in self._windows]
        deliveries: list[tuple[int, int, int, Delivery]] = [
            (at, priority, seq, EventDelivery(at, event)) for seq, (at, priority, event) in enumerate(self._events)
        ]
        for index, (at, ok) in enumerate(polls):
            listed = [item for item in (*windows, *self._run_items) if item.listed_at(at)]
            body = self._list_body(listed, at, index) if ok else None
            deliveries.append((at, 0, index, PollDelivery(at, body)))
        deliveries.sort(key=lambda item: item[:3])  # at one instant: polls, then signals, then cancellations
        world = _World(self._signals, windows, self._run_items, ok_polls, self.bulk_polling, self._lookup_outages if self.run_lookups else None)
        return Scenario(
            name=self.name,
            config=config_document(bulk_polling=self.bulk_polling, poll_interval_ms=self.poll_interval_ms),
            grace_ms=self.grace_ms,
            start_ms=self._start_ms,
            deliveries=tuple(delivery for *_, delivery in deliveries),
            runs=tuple(_label(run, world) for run in self._runs),
            run_lookups=self.run_lookups,
            run_records={run.run_id: RunRecord(run.scheduled_ms, run.started_ms, run.cancelled_ms) for run in self._runs},
            lookup_outages=tuple(self._lookup_outages),
        )

    def _polls(self) -> list[tuple[int, bool]]:
        """(start time, succeeded) of every poll that can matter: on the interval's grid, around each epoch's activity."""
        if not self.bulk_polling:
            return []
        interval = self.poll_interval_ms
        times: set[int] = set()
        for low, high in self._spans:
            times.update(range(self.poll_at_or_after(low - 3 * interval), high + 3 * interval, interval))
        return [(at, not any(start <= at < end for start, end in self._outages)) for at in sorted(times)]

    @staticmethod
    def _resolve_drop(window: _Window, ok_polls: list[int]) -> _Window:
        if window.dropped_ms is not None:
            return window
        first = bisect.bisect_left(ok_polls, window.created_ms)
        return replace(window, dropped_ms=ok_polls[first] + 1 if first < len(ok_polls) else None)

    def _list_body(self, listed: list[_Window | _RunItem], at_ms: int, index: int) -> Any:
        """The list in one of the REST API's two shapes: the server's object (`data` null when empty), or an array."""
        items = [item.as_json(self.rng) for item in listed]
        shape = self._list_shape if self._list_shape != "mixed" else ("array", "data")[index % 2]
        return items if shape == "array" else {"data": items or None, "metadata": {"fetched_at": go_time(at_ms, 17)}}


def _first_at_or_after(times: list[int], at_ms: int, before_ms: int | None = None) -> int | None:
    """The first of the sorted `times` at or after `at_ms` (and before `before_ms`), if any."""
    index = bisect.bisect_left(times, at_ms)
    if index == len(times) or (before_ms is not None and times[index] >= before_ms):
        return None
    return times[index]


def _hidden_by_storm(run: Run, signal: _Signal, signals: list[_Signal]) -> bool:
    """Whether more than MAX_CANDIDATES signals of the same name received later, seen by then, push `signal` out of the
    search."""
    newer = [
        other for other in signals
        if other.event["name"] == signal.event["name"] and other.received_ms > signal.received_ms
        and other.received_ms <= run.cancelled_ms and other.delivered_ms < run.decided_by_ms
    ]
    return len(newer) >= MAX_CANDIDATES


def _signal_applies(run: Run, signal: _Signal) -> bool:
    """Whether Inngest would cancel `run` on this event: a rule's name, not the run's own trigger, received after the
    run was scheduled, by its cancellation and within the rule's timeout from the scheduling, and (for keyed rules)
    carrying the run's key."""
    event = signal.event
    if event["id"] == run.trigger["id"]:
        return False
    for rule in run.profile.rules:
        latest = run.cancelled_ms if rule.timeout_ms is None else min(run.cancelled_ms, run.scheduled_ms + rule.timeout_ms)
        if event["name"] != rule.event or not run.scheduled_ms < signal.received_ms <= latest:
            continue
        if not rule.keyed or event["data"].get(run.profile.key) == run.key_value:
            return True
    return False


def _supersedes(run: Run, signal: _Signal) -> bool:
    """Whether Inngest cancels `run` on starting a newer run for this event: `run`'s singleton function's trigger, not
    its own, received after the run was scheduled and by its cancellation, with the run's key."""
    event = signal.event
    return (
        run.profile.singleton and event["name"] == run.profile.trigger and event["id"] != run.trigger["id"]
        and run.scheduled_ms < signal.received_ms <= run.cancelled_ms
        and event["data"].get(run.profile.key) == run.key_value
    )


@dataclass(frozen=True)
class _World:
    """A scenario's evidence and settings, as the oracle weighs them for each run."""

    signals: list[_Signal]
    windows: list[_Window]
    run_items: list[_RunItem]
    ok_polls: list[int]
    """When successful polls started, in order."""
    bulk_polling: bool
    lookup_outages: list[tuple[int, int]] | None
    """None: run lookups are off."""

    def lookup_answered_at(self, run: Run) -> int | None:
        """When the exporter learns when `run` started: its lookup, asked when the cancellation arrives and retried
        after FIRST_RETRY_MS, then twice as long each time up to MAX_RETRY_MS, until the grace period ends; None when
        no attempt falls outside the lookup outages in time (or lookups are off)."""
        if self.lookup_outages is None:
            return None
        at, wait = run.delivered_ms, FIRST_RETRY_MS
        while at < run.decided_by_ms:
            if not any(start <= at < end for start, end in self.lookup_outages):
                return at
            at, wait = at + wait, min(MAX_RETRY_MS, 2 * wait)
        return None


def _label(run: Run, world: _World) -> LabelledRun:
    """The source the evidence supports, from what is true in the simulated world and when the exporter could see it.

    Each piece of evidence is (what it shows, when it became visible; None: never).
    Everything visible before the grace period ends is weighed: the pipeline may
    decide earlier, at the first delivery, when it then has evidence; where later
    evidence contradicts that, the run carries CONTRARY_AFTER_DECISION. A run whose
    age admits a timeout of a declared function is decided only once its start is
    known: without that in time, `unknown`.
    """
    hazards: set[str] = set()
    seen: list[tuple[str, int | None]] = []
    declared = run.profile.declared
    undecided = False
    if declared and run.profile.timeout_possible(run.age_ms):
        answered = world.lookup_answered_at(run)
        undecided = answered is None
        if run.timed_out:
            seen.append(("timeout", answered))
    elif run.timed_out:
        seen.append(("timeout", None))  # an undeclared function's: never weighed
    applying = [s for s in world.signals if _signal_applies(run, s)]
    storm = [s for s in applying if _hidden_by_storm(run, s, world.signals)]
    if storm:
        hazards.add(SIGNAL_STORM)
    seen += [("event", s.delivered_ms if declared else None) for s in applying if s not in storm]
    superseding = [s for s in world.signals if _supersedes(run, s)]
    seen += [("singleton", s.delivered_ms if declared else None) for s in superseding]
    covering = [w for w in world.windows if w.applies_to(run)]
    for window in covering:
        visible = _first_at_or_after(world.ok_polls, window.created_ms, window.dropped_ms)
        if window.created_ms > run.cancelled_ms:  # created after the run ended: cannot be why it ended
            if visible is not None and visible < run.decided_by_ms:
                hazards.add(WINDOW_AFTER_CANCELLATION)
            continue
        seen.append(("bulk", visible))
    # a listed cancellation of this run alone shows `manual`, declared function or not, when it came before the end
    seen += [
        ("manual", _first_at_or_after(world.ok_polls, item.created_ms, item.dropped_ms))
        for item in world.run_items if item.cancels_alone(run) and item.created_ms <= run.cancelled_ms
    ]
    _check_cause(run, applying, superseding, [w for w in covering if w.created_ms <= run.cancelled_ms])

    in_time = {what for what, at in seen if at is not None and at < run.decided_by_ms}
    at_delivery = {what for what, at in seen if at is not None and at <= run.delivered_ms}
    if any(at is None or at >= run.decided_by_ms for what, at in seen if not (undecided and what == "timeout")):
        hazards.add(EVIDENCE_UNSEEN)
    if len(at_delivery) == 1 and len(in_time) > 1:
        hazards.add(CONTRARY_AFTER_DECISION)
    if len(in_time) > 1 or undecided:
        expected = Source.UNKNOWN  # evidence for two sources, or a timeout neither proven nor ruled out
    elif in_time:
        expected = Source(next(iter(in_time)))
    else:
        polled_since = _first_at_or_after(world.ok_polls, run.cancelled_ms, run.decided_by_ms) is not None
        # a search cut short by a signal storm proves no absence: never `manual`
        expected = Source.MANUAL if declared and world.bulk_polling and polled_since and not storm else Source.UNKNOWN
    assert expected in (run.cause, Source.UNKNOWN) or EVIDENCE_UNSEEN in hazards, (
        f"generator bug: {run.case} run {run.run_id} caused by {run.cause.value} would be labelled {expected.value}"
    )
    return LabelledRun(run.run_id, run.profile.slug, run.case, run.cause, expected, frozenset(hazards))


def _check_cause(run: Run, signals: list[_Signal], superseding: list[_Signal], windows: list[_Window]) -> None:
    """The generator's own consistency: a run's cause is one that really could have cancelled it, and its start
    honours the world's timeouts."""
    latest_start = run.profile.latest_start_ms
    if latest_start is not None and run.cause is not Source.TIMEOUT:
        # a run not started by its start timeout is cancelled by it, unless something else came first
        started_in_time = run.started_ms is not None and run.started_ms - run.scheduled_ms <= latest_start
        assert started_in_time or run.age_ms <= latest_start, (
            f"generator bug: {run.case} run {run.run_id} would have been cancelled by its start timeout"
        )
    possible = {
        Source.TIMEOUT: run.timed_out, Source.EVENT: bool(signals), Source.SINGLETON: bool(superseding), Source.BULK: bool(windows),
    }
    assert possible.get(run.cause, True), f"generator bug: {run.case} run {run.run_id} cannot be caused by {run.cause.value}"


# --- the random generator ---------------------------------------------------------------------------------------

Timing = tuple[int, int | None]
"""A run's age at its cancellation, and how long after it was scheduled it started (None: never), in milliseconds."""


def safe_age(rng: random.Random, profile: Profile, *, upper_ms: int | None = None) -> int:
    """An age at which no timeout of `profile` can fire, whenever the run started; one time in five right at the edge
    of a tolerance."""
    upper = 100 * MINUTE if profile.finish_ms is None else profile.finish_ms - FINISH_TOLERANCE_MS - 1
    upper = min(upper, upper_ms or upper)
    edges = [profile.finish_ms - FINISH_TOLERANCE_MS - 1] if profile.finish_ms is not None else []
    if profile.start_ms is not None:
        edges += [profile.start_ms - START_TOLERANCE_MS - 1, profile.start_ms + START_TOLERANCE_MS + 1]
    edges = [edge for edge in edges if SECOND <= edge <= upper and not profile.timeout_possible(edge)]
    if edges and rng.random() < 0.2:
        return rng.choice(edges)
    while True:
        age = rng.randint(SECOND, upper)
        if not profile.timeout_possible(age):
            return age


def queued_start(rng: random.Random, profile: Profile, age_ms: int) -> int | None:
    """When a run cancelled `age_ms` after scheduling, by anything but a timeout, started: at once, after a wait in
    the queue, or (while its start timeout cannot have fired yet) never; always before its start timeout would fire."""
    latest = profile.latest_start_ms
    draw = rng.random()
    if draw < 0.5:
        return 0
    if draw < 0.85 or (latest is not None and age_ms > latest):
        return rng.randint(0, age_ms if latest is None else min(age_ms, latest))
    return None


def safe_timing(rng: random.Random, profile: Profile, cause: Source) -> Timing:
    """A run no timeout can have ended, by its age alone: no lookup is needed."""
    age = safe_age(rng, profile)
    return age, queued_start(rng, profile, age)


def timeout_timing(rng: random.Random, profile: Profile, cause: Source) -> Timing:
    """A run one of `profile`'s timeouts ended, the tolerance edges included: one that never started, at its start
    timeout's age; or one that ran as long as its finish timeout, after no wait in the queue, some or a long one
    (before its start timeout would fire, when it has one)."""
    bands = (["start"] if profile.start_ms is not None else []) + (["finish"] if profile.finish_ms is not None else [])
    if rng.choice(bands) == "start":
        return _start_band_age(rng, profile), None
    assert profile.finish_ms is not None
    low, high = profile.finish_ms - FINISH_TOLERANCE_MS, profile.finish_ms + 20 * SECOND
    running = rng.choice((low, high, rng.randint(low, high)))
    latest = 30 * MINUTE if profile.latest_start_ms is None else profile.latest_start_ms
    wait = rng.choice((0, rng.randint(0, latest), latest))
    return wait + running, wait


def _start_band_age(rng: random.Random, profile: Profile) -> int:
    """An age at which a start timeout can end a run that never started, the tolerance edges included: its eager
    job's band, or for a batched run up to ten minutes past it (dequeued late)."""
    assert profile.start_ms is not None
    low, high = profile.start_ms - START_TOLERANCE_MS, profile.start_ms + (10 * MINUTE if profile.batched else START_TOLERANCE_MS)
    return rng.choice((low, high, rng.randint(low, high)))


def _start_band_timing(rng: random.Random, profile: Profile, cause: Source) -> Timing:
    """An age at which a start timeout can end a run: the run never started when the timeout ended it, and had
    started (before then) when something else did."""
    assert profile.latest_start_ms is not None
    age = _start_band_age(rng, profile)
    return age, None if cause is Source.TIMEOUT else rng.randint(0, min(age, profile.latest_start_ms))


def _queued_past_finish_timing(rng: random.Random, profile: Profile, cause: Source) -> Timing:
    """Cancelled (by hand) after waiting in the queue so long that its age passes `finish`: it never started, or had
    run for less than `finish` (by one millisecond at the edge)."""
    assert profile.finish_ms is not None and profile.start_ms is None
    age = rng.randint(profile.finish_ms - FINISH_TOLERANCE_MS, profile.finish_ms + 30 * MINUTE)
    if rng.random() < 0.4:
        return age, None
    most = min(age, profile.finish_ms - FINISH_TOLERANCE_MS - 1)
    running = rng.choice((most, rng.randint(0, most)))
    return age, age - running


def _signal_time(rng: random.Random, run: Run, rule: Rule) -> int:
    """A moment at which Inngest receiving `rule`'s event cancels `run`: after its scheduling, within the rule's timeout,
    at most a few seconds before the cancellation; sometimes exactly on an edge."""
    latest = run.cancelled_ms if rule.timeout_ms is None else min(run.cancelled_ms, run.scheduled_ms + rule.timeout_ms)
    earliest = max(run.scheduled_ms + 1, latest - 3 * SECOND)
    return rng.choice((earliest, latest, rng.randint(earliest, latest), rng.randint(earliest, latest)))


def _newer_trigger_time(rng: random.Random, run: Run) -> int:
    """A moment at which Inngest receiving a newer trigger of `run`'s singleton cancels it: after its scheduling, at
    most a few seconds before the cancellation; sometimes exactly on an edge."""
    earliest = max(run.scheduled_ms + 1, run.cancelled_ms - 3 * SECOND)
    return rng.choice((earliest, run.cancelled_ms, rng.randint(earliest, run.cancelled_ms)))


def _in_grace(rng: random.Random, run: Run, sent_ms: int) -> int:
    """A delivery time for evidence sent at `sent_ms`: before the cancellation's, or late but within the grace period."""
    if rng.random() < 0.5:
        return rng.randint(sent_ms, max(sent_ms, run.delivered_ms))
    return rng.randint(run.delivered_ms + 1, run.decided_by_ms - MARGIN_MS)


def _beyond_grace(rng: random.Random, run: Run) -> int:
    return run.decided_by_ms + rng.randint(MARGIN_MS, 3 * MINUTE)


def _covering_window(b: ScenarioBuilder, run: Run, created_ms: int, **options: Any) -> None:
    """A bulk window of `run`'s function whose range contains its scheduled time, often exactly at one of its ends,
    sometimes open at the start."""
    rng = b.rng
    after = None if rng.random() < 0.15 else max(b.epoch_start_ms, run.scheduled_ms - rng.choice((0, rng.randint(0, 2 * HOUR))))
    before = run.scheduled_ms + rng.choice((0, rng.randint(0, 10 * MINUTE)))
    condition = rng.choice((None, ("tier", run.trigger["data"]["tier"]), (run.profile.key, run.key_value)))
    options = {"condition": condition, "id_form": rng.choice(("server", "server", "app", "slug")), **options}
    b.window(run.profile, after_ms=after, before_ms=before, created_ms=created_ms, **options)


def _lookup_failing(place: Callable[[ScenarioBuilder, Run], None]) -> Callable[[ScenarioBuilder, Run], None]:
    """`place`, and every run lookup failing from before the run's cancellation arrives until past its grace period."""
    def placed(b: ScenarioBuilder, run: Run) -> None:
        place(b, run)
        b.lookup_outage(run.delivered_ms - b.rng.randint(0, MINUTE), run.decided_by_ms + b.rng.randint(MARGIN_MS, MINUTE))
    return placed


def _lookup_retried(place: Callable[[ScenarioBuilder, Run], None]) -> Callable[[ScenarioBuilder, Run], None]:
    """`place`, and run lookups failing when the run's cancellation arrives and for up to 20 s after: a retry answers."""
    def placed(b: ScenarioBuilder, run: Run) -> None:
        place(b, run)
        b.lookup_outage(run.delivered_ms - b.rng.randint(0, MINUTE), run.delivered_ms + b.rng.randint(1, 20 * SECOND))
    return placed


def _bulk_created(b: ScenarioBuilder, run: Run, *, listed_before_delivery: bool = False) -> int:
    """When a bulk cancellation that ended `run` was created: up to five minutes before the cancellation (Inngest
    applies it when the run next executes); early enough to be listed before the cancellation arrives, if asked."""
    lowest = run.cancelled_ms - 5 * MINUTE
    highest = run.cancelled_ms - (b.poll_interval_ms + SECOND if listed_before_delivery else 0)
    return b.rng.randint(lowest, highest)


def distract(b: ScenarioBuilder, run: Run) -> None:
    """Evidence that must not count for `run`, each kind one time in three: signals for another run, received by the
    run's scheduling (sometimes stamped later), after the rule's timeout or after the cancellation, or matching a
    batched run; windows of another function, one millisecond outside the run's range, or whose `if` does not hold;
    a listed cancellation of another run, of this run but made after it ended, or the server's own job for this run
    (a timeout's, or one caused by an event)."""
    rng = b.rng
    soon = run.delivered_ms - rng.randint(0, 10 * SECOND)
    for index, rule in enumerate(run.profile.rules):
        if rule.keyed and rng.random() < 0.33:
            b.signal(run, _signal_time(rng, run, rule), delivered_ms=soon, rule=index, matching=False)
        if rng.random() < 0.33:
            received = run.scheduled_ms - rng.choice((0, rng.randint(0, 10 * MINUTE)))
            stamped_later = run.scheduled_ms + rng.randint(1, MINUTE) if rng.random() < 0.5 else None
            b.signal(run, received, delivered_ms=soon, rule=index, ts_ms=stamped_later)
        if rule.timeout_ms is not None and run.cancelled_ms > run.scheduled_ms + rule.timeout_ms and rng.random() < 0.33:
            late = run.scheduled_ms + rule.timeout_ms + rng.choice((1, rng.randint(1, run.cancelled_ms - run.scheduled_ms - rule.timeout_ms)))
            b.signal(run, late, delivered_ms=max(soon, late), rule=index)
        if rng.random() < 0.33:
            after = run.cancelled_ms + rng.choice((1, rng.randint(1, MINUTE)))
            b.signal(run, after, delivered_ms=after + rng.randint(0, 5 * SECOND), rule=index)
    if run.profile.batched and rng.random() < 0.5:
        (rule,) = IMPORT.rules
        b.signal(run, _signal_time(rng, run, rule), delivered_ms=soon, rule=rule)
    if run.profile.singleton:
        if rng.random() < 0.33:
            b.newer_trigger(run, _newer_trigger_time(rng, run), delivered_ms=soon, matching=False)
        if rng.random() < 0.33:
            received = run.scheduled_ms - rng.choice((0, rng.randint(0, 10 * MINUTE)))
            b.newer_trigger(run, received, delivered_ms=soon, ts_ms=run.scheduled_ms + rng.randint(1, MINUTE))
        if rng.random() < 0.33:
            after = run.cancelled_ms + rng.choice((1, rng.randint(1, MINUTE)))
            b.newer_trigger(run, after, delivered_ms=after + rng.randint(0, 5 * SECOND))
    created = run.cancelled_ms - rng.randint(0, 5 * MINUTE)
    around = (max(b.epoch_start_ms, run.scheduled_ms - HOUR), run.scheduled_ms + MINUTE)
    if rng.random() < 0.33:
        b.window(GHOST, after_ms=around[0], before_ms=around[1], created_ms=created, id_form=rng.choice(("server", "app", "slug")))
    if rng.random() < 0.33:
        outside = (run.scheduled_ms + 1, around[1]) if rng.random() < 0.5 else (around[0], run.scheduled_ms - 1)
        b.window(run.profile, after_ms=outside[0], before_ms=outside[1], created_ms=created)
    if rng.random() < 0.33:
        mismatch = ("tier", "enterprise") if rng.random() < 0.5 else (run.profile.key, f"{run.key_value}-other")
        b.window(run.profile, after_ms=around[0], before_ms=around[1], created_ms=created, condition=mismatch)
    if rng.random() < 0.33:
        kind, cause, target, made = rng.choice((
            ("run", "API", b.ulid_at(run.scheduled_ms), created),
            ("run", "Manual", run.run_id, run.cancelled_ms + rng.randint(1, MINUTE)),
            ("run", "Event", run.run_id, created),
            (rng.choice(("start_timeout", "finish_timeout")), "Event", run.run_id, created),
        ))
        b.run_item(run, created_ms=made, kind=kind, cause=cause, target_id=target)


@dataclass(frozen=True)
class Case:
    """A kind of generated run: its true cause, the functions it fits, how often it is drawn, and how it is built."""

    name: str
    cause: Source | tuple[Source, ...]
    """The true cause; several when the case is ambiguous by design (one is drawn per run)."""
    profiles: tuple[Profile, ...]
    weight: int
    place: Callable[[ScenarioBuilder, Run], None]
    timing: Callable[[random.Random, Profile, Source], Timing] = safe_timing
    """The run's age and start, given its function and true cause."""


def _event_case(delivery: Callable[[random.Random, Run, int], int]) -> Callable[[ScenarioBuilder, Run], None]:
    def place(b: ScenarioBuilder, run: Run) -> None:
        rule = b.rng.randrange(len(run.profile.rules))
        sent = _signal_time(b.rng, run, run.profile.rules[rule])
        b.signal(run, sent, delivered_ms=delivery(b.rng, run, sent), rule=rule)
        distract(b, run)
    return place


def _singleton_case(delivery: Callable[[random.Random, Run, int], int]) -> Callable[[ScenarioBuilder, Run], None]:
    def place(b: ScenarioBuilder, run: Run) -> None:
        received = _newer_trigger_time(b.rng, run)
        b.newer_trigger(run, received, delivered_ms=delivery(b.rng, run, received))
        distract(b, run)
    return place


def _ambiguous_singleton_and_bulk(b: ScenarioBuilder, run: Run) -> None:
    received = _newer_trigger_time(b.rng, run)
    b.newer_trigger(run, received, delivered_ms=b.rng.randint(received, run.delivered_ms))
    _covering_window(b, run, _bulk_created(b, run, listed_before_delivery=True))


def _event_timing(rng: random.Random, profile: Profile, cause: Source) -> Timing:
    """Young enough that every rule's signal could still cancel it (a run lives past its rule timeout otherwise)."""
    age = safe_age(rng, profile, upper_ms=min((r.timeout_ms for r in profile.rules if r.timeout_ms), default=None))
    return age, queued_start(rng, profile, age)


def _bulk_in_time(b: ScenarioBuilder, run: Run) -> None:
    _covering_window(b, run, _bulk_created(b, run))
    distract(b, run)


def _bulk_beyond_grace(b: ScenarioBuilder, run: Run) -> None:
    created = _bulk_created(b, run)
    _covering_window(b, run, created)
    b.outage(created - b.rng.randint(0, MINUTE), run.decided_by_ms + b.rng.randint(MARGIN_MS, 2 * MINUTE))


def _bulk_listed_then_dropped(b: ScenarioBuilder, run: Run) -> None:
    _covering_window(b, run, _bulk_created(b, run, listed_before_delivery=True), dropped_ms=None)


def _manual(b: ScenarioBuilder, run: Run) -> None:
    if b.rng.random() < 0.5:
        distract(b, run)


def _manual_listed(b: ScenarioBuilder, run: Run) -> None:
    """Cancelled alone from the REST API or the dashboard, which the list says (kind `run`)."""
    b.run_item(run, created_ms=run.cancelled_ms - b.rng.randint(0, 2 * SECOND), cause=b.rng.choice(("API", "Manual")))
    if b.rng.random() < 0.5:
        distract(b, run)


def _manual_unpolled(b: ScenarioBuilder, run: Run) -> None:
    b.outage(run.cancelled_ms - b.rng.randint(0, MINUTE), run.decided_by_ms + b.rng.randint(MARGIN_MS, MINUTE))


def _manual_bulk_if_mismatch(b: ScenarioBuilder, run: Run) -> None:
    other = ("tier", "enterprise") if b.rng.random() < 0.5 else (run.profile.key, f"{run.key_value}-other")
    _covering_window(b, run, _bulk_created(b, run), condition=other)


def _manual_window_created_later(b: ScenarioBuilder, run: Run) -> None:
    _covering_window(b, run, run.cancelled_ms + b.rng.randint(1, b.grace_ms // 2))


def _ambiguous_event_and_bulk(b: ScenarioBuilder, run: Run) -> None:
    rule = b.rng.randrange(len(run.profile.rules))
    sent = _signal_time(b.rng, run, run.profile.rules[rule])
    b.signal(run, sent, delivered_ms=b.rng.randint(sent, run.delivered_ms), rule=rule)
    _covering_window(b, run, _bulk_created(b, run, listed_before_delivery=True))


def _ambiguous_timeout_and_event(b: ScenarioBuilder, run: Run) -> None:
    sent = _signal_time(b.rng, run, run.profile.rules[0])
    b.signal(run, sent, delivered_ms=b.rng.randint(sent, run.delivered_ms))


def _ambiguous_timeout_and_bulk(b: ScenarioBuilder, run: Run) -> None:
    _covering_window(b, run, _bulk_created(b, run, listed_before_delivery=True))


def _timeout_then_late_window(b: ScenarioBuilder, run: Run) -> None:
    """Queued runs bulk-cancelled around their start timeout: the window is listed only after the cancellation arrived."""
    created = _bulk_created(b, run)
    _covering_window(b, run, created)
    b.outage(created - b.rng.randint(0, MINUTE), run.delivered_ms + b.rng.randint(1, b.grace_ms // 3))


_RULED = (IMPORT, EXPORT, SYNC, LEGACY, REFRESH)
_DECLARED_RULED = (IMPORT, EXPORT, SYNC, REFRESH)
_TIMED = (IMPORT, EXPORT, DIGEST, LEGACY, BATCH, SINGLE)
_DECLARED_TIMED = (IMPORT, EXPORT, DIGEST, BATCH, SINGLE)
_FINISH_ONLY = (EXPORT, LEGACY)
"""Functions with a finish timeout and no start timeout: a run of theirs can wait in the queue for any time."""

CASES: tuple[Case, ...] = (
    Case("event/in-time", Source.EVENT, _RULED, 8, _event_case(_in_grace), _event_timing),
    Case("event/beyond-grace", Source.EVENT, _RULED, 2, _event_case(lambda rng, run, sent: _beyond_grace(rng, run)), _event_timing),
    Case("singleton/in-time", Source.SINGLETON, (SINGLE,), 4, _singleton_case(_in_grace)),
    Case("singleton/beyond-grace", Source.SINGLETON, (SINGLE,), 1, _singleton_case(lambda rng, run, sent: _beyond_grace(rng, run))),
    Case("timeout", Source.TIMEOUT, _TIMED, 8, distract, timeout_timing),
    Case("timeout/lookup-retried", Source.TIMEOUT, _DECLARED_TIMED, 2, _lookup_retried(distract), timeout_timing),
    Case("timeout/lookup-failing", Source.TIMEOUT, _DECLARED_TIMED, 2, _lookup_failing(distract), timeout_timing),
    Case("bulk/in-time", Source.BULK, PROFILES, 8, _bulk_in_time),
    Case("bulk/beyond-grace", Source.BULK, PROFILES, 2, _bulk_beyond_grace),
    Case("bulk/listed-then-dropped", Source.BULK, PROFILES, 2, _bulk_listed_then_dropped),
    Case("manual/polled", Source.MANUAL, PROFILES, 6, _manual),
    Case("manual/listed-alone", Source.MANUAL, PROFILES, 2, _manual_listed),
    Case("manual/no-poll-since-cancellation", Source.MANUAL, PROFILES, 2, _manual_unpolled),
    Case("manual/bulk-if-mismatch", Source.MANUAL, PROFILES, 2, _manual_bulk_if_mismatch),
    Case("manual/window-created-after-cancellation", Source.MANUAL, PROFILES, 1, _manual_window_created_later),
    Case("manual/queued-past-finish", Source.MANUAL, _FINISH_ONLY, 4, _manual, _queued_past_finish_timing),
    Case("manual/queued-past-finish/lookup-failing", Source.MANUAL, _FINISH_ONLY, 1, _lookup_failing(_manual), _queued_past_finish_timing),
    Case("manual/started-at-start-timeout-age", Source.MANUAL, (IMPORT, DIGEST, BATCH), 3, _manual, _start_band_timing),
    Case("ambiguous/event-and-bulk", (Source.EVENT, Source.BULK), _DECLARED_RULED, 2, _ambiguous_event_and_bulk, _event_timing),
    Case("ambiguous/singleton-and-bulk", (Source.SINGLETON, Source.BULK), (SINGLE,), 1, _ambiguous_singleton_and_bulk),
    Case("ambiguous/timeout-and-event", (Source.TIMEOUT, Source.EVENT), (IMPORT,), 2, _ambiguous_timeout_and_event, _start_band_timing),
    Case("ambiguous/timeout-and-bulk", (Source.TIMEOUT, Source.BULK), (IMPORT, DIGEST), 2, _ambiguous_timeout_and_bulk, _start_band_timing),
    Case("ambiguous/timeout-then-late-window", (Source.TIMEOUT, Source.BULK), (IMPORT, DIGEST), 1, _timeout_then_late_window, _start_band_timing),
)


def generate(seed: int, runs: int, *, runs_per_scenario: int = 40, cases: tuple[Case, ...] = CASES) -> list[Scenario]:
    """Scenarios holding about `runs` labelled runs in all, each scenario with its own settings, all from `seed`."""
    rng = random.Random(seed)
    scenarios: list[Scenario] = []
    made = 0
    while made < runs:
        b = ScenarioBuilder(
            f"seed-{seed}-{len(scenarios)}",
            seed=rng.randrange(2**32),
            bulk_polling=rng.random() < 0.85,
            run_lookups=rng.random() < 0.9,
            grace_ms=rng.choice((MINUTE, 2 * MINUTE, 2 * MINUTE, 5 * MINUTE)),
            poll_interval_ms=rng.choice((15 * SECOND, 30 * SECOND, 30 * SECOND, MINUTE)),
            list_shape=rng.choice(("array", "data", "mixed")),
            start_ms=BASE_MS + len(scenarios) * 64 * EPOCH_MS,
        )
        while b.run_count < min(runs_per_scenario, runs - made):
            b.next_epoch()
            _fill_epoch(b, rng, cases, lanes=rng.randint(1, 4))
        made += b.run_count
        scenarios.append(b.build())
    return scenarios


def _fill_epoch(b: ScenarioBuilder, rng: random.Random, cases: tuple[Case, ...], *, lanes: int) -> None:
    """Up to `lanes` runs of different functions, cancelled around the epoch's moment, and some noise."""
    busy: set[Profile] = set()
    for case in rng.choices(cases, weights=[c.weight for c in cases], k=lanes):
        free = [p for p in case.profiles if p not in busy]
        if not free:
            continue
        profile = rng.choice(free)
        busy.add(profile)
        cause = rng.choice(case.cause) if isinstance(case.cause, tuple) else case.cause
        age, started_after = case.timing(rng, profile, cause)
        run = b.run(profile, case=case.name, cause=cause, age_ms=age, started_after_ms=started_after)
        case.place(b, run)
    if rng.random() < 0.3:
        b.noise(b.moment_ms + rng.randint(-MINUTE, MINUTE))
