"""The Helm chart rendered by the real helm 3 binary, and its pod's environment replayed locally.

`make test` puts helm at `.tools/bin/helm` (scripts/install-test-tools.sh). The chart takes the
dashboards and the rules file from the repository's `dashboards/` through its relative link
`files/dashboards`, so the chart rendered here is the repository's own, never a copy.
"""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any, Iterator, Mapping

import pytest
import yaml

from tests.support.payloads import REPO

CHART_NAME = "inngest-cancellation-exporter"
CHART = REPO / "helm" / CHART_NAME
HELM = REPO / ".tools" / "bin" / "helm"
DASHBOARDS = REPO / "dashboards"
RELEASE = "cancellations"
NAMESPACE = "observability"
CRD_GROUPS = ("monitoring.coreos.com/",)
"""API groups of the Prometheus Operator's custom resources: no bundled schema validates them."""

Obj = dict[str, Any]


def helm(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """Run the real helm; fails the test with the way to install it when it is missing."""
    if not HELM.is_file():
        pytest.fail(f"{HELM} is missing: `make test` (scripts/install-test-tools.sh) installs it")
    return subprocess.run([str(HELM), *map(str, args)], capture_output=True, text=True, timeout=60)


def rules_files(dashboards: Path) -> list[Path]:
    """The Prometheus rules files among `dashboards`' YAML files: those with top-level `groups`.

    The same rule the chart applies (`ruleFiles` in _helpers.tpl), so the tests expect what it finds.
    """
    found = []
    for path in sorted([*dashboards.glob("*.yml"), *dashboards.glob("*.yaml")]):
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
        if isinstance(document, dict) and "groups" in document:
            found.append(path)
    return found


class Manifest:
    """The objects `helm template` rendered, looked up by kind and name."""

    def __init__(self, text: str) -> None:
        self.objects: list[Obj] = [doc for doc in yaml.safe_load_all(text) if doc]

    def all(self, kind: str) -> list[Obj]:
        return [obj for obj in self.objects if obj["kind"] == kind]

    def one(self, kind: str, name: str | None = None) -> Obj:
        """The only object of `kind` (named `name`, when given)."""
        found = [obj for obj in self.all(kind) if name is None or obj["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind} {name or ''}, rendered {[o['metadata']['name'] for o in found]}"
        return found[0]

    @property
    def kinds(self) -> set[str]:
        return {obj["kind"] for obj in self.objects}

    def core(self) -> list[Obj]:
        """Everything but the Prometheus Operator's custom resources."""
        return [obj for obj in self.objects if not obj["apiVersion"].startswith(CRD_GROUPS)]

    def hook_pods(self) -> list[Obj]:
        return [obj for obj in self.all("Pod") if "helm.sh/hook" in obj["metadata"].get("annotations", {})]

    def exporter_container(self) -> Obj:
        return self.one("Deployment")["spec"]["template"]["spec"]["containers"][0]


def template(chart: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return helm("template", RELEASE, chart, "--namespace", NAMESPACE, *args)


def render(chart: Path, *args: str | Path) -> Manifest:
    """`helm template` of the chart with extra arguments (`-f FILE`, `--set K=V`); must succeed."""
    result = template(chart, *args)
    assert result.returncode == 0, result.stderr
    return Manifest(result.stdout)


def secret_values(manifest: Manifest) -> dict[str, dict[str, str]]:
    """The rendered Secrets' data, decoded: {secret name: {key: value}}."""
    return {
        secret["metadata"]["name"]: {key: base64.b64decode(value).decode() for key, value in secret.get("data", {}).items()}
        for secret in manifest.all("Secret")
    }


def iter_pod_specs(manifest: Manifest) -> Iterator[tuple[str, Obj]]:
    """Every pod spec the chart renders, named: the Deployment's and each hook pod's."""
    yield "Deployment", manifest.one("Deployment")["spec"]["template"]["spec"]
    for pod in manifest.hook_pods():
        yield f"Pod {pod['metadata']['name']}", pod["spec"]


class PodReplay:
    """The exporter container's environment and files as the kubelet would give them, under `root`.

    ConfigMap volumes are written out, every mount path is moved under `root`, Secret references
    are resolved from the rendered Secrets (or `external` ones, for Secrets made outside the
    chart), so the real `serve` can be started with exactly what the pod would get.
    """

    def __init__(self, manifest: Manifest, root: Path, external: Mapping[str, Mapping[str, str]] | None = None) -> None:
        self._secrets = {**(external or {}), **secret_values(manifest)}
        pod = manifest.one("Deployment")["spec"]["template"]["spec"]
        container = pod["containers"][0]
        volumes = {volume["name"]: volume for volume in pod["volumes"]}
        self.mounts: dict[str, Path] = {}
        for mount in container["volumeMounts"]:
            local = root / PurePosixPath(mount["mountPath"]).relative_to("/")
            local.mkdir(parents=True, exist_ok=True)
            self.mounts[mount["mountPath"]] = local
            config_map = volumes[mount["name"]].get("configMap")
            if config_map:
                for key, text in manifest.one("ConfigMap", config_map["name"])["data"].items():
                    (local / key).write_text(text, encoding="utf-8")
        self.env = {entry["name"]: value for entry in container["env"] if (value := self._value(entry)) is not None}

    def local(self, value: str) -> str:
        """`value` with a mount path prefix replaced by its local directory."""
        for mount_path, local in self.mounts.items():
            if value == mount_path or value.startswith(mount_path + "/"):
                return str(local) + value[len(mount_path):]
        return value

    def _value(self, entry: Obj) -> str | None:
        if "value" in entry:
            return self.local(entry["value"])
        ref = entry["valueFrom"]["secretKeyRef"]
        value = self._secrets.get(ref["name"], {}).get(ref["key"])
        assert value is not None or ref.get("optional"), f"{entry['name']}: no key {ref['key']} in Secret {ref['name']}"
        return value


def values_paths(values: Mapping[str, Any], schema: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Dotted paths of the chart's values, as its README table names them.

    A value is one row unless the schema describes its keys one by one (`properties`) and
    values.yaml gives it some: free-form maps such as `resources` or `dashboards.labels` are one row.
    """
    paths = []
    for key, value in values.items():
        node = schema.get("properties", {}).get(key, {})
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value and "properties" in node:
            paths.extend(values_paths(value, node, path + "."))
        else:
            paths.append(path)
    return paths


def load_schema(chart: Path) -> Obj:
    schema: Obj = json.loads((chart / "values.schema.json").read_text(encoding="utf-8"))
    return schema
