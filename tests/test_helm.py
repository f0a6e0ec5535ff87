"""The Helm chart and the container image, checked the way a cluster would see them.

The chart is linted and rendered by the real helm 3 (`make test` installs it), the core objects
are validated against Kubernetes' own schemas by `kubernetes-validate --strict`, and the rendered
pod environment is replayed to start the real `serve`, against which the chart's `helm test`
script runs. The Dockerfile cannot be built here: its checks are static.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from exporter.config import Config, parse_config
from exporter.server import GRACEFUL_TIMEOUT_SECONDS
from exporter.settings import SETTINGS, Settings, load_settings
from tests.conftest import ServeProcess, free_port
from tests.support.helm import (
    CHART,
    CHART_NAME,
    DASHBOARDS,
    NAMESPACE,
    RELEASE,
    Manifest,
    Obj,
    PodReplay,
    helm,
    iter_pod_specs,
    load_schema,
    render,
    rules_files,
    secret_values,
    template,
    values_paths,
)
from tests.support.payloads import REPO

FULLNAME = f"{RELEASE}-{CHART_NAME}"
VALUES_FILES = {"defaults": None, **{p.name.removesuffix("-values.yaml"): p for p in sorted((CHART / "ci").glob("*-values.yaml"))}}
"""The values files rendered and linted: the defaults, and each of the chart's ci/*-values.yaml."""
CHART_OWNED_ENV = frozenset({"EXPORTER_PORT", "EXPORTER_CONFIG", "EXPORTER_STATE_DIR"})
"""Settings the chart sets itself from its mounts and port, and refuses in `settings`."""
HARDENED_CONTAINER = {
    "runAsNonRoot": True,
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "privileged": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def values_args(name: str, *more: str) -> list[str]:
    path = VALUES_FILES[name]
    return (["-f", str(path)] if path else []) + list(more)


@pytest.fixture(scope="module")
def rendered() -> dict[str, Manifest]:
    """Each values file's rendering, once for the whole module."""
    return {name: render(CHART, *values_args(name)) for name in VALUES_FILES}


def test_the_values_files_cover_the_cases_ci_renders() -> None:
    assert {"defaults", "full", "existing-secret", "persistence"} <= set(VALUES_FILES)


@pytest.mark.parametrize("values", list(VALUES_FILES))
def test_helm_lint_strict_passes(values: str) -> None:
    result = helm("lint", "--strict", CHART, *values_args(values))
    assert result.returncode == 0, result.stdout + result.stderr


def kubernetes_versions() -> list[str]:
    """The oldest Kubernetes the chart declares (Chart.yaml kubeVersion) and the newest the validator bundles."""
    from kubernetes_validate.utils import latest_version

    declared = yaml.safe_load((CHART / "Chart.yaml").read_text())["kubeVersion"]
    oldest = re.fullmatch(r">=\s*(\d+\.\d+\.\d+)(-0)?", declared)
    assert oldest, f"kubeVersion {declared!r}: expected >=X.Y.Z"
    return [oldest.group(1), latest_version()]


@pytest.mark.parametrize("values", list(VALUES_FILES))
def test_core_objects_pass_kubernetes_validate_strict(rendered: dict[str, Manifest], values: str, tmp_path: Path) -> None:
    manifest = rendered[values]
    core = tmp_path / f"{values}.yaml"
    core.write_text(yaml.safe_dump_all(manifest.core()))
    versions = [arg for version in kubernetes_versions() for arg in ("--kubernetes-version", version)]
    validator = Path(sys.executable).with_name("kubernetes-validate")
    result = subprocess.run([str(validator), "--strict", "--quiet", *versions, str(core)], capture_output=True, text=True, timeout=60)
    # --quiet prints only problems; a kind without a schema is only a WARN with exit 0, so any line fails
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_everything_on_renders_every_kind(rendered: dict[str, Manifest]) -> None:
    assert rendered["full"].kinds == {
        "Deployment", "Service", "ServiceAccount", "ConfigMap", "Secret", "PersistentVolumeClaim",
        "PodDisruptionBudget", "NetworkPolicy", "Ingress", "ServiceMonitor", "PrometheusRule", "Pod",
    }
    assert rendered["defaults"].kinds == {"Deployment", "Service", "ServiceAccount", "ConfigMap", "PodDisruptionBudget", "Pod"}


@pytest.mark.parametrize("values", list(VALUES_FILES))
def test_every_pod_is_hardened(rendered: dict[str, Manifest], values: str) -> None:
    for where, pod in iter_pod_specs(rendered[values]):
        assert pod["automountServiceAccountToken"] is False, where
        assert pod["securityContext"]["runAsNonRoot"] is True, where
        assert pod["securityContext"]["runAsUser"] != 0, where
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, where
        for container in pod["containers"]:
            context = container["securityContext"]
            assert {key: context.get(key) for key in HARDENED_CONTAINER} == HARDENED_CONTAINER, where
    assert rendered[values].one("ServiceAccount")["automountServiceAccountToken"] is False


@pytest.mark.parametrize("values", list(VALUES_FILES))
def test_the_server_is_probed_resourced_and_given_time_to_flush(rendered: dict[str, Manifest], values: str) -> None:
    manifest = rendered[values]
    container = manifest.exporter_container()
    port = {p["name"]: p["containerPort"] for p in container["ports"]}["http"]
    assert port == Settings().port
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    pod = manifest.one("Deployment")["spec"]["template"]["spec"]
    # gunicorn drains for GRACEFUL_TIMEOUT_SECONDS, then the worker flushes; SIGKILL must come later
    assert pod["terminationGracePeriodSeconds"] >= max(30, GRACEFUL_TIMEOUT_SECONDS + 10)
    assert manifest.one("Deployment")["spec"]["replicas"] == 1  # one writer per state directory
    service = manifest.one("Service")
    assert service["spec"]["selector"].items() <= manifest.one("Deployment")["spec"]["template"]["metadata"]["labels"].items()
    assert service["spec"]["ports"][0]["targetPort"] == "http"


def secret_env(container: Obj) -> dict[str, Obj]:
    return {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "secretKeyRef" in e.get("valueFrom", {})}


@pytest.mark.parametrize("values", list(VALUES_FILES))
def test_secrets_reach_the_pod_only_through_secret_key_refs(rendered: dict[str, Manifest], values: str) -> None:
    manifest = rendered[values]
    given = yaml.safe_load(VALUES_FILES[values].read_text()) if VALUES_FILES[values] else {}
    set_secrets = {key: value for key, value in given.get("secrets", {}).items() if value}
    secret_keys = {spec.env for spec in SETTINGS if spec.secret}
    container = manifest.exporter_container()
    plain = {e["name"]: e.get("value", "") for e in container["env"] if "value" in e}
    assert not secret_keys & plain.keys()
    for value in set_secrets.values():  # nowhere in plain sight: not in any env value, not in the Deployment
        assert value not in json.dumps(manifest.one("Deployment"))
    refs = {name: ref for name, ref in secret_env(container).items() if name in secret_keys}  # not extraEnv's
    if given.get("existingSecret"):
        assert not manifest.all("Secret")
        assert refs.keys() == secret_keys
        assert all(ref["name"] == given["existingSecret"] and ref["optional"] is True for ref in refs.values())
    else:
        assert secret_values(manifest) == ({FULLNAME: set_secrets} if set_secrets else {})
        assert {name: ref["key"] for name, ref in refs.items()} == {key: key for key in set_secrets}
        assert all(ref["name"] == FULLNAME and not ref.get("optional") for ref in refs.values())


def test_every_exporter_setting_can_be_given_through_the_chart() -> None:
    schema = load_schema(CHART)["properties"]
    reachable = CHART_OWNED_ENV | schema["secrets"]["properties"].keys() | schema["settings"]["properties"].keys()
    exporter = {spec.env for spec in SETTINGS}
    assert exporter - reachable == set(), "add these to values.schema.json settings (and the chart README)"
    assert reachable - exporter == set(), "the chart accepts settings the exporter does not read"
    assert {spec.env for spec in SETTINGS if spec.secret} == schema["secrets"]["properties"].keys()
    assert schema["config"]["properties"].keys() == Config.model_fields.keys()


def test_config_is_rendered_mounted_and_valid(rendered: dict[str, Manifest]) -> None:
    for manifest in rendered.values():
        container = manifest.exporter_container()
        env = {e["name"]: e.get("value") for e in container["env"]}
        mounts = {m["name"]: m for m in container["volumeMounts"]}
        assert env["EXPORTER_CONFIG"] == mounts["config"]["mountPath"] + "/config.yaml" and mounts["config"]["readOnly"]
        text = manifest.one("ConfigMap", FULLNAME)["data"]["config.yaml"]
        parse_config(yaml.safe_load(text), "rendered config.yaml")  # what check-config and serve read
    given = yaml.safe_load(VALUES_FILES["full"].read_text())["config"]
    assert yaml.safe_load(rendered["full"].one("ConfigMap", FULLNAME)["data"]["config.yaml"]) == given


def test_config_given_as_a_file_is_mounted_as_written() -> None:
    example = REPO / "examples" / "config.yaml"
    manifest = render(CHART, "--set-file", f"config={example}")
    assert manifest.one("ConfigMap", FULLNAME)["data"]["config.yaml"] == example.read_text()  # comments and all


def state_volume(manifest: Manifest) -> Obj:
    pod = manifest.one("Deployment")["spec"]["template"]["spec"]
    mount = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}["state"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["EXPORTER_STATE_DIR"] == mount["mountPath"]
    return {v["name"]: v for v in pod["volumes"]}["state"]


def test_state_lives_on_an_empty_dir_or_a_claim(rendered: dict[str, Manifest]) -> None:
    assert state_volume(rendered["defaults"]) == {"name": "state", "emptyDir": {}}
    assert not rendered["defaults"].all("PersistentVolumeClaim")

    persistent = rendered["persistence"]
    assert state_volume(persistent)["persistentVolumeClaim"] == {"claimName": FULLNAME}
    claim = persistent.one("PersistentVolumeClaim", FULLNAME)["spec"]
    assert claim["resources"]["requests"]["storage"] == "5Gi" and claim["storageClassName"] == "standard"
    # the old pod lets go of the volume before the new one opens the state
    assert persistent.one("Deployment")["spec"]["strategy"] == {"type": "Recreate"}

    existing = render(CHART, *values_args("persistence", "--set", "persistence.existingClaim=kept-state"))
    assert state_volume(existing)["persistentVolumeClaim"] == {"claimName": "kept-state"}
    assert not existing.all("PersistentVolumeClaim")

    tmp = {v["name"]: v for v in rendered["defaults"].one("Deployment")["spec"]["template"]["spec"]["volumes"]}["tmp"]
    assert tmp["emptyDir"]["medium"] == "Memory"  # gunicorn's heartbeat file; the root filesystem is read-only


def test_dashboards_are_the_repository_files_byte_for_byte(rendered: dict[str, Manifest]) -> None:
    config_maps = [cm for cm in rendered["full"].all("ConfigMap") if cm["metadata"]["labels"].get("grafana_dashboard") == "1"]
    shipped = {name: text for cm in config_maps for name, text in cm["data"].items()}
    dashboards = sorted(DASHBOARDS.glob("*.json"))
    assert dashboards, "dashboards/ holds no dashboard"
    assert shipped.keys() == {path.name for path in dashboards}
    for path in dashboards:
        assert shipped[path.name].encode("utf-8") == path.read_bytes(), path.name
    assert all(len(cm["data"]) == 1 and cm["metadata"]["annotations"] == {"grafana_folder": "Inngest"} for cm in config_maps)
    assert not [cm for cm in rendered["defaults"].all("ConfigMap") if "grafana_dashboard" in cm["metadata"]["labels"]]


def test_prometheus_rule_is_the_rules_file(rendered: dict[str, Manifest], tmp_path: Path) -> None:
    by_source = {rule["metadata"]["annotations"]["inngest-cancellation-exporter/source"]: rule for rule in rendered["full"].all("PrometheusRule")}
    expected = rules_files(DASHBOARDS)
    assert expected, "dashboards/ holds no rules file (YAML with top-level groups)"
    assert by_source.keys() == {str(path.relative_to(REPO)) for path in expected}
    promtool = shutil.which("promtool")
    assert promtool, "promtool is installed by `make test` (scripts/install-test-tools.sh)"
    for path in expected:
        rule = by_source[str(path.relative_to(REPO))]
        assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        assert rule["spec"] == yaml.safe_load(path.read_text(encoding="utf-8")), path.name
        # and Prometheus loads what the operator will hand it
        loaded = tmp_path / path.name
        loaded.write_text(yaml.safe_dump(rule["spec"]))
        checked = subprocess.run([promtool, "check", "rules", str(loaded)], capture_output=True, text=True, timeout=30)
        assert checked.returncode == 0, checked.stdout + checked.stderr
    assert not rendered["defaults"].all("PrometheusRule")


def test_service_monitor_ingress_and_network_policy_point_at_the_exporter(rendered: dict[str, Manifest]) -> None:
    manifest = rendered["full"]
    service = manifest.one("Service")
    monitor = manifest.one("ServiceMonitor")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    assert [(e["port"], e["path"], e["interval"]) for e in monitor["spec"]["endpoints"]] == [("http", "/metrics", "15s")]

    paths = manifest.one("Ingress")["spec"]["rules"][0]["http"]["paths"]
    assert [p["path"] for p in paths] == ["/api/inngest", "/events"]
    assert all(p["backend"]["service"] == {"name": FULLNAME, "port": {"name": "http"}} for p in paths)
    by_default = render(CHART, "--set", "ingress.enabled=true").one("Ingress")["spec"]["rules"][0]
    assert [p["path"] for p in by_default["http"]["paths"]] == ["/api/inngest"]  # Inngest's way in; never /metrics

    policy = manifest.one("NetworkPolicy")["spec"]
    assert policy["podSelector"]["matchLabels"].items() <= service["spec"]["selector"].items()
    allowed = policy["ingress"][0]["from"]
    test_pod = manifest.hook_pods()[0]["metadata"]["labels"]
    assert any(peer.get("podSelector", {}).get("matchLabels", {}).items() <= test_pod.items() for peer in allowed if "podSelector" in peer)


def test_helm_test_hook_checks_the_service(rendered: dict[str, Manifest]) -> None:
    manifest = rendered["defaults"]
    (pod,) = manifest.hook_pods()
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    # not one of the Service's endpoints: the check must reach the exporter, not itself
    assert not manifest.one("Service")["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    container = pod["spec"]["containers"][0]
    assert container["image"] == manifest.exporter_container()["image"]
    assert container["command"] == ["python", "-c"]
    assert container["args"] == [(CHART / "files" / "helm-test.py").read_text()]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["EXPORTER_URL"] == f"http://{FULLNAME}.{NAMESPACE}.svc:9469"


def test_the_rendered_pod_starts_serve_and_passes_helm_test(
    rendered: dict[str, Manifest], serve: Callable[..., ServeProcess], tmp_path: Path
) -> None:
    """The full values' environment, config file and secrets, as the kubelet would hand them over,
    start the real server; then the chart's `helm test` script passes against it."""
    external = {"otlp-credentials": {"headers": "x-api-key=secret"}}
    replay = PodReplay(rendered["full"], tmp_path / "pod", external)
    # /tmp is the pod's writable tmp mount; the bulk poller gets a local dead end, not the real Inngest API
    environment = {**replay.env, "TMPDIR": replay.local("/tmp"), "INNGEST_API_BASE_URL": f"http://127.0.0.1:{free_port()}"}
    load_settings(environment)  # every setting as the exporter reads it
    exporter = serve(state_dir=Path(environment["EXPORTER_STATE_DIR"]), **environment)
    check = subprocess.run(
        [sys.executable, str(CHART / "files" / "helm-test.py")],
        env={"EXPORTER_URL": exporter.url, "PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=60,
    )
    assert check.returncode == 0, check.stdout + check.stderr + exporter.log()
    assert check.stdout.split() == ["ok", "/healthz", "ok", "/metrics"]
    assert exporter.stop() == 0
    assert any(Path(environment["EXPORTER_STATE_DIR"]).iterdir()), "the state is kept in the mounted state dir"


def test_helm_test_script_fails_when_the_exporter_is_not_there() -> None:
    check = subprocess.run(
        [sys.executable, str(CHART / "files" / "helm-test.py")],
        env={"EXPORTER_URL": f"http://127.0.0.1:{free_port()}"}, capture_output=True, text=True, timeout=60,
    )
    assert check.returncode == 1 and "FAIL /healthz" in check.stdout


BAD_VALUES: dict[str, tuple[dict[str, Any], str]] = {
    "a misspelt top-level value": ({"persistance": {"enabled": True}}, "persistance"),
    "a boolean given as a string": ({"persistence": {"enabled": "yes"}}, "persistence.enabled"),
    "too short a grace period to flush": ({"terminationGracePeriodSeconds": 10}, "terminationGracePeriodSeconds"),
    "a setting the chart owns": ({"settings": {"EXPORTER_STATE_DIR": "/data"}}, "EXPORTER_STATE_DIR"),
    "a misspelt setting": ({"settings": {"EXPORTER_THREAD": 4}}, "EXPORTER_THREAD"),
    "a dashboard URL without its scheme": (
        {"settings": {"EXPORTER_INNGEST_DASHBOARD_URL": "app.inngest.com/env/production"}}, "EXPORTER_INNGEST_DASHBOARD_URL"
    ),
    "a secret the exporter does not read": ({"secrets": {"GITHUB_TOKEN": "x"}}, "GITHUB_TOKEN"),
    "secret values beside an existing Secret": ({"existingSecret": "keys", "secrets": {"DD_API_KEY": "x"}}, "DD_API_KEY"),
    "a misspelt config section": ({"config": {"function": {}}}, "function"),
    "a port out of range": ({"service": {"port": 70000}}, "service.port"),
    "a relative ingress path": ({"ingress": {"paths": ["api/inngest"]}}, "ingress.paths"),
    "an image tag written as a number": ({"image": {"tag": 1.10}}, "image.tag"),
}
"""Values the schema must refuse, each with a name its message must mention."""


@pytest.mark.parametrize("case", list(BAD_VALUES))
def test_the_schema_rejects_bad_values(case: str, tmp_path: Path) -> None:
    values, named = BAD_VALUES[case]
    bad = tmp_path / "bad-values.yaml"
    bad.write_text(yaml.safe_dump(values))
    result = template(CHART, "-f", bad)
    assert result.returncode != 0, f"{case}: accepted"
    assert "values don't meet the specifications of the schema" in result.stderr and named in result.stderr, result.stderr


def test_enabled_features_fail_loudly_without_their_files(tmp_path: Path) -> None:
    chart = tmp_path / "helm" / CHART_NAME
    shutil.copytree(CHART, chart, symlinks=True)
    (tmp_path / "dashboards").mkdir()
    for feature in ("dashboards", "prometheusRule"):
        result = template(chart, "--set", f"{feature}.enabled=true")
        assert result.returncode != 0 and f"{feature}.enabled: no " in result.stderr, result.stderr
    assert template(chart).returncode == 0


def test_the_readme_values_table_names_every_value() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    expected = set(values_paths(values, load_schema(CHART)))
    readme = (CHART / "README.md").read_text()
    documented = set(re.findall(r"^\| `([^`]+)` \|", readme, flags=re.MULTILINE))
    assert expected - documented == set(), "values missing from the README's table"
    assert documented - expected == set(), "the README's table names values the chart does not have"


def pyproject_project() -> dict[str, Any]:
    """pyproject.toml's [project] table (tomllib: Python 3.11 and later)."""
    tomllib = pytest.importorskip("tomllib")
    project: dict[str, Any] = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return project


def test_chart_version_follows_the_package() -> None:
    project = pyproject_project()
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["appVersion"] == project["version"]


def dockerfile_final_stage() -> dict[str, list[str]]:
    """The Dockerfile's last stage: instruction -> arguments of each occurrence (continuations joined)."""
    text = re.sub(r"\\\n", " ", (REPO / "Dockerfile").read_text())
    stage: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, arguments = line.partition(" ")
        if instruction.upper() == "FROM":
            stage = {}
        stage.setdefault(instruction.upper(), []).append(arguments.strip())
    return stage


def test_dockerfile_facts_static(rendered: dict[str, Manifest]) -> None:
    """Static checks only: no Docker engine runs here, so the suite never builds the image."""
    stage = dockerfile_final_stage()
    scripts = pyproject_project()["scripts"]
    pod = rendered["defaults"].one("Deployment")["spec"]["template"]["spec"]

    assert stage["FROM"][-1].startswith("python:") and stage["FROM"][-1].endswith("-slim")
    user = stage["USER"][-1].split(":")[0]
    assert user.isdigit() and int(user) != 0, "a numeric non-root uid, which runAsNonRoot can verify"
    assert pod["securityContext"]["runAsUser"] == int(user)
    assert stage["EXPOSE"] == [str(Settings().port)]
    assert json.loads(stage["ENTRYPOINT"][-1]) == list(scripts) and json.loads(stage["CMD"][-1]) == ["serve"]
    env = dict(item.split("=", 1) for args in stage["ENV"] for item in shlex.split(args))
    state_dir = env["EXPORTER_STATE_DIR"]
    assert json.loads(stage["VOLUME"][-1]) == [state_dir] == [stage["WORKDIR"][-1]]
    assert f"-o {user} -g {user}" in " ".join(stage["RUN"]) and state_dir in " ".join(stage["RUN"]), "state dir owned by the user"
    assert {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}["state"] == state_dir
    ignored = (REPO / ".dockerignore").read_text().splitlines()
    assert ignored[ignored.index("*"):][:4] == ["*", "!pyproject.toml", "!README.md", "!exporter/"]


def test_the_packaged_chart_carries_the_dashboards_themselves(tmp_path: Path) -> None:
    """`helm package` follows the link: the published chart needs no repository beside it."""
    result = helm("package", CHART, "--destination", tmp_path)
    assert result.returncode == 0, result.stderr
    (archive,) = tmp_path.glob("*.tgz")
    with tarfile.open(archive) as packed:
        members = {m.name.removeprefix(f"{CHART_NAME}/"): m for m in packed.getmembers()}
        shipped = {name: m for name, m in members.items() if name.startswith("files/dashboards/")}
        expected = [*sorted(DASHBOARDS.glob("*.json")), *rules_files(DASHBOARDS)]
        assert shipped.keys() >= {f"files/dashboards/{path.name}" for path in expected}
        assert not [name for name in shipped if name.startswith("files/dashboards/tests/")], "the rules' unit tests stay out"
        for path in expected:
            member = shipped[f"files/dashboards/{path.name}"]
            assert member.isfile() and packed.extractfile(member).read() == path.read_bytes()  # type: ignore[union-attr]
        assert not any(name.startswith("ci/") for name in members)
