"""The YAML config file: constant labels, per-function cancellation causes, bulk polling.

Validated with pydantic so every problem is reported at once, with its key path;
CEL expressions are compiled here so a typo fails `check-config`, not a run.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from exporter.attribution import expressions
from exporter.durations import format_duration, parse_duration

_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
RESERVED_LABELS = frozenset({"function_id", "source", "le", "quantile", "outcome"})


def _duration(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s, 5m, 2h")
    if isinstance(value, (int, float)):
        if value <= 0:
            raise ValueError("must be greater than zero")
        return float(value)
    if isinstance(value, str):
        return parse_duration(value)
    raise ValueError("expected a duration such as 30s, 5m, 2h")


Duration = Annotated[float, BeforeValidator(_duration), PlainSerializer(format_duration, when_used="json")]
"""Seconds, written in the file as "30s", "2h" or a plain number of seconds; written back (the `definitions`
command, the saved definitions) as the file would say it: 900.0 as "15m"."""


def _compiled(expression: str) -> str:
    expressions.check(expression)
    return expression


Expression = Annotated[str, AfterValidator(_compiled)]
"""An Inngest (CEL) expression, compiled when the config loads: a typo fails `check-config`, not a run."""


def _label_name(name: str) -> str:
    if not _LABEL_NAME.match(name) or name.startswith("__"):
        raise ValueError(f"{name!r} is not a valid Prometheus label name")
    if name in RESERVED_LABELS:
        raise ValueError(f"{name!r} is reserved by the exporter's own series")
    return name


LabelName = Annotated[str, AfterValidator(_label_name)]
"""A constant label's name, checked key by key, so every bad one has its line."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CancelOn(_Strict):
    """One `cancelOn` rule of a function, as declared in its Inngest definition.

    Inngest matches a cancel event received after the run was scheduled, up to `timeout` after that.
    """

    event: str = Field(min_length=1)
    if_: Expression | None = Field(default=None, alias="if")
    timeout: Duration | None = None


def _event_name_alone(value: Any) -> Any:
    if isinstance(value, str):
        return {"event": value}
    if not isinstance(value, dict):
        raise ValueError("expected an event name, {event, if} or {cron}")
    return value


class Trigger(_Strict):
    """A trigger of a function: an event, written as its name or as `{event, if}` when it has a condition; or a cron
    schedule, `{cron}`."""

    event: str | None = Field(default=None, min_length=1)
    if_: Expression | None = Field(default=None, alias="if")
    """Inngest starts a run only for an event it holds for (`event` is the event)."""
    cron: str | None = Field(default=None, min_length=1)
    """Runs started by the schedule leave no event the exporter can receive."""

    @model_validator(mode="after")
    def _one_kind(self) -> Trigger:
        if (self.event is None) == (self.cron is None):
            raise ValueError("expected either event or cron")
        if self.cron is not None and self.if_ is not None:
            raise ValueError("if applies to an event, not to cron")
        return self


class Singleton(_Strict):
    """A function's `singleton`: one run at a time per key; in `cancel` mode a new run cancels the running one."""

    key: Expression | None = None
    """Evaluated on the triggering event (`event`); runs whose keys are equal share the singleton. Without a key
    every run of the function shares it; a key that is `false` makes the run no singleton."""
    mode: Literal["cancel", "skip"]
    """`skip` drops the new run instead: never a cancellation."""

    @property
    def cancels(self) -> bool:
        return self.mode == "cancel"


class Timeouts(_Strict):
    """A function's `timeouts`: start (queued too long) and finish (ran too long)."""

    start: Duration | None = None
    finish: Duration | None = None


class FunctionConfig(_Strict):
    """What the exporter knows about one function: the ways it can be cancelled.

    Fields are validated in this order, so a later one's check can read an earlier one.
    """

    batch_events: bool = False
    """Inngest's `batchEvents`: the function runs on batches of events."""
    singleton: Singleton | None = None
    triggers: list[Annotated[Trigger, BeforeValidator(_event_name_alone)]] = Field(
        default_factory=list, validate_default=True
    )
    """The function's event triggers: the exporter records them as evidence when a newer run cancels an older one."""
    cancel_on: list[CancelOn] = Field(default_factory=list)
    timeouts: Timeouts = Field(default_factory=Timeouts)

    @property
    def cancels_singleton(self) -> bool:
        """Whether a new run cancels the running one with the same singleton key (`singleton.mode: cancel`)."""
        return self.singleton is not None and self.singleton.cancels

    @property
    def event_triggers(self) -> list[Trigger]:
        return [trigger for trigger in self.triggers if trigger.event is not None]

    @property
    def singleton_trigger_names(self) -> list[str]:
        """The events whose newer runs cancel a running one: the event triggers of a singleton in `cancel` mode."""
        return [trigger.event for trigger in self.event_triggers if trigger.event is not None] if self.cancels_singleton else []

    @property
    def cron_triggered(self) -> bool:
        """Whether some runs start from a cron schedule: those leave no trigger the exporter can see."""
        return any(trigger.cron is not None for trigger in self.triggers)

    @field_validator("singleton")
    @classmethod
    def _singleton_not_batched(cls, singleton: Singleton | None, info: ValidationInfo) -> Singleton | None:
        if singleton is not None and info.data.get("batch_events"):
            raise ValueError("not allowed with batch_events: Inngest refuses a batched function with a singleton")
        return singleton

    @field_validator("triggers")
    @classmethod
    def _triggers_of_a_cancelling_singleton(cls, triggers: list[Trigger], info: ValidationInfo) -> list[Trigger]:
        """A newer run's trigger is the evidence of a singleton cancellation: without the names, none can be seen."""
        singleton = info.data.get("singleton")
        if not triggers and singleton is not None and singleton.cancels:
            raise ValueError("required when singleton.mode is cancel: the events (or cron) that trigger the function")
        return triggers

    @field_validator("cancel_on")
    @classmethod
    def _not_batched(cls, rules: list[CancelOn], info: ValidationInfo) -> list[CancelOn]:
        """Inngest refuses to sync a batched function with `cancelOn` (nor does it ever match one for a batch):
        such rules describe no real function, and would never apply."""
        if rules and info.data.get("batch_events"):
            raise ValueError("not allowed with batch_events: Inngest refuses a batched function with cancelOn")
        return rules


class BulkCancellations(_Strict):
    """Polling of the REST API's bulk cancellations."""

    available: bool = True
    """False declares a server with no bulk cancellation (self-hosted, dev): nothing is polled, and since no
    bulk cancellation can have ended a run, `manual` is concluded by elimination without a poll."""
    enabled: bool = True
    poll_interval: Duration = 30.0
    retention: Duration = 86400.0
    """How long a window is kept after it disappears from the list (a finished bulk cancellation may be deleted)."""

    @property
    def polled(self) -> bool:
        """Whether the list is read: polling is on and the server has one."""
        return self.enabled and self.available


class Config(_Strict):
    """The whole config file. Every section is optional: an empty file is valid."""

    labels: dict[LabelName, str] = Field(default_factory=dict)
    functions: dict[str, FunctionConfig] = Field(default_factory=dict)
    bulk_cancellations: BulkCancellations | None = None

    @functools.cached_property
    def signal_names(self) -> frozenset[str]:
        """Every event name that some function's `cancel_on` listens to."""
        return frozenset(rule.event for fn in self.functions.values() for rule in fn.cancel_on)

    @functools.cached_property
    def singleton_triggers(self) -> frozenset[str]:
        """Every event name that triggers a singleton function in `cancel` mode (so cancels its running run)."""
        return frozenset(name for fn in self.functions.values() for name in fn.singleton_trigger_names)

    @functools.cached_property
    def signal_listeners(self) -> dict[str, frozenset[str]]:
        """Each event recorded as evidence (a cancel signal, a trigger of a cancelling singleton), with the functions
        whose held runs it may explain."""
        listeners: dict[str, set[str]] = {}
        for function_id, fn in self.functions.items():
            for name in (*(rule.event for rule in fn.cancel_on), *fn.singleton_trigger_names):
                listeners.setdefault(name, set()).add(function_id)
        return {name: frozenset(ids) for name, ids in listeners.items()}

    @functools.cached_property
    def evidence_names(self) -> frozenset[str]:
        """The events recorded as evidence: cancel signals and the triggers of cancelling singletons."""
        return frozenset(self.signal_listeners)


class ConfigError(Exception):
    """A config file that cannot be used; `problems` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def _key_path(loc: tuple[Any, ...]) -> str:
    """`functions.f.cancel_on.0.if`; a problem with a mapping's key (`labels`' names) is the mapping's, whose message names the key."""
    if loc[-1:] == ("[key]",):
        loc = loc[:-2]
    return ".".join("if" if part == "if_" else str(part) for part in loc) or "(top level)"


def parse_config(data: Any, origin: str) -> Config:
    """Validate an already-loaded YAML document; raise ConfigError with `origin: key: problem` lines."""
    if data is None:
        data = {}
    try:
        return Config.model_validate(data)
    except ValidationError as err:
        problems = []
        for item in err.errors():
            message = item["msg"].removeprefix("Value error, ")
            if item["type"] == "extra_forbidden":
                message = "unknown key"
            problems.append(f"{origin}: {_key_path(item['loc'])}: {message}")
        raise ConfigError(problems) from None


def load_config(path: str | Path | None) -> Config:
    """The config at `path`, or the empty config when no path is given."""
    if path is None:
        return Config()
    origin = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError([f"{origin}: cannot read: {err.strerror or err}"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "(top level)"
        raise ConfigError([f"{origin}: {where}: not valid YAML: {getattr(err, 'problem', err)}"]) from None
    return parse_config(data, origin)
