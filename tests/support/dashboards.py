"""The shipped Grafana dashboards as the tests see them: panels, queries, variables, and Grafana's interpolation.

The lint, the real-Prometheus proof and the preview script all read the same JSON
files through this module, so what is linted is what is proven and what is drawn.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

from tests.support.payloads import REPO
from tests.support.prometheus_server import PrometheusServer, Series

DASHBOARDS_DIR = REPO / "dashboards"
RULES_FILE = DASHBOARDS_DIR / "rules.yml"
CANCELLATIONS_UID = "inngest-cancellations"
HEALTH_UID = "inngest-cancellation-exporter-health"

BUILTIN_VARIABLES = frozenset(
    {"__rate_interval", "__interval", "__interval_ms", "__range", "__range_s", "__range_ms", "__from", "__to", "__dashboard"}
)
"""Grafana's global variables that may appear in a query."""

VARIABLE = re.compile(r"\$\{(?P<braced>\w+)(?::(?P<format>\w+))?\}|\$(?P<plain>\w+)|\[\[(?P<bracketed>\w+)\]\]")
"""A variable reference, in any of Grafana's three syntaxes: `$name`, `${name}` / `${name:format}`, `[[name]]`."""
LABEL_VALUES = re.compile(r"^label_values\((?:(?P<match>.+),\s*)?(?P<label>\w+)\)$")
"""Grafana's `label_values([selector, ]label)` variable query, which Grafana answers from Prometheus's label API."""


@dataclass(frozen=True)
class Query:
    """One target of one panel: where it is, what it asks Prometheus, and how Grafana runs it."""

    dashboard: str
    """The dashboard's uid."""
    panel: dict[str, Any]
    target: dict[str, Any]

    @property
    def expr(self) -> str:
        return str(self.target.get("expr", ""))

    @property
    def instant(self) -> bool:
        """Grafana runs an "Instant" target as an instant query, any other as a range query."""
        return bool(self.target.get("instant")) and not self.target.get("range", False)

    @property
    def where(self) -> str:
        return f"{self.dashboard}: panel {self.panel.get('id')} {self.panel.get('title')!r}, target {self.target.get('refId')}"


def load(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text()))


def shipped() -> dict[str, dict[str, Any]]:
    """Every dashboard in dashboards/, by uid."""
    dashboards = [load(path) for path in sorted(DASHBOARDS_DIR.glob("*.json"))]
    return {str(d.get("uid")): d for d in dashboards}


def panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those inside (collapsed) rows; rows themselves are not panels of data."""
    for panel in dashboard.get("panels", []):
        if panel.get("type") == "row":
            yield from panels(panel)
        else:
            yield panel


def queries(dashboard: Mapping[str, Any]) -> Iterator[Query]:
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            yield Query(str(dashboard.get("uid")), panel, target)


def variables(dashboard: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The dashboard's template variables, by name."""
    return {v["name"]: v for v in dashboard.get("templating", {}).get("list", [])}


def variable_query(variable: Mapping[str, Any]) -> str:
    """A query variable's query text, whichever of Grafana's two shapes (a string, or an object) it is stored in."""
    query = variable.get("query", "")
    return str(query.get("query", "") if isinstance(query, dict) else query)


def variable_name(match: re.Match[str]) -> str:
    """The variable's name in a VARIABLE match, whichever syntax it was written in."""
    return str(match.group("braced") or match.group("plain") or match.group("bracketed"))


def referenced(text: str) -> set[str]:
    """The names of the variables a text refers to."""
    return {variable_name(match) for match in VARIABLE.finditer(text)}


def interpolate(text: str, values: Mapping[str, str]) -> str:
    """Replace variable references with `values`, as Grafana does before a query reaches Prometheus.

    A reference to a variable `values` does not have raises KeyError: a query must
    never reach Prometheus with a `$` left in it.
    """
    return VARIABLE.sub(lambda match: values[variable_name(match)], text)


def builtin_values(start: float, end: float, scrape_interval: float, max_data_points: int = 1000) -> dict[str, str]:
    """Grafana's time variables for the range [start, end], as Grafana computes them for a Prometheus datasource.

    `$__interval` is the range over the panel's data points, at least the scrape interval;
    `$__rate_interval` is the larger of `$__interval` plus one scrape and four scrapes, so a
    `rate` always has two samples to work with.
    """
    range_s = int(end - start)
    interval_ms = int(max(scrape_interval, range_s / max_data_points) * 1000)
    rate_interval_ms = int(max(interval_ms + scrape_interval * 1000, 4 * scrape_interval * 1000))
    return {
        "__range": f"{range_s}s",
        "__range_s": str(range_s),
        "__range_ms": str(range_s * 1000),
        "__interval": f"{interval_ms}ms",
        "__interval_ms": str(interval_ms),
        "__rate_interval": f"{rate_interval_ms}ms",
        "__from": str(int(start * 1000)),
        "__to": str(int(end * 1000)),
        "__dashboard": "",
    }


def _regex_escape(value: str) -> str:
    """Grafana's escaping of a value for a Prometheus regex matcher, inside a PromQL string."""
    return re.sub(r"[\\^$*+?.()|\[\]{}]", lambda m: "\\\\" + m.group(), value)


def variable_values(dashboard: Mapping[str, Any], chosen: Mapping[str, str | list[str]]) -> dict[str, str]:
    """What Grafana substitutes for each of the dashboard's variables, given the values a user picked.

    A variable not in `chosen` is left at All when it offers it, else at its saved
    current value; several values become Grafana's `(a|b)` regex alternation.
    """
    values: dict[str, str] = {}
    for name, variable in variables(dashboard).items():
        picked = chosen.get(name)
        if picked is None and variable.get("includeAll"):
            values[name] = str(variable.get("allValue") or ".*")
        elif picked is None:
            values[name] = str(variable.get("current", {}).get("value", ""))
        elif isinstance(picked, list):
            values[name] = "(" + "|".join(_regex_escape(v) for v in picked) + ")"
        else:
            values[name] = _regex_escape(picked) if variable.get("type") == "query" else picked
    return values


def evaluate(prometheus: PrometheusServer, query: Query, values: Mapping[str, str], start: float, end: float) -> list[Series]:
    """Run one panel target as Grafana would: interpolated, then instant at `end` or ranged over [start, end]."""
    expr = interpolate(query.expr, values)
    if query.instant:
        return prometheus.query(expr, at=end)
    step = int(values["__interval_ms"]) / 1000
    return prometheus.query_range(expr, start, end, step)
