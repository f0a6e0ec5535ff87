"""A Grafana dashboard linter: grafana/dashboard-linter's rules for Prometheus dashboards, in Python.

The Go tool cannot be built here, so its rules are re-implemented on the same
footing, a real PromQL parser (`promql-parser`, the Prometheus grammar), and
tightened where the issue asks for more: every panel (not only some types) needs
a unit and a description, `increase` may only range over `$__rate_interval` or
`$__range`, and no datasource uid may be hard-coded anywhere. Why these rules:
a dashboard that names a datasource uid breaks on every other Grafana; one without
`job`/`instance` variables mixes every exporter a Prometheus scrapes; a counter
read raw shows resets as cliffs; a fixed rate window is empty at some zoom levels.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, Iterator, Mapping

import promql_parser as promql

from tests.support.dashboards import (
    BUILTIN_VARIABLES,
    LABEL_VALUES,
    VARIABLE,
    Query,
    panels,
    queries,
    referenced,
    variable_name,
    variable_query,
    variables,
)

TEMPLATED_DATASOURCE = frozenset({"$datasource", "${datasource}"})
TRACE_DATASOURCE_TYPES = frozenset({"tempo", "jaeger", "zipkin"})
"""Plugin types a datasource variable other than the Prometheus one may list: where exemplars' trace ids lead."""
EXEMPLAR_PANEL_TYPES = frozenset({"timeseries", "heatmap"})
"""The panels that draw exemplars (Grafana hands them to panels as annotations, which tables do not show)."""
EXEMPLAR_SUFFIXES = ("_total", "_bucket")
"""OpenMetrics allows exemplars only on counters and histogram buckets."""
LINK_VARIABLE = re.compile(r"\$\{(?P<braced>[\w.]+)(?::(?P<format>\w+))?\}|\$(?P<plain>\w+)|\[\[(?P<bracketed>\w+)\]\]")
"""A variable reference in a data link, where Grafana also offers dotted ones (`${__data.fields.function_id}`)."""
LINK_BUILTINS = frozenset({"__url_time_range", "__value.raw", "__value.text", "__value.numeric", "__value.time"})
"""Data-link variables that need no field or label check."""
MIN_SCHEMA_VERSION = 39
UID = re.compile(r"^[A-Za-z0-9_-]{1,40}$")
COUNTER_SUFFIXES = ("_total", "_count", "_sum", "_bucket")
RATE_FUNCTIONS = frozenset({"rate", "irate", "increase"})

# Grafana's unit ids (packages/grafana-data/src/valueFormats/categories.ts), the ones a Prometheus dashboard can use.
VALID_UNITS = frozenset(
    {
        "none", "string", "short", "percent", "percentunit", "sci", "locale",
        "bytes", "decbytes", "bits", "decbits", "kbytes", "mbytes", "gbytes",
        "Bps", "bps", "binBps", "binbps", "pps",
        "dateTimeAsIso", "dateTimeAsIsoNoDateIfToday", "dateTimeAsUS", "dateTimeAsUSNoDateIfToday",
        "dateTimeAsLocal", "dateTimeAsLocalNoDateIfToday", "dateTimeAsSystem", "dateTimeFromNow",
        "hertz", "ns", "µs", "ms", "s", "m", "h", "d", "dtdurationms", "dtdurations", "dthms", "dtdhms",
        "timeticks", "clockms", "clocks",
        "cps", "ops", "reqps", "rps", "wps", "iops", "cpm", "opm", "rpm", "wpm",
        "bool", "bool_yes_no", "bool_on_off",
    }
)

# Placeholders that let a query with variables parse, as the Go linter does: each duration
# variable becomes an unlikely duration, so the parsed range says which variable it was.
_DURATIONS = {"__rate_interval": 11277964, "__interval": 11277965, "__range": 11277966}
_NUMBERS = {"__interval_ms": "11277967", "__range_s": "11277968", "__range_ms": "11277969", "__from": "1294671549254", "__to": "1294671549255"}
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')


@dataclass(frozen=True)
class Problem:
    rule: str
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.rule}: {self.where}: {self.message}"


def duration_of(variable: str) -> timedelta:
    return timedelta(seconds=_DURATIONS[variable])


def _placeholder(match: re.Match[str]) -> str:
    name = variable_name(match)
    if name in _DURATIONS:
        return f"{_DURATIONS[name]}s"
    return _NUMBERS.get(name, f"__variable_{name}")


def parse(expr: str) -> promql.Expr:
    """Parse a query with its variables replaced by placeholders; inside strings (label values) they stay as written."""
    pieces, last = [], 0
    for string in _STRING.finditer(expr):
        pieces.append(VARIABLE.sub(_placeholder, expr[last : string.start()]))
        pieces.append(string.group())
        last = string.end()
    pieces.append(VARIABLE.sub(_placeholder, expr[last:]))
    return promql.parse("".join(pieces))


def walk(expr: promql.Expr) -> Iterator[tuple[Any, list[Any]]]:
    """Every node of a parsed query with its ancestors, outermost first."""
    found: list[tuple[Any, list[Any]]] = []
    stack: list[Any] = []

    def enter(node: Any) -> None:
        found.append((node, list(stack)))
        stack.append(node)

    def leave(node: Any) -> None:
        stack.pop()

    promql.walk(expr, enter, leave)
    return iter(found)


def metric_name(selector: promql.VectorSelector) -> str:
    if selector.name:
        return str(selector.name)
    return next((m.value for m in selector.matchers.matchers if m.name == "__name__"), "")


def selectors(expr: promql.Expr) -> Iterator[promql.VectorSelector]:
    return (node for node, _ in walk(expr) if isinstance(node, promql.VectorSelector))


DashboardRule = Callable[[Mapping[str, Any]], Iterator[str]]
TargetRule = Callable[[Query, promql.Expr], Iterator[str]]


def _datasource_uid(value: Any) -> str | None:
    """The uid a `datasource` field names (or its legacy plain-string name)."""
    if isinstance(value, dict):
        return None if value.get("uid") is None else str(value["uid"])
    return None if value is None else str(value)


# --- dashboard rules -------------------------------------------------------------------------


def dashboard_identity(dashboard: Mapping[str, Any]) -> Iterator[str]:
    """A stable uid (links, alerts and provisioning find the dashboard by it) and no numeric id (it clashes on import)."""
    if not isinstance(dashboard.get("uid"), str) or not UID.match(dashboard["uid"]):
        yield f"uid {dashboard.get('uid')!r} is not a stable uid (1 to 40 of A-Z a-z 0-9 _ -)"
    if dashboard.get("id") is not None:
        yield f"id is {dashboard['id']!r}: it must be null, Grafana assigns it on import"
    if not dashboard.get("title"):
        yield "the dashboard has no title"


def schema_version(dashboard: Mapping[str, Any]) -> Iterator[str]:
    version = dashboard.get("schemaVersion")
    if not isinstance(version, int) or version < MIN_SCHEMA_VERSION:
        yield f"schemaVersion {version!r} is below {MIN_SCHEMA_VERSION}"


def template_datasource(dashboard: Mapping[str, Any]) -> Iterator[str]:
    """One Prometheus datasource variable, `datasource`, which every query reads; any other datasource variable is a
    traces one (tempo, jaeger, zipkin: where exemplars and spans lead) that something refers to."""
    templated = {name: v for name, v in variables(dashboard).items() if v.get("type") == "datasource"}
    if "datasource" not in templated:
        yield "there is no datasource variable named 'datasource'"
    elif templated["datasource"].get("query") != "prometheus":
        yield f"the datasource variable lists {templated['datasource'].get('query')!r} datasources, not 'prometheus'"
    text = json.dumps({key: value for key, value in dashboard.items() if key != "templating"})
    for name, variable in templated.items():
        if name == "datasource":
            continue
        if variable.get("query") not in TRACE_DATASOURCE_TYPES:
            yield (
                f"the datasource variable {name} lists {variable.get('query')!r} datasources: only 'datasource' "
                f"(prometheus) and traces ones ({', '.join(sorted(TRACE_DATASOURCE_TYPES))}) are expected"
            )
        elif name not in {variable_name(match) for match in LINK_VARIABLE.finditer(text)}:
            yield f"the traces datasource variable {name} is not referred to anywhere"


def _template_label(name: str) -> DashboardRule:
    def rule(dashboard: Mapping[str, Any]) -> Iterator[str]:
        variable = variables(dashboard).get(name)
        if variable is None:
            yield f"there is no {name!r} variable"
            return
        if variable.get("type") != "query":
            yield f"{name} is a {variable.get('type')!r} variable, not a Prometheus query"
        if not variable.get("multi") or not variable.get("includeAll"):
            yield f"{name} must allow several values and All (multi, includeAll)"
        if variable.get("allValue") != ".+":
            yield f"{name}'s All value is {variable.get('allValue')!r}, not '.+'"

    rule.__doc__ = f"A `{name}` variable: several {name}s may feed one Prometheus, and one dashboard must tell them apart."
    return rule


def template_queries(dashboard: Mapping[str, Any]) -> Iterator[str]:
    """Query variables read the templated datasource, are `label_values()` of a valid selector (answered by
    Prometheus's cheap label API, and checkable), and only refer to variables the dashboard defines."""
    defined = set(variables(dashboard)) | BUILTIN_VARIABLES
    for name, variable in variables(dashboard).items():
        if variable.get("type") != "query":
            continue
        if _datasource_uid(variable.get("datasource")) not in TEMPLATED_DATASOURCE:
            yield f"variable {name} reads datasource {variable.get('datasource')!r}, not ${{datasource}}"
        parts = LABEL_VALUES.match(variable_query(variable))
        if parts is None:
            yield f"variable {name} is not a label_values() query: {variable_query(variable)!r}"
        elif parts["match"]:
            try:
                parse(parts["match"])
            except ValueError as err:
                yield f"variable {name} selects with invalid PromQL ({err}): {parts['match']}"
        for missing in sorted(referenced(variable_query(variable)) - defined):
            yield f"variable {name} refers to ${missing}, which is not defined"


def no_hardcoded_datasource(dashboard: Mapping[str, Any]) -> Iterator[str]:
    """No datasource uid anywhere: the file must work on any Grafana, imported or provisioned."""
    if "__inputs" in dashboard:
        yield "__inputs makes the UI import ask for a datasource and provisioning fail; use the datasource variable"

    def visit(node: Any, path: str) -> Iterator[str]:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "datasource" and value is not None and _datasource_uid(value) not in TEMPLATED_DATASOURCE:
                    yield f"{path}.datasource is {value!r}, a hard-coded datasource"
                yield from visit(value, f"{path}.{key}")
        elif isinstance(node, list):
            for index, value in enumerate(node):
                yield from visit(value, f"{path}[{index}]")

    yield from visit(dict(dashboard), "$")


def panel_datasource(dashboard: Mapping[str, Any]) -> Iterator[str]:
    for panel in panels(dashboard):
        if not panel.get("targets"):
            continue
        if _datasource_uid(panel.get("datasource")) not in TEMPLATED_DATASOURCE:
            yield f"panel {panel.get('title')!r} does not use ${{datasource}}"
        for target in panel["targets"]:
            if _datasource_uid(target.get("datasource")) not in TEMPLATED_DATASOURCE:
                yield f"panel {panel.get('title')!r} target {target.get('refId')} does not use ${{datasource}}"


def panel_title_description(dashboard: Mapping[str, Any]) -> Iterator[str]:
    for panel in panels(dashboard):
        if not str(panel.get("title", "")).strip():
            yield f"panel {panel.get('id')} has no title"
        if not str(panel.get("description", "")).strip():
            yield f"panel {panel.get('title')!r} has no description"


def panel_units(dashboard: Mapping[str, Any]) -> Iterator[str]:
    for panel in panels(dashboard):
        unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit")
        if unit not in VALID_UNITS:
            yield f"panel {panel.get('title')!r} has no or an invalid unit: {unit!r}"


def panel_ids(dashboard: Mapping[str, Any]) -> Iterator[str]:
    """Unique panel ids: links to a panel (`viewPanel`) and alert annotations rely on them."""
    seen: set[Any] = set()
    for panel in panels(dashboard):
        if panel.get("id") in seen or not isinstance(panel.get("id"), int):
            yield f"panel {panel.get('title')!r} has a missing or repeated id {panel.get('id')!r}"
        seen.add(panel.get("id"))


def panel_exemplars(dashboard: Mapping[str, Any]) -> Iterator[str]:
    """Exemplars are asked for only where they can show: a range query (Grafana fetches none for an instant one) in a
    panel that draws them, over counters or histogram buckets (the only series that carry them)."""
    for query in queries(dashboard):
        if not query.target.get("exemplar"):
            continue
        if query.instant:
            yield f"{query.where}: exemplars are fetched for range queries only, and this one is instant"
        if query.panel.get("type") not in EXEMPLAR_PANEL_TYPES:
            yield f"{query.where}: a {query.panel.get('type')} panel draws no exemplars (only {sorted(EXEMPLAR_PANEL_TYPES)})"
        try:
            names = {metric_name(selector) for selector in selectors(parse(query.expr))}
        except ValueError:
            continue  # target-promql-rule reports it
        for name in sorted(name for name in names if not name.endswith(EXEMPLAR_SUFFIXES)):
            yield f"{query.where}: {name} carries no exemplars (only counters and histogram buckets do)"


def _grouping_labels(panel: Mapping[str, Any]) -> set[str]:
    """The labels every query of the panel keeps: those its outermost aggregation groups by."""
    kept: set[str] = set()
    for target in panel.get("targets", []):
        try:
            expr = parse(str(target.get("expr", "")))
        except ValueError:
            continue
        outermost = next((node for node, _ in walk(expr) if isinstance(node, promql.AggregateExpr)), None)
        if outermost is not None and outermost.modifier is not None and outermost.modifier.type == promql.AggModifierType.By:
            kept |= set(outermost.modifier.labels)
    return kept


def panel_links(dashboard: Mapping[str, Any]) -> Iterator[str]:
    """Data links have a title and a URL that is absolute (http(s), or a variable that holds one) or Grafana-relative
    (/...), and every variable they use exists: the dashboard's, Grafana's, or a field the panel's rows have."""
    defined = set(variables(dashboard)) | BUILTIN_VARIABLES | LINK_BUILTINS
    for panel in panels(dashboard):
        defaults = panel.get("fieldConfig", {}).get("defaults", {})
        overridden = [
            prop.get("value") or []
            for override in panel.get("fieldConfig", {}).get("overrides", [])
            for prop in override.get("properties", [])
            if prop.get("id") == "links"
        ]
        fields = {f"__data.fields.{label}" for label in _grouping_labels(panel) | {"Value", "Time"}}
        for link in [*defaults.get("links", []), *(link for links in overridden for link in links)]:
            where = f"panel {panel.get('title')!r} link {link.get('title')!r}"
            url = str(link.get("url", ""))
            if not str(link.get("title", "")).strip():
                yield f"panel {panel.get('title')!r} has a link without a title: {url}"
            if not (url.startswith(("http://", "https://", "/")) or re.match(r"^\$\{\w+\}", url)):
                yield f"{where}: the URL is neither absolute nor Grafana-relative: {url!r}"
            for match in LINK_VARIABLE.finditer(f"{link.get('title', '')} {url}"):
                name = variable_name(match)
                if name not in defined and name not in fields:
                    yield f"{where} refers to ${{{name}}}, which is neither a variable nor a field of the panel's rows"


# --- target rules ----------------------------------------------------------------------------


def target_rate_interval(query: Query, expr: promql.Expr) -> Iterator[str]:
    """rate/irate over $__rate_interval, which always spans enough scrapes whatever the zoom; increase over it or
    over $__range (a total for the range). A fixed window is empty under a slow scrape or jagged when zoomed out."""
    rate_interval, whole_range = duration_of("__rate_interval"), duration_of("__range")
    for node, parents in walk(expr):
        if isinstance(node, promql.MatrixSelector):
            call = parents[-1] if parents and isinstance(parents[-1], promql.Call) else None
            function = call.func.name if call is not None else ""
            if function in ("rate", "irate") and node.range != rate_interval:
                yield f"{function}() must range over $__rate_interval: {query.expr}"
            elif node.range not in (rate_interval, whole_range):
                yield f"a range of {node.range} is hard-coded; use $__rate_interval (or $__range for a total): {query.expr}"
        if isinstance(node, promql.SubqueryExpr):
            if node.range != whole_range or node.step not in (duration_of("__interval"), duration_of("__rate_interval")):
                yield f"a subquery must be [$__range:$__interval]: {query.expr}"


def target_counter_agg(query: Query, expr: promql.Expr) -> Iterator[str]:
    """A counter read raw shows a lifetime total and drops at every restart; only its rate or increase means something."""
    for node, parents in walk(expr):
        if not isinstance(node, promql.VectorSelector) or not metric_name(node).endswith(COUNTER_SUFFIXES):
            continue
        ranged = len(parents) >= 2 and isinstance(parents[-1], promql.MatrixSelector)
        call = parents[-2] if ranged else None
        if not (isinstance(call, promql.Call) and call.func.name in RATE_FUNCTIONS):
            yield f"{metric_name(node)} is a counter and must be read through rate, irate or increase: {query.expr}"


def _target_matcher(label: str) -> TargetRule:
    def rule(query: Query, expr: promql.Expr) -> Iterator[str]:
        for selector in selectors(expr):
            matched = any(
                m.name == label and m.op == promql.MatchOp.Re and m.value in (f"${label}", f"${{{label}}}")
                for m in selector.matchers.matchers
            )
            if not matched:
                yield f'{metric_name(selector)} does not filter {label}=~"${label}": {query.expr}'

    rule.__doc__ = f'Every selector filters {label}=~"${label}", so the {label} variable narrows every panel.'
    return rule


DASHBOARD_RULES: dict[str, DashboardRule] = {
    "dashboard-uid-rule": dashboard_identity,
    "dashboard-schema-version-rule": schema_version,
    "template-datasource-rule": template_datasource,
    "template-job-rule": _template_label("job"),
    "template-instance-rule": _template_label("instance"),
    "template-label-promql-rule": template_queries,
    "no-hardcoded-datasource-rule": no_hardcoded_datasource,
    "panel-datasource-rule": panel_datasource,
    "panel-title-description-rule": panel_title_description,
    "panel-units-rule": panel_units,
    "panel-id-rule": panel_ids,
    "panel-exemplar-rule": panel_exemplars,
    "panel-links-rule": panel_links,
}
TARGET_RULES: dict[str, TargetRule] = {
    "target-rate-interval-rule": target_rate_interval,
    "target-counter-agg-rule": target_counter_agg,
    "target-job-rule": _target_matcher("job"),
    "target-instance-rule": _target_matcher("instance"),
}
RULES = frozenset({*DASHBOARD_RULES, *TARGET_RULES, "target-promql-rule"})


def lint(dashboard: Mapping[str, Any]) -> list[Problem]:
    """Every problem every rule finds; an empty list is a clean dashboard."""
    where = str(dashboard.get("uid") or dashboard.get("title"))
    problems = [Problem(name, where, message) for name, rule in DASHBOARD_RULES.items() for message in rule(dashboard)]
    defined = set(variables(dashboard)) | BUILTIN_VARIABLES
    for query in queries(dashboard):
        undefined = referenced(query.expr) - defined
        if undefined:
            problems.append(Problem("target-promql-rule", query.where, f"undefined variables {sorted(undefined)}"))
        try:
            expr = parse(query.expr)
        except ValueError as err:
            problems.append(Problem("target-promql-rule", query.where, f"invalid PromQL ({err}): {query.expr}"))
            continue
        problems += [Problem(name, query.where, message) for name, rule in TARGET_RULES.items() for message in rule(query, expr)]
    return problems
