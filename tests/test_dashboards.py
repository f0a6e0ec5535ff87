"""The shipped dashboards pass the dashboard lint, and the alert rules pass `promtool check rules` and their unit tests.

The lint is grafana/dashboard-linter's rules in Python (tests/support/dashboard_lint.py);
each rule is shown catching the mistake it exists for on a small dashboard, so a
rule that silently stopped working would fail here. Whether the queries return data
is proven against a real Prometheus in tests/test_prometheus_proof.py.
"""

from __future__ import annotations

import copy
import importlib.util
import shutil
import subprocess
from typing import Any

import promql_parser as promql
import pytest
import yaml

from exporter.settings import load_settings
from tests.support import dashboard_lint
from tests.support.dashboards import (
    CANCELLATIONS_UID,
    DASHBOARDS_DIR,
    HEALTH_UID,
    RULES_FILE,
    load,
    panels,
    queries,
    shipped,
    variables,
)
from tests.support.payloads import REPO

RULE_TESTS = DASHBOARDS_DIR / "tests" / "rules_test.yml"
SEVERITIES = {"info", "warning", "critical"}
DS = {"type": "prometheus", "uid": "${datasource}"}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    assert binary, "promtool is installed by `make test` (scripts/install-test-tools.sh)"
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=60, cwd=DASHBOARDS_DIR)


def alerts() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES_FILE.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


# --- the shipped dashboards --------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(DASHBOARDS_DIR.glob("*.json")), ids=lambda p: p.name)
def test_shipped_dashboard_passes_the_lint(path: Any) -> None:
    problems = dashboard_lint.lint(load(path))
    assert not problems, "\n".join(map(str, problems))


def test_the_dashboards_keep_their_stable_uids() -> None:
    """Alerts, links between the dashboards and users' bookmarks find them by uid: renaming one breaks them."""
    assert set(shipped()) == {CANCELLATIONS_UID, HEALTH_UID}


def test_the_cancellations_dashboard_narrows_every_query_to_the_chosen_functions_and_sources() -> None:
    dashboard = shipped()[CANCELLATIONS_UID]
    for name in ("function_id", "source"):
        variable = variables(dashboard)[name]
        assert variable["type"] == "query" and variable["multi"] and variable["includeAll"], name
    for query in queries(dashboard):
        for selector in dashboard_lint.selectors(dashboard_lint.parse(query.expr)):
            regex = {(m.name, m.value) for m in selector.matchers.matchers if m.op == promql.MatchOp.Re}
            assert {("function_id", "$function_id"), ("source", "$source")} <= regex, query.where


def test_the_cancellations_dashboard_shows_exemplars_and_links_runs_to_inngest_and_traces() -> None:
    """Exemplars (single runs) on the run-age heatmap and the by-source rate; the per-function table links each row to
    the function's runs in Inngest, on Cloud's route (as exemplars' run_id and spans' inngest.run.url do, see
    exporter/run_links.py), and to its spans in the optional traces data source."""
    dashboard = shipped()[CANCELLATIONS_UID]
    by_title = {panel["title"]: panel for panel in panels(dashboard)}
    for title in ("Run age at cancellation", "Cancellation rate by source"):
        assert all(target.get("exemplar") is True for target in by_title[title]["targets"]), title
    assert by_title["Run age at cancellation"]["options"]["exemplars"]["color"]
    traces, inngest = variables(dashboard)["traces"], variables(dashboard)["inngest_dashboard_url"]
    assert (traces["type"], traces["query"], traces["current"]) == ("datasource", "tempo", {})  # none chosen is fine
    assert inngest["type"] == "textbox" and load_settings({"EXPORTER_INNGEST_DASHBOARD_URL": inngest["query"]}).run_links
    row = {"__data.fields.function_id": "demo-app-export", "inngest_dashboard_url": inngest["query"], "traces": "tempo-uid", "__from": "1", "__to": "2"}
    links = {
        link["title"]: dashboard_lint.LINK_VARIABLE.sub(lambda match: row[dashboard_lint.variable_name(match)], link["url"])
        for link in by_title["Last cancellation per function"]["fieldConfig"]["defaults"]["links"]
    }
    assert links["Runs of ${__data.fields.function_id} in Inngest Cloud"] == (
        "https://app.inngest.com/env/production/functions/demo-app-export/runs"
    )
    spans = links["Cancellation spans of ${__data.fields.function_id} in ${traces:text}"]
    assert '"datasource":"tempo-uid"' in spans and 'span.inngest.function.id = \\"demo-app-export\\"' in spans


# --- each lint rule catches its mistake --------------------------------------------------------


def good_dashboard() -> dict[str, Any]:
    """The smallest dashboard that passes every rule."""

    def label_variable(name: str) -> dict[str, Any]:
        query = f"label_values(up, {name})"
        return {
            "name": name, "label": name.title(), "type": "query", "datasource": DS, "query": query,
            "definition": query, "multi": True, "includeAll": True, "allValue": ".+",
        }

    return {
        "id": None,
        "uid": "lint-example",
        "title": "Lint example",
        "schemaVersion": 39,
        "annotations": {"list": []},
        "templating": {
            "list": [
                {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus"},
                label_variable("job"),
                label_variable("instance"),
                {"name": "traces", "label": "Traces", "type": "datasource", "query": "tempo"},
            ]
        },
        "panels": [
            {
                "id": 1,
                "type": "timeseries",
                "title": "Requests",
                "description": "Requests per second.",
                "datasource": DS,
                "fieldConfig": {"defaults": {"unit": "reqps"}, "overrides": []},
                "targets": [
                    {
                        "refId": "A",
                        "datasource": DS,
                        "expr": 'sum(rate(http_requests_total{job=~"$job", instance=~"$instance"}[$__rate_interval]))',
                    }
                ],
            },
            {
                "id": 2,
                "type": "timeseries",
                "title": "Requests by job",
                "description": "Requests per second by job; exemplars lead to single requests' traces.",
                "datasource": DS,
                "fieldConfig": {
                    "defaults": {
                        "unit": "reqps",
                        "links": [
                            {"title": "Traces of ${__data.fields.job}", "url": '/explore?panes={"a":{"datasource":"${traces}"}}'},
                            {"title": "Job ${__data.fields.job}", "url": "https://jobs.example.com/${__data.fields.job:percentencode}"},
                        ],
                    },
                    "overrides": [],
                },
                "targets": [
                    {
                        "refId": "A",
                        "datasource": DS,
                        "exemplar": True,
                        "expr": 'sum by (job) (rate(http_requests_total{job=~"$job", instance=~"$instance"}[$__rate_interval]))',
                    }
                ],
            },
        ],
    }


def mutated(changes: dict[str, Any]) -> dict[str, Any]:
    """The good dashboard with `changes` applied: a dotted path (list indexes as numbers) to a new value, or to DELETE."""
    dashboard = good_dashboard()
    for path, value in changes.items():
        *parents, last = path.split(".")
        node: Any = dashboard
        for step in parents:
            node = node[int(step)] if isinstance(node, list) else node[step]
        key: Any = int(last) if isinstance(node, list) else last
        if value is DELETE:
            del node[key]
        elif isinstance(node, list) and key == len(node):
            node.append(value)
        else:
            node[key] = value
    return dashboard


DELETE = object()
EXPR = "panels.0.targets.0.expr"
JOB_VARIABLE = "templating.list.1"
TRACES_VARIABLE = "templating.list.3"
LINKS = "panels.1.fieldConfig.defaults.links"
MISTAKES: list[tuple[str, dict[str, Any], set[str]]] = [
    ("no uid", {"uid": ""}, {"dashboard-uid-rule"}),
    ("a numeric id", {"id": 42}, {"dashboard-uid-rule"}),
    ("an old schema", {"schemaVersion": 36}, {"dashboard-schema-version-rule"}),
    ("no datasource variable", {"templating.list.0": {"name": "region", "type": "custom", "query": "eu"}}, {"template-datasource-rule"}),
    ("a loki datasource variable", {"templating.list.0.query": "loki"}, {"template-datasource-rule"}),
    ("no job variable", {JOB_VARIABLE: DELETE}, {"template-job-rule", "target-promql-rule"}),
    ("a second datasource variable for loki", {f"{TRACES_VARIABLE}.query": "loki"}, {"template-datasource-rule"}),
    ("a traces variable nothing uses", {f"{LINKS}": []}, {"template-datasource-rule"}),
    ("a query on the traces datasource", {"panels.1.targets.0.datasource": {"type": "tempo", "uid": "${traces}"}},
     {"panel-datasource-rule", "no-hardcoded-datasource-rule"}),
    ("a single-valued job", {f"{JOB_VARIABLE}.multi": False}, {"template-job-rule"}),
    ("an instance All of .*", {"templating.list.2.allValue": ".*"}, {"template-instance-rule"}),
    ("a variable with invalid PromQL", {f"{JOB_VARIABLE}.query": "label_values(up{, job)"}, {"template-label-promql-rule"}),
    ("a variable that is not label_values", {f"{JOB_VARIABLE}.query": "query_result(up)"}, {"template-label-promql-rule"}),
    ("a variable on an undefined one", {f"{JOB_VARIABLE}.query": 'label_values(up{cluster="$cluster"}, job)'}, {"template-label-promql-rule"}),
    ("a variable on a fixed datasource", {f"{JOB_VARIABLE}.datasource": {"type": "prometheus", "uid": "P1809F7CD0C75ACF3"}},
     {"template-label-promql-rule", "no-hardcoded-datasource-rule"}),
    ("an annotation on a fixed datasource", {"annotations.list": [{"name": "deploys", "datasource": {"uid": "P1809F7CD0C75ACF3"}}]},
     {"no-hardcoded-datasource-rule"}),
    ("an exported __inputs", {"__inputs": [{"name": "DS_PROMETHEUS", "type": "datasource", "pluginId": "prometheus"}]},
     {"no-hardcoded-datasource-rule"}),
    ("a panel without datasource", {"panels.0.datasource": DELETE}, {"panel-datasource-rule"}),
    ("a target on a fixed datasource", {"panels.0.targets.0.datasource": {"uid": "P1809F7CD0C75ACF3"}},
     {"panel-datasource-rule", "no-hardcoded-datasource-rule"}),
    ("no description", {"panels.0.description": ""}, {"panel-title-description-rule"}),
    ("no title", {"panels.0.title": " "}, {"panel-title-description-rule"}),
    ("no unit", {"panels.0.fieldConfig.defaults": {}}, {"panel-units-rule"}),
    ("an unknown unit", {"panels.0.fieldConfig.defaults.unit": "furlongs"}, {"panel-units-rule"}),
    ("a repeated panel id", {"panels.2": {**good_dashboard()["panels"][0]}}, {"panel-id-rule"}),
    ("invalid PromQL", {EXPR: 'sum(rate(x_total{job=~"$job", instance=~"$instance"}[$__rate_interval])'}, {"target-promql-rule"}),
    ("an undefined variable", {EXPR: 'sum(rate(x_total{job=~"$job", instance=~"$instance", cluster=~"$cluster"}[$__rate_interval]))'},
     {"target-promql-rule"}),
    ("a fixed rate window", {EXPR: 'sum(rate(x_total{job=~"$job", instance=~"$instance"}[5m]))'}, {"target-rate-interval-rule"}),
    ("a rate over the range", {EXPR: 'sum(rate(x_total{job=~"$job", instance=~"$instance"}[$__range]))'}, {"target-rate-interval-rule"}),
    ("a fixed subquery", {EXPR: 'max_over_time(up{job=~"$job", instance=~"$instance"}[1h:1m])'}, {"target-rate-interval-rule"}),
    ("a raw counter", {EXPR: 'sum(x_total{job=~"$job", instance=~"$instance"})'}, {"target-counter-agg-rule"}),
    ("a histogram bucket through delta", {EXPR: 'sum(delta(x_bucket{job=~"$job", instance=~"$instance"}[$__rate_interval]))'},
     {"target-counter-agg-rule"}),
    ("no job matcher", {EXPR: 'sum(rate(x_total{instance=~"$instance"}[$__rate_interval]))'}, {"target-job-rule"}),
    ("a job matcher that ignores the variable", {EXPR: 'sum(rate(x_total{job="api", instance=~"$instance"}[$__rate_interval]))'},
     {"target-job-rule"}),
    ("exemplars of an instant query", {"panels.1.targets.0.instant": True}, {"panel-exemplar-rule"}),
    ("exemplars in a table", {"panels.1.type": "table"}, {"panel-exemplar-rule"}),
    ("exemplars of a gauge", {"panels.1.targets.0.expr": 'sum by (job) (up{job=~"$job", instance=~"$instance"})'},
     {"panel-exemplar-rule"}),
    ("a link to a field the rows lack", {f"{LINKS}.1.url": "https://jobs.example.com/${__data.fields.function_id}"},
     {"panel-links-rule"}),
    ("a link to an undefined variable", {f"{LINKS}.1.url": "${inngest}/runs"}, {"panel-links-rule"}),
    ("a relative link", {f"{LINKS}.1.url": "runs/${__data.fields.job}"}, {"panel-links-rule"}),
    ("a link without a title", {f"{LINKS}.1.title": " "}, {"panel-links-rule"}),
    ("an override's link to an undefined variable",
     {"panels.1.fieldConfig.overrides": [{"matcher": {"id": "byName", "options": "job"},
                                          "properties": [{"id": "links", "value": [{"title": "Run", "url": "/x/${run}"}]}]}]},
     {"panel-links-rule"}),
    ("an instance equality", {EXPR: 'sum(rate(x_total{job=~"$job", instance="$instance"}[$__rate_interval]))'}, {"target-instance-rule"}),
]


def test_the_example_dashboard_is_clean() -> None:
    assert dashboard_lint.lint(good_dashboard()) == []


@pytest.mark.parametrize(("changes", "rules"), [(c, r) for _, c, r in MISTAKES], ids=[name for name, _, _ in MISTAKES])
def test_each_lint_rule_catches_its_mistake(changes: dict[str, Any], rules: set[str]) -> None:
    assert {problem.rule for problem in dashboard_lint.lint(mutated(changes))} == rules


def test_every_lint_rule_is_exercised() -> None:
    assert set().union(*(rules for _, _, rules in MISTAKES)) == dashboard_lint.RULES


def test_lint_reads_panels_inside_collapsed_rows() -> None:
    dashboard = good_dashboard()
    inner = copy.deepcopy(dashboard["panels"][0])
    inner["fieldConfig"]["defaults"]["unit"] = ""
    dashboard["panels"].append({"id": 2, "type": "row", "title": "More", "collapsed": True, "panels": [{**inner, "id": 3}]})
    assert {problem.rule for problem in dashboard_lint.lint(dashboard)} == {"panel-units-rule"}


# --- alert and recording rules -----------------------------------------------------------------


def test_the_rules_pass_promtool_check() -> None:
    result = promtool("check", "rules", RULES_FILE.name)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_rules_pass_their_promtool_unit_tests() -> None:
    result = promtool("test", "rules", str(RULE_TESTS.relative_to(DASHBOARDS_DIR)))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("alert", alerts(), ids=lambda rule: rule["alert"])
def test_every_alert_has_a_severity_a_summary_a_description_and_a_dashboard_link(alert: dict[str, Any]) -> None:
    assert alert["labels"]["severity"] in SEVERITIES
    assert alert["annotations"]["summary"].strip() and alert["annotations"]["description"].strip()
    link = alert["annotations"]["dashboard"]
    assert any(link.startswith(f"/d/{uid}/") for uid in shipped()), link


def test_every_alert_is_unit_tested_both_firing_and_silent() -> None:
    cases: dict[str, list[bool]] = {}
    for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for case in test.get("alert_rule_test", []):
            cases.setdefault(case["alertname"], []).append(bool(case.get("exp_alerts")))
    for alert in alerts():
        assert set(cases.get(alert["alert"], [])) == {True, False}, f"{alert['alert']}: needs a firing and a silent case"


# --- the README preview ------------------------------------------------------------------------


def test_the_readme_preview_draws_panels_the_dashboard_has() -> None:
    """The preview renders panels by title: a renamed panel must not leave the script (or the image) behind."""
    spec = importlib.util.spec_from_file_location("render_dashboard_preview", REPO / "scripts" / "render_dashboard_preview.py")
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    by_title = {panel["title"]: panel for panel in panels(shipped()[CANCELLATIONS_UID])}
    assert {title for title, _ in script.PANELS} <= by_title.keys()
    assert script.CLOSE_UP in dict(script.PANELS)
    assert any(target.get("exemplar") for target in by_title[script.CLOSE_UP]["targets"]), "the close-up shows exemplars"
    for picture in ("cancellations-dashboard.png", "run-age-exemplars.png"):
        assert (REPO / "docs" / picture).read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
