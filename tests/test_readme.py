"""The README says what the running exporter does: its tables, samples and snippets are checked against the real thing.

A newcomer copies from the README: the metrics table must name exactly the series
`/metrics` writes (with their types, labels and label values), the settings table
every setting, and the config, Prometheus and `docker run` snippets must work as
written.
"""

from __future__ import annotations

import ast
import json
import re
import shlex
from pathlib import Path
from typing import Callable, Iterator

import pytest
import yaml
from flask import Flask
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.metrics_core import Metric

from exporter.config import load_config
from exporter.durations import parse_duration
from exporter.records import Source
from exporter.settings import SETTINGS
from tests.conftest import ServeProcess
from tests.support.payloads import INGEST_TOKEN, REPO, cancellation
from tests.support.prometheus_server import PrometheusServer
from tests.support.waiting import eventually

README = (REPO / "README.md").read_text()
CONSTANT_LABELS = {"environment": "readme"}
ONLY_WITH = "Only with"
"""How the metrics table marks a series that exists only with some feature on."""
AUTH = {"Authorization": f"Bearer {INGEST_TOKEN}", "Content-Type": "application/json"}


def headings() -> list[tuple[int, str, int]]:
    """(level, title, line number) of each heading, outside code blocks (where `# ` starts a comment)."""
    found, in_code = [], False
    for number, line in enumerate(README.splitlines()):
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and (match := re.match(r"(#+) (.+)$", line)):
            found.append((len(match.group(1)), match.group(2), number))
    return found


def section(title: str) -> str:
    """The README's text under a heading, up to the next heading of the same or a higher level."""
    lines = README.splitlines()
    every = headings()
    (index,) = [i for i, (_, heading, _) in enumerate(every) if heading == title]
    level, _, start = every[index]
    end = next((number for depth, _, number in every[index + 1:] if depth <= level), len(lines))
    return "\n".join(lines[start + 1:end]) + "\n"


def table(text: str) -> list[list[str]]:
    """The rows of the first Markdown table in `text`, as lists of cells (header and rule left out)."""
    rows = [line for line in text.splitlines() if line.startswith("|")]
    assert len(rows) > 2, "no table here"
    return [[cell.strip() for cell in re.split(r"(?<!\\)\|", row)[1:-1]] for row in rows[2:]]


def code_blocks(text: str, language: str = "") -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, re.M | re.S)


def ticked(text: str) -> list[str]:
    return re.findall(r"`([^`]+)`", text)


# --- the metrics table ------------------------------------------------------------------------------


def family_name(family: Metric) -> str:
    """The name the exposition's TYPE line gives (prometheus_client's parser drops a counter's `_total`)."""
    return f"{family.name}_total" if family.type == "counter" else family.name


def exposition(app: Flask) -> dict[str, Metric]:
    client = app.test_client()
    answer = client.post("/events", data=json.dumps(cancellation()), headers=AUTH)
    assert answer.status_code == 200, answer.data
    families = text_string_to_metric_families(client.get("/metrics").data.decode())
    return {family_name(family): family for family in families}


@pytest.fixture
def everything_on(make_app: Callable[..., Flask]) -> dict[str, Metric]:
    """Every sink and every kind of evidence on: every series the exporter can write."""
    config = {"labels": CONSTANT_LABELS, "bulk_cancellations": {"poll_interval": "1h"}}
    return exposition(
        make_app(config, DD_API_KEY="dd-key", EXPORTER_DATADOG_URL="http://127.0.0.1:9", EXPORTER_DISCOVERY="on")
    )


@pytest.fixture
def everything_off(make_app: Callable[..., Flask], tmp_path: Path) -> dict[str, Metric]:
    """No Datadog, no bulk polling, no run lookups, no discovery: the series that are always there (its own state: two apps may run)."""
    app = make_app(
        {"labels": CONSTANT_LABELS}, EXPORTER_RUN_LOOKUPS="false", EXPORTER_DISCOVERY="off", EXPORTER_STATE_DIR=str(tmp_path / "off")
    )
    return exposition(app)


def metrics_rows() -> dict[str, tuple[str, str, str]]:
    return {ticked(name)[0]: (kind, labels, meaning) for name, kind, labels, meaning in table(section("Metrics"))}


def documented_labels(cell: str) -> dict[str, set[str] | None]:
    """`name` (`a`, `b`), `other` -> {name: {a, b}, other: None}: each label and, when listed, its values."""
    labels: dict[str, set[str] | None] = {}
    for match in re.finditer(r"`(\w+)`(?: \(([^)]*)\))?", cell.split(";")[0]):
        labels[match.group(1)] = set(ticked(match.group(2))) if match.group(2) else None
    return labels


def test_the_metrics_table_names_every_series_metrics_writes_and_no_other(
    everything_on: dict[str, Metric], everything_off: dict[str, Metric]
) -> None:
    rows = metrics_rows()
    assert set(rows) == set(everything_on)
    conditional = {name for name, (_, _, meaning) in rows.items() if ONLY_WITH in meaning}
    assert set(rows) - conditional == set(everything_off), f"mark these `{ONLY_WITH} ...`, or unmark them"
    for name, family in everything_on.items():
        assert rows[name][0] == family.type, name


def test_the_metrics_table_lists_every_label_and_every_value_the_exporter_writes(
    everything_on: dict[str, Metric], everything_off: dict[str, Metric]
) -> None:
    sources = {source.value for source in Source}
    assert documented_labels(metrics_rows()["inngest_function_cancellations_total"][1])["source"] == sources
    for name, (_, cell, _) in metrics_rows().items():
        labels = documented_labels(cell)
        if "constant labels" in cell:
            labels.update(dict.fromkeys(CONSTANT_LABELS))
        family = everything_off.get(name) or everything_on[name]  # the cancellations are counted at once with bulk off
        samples = [sample for sample in family.samples if not sample.name.endswith(("_bucket", "_created"))]
        for sample in samples:
            assert set(sample.labels) == set(labels), (name, sample.labels)
        for label, values in labels.items():
            if label == "source":
                assert values in (None, sources), name
            elif values is not None:  # the exporter writes every value of these from the start, at 0
                assert {sample.labels[label] for sample in samples} == values, (name, label)


def test_the_metrics_table_gives_the_histogram_s_buckets(everything_off: dict[str, Metric]) -> None:
    (histogram,) = [row for row in table(section("Metrics")) if row[1] == "histogram"]
    documented = [parse_duration(bound) for bound in histogram[2].split("`le`")[1].split(";")[0].split(",")]
    family = everything_off[ticked(histogram[0])[0]]
    written = [float(s.labels["le"]) for s in family.samples if s.name.endswith("_bucket") and s.labels["le"] != "+Inf"]
    assert written[: len(documented)] == documented and len(written) == len(documented)


def sample_exposition() -> str:
    (sample,) = [block for block in code_blocks(section("Metrics")) if block.startswith("# HELP")]
    return sample


def test_the_metrics_sample_is_what_metrics_writes(everything_off: dict[str, Metric]) -> None:
    """The sample in the README parses, and each family in it has the live exposition's HELP, type and labels."""
    rows = metrics_rows()
    example_labels = load_config(REPO / "examples" / "config.yaml").labels
    for family in text_string_to_metric_families(sample_exposition()):
        name = family_name(family)
        live = everything_off[name]
        assert family.type == live.type and family.documentation in ("", live.documentation), name
        labels = documented_labels(rows[name][1])
        for sample in family.samples:
            written = {k: v for k, v in sample.labels.items() if k not in example_labels and k != "le"}
            assert set(written) == set(labels), sample
            assert all(values is None or written[label] in values for label, values in labels.items()), sample


# --- settings and config -------------------------------------------------------------------------


def test_the_settings_table_documents_every_setting_with_its_flag() -> None:
    rows = {ticked(variable)[0]: ticked(flag) for variable, flag, *_ in table(section("Settings (flags override environment)"))}
    for spec in SETTINGS:
        assert spec.env in rows, f"{spec.env} is not in the README's settings table"
        assert rows[spec.env] == ([spec.flag] if spec.flag else []), spec.env


def test_the_config_example_passes_check_config(tmp_path: Path) -> None:
    (example,) = code_blocks(section("Config file (YAML)"), "yaml")
    path = tmp_path / "config.yaml"
    path.write_text(example)
    config = load_config(path)
    assert config.functions and config.bulk_cancellations is not None


# --- deploying ---------------------------------------------------------------------------------------


def docker_run() -> list[str]:
    (block,) = code_blocks(section("Container"), "sh")
    (command,) = [line for line in block.replace("\\\n", " ").splitlines() if line.startswith("docker run")]
    return shlex.split(command)


def dockerfile(instruction: str) -> list[str]:
    return re.findall(rf"^{instruction} (.*)$", (REPO / "Dockerfile").read_text(), re.M)


def test_the_docker_run_line_publishes_the_image_s_port_mounts_its_state_and_passes_known_settings() -> None:
    args = docker_run()
    options = list(zip(args, args[1:]))
    (port,) = [value for flag, value in options if flag == "-p"]
    assert port.split(":")[1] == dockerfile("EXPOSE")[0]
    volumes = [value.split(":")[1] for flag, value in options if flag == "-v"]
    assert json.loads(dockerfile("VOLUME")[0])[0] in volumes
    env = dict(value.partition("=")[::2] for flag, value in options if flag == "-e")
    assert set(env) <= {spec.env for spec in SETTINGS}
    assert env["EXPORTER_CONFIG"] in volumes, "the config the exporter is told to read is mounted"
    assert not any(env[name] for name in env if any(s.env == name and s.secret for s in SETTINGS)), \
        "keys are passed by name, never written on the command line"


@pytest.fixture
def exporter(serve: Callable[..., ServeProcess]) -> Iterator[ServeProcess]:
    yield serve()


def test_the_prometheus_snippet_scrapes_the_exporter(exporter: ServeProcess, tmp_path: Path) -> None:
    (snippet,) = code_blocks(section("Prometheus without Kubernetes"), "yaml")
    scrape_configs = yaml.safe_load(snippet)["scrape_configs"]
    for job in scrape_configs:
        job["scrape_interval"] = "1s"  # the snippet's own interval would make the test wait for it
        for static in job["static_configs"]:
            static["targets"] = [exporter.url.removeprefix("http://")]
    with PrometheusServer(tmp_path / "prometheus", [], scrape_configs=scrape_configs) as prometheus:
        eventually(lambda: prometheus.scraped("inngest_cancellation_exporter_build_info") == 1.0, timeout=30)
        up = prometheus.api("query", query="up")["result"]
        assert {series["metric"]["job"] for series in up} == {job["job_name"] for job in scrape_configs}


# --- navigation ------------------------------------------------------------------------------------------


def anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def test_every_link_within_the_readme_leads_to_a_heading() -> None:
    anchors = {anchor(heading) for _, heading, _ in headings()}
    links = set(re.findall(r"\]\(#([^)]+)\)", README))
    assert links and links <= anchors
    contents = re.findall(r"^- \[(.+?)\]\(#", section("Contents"), re.M)
    assert contents == [heading for level, heading, _ in headings() if level == 2][1:], "Contents lists every section"


# --- troubleshooting ------------------------------------------------------------------------------


def exporter_strings() -> list[str]:
    """Every string literal in the package (adjacent literals joined, f-strings' literal parts), where its messages are."""
    strings: list[str] = []
    for path in (REPO / "exporter").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                strings.append(node.value)
    return strings


def test_every_message_the_troubleshooting_section_quotes_is_one_the_exporter_writes() -> None:
    """A quoted line, `<placeholders>` aside, is made of fragments of the exporter's own messages: reworded, it fails."""
    quoted = re.findall(r"^- \*\*`(.+?)`", section("Troubleshooting"), re.M)
    assert quoted
    strings = exporter_strings()
    for line in quoted:
        for fragment in filter(str.strip, re.split(r"<[^>]+>", line.removeprefix("error: "))):
            assert any(fragment.strip() in text for text in strings), (line, fragment)
