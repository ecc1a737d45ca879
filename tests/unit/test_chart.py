"""The Helm chart (helm/envship), rendered offline with Helm's own engine (helm-python-sdk).

For every value set (tests/cases/chart/, the acr value set below and the examples in
deploy/azure/): each manifest validates against Kubernetes' schemas in strict mode (one fixed
version), Helm's lint passes, the controller container meets Pod Security "restricted",
docker-in-docker is the only privileged container and gets no token, and the rendered
config.yaml is one the controller loads. With engine.mode acr there is no engine container at
all and every container is "restricted". The values schema refuses malformed values;
its `config` part is what scripts/chart-schema makes from the configuration model, and the
chart's defaults of configuration keys are the model's.
"""

from __future__ import annotations

import copy
import functools
import importlib.machinery
import importlib.util
import json
import os
import re
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import helm_python
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import SchemaNotFoundError
from pydantic import BaseModel, Field, create_model

from controller.adapters.secrets import SecretError, SecretRef
from controller.service.config import (
    SECRET_REFERENCE_SCHEMA,
    Config,
    Gc,
    Git,
    Http,
    Intervals,
    Registry,
    load,
)
from tests.support.paths import CASES, ROOT

CHART = ROOT / "helm" / "envship"
CASES_DIR = CASES / "chart"
AKS_EXAMPLE = ROOT / "deploy" / "azure" / "values-aks.yaml"
AKS_ACR_EXAMPLE = ROOT / "deploy" / "azure" / "values-aks-acr.yaml"

KUBE_VERSION = "1.31.0"
"""Every manifest is validated against this Kubernetes version's schemas (and linted for it)."""
RELEASE = "envship"
NAMESPACE = "envship"

CASES = (
    "defaults",
    "workload-identity",
    "dind",
    "remote",
    "replicas",
    "monitoring-ingress",
    "secrets-store-csi",
    "acr",
    "aks-example",
    "aks-acr-example",
)
EXAMPLE_IDS = {
    "clientId": "11111111-2222-3333-4444-555555555555",
    "tenantId": "66666666-7777-8888-9999-000000000000",
}
"""What docs/deploy.md passes with --set along with deploy/azure/values-aks*.yaml."""
EXAMPLES = {"aks-example": AKS_EXAMPLE, "aks-acr-example": AKS_ACR_EXAMPLE}
"""The documented examples in deploy/azure/, rendered with EXAMPLE_IDS."""

ACR_CONFIG: dict[str, Any] = {
    "git": {"url": "https://github.com/team/ml-environments.git"},
    "registry": {"url": "myacr.azurecr.io/ml", "acrIdentity": True},
    "builds": {
        "engine": "acr",
        "acr": {"subscription": "22222222-3333-4444-5555-666666666666", "resourceGroup": "ml"},
    },
}
INLINE_CASES: dict[str, dict[str, Any]] = {
    # The least engine.mode acr needs: ACR Tasks in the configuration, and the identity that
    # schedules the runs.
    "acr": {
        "config": ACR_CONFIG,
        "engine": {"mode": "acr"},
        "azureWorkloadIdentity": {"enabled": True, "clientId": EXAMPLE_IDS["clientId"]},
    },
}
"""Value sets kept here rather than in tests/cases/chart/."""
ACR_CASES = ("acr", "aks-acr-example")
CRD_KINDS = frozenset({"ServiceMonitor", "SecretProviderClass"})
"""Custom resources: Kubernetes has no schema for them, so their shape is asserted instead."""

CONTROLLER = "envship"
DIND = "dind"
SOCKET = "unix:///run/docker/docker.sock"
API_TOKEN_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
CHART_MANAGED_CONFIG = frozenset({"leaderElection"})
"""Sections of the controller's configuration that the chart writes, not the user."""

Manifest = dict[str, Any]
Values = dict[str, Any]


# -- rendering -----------------------------------------------------------------------------------


@functools.cache
def chart() -> helm_python.Chart:
    return helm_python.Chart.load(CHART)


def case_values(case: str) -> Values:
    """tests/cases/chart/CASE.yaml, an inline value set, or (EXAMPLES) a documented example with
    its --set values."""
    if case in INLINE_CASES:
        return copy.deepcopy(INLINE_CASES[case])
    path = EXAMPLES.get(case, CASES_DIR / f"{case}.yaml")
    values: Values = yaml.safe_load(path.read_text(encoding="utf-8"))
    if case in EXAMPLES:
        values["azureWorkloadIdentity"].update(EXAMPLE_IDS)
    return values


def render_files(values: Values) -> dict[str, str]:
    files = chart().render(values, name=RELEASE, namespace=NAMESPACE)
    return {Path(path).name: text for path, text in files.items()}


def render(values: Values) -> list[Manifest]:
    manifests: list[Manifest] = []
    for name, text in render_files(values).items():
        if name.endswith(".yaml"):
            manifests.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return manifests


@functools.cache
def _rendered(case: str) -> str:
    return yaml.safe_dump_all(render(case_values(case)))


def rendered(case: str) -> list[Manifest]:
    """The case's manifests (a fresh copy each time: tests may not share mutations)."""
    return [doc for doc in yaml.safe_load_all(_rendered(case)) if doc]


def of_kind(manifests: list[Manifest], kind: str) -> list[Manifest]:
    return [m for m in manifests if m["kind"] == kind]


def one(manifests: list[Manifest], kind: str) -> Manifest:
    found = of_kind(manifests, kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def pod_spec(manifests: list[Manifest]) -> dict[str, Any]:
    spec: dict[str, Any] = one(manifests, "Deployment")["spec"]["template"]["spec"]
    return spec


def all_containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    containers: list[dict[str, Any]] = pod.get("initContainers", []) + pod["containers"]
    return containers


def container(pod: dict[str, Any], name: str) -> dict[str, Any]:
    found = [c for c in all_containers(pod) if c["name"] == name]
    assert len(found) == 1, f"expected one container {name!r}, found {len(found)}"
    return found[0]


def env(c: dict[str, Any]) -> dict[str, Any]:
    """A container's environment: name -> value, or the valueFrom mapping."""
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c.get("env", [])}


def mounts(c: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["name"]: m for m in c.get("volumeMounts", [])}


def volumes(pod: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in pod.get("volumes", [])}


def config_text(manifests: list[Manifest]) -> str:
    text: str = one(manifests, "ConfigMap")["data"]["config.yaml"]
    return text


def rendered_config(manifests: list[Manifest]) -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(config_text(manifests))
    return config


def is_dind(case: str) -> bool:
    return bool(case_values(case)["engine"]["mode"] == "dind")


@pytest.fixture(autouse=True)
def _no_config_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    """The controller's loader reads ENVSHIP_* overrides: none may leak in from the shell."""
    for name in list(os.environ):
        if name.startswith("ENVSHIP_"):
            monkeypatch.delenv(name)


# -- Pod Security "restricted", as the admission controller checks it ---------------------------

RESTRICTED_VOLUMES = frozenset(
    {
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    }
)


def restricted_violations(pod: dict[str, Any], c: dict[str, Any]) -> list[str]:
    """What keeps container `c` of `pod` from Pod Security "restricted" (v1.31 rules)."""
    problems: list[str] = []
    pod_sc: dict[str, Any] = pod.get("securityContext", {})
    sc: dict[str, Any] = c.get("securityContext", {})
    for host in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(host):
            problems.append(host)
    if sc.get("privileged"):
        problems.append("privileged")
    if sc.get("allowPrivilegeEscalation") is not False:
        problems.append("allowPrivilegeEscalation is not false")
    if sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is not True:
        problems.append("runAsNonRoot is not true")
    if sc.get("runAsUser", pod_sc.get("runAsUser")) == 0:
        problems.append("runAsUser 0")
    seccomp = sc.get("seccompProfile", pod_sc.get("seccompProfile", {})).get("type")
    if seccomp not in ("RuntimeDefault", "Localhost"):
        problems.append(f"seccompProfile {seccomp}")
    capabilities = sc.get("capabilities", {})
    if "ALL" not in capabilities.get("drop", []):
        problems.append("capabilities do not drop ALL")
    if set(capabilities.get("add", [])) - {"NET_BIND_SERVICE"}:
        problems.append("capabilities added")
    if any(p.get("hostPort") for p in c.get("ports", [])):
        problems.append("hostPort")
    if sc.get("procMount", "Default") != "Default":
        problems.append("procMount")
    for volume in pod.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            problems.append(f"volume {volume['name']}: {sorted(kinds)}")
    return problems


# -- every case ----------------------------------------------------------------------------------


def test_cases_are_all_listed() -> None:
    assert sorted(p.stem for p in CASES_DIR.glob("*.yaml")) == sorted(
        set(CASES) - set(EXAMPLES) - set(INLINE_CASES)
    )
    assert set(ACR_CASES) == {c for c in CASES if case_values(c)["engine"]["mode"] == "acr"}


@pytest.mark.parametrize("example", sorted(EXAMPLES))
def test_aks_example_needs_the_identity_ids(example: str) -> None:
    values: Values = yaml.safe_load(EXAMPLES[example].read_text(encoding="utf-8"))
    with pytest.raises(helm_python.HelmValuesError, match="/azureWorkloadIdentity/clientId"):
        chart().validate_schema(values)
    values["azureWorkloadIdentity"].update(EXAMPLE_IDS)
    chart().validate_schema(values)


def test_chart_metadata_follows_the_package() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    metadata = chart().metadata
    assert metadata["apiVersion"] == "v2"
    assert metadata["name"] == "envship"
    assert metadata["appVersion"] == pyproject["project"]["version"]
    controller = container(pod_spec(rendered("defaults")), CONTROLLER)
    assert controller["image"] == f"envship:{metadata['appVersion']}"
    assert controller["args"] == ["run", "--config", "/etc/envship/config.yaml"]


@pytest.mark.parametrize("case", CASES)
def test_manifests_validate_strictly(case: str) -> None:
    manifests = rendered(case)
    kinds = {m["kind"] for m in manifests}
    assert {"Deployment", "Service", "ConfigMap", "ServiceAccount"} <= kinds
    for manifest in manifests:
        if manifest["kind"] in CRD_KINDS:
            # skipped on purpose, and only because Kubernetes itself has no schema for it
            with pytest.raises(SchemaNotFoundError):
                kubernetes_validate.validate(manifest, KUBE_VERSION, strict=True)
            continue
        kubernetes_validate.validate(manifest, KUBE_VERSION, strict=True)
        assert manifest["metadata"]["namespace"] == NAMESPACE


def test_strict_validation_catches_a_misplaced_field() -> None:
    deployment = one(rendered("defaults"), "Deployment")
    container(deployment["spec"]["template"]["spec"], CONTROLLER)["securityContext"][
        "readOnlyRootFS"
    ] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBE_VERSION, strict=True)


@pytest.mark.parametrize("case", CASES)
def test_helm_lint(case: str) -> None:
    report = helm_python.lint(
        CHART,
        case_values(case),
        strict=True,
        namespace=NAMESPACE,
        kube_version=f"v{KUBE_VERSION}",
    )
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize("case", CASES)
def test_controller_container_is_restricted(case: str) -> None:
    pod = pod_spec(rendered(case))
    controller = container(pod, CONTROLLER)
    sc = controller["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["runAsUser"] == 65532
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert restricted_violations(pod, controller) == []
    # the root file system is read-only: /tmp and the git cache are volumes
    assert mounts(controller)["tmp"]["mountPath"] == "/tmp"
    assert volumes(pod)["tmp"] == {"name": "tmp", "emptyDir": {}}
    assert "git-cache" in mounts(controller)


@pytest.mark.parametrize("case", CASES)
def test_only_dind_is_privileged_and_it_gets_no_token(case: str) -> None:
    manifests = rendered(case)
    pod = pod_spec(manifests)
    annotations = one(manifests, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    privileged = [c["name"] for c in all_containers(pod) if c["securityContext"].get("privileged")]
    assert pod["automountServiceAccountToken"] is False
    assert not any(pod.get(h) for h in ("hostNetwork", "hostPID", "hostIPC"))
    assert not [v for v in pod["volumes"] if "hostPath" in v]
    if is_dind(case):
        assert privileged == [DIND]
        assert annotations["azure.workload.identity/skip-containers"] == DIND
        dind = container(pod, DIND)
        assert dind in pod["initContainers"]
        assert not any(name.startswith("AZURE_") for name in env(dind))
        assert "kube-api-access" not in mounts(dind)
        assert all(m["mountPath"] != API_TOKEN_DIR for m in dind["volumeMounts"])
        others = [c for c in all_containers(pod) if c["name"] != DIND]
        assert [p for c in others for p in restricted_violations(pod, c)] == []
    else:
        assert privileged == []
        assert "initContainers" not in pod
        # nothing in the pod needs more than "restricted"
        assert [p for c in all_containers(pod) for p in restricted_violations(pod, c)] == []


@pytest.mark.parametrize("case", CASES)
def test_rendered_config_loads_in_the_controller(case: str, tmp_path: Path) -> None:
    manifests = rendered(case)
    path = tmp_path / "config.yaml"
    path.write_text(config_text(manifests), encoding="utf-8")
    config = load(path)
    pod = pod_spec(manifests)
    controller = container(pod, CONTROLLER)
    assert str(config.git.cache_dir) == mounts(controller)["git-cache"]["mountPath"]
    assert config.http.port == controller["ports"][0]["containerPort"]
    assert mounts(controller)["config"]["mountPath"] == "/etc/envship"
    config_map = one(manifests, "ConfigMap")["metadata"]["name"]
    assert volumes(pod)["config"]["configMap"]["name"] == config_map
    expected = copy.deepcopy(case_values(case)["config"])
    expected["git"].setdefault("cacheDir", "/var/cache/envship/git")
    written = rendered_config(manifests)
    written.pop("leaderElection", None)
    assert written == expected
    if "leaderElection" in rendered_config(manifests):
        # the model must know the section (another change adds it to controller.service.config)
        dumped = config.model_dump(by_alias=True)
        assert dumped["leaderElection"]["enabled"] is True
        assert dumped["leaderElection"]["leaseName"] == RELEASE


@pytest.mark.parametrize("case", CASES)
def test_probes_and_service(case: str) -> None:
    manifests = rendered(case)
    controller = container(pod_spec(manifests), CONTROLLER)
    assert controller["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert controller["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert controller["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert controller["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    service = one(manifests, "Service")
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"}
    ]
    selector = one(manifests, "Deployment")["spec"]["selector"]["matchLabels"]
    assert service["spec"]["selector"] == selector
    pod_labels = one(manifests, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= pod_labels.items()
    assert env(controller)["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env(controller)["POD_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    # the leader publishes http://POD_IP:port in its Lease (leader election only)
    if "leaderElection" in rendered_config(manifests):
        assert env(controller)["POD_IP"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    else:
        assert "POD_IP" not in env(controller)


# -- one case each -------------------------------------------------------------------------------


def test_defaults_render_no_optional_objects() -> None:
    manifests = rendered("defaults")
    assert sorted(m["kind"] for m in manifests) == [
        "ConfigMap",
        "Deployment",
        "Service",
        "ServiceAccount",
    ]
    pod = pod_spec(manifests)
    assert one(manifests, "Deployment")["spec"]["replicas"] == 1
    assert "leaderElection" not in rendered_config(manifests)
    assert "kube-api-access" not in volumes(pod)
    pod_labels = one(manifests, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert "azure.workload.identity/use" not in pod_labels
    assert "annotations" not in one(manifests, "ServiceAccount")["metadata"]
    assert volumes(pod)["git-cache"] == {"name": "git-cache", "emptyDir": {}}
    assert pod["terminationGracePeriodSeconds"] == 330


def test_workload_identity() -> None:
    manifests = rendered("workload-identity")
    account = one(manifests, "ServiceAccount")
    assert account["metadata"]["annotations"] == {
        "azure.workload.identity/client-id": "11111111-2222-3333-4444-555555555555",
        "azure.workload.identity/tenant-id": "66666666-7777-8888-9999-000000000000",
    }
    assert account["automountServiceAccountToken"] is False
    template = one(manifests, "Deployment")["spec"]["template"]
    assert template["metadata"]["labels"]["azure.workload.identity/use"] == "true"
    assert template["spec"]["serviceAccountName"] == account["metadata"]["name"]


def test_dind_sidecar() -> None:
    manifests = rendered("dind")
    pod = pod_spec(manifests)
    dind = container(pod, DIND)
    assert dind["restartPolicy"] == "Always"  # a native sidecar
    assert dind["image"] == "myacr.azurecr.io/mirror/docker:28-dind"
    assert dind["args"][0] == "dockerd"  # explicit: the image's defaults add a TCP listener
    assert f"--host={SOCKET}" in dind["args"]
    assert "--group=65532" in dind["args"]
    assert "--registry-mirror=https://mirror.example.org" in dind["args"]
    assert [a for a in dind["args"] if "tcp://" in a or a.startswith(("-H", "--tls"))] == []
    assert "tcp" not in str(dind.get("env", []))
    assert dind["startupProbe"]["exec"]["command"][0] == "docker"
    assert dind["resources"]["limits"]["memory"] == "16Gi"
    controller = container(pod, CONTROLLER)
    assert env(controller)["DOCKER_HOST"] == SOCKET
    assert "DOCKER_TLS_VERIFY" not in env(controller)
    assert mounts(dind)["docker-socket"]["mountPath"] == "/run/docker"
    assert mounts(controller)["docker-socket"]["mountPath"] == "/run/docker"
    assert volumes(pod)["docker-socket"]["emptyDir"] == {}
    assert mounts(dind)["docker-data"]["mountPath"] == "/var/lib/docker"
    assert "docker-data" not in mounts(controller)
    assert volumes(pod)["docker-data"]["emptyDir"] == {"sizeLimit": "100Gi"}
    # the pod needs no host network: builds reach private indexes over the network
    assert "hostNetwork" not in pod
    assert pod["terminationGracePeriodSeconds"] == 630  # intervals.grace 600 + 30


def test_remote_engine() -> None:
    manifests = rendered("remote")
    pod = pod_spec(manifests)
    controller = container(pod, CONTROLLER)
    assert env(controller)["DOCKER_HOST"] == "tcp://builder.build.svc.cluster.local:2376"
    assert env(controller)["DOCKER_TLS_VERIFY"] == "1"
    cert_path = env(controller)["DOCKER_CERT_PATH"]
    assert mounts(controller)["docker-tls"] == {
        "name": "docker-tls",
        "mountPath": cert_path,
        "readOnly": True,
    }
    secret = volumes(pod)["docker-tls"]["secret"]
    assert secret["secretName"] == "envship-docker-tls"
    assert [i["key"] for i in secret["items"]] == ["ca.pem", "cert.pem", "key.pem"]
    assert "docker-socket" not in volumes(pod)
    annotations = one(manifests, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert "azure.workload.identity/skip-containers" not in annotations
    claim = one(manifests, "PersistentVolumeClaim")
    assert claim["spec"]["storageClassName"] == "managed-csi"
    assert claim["spec"]["resources"]["requests"]["storage"] == "10Gi"
    assert volumes(pod)["git-cache"]["persistentVolumeClaim"] == {
        "claimName": claim["metadata"]["name"]
    }


ENGINE_ENV = ("DOCKER_HOST", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH")
ENGINE_VOLUMES = ("docker-socket", "docker-data", "docker-tls")


@pytest.mark.parametrize("case", ACR_CASES)
def test_acr_renders_no_engine(case: str) -> None:
    manifests = rendered(case)
    pod = pod_spec(manifests)
    # one container, the controller: no sidecar, no init container
    assert [c["name"] for c in all_containers(pod)] == [CONTROLLER]
    assert "initContainers" not in pod
    controller = container(pod, CONTROLLER)
    assert [name for name in env(controller) if name in ENGINE_ENV] == []
    assert not any(name.startswith("DOCKER_") for name in env(controller))
    # no engine socket, data or TLS client certificate
    assert [v for v in ENGINE_VOLUMES if v in volumes(pod)] == []
    assert [m for m in ENGINE_VOLUMES if m in mounts(controller)] == []
    assert not [m for m in controller["volumeMounts"] if "docker" in m["mountPath"]]
    assert not [v for v in pod["volumes"] if "secret" in v]
    annotations = one(manifests, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert "azure.workload.identity/skip-containers" not in annotations
    # the controller is told to build with ACR Tasks, on the registry's resource
    builds = rendered_config(manifests)["builds"]
    assert builds["engine"] == "acr"
    assert builds["acr"]["subscription"]
    assert builds["acr"]["resourceGroup"]


def test_the_engine_volumes_and_environment_are_what_the_other_modes_render() -> None:
    """What test_acr_renders_no_engine looks for is there in the other modes: its checks can
    fail."""
    dind = pod_spec(rendered("dind"))
    remote = pod_spec(rendered("remote"))
    assert {"docker-socket", "docker-data"} <= volumes(dind).keys()
    assert "docker-tls" in volumes(remote)
    assert "secret" in volumes(remote)["docker-tls"]
    assert set(ENGINE_ENV) <= env(container(remote, CONTROLLER)).keys()
    assert "DOCKER_HOST" in env(container(dind, CONTROLLER))
    assert [c["name"] for c in all_containers(dind)] == [DIND, CONTROLLER]


@pytest.mark.parametrize("case", ACR_CASES)
def test_acr_every_container_is_restricted(case: str) -> None:
    pod = pod_spec(rendered(case))
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    assert not any(pod.get(h) for h in ("hostNetwork", "hostPID", "hostIPC"))
    containers = all_containers(pod)
    assert containers
    for c in containers:
        sc = c["securityContext"]
        assert sc.get("privileged", False) is False, c["name"]
        assert sc["runAsNonRoot"] is True, c["name"]
        assert sc["runAsUser"] != 0, c["name"]
        assert sc["allowPrivilegeEscalation"] is False, c["name"]
        assert sc["capabilities"] == {"drop": ["ALL"]}, c["name"]
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, c["name"]
        assert sc["readOnlyRootFilesystem"] is True, c["name"]
        assert restricted_violations(pod, c) == [], c["name"]


@pytest.mark.parametrize(
    ("change", "violation"),
    [
        (lambda sc: sc.update(privileged=True), "privileged"),
        (lambda sc: sc.update(allowPrivilegeEscalation=True), "allowPrivilegeEscalation"),
        (lambda sc: sc.update(runAsNonRoot=False), "runAsNonRoot"),
        (lambda sc: sc.update(capabilities={"add": ["SYS_ADMIN"]}), "capabilities"),
        (lambda sc: sc.update(seccompProfile={"type": "Unconfined"}), "seccompProfile"),
    ],
)
def test_the_restricted_check_catches_a_weakened_acr_pod(
    change: Callable[[dict[str, Any]], None], violation: str
) -> None:
    pod = pod_spec(rendered("acr"))
    controller = container(pod, CONTROLLER)
    assert restricted_violations(pod, controller) == []
    change(controller["securityContext"])
    assert any(violation in p for p in restricted_violations(pod, controller))


@pytest.mark.parametrize("case", ACR_CASES)
def test_acr_schedules_runs_with_the_workload_identity(case: str) -> None:
    manifests = rendered(case)
    account = one(manifests, "ServiceAccount")
    annotations = account["metadata"]["annotations"]
    assert annotations["azure.workload.identity/client-id"] == EXAMPLE_IDS["clientId"]
    template = one(manifests, "Deployment")["spec"]["template"]
    assert template["metadata"]["labels"]["azure.workload.identity/use"] == "true"
    assert template["spec"]["serviceAccountName"] == account["metadata"]["name"]
    # the workload identity webhook may inject into every container: there is only envship's
    assert [c["name"] for c in all_containers(template["spec"])] == [CONTROLLER]


def test_replicas_turn_leader_election_on() -> None:
    manifests = rendered("replicas")
    assert one(manifests, "Deployment")["spec"]["replicas"] == 3
    assert rendered_config(manifests)["leaderElection"] == {
        "enabled": True,
        "leaseName": RELEASE,
        "namespace": NAMESPACE,
        "leaseDurationSeconds": 15,
        "renewDeadlineSeconds": 10,
        "retryPeriodSeconds": 2,
    }
    role = one(manifests, "Role")
    granted: dict[str, set[str]] = {}
    for rule in role["rules"]:
        assert rule["apiGroups"] == ["coordination.k8s.io"]
        assert rule["resources"] == ["leases"]
        for verb in rule["verbs"]:
            granted.setdefault(verb, set()).update(rule.get("resourceNames", ["*"]))
    assert {"get", "create", "update"} <= granted.keys()
    assert set(granted) <= {"get", "create", "update", "list", "watch"}
    assert granted["get"] == {RELEASE}
    assert granted["update"] == {RELEASE}
    binding = one(manifests, "RoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    account = one(manifests, "ServiceAccount")["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}
    ]
    # the API token, for the controller container only
    pod = pod_spec(manifests)
    assert pod["automountServiceAccountToken"] is False
    sources = volumes(pod)["kube-api-access"]["projected"]["sources"]
    assert sources[0]["serviceAccountToken"]["path"] == "token"
    assert sources[1]["configMap"]["name"] == "kube-root-ca.crt"
    assert sources[1]["configMap"]["items"] == [{"key": "ca.crt", "path": "ca.crt"}]
    assert sources[2]["downwardAPI"]["items"][0]["fieldRef"]["fieldPath"] == "metadata.namespace"
    holders = [c["name"] for c in all_containers(pod) if "kube-api-access" in mounts(c)]
    assert holders == [CONTROLLER]
    assert mounts(container(pod, CONTROLLER))["kube-api-access"]["mountPath"] == API_TOKEN_DIR
    assert env(container(pod, CONTROLLER))["POD_IP"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    # standbys are Ready (they relay webhooks to the leader): one replica stays up in a drain,
    # and the leader can be evicted like the others
    budget = one(manifests, "PodDisruptionBudget")["spec"]
    assert budget["minAvailable"] == 1
    assert "maxUnavailable" not in budget
    assert budget["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
    selector = one(manifests, "Deployment")["spec"]["selector"]["matchLabels"]
    assert budget["selector"]["matchLabels"] == selector


@pytest.mark.parametrize(
    ("replicas", "budget", "expected"),
    [
        (1, {}, {"maxUnavailable": 1}),  # minAvailable 1 would block every drain
        (2, {}, {"minAvailable": 1}),
        (3, {"maxUnavailable": 1}, {"maxUnavailable": 1}),
        (3, {"minAvailable": "50%"}, {"minAvailable": "50%"}),
        (1, {"maxUnavailable": "25%", "minAvailable": 0}, {"minAvailable": 0}),
    ],
)
def test_the_disruption_budget_defaults_to_the_replica_count(
    replicas: int, budget: Values, expected: Values
) -> None:
    values = case_values("defaults") | {
        "replicas": replicas,
        "podDisruptionBudget": {"enabled": True, **budget},
    }
    chart().validate_schema(values)
    pdb = one(render(values), "PodDisruptionBudget")
    kubernetes_validate.validate(pdb, KUBE_VERSION, strict=True)
    spec = pdb["spec"]
    assert {k: spec[k] for k in ("minAvailable", "maxUnavailable") if k in spec} == expected
    assert spec["unhealthyPodEvictionPolicy"] == "AlwaysAllow"


def test_leader_election_can_be_on_with_one_replica() -> None:
    values = case_values("defaults") | {"leaderElection": {"enabled": True}}
    manifests = render(values)
    assert rendered_config(manifests)["leaderElection"]["enabled"] is True
    assert len(of_kind(manifests, "Role")) == 1
    no_rbac = render(values | {"rbac": {"create": False}})
    assert of_kind(no_rbac, "Role") == []
    assert "kube-api-access" in volumes(pod_spec(no_rbac))


def test_listen_on_the_pod_ip_only() -> None:
    def env(values: Values) -> dict[str, Any]:
        pod = pod_spec(render(values))
        return {e["name"]: e for e in container(pod, "envship").get("env", [])}

    every = env(case_values("defaults"))
    assert "ENVSHIP_HTTP__ADDRESS" not in every
    assert "POD_IP" not in every  # only leader election needs it otherwise
    pod_ip = env(case_values("defaults") | {"listen": "podIP"})
    assert pod_ip["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert pod_ip["ENVSHIP_HTTP__ADDRESS"]["value"] == "$(POD_IP)"
    names = list(pod_ip)
    assert names.index("POD_IP") < names.index("ENVSHIP_HTTP__ADDRESS")  # expanded in order


def test_service_monitor_and_ingress() -> None:
    manifests = rendered("monitoring-ingress")
    service = one(manifests, "Service")
    monitor = one(manifests, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["endpoints"] == [
        {"port": "http", "path": "/metrics", "interval": "15s", "scrapeTimeout": "10s"}
    ]
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    assert monitor["spec"]["selector"]["matchLabels"].items() <= (
        service["metadata"]["labels"].items()
    )
    ingress = one(manifests, "Ingress")["spec"]
    assert ingress["ingressClassName"] == "webapprouting.kubernetes.azure.com"
    assert ingress["tls"] == [{"secretName": "envship-tls", "hosts": ["envship.example.com"]}]
    (rule,) = ingress["rules"]
    assert rule["host"] == "envship.example.com"
    backend = {"service": {"name": service["metadata"]["name"], "port": {"name": "http"}}}
    assert rule["http"]["paths"] == [{"path": "/hooks", "pathType": "Prefix", "backend": backend}]


def test_secrets_store_csi() -> None:
    manifests = rendered("secrets-store-csi")
    provider = one(manifests, "SecretProviderClass")
    assert provider["apiVersion"] == "secrets-store.csi.x-k8s.io/v1"
    assert provider["spec"]["provider"] == "azure"
    parameters = provider["spec"]["parameters"]
    assert parameters["usePodIdentity"] == "false"
    assert parameters["clientID"] == "11111111-2222-3333-4444-555555555555"
    assert parameters["tenantId"] == "66666666-7777-8888-9999-000000000000"
    assert parameters["keyvaultName"] == "team-vault"
    objects = [yaml.safe_load(item) for item in yaml.safe_load(parameters["objects"])["array"]]
    assert objects[0] == {"objectName": "git-user", "objectType": "secret"}
    assert objects[-1] == {
        "objectName": "github-webhook",
        "objectType": "secret",
        "objectAlias": "github-webhook-secret",
    }
    pod = pod_spec(manifests)
    csi = volumes(pod)["secrets-store"]["csi"]
    assert csi == {
        "driver": "secrets-store.csi.k8s.io",
        "readOnly": True,
        "volumeAttributes": {"secretProviderClass": provider["metadata"]["name"]},
    }
    holders = [c["name"] for c in all_containers(pod) if "secrets-store" in mounts(c)]
    assert holders == [CONTROLLER]
    mount = mounts(container(pod, CONTROLLER))["secrets-store"]
    assert mount == {"name": "secrets-store", "mountPath": "/mnt/secrets", "readOnly": True}
    # every file: reference in the configuration names a file the driver writes
    files = {f"/mnt/secrets/{o.get('objectAlias') or o['objectName']}" for o in objects}
    references = set(_file_references(rendered_config(manifests)))
    assert references
    assert references <= files


def _file_references(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for value in node.values():
            yield from _file_references(value)
    elif isinstance(node, str) and node.startswith("file:"):
        yield node.removeprefix("file:")


def test_config_changes_roll_the_pods() -> None:
    def checksum(values: Values) -> str:
        template = one(render(values), "Deployment")["spec"]["template"]
        value: str = template["metadata"]["annotations"]["checksum/config"]
        return value

    base = case_values("defaults")
    changed = copy.deepcopy(base)
    changed["config"]["intervals"] = {"reconcile": 30}
    assert checksum(base) == checksum(copy.deepcopy(base))
    assert checksum(base) != checksum(changed)
    assert checksum(base) != checksum(base | {"replicas": 2})  # leader election changes the file


def test_notes_tell_the_webhook_url_and_how_to_see_status() -> None:
    with_ingress = render_files(case_values("monitoring-ingress"))["NOTES.txt"]
    assert "https://envship.example.com/hooks/github" in with_ingress
    assert "https://envship.example.com/hooks/azure-devops" in with_ingress
    without = render_files(case_values("defaults"))["NOTES.txt"]
    assert "kubectl -n envship port-forward svc/envship 8080:8080" in without
    assert "envship status --url http://127.0.0.1:8080" in without
    assert "privileged" in without
    remote = render_files(case_values("remote"))["NOTES.txt"]
    assert "restricted" in remote
    assert "Leader election" not in without
    replicas = render_files(case_values("replicas"))["NOTES.txt"]
    assert "one of 3 pods reconciles" in replicas
    assert "relay the webhooks and manual triggers" in replicas
    assert "not Ready" not in replicas
    assert "tcp://builder.build.svc.cluster.local:2376" in remote
    acr = render_files(case_values("acr"))["NOTES.txt"]
    assert "Build engine: acr." in acr
    assert "ACR Tasks runs on registry myacr (resource group ml," in acr
    assert 'the pod meets Pod Security "restricted"' in acr
    assert EXAMPLE_IDS["clientId"] in acr
    assert "RUN --mount" in acr
    assert "docker:dind" not in acr
    named = render_files(
        case_values("acr") | {"config": ACR_CONFIG | {"registry": {"url": "ml.example.org/p"}}}
    )
    assert "runs on registry (set config.builds.acr.registry)" in named["NOTES.txt"]


# -- refusals ------------------------------------------------------------------------------------


def _set(path: str, value: Any) -> Callable[[Values], None]:
    def change(values: Values) -> None:
        *parents, leaf = path.split(".")
        node = values
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value

    return change


def _drop(path: str) -> Callable[[Values], None]:
    def change(values: Values) -> None:
        *parents, leaf = path.split(".")
        node = values
        for key in parents:
            node = node[key]
        del node[leaf]

    return change


LITERAL = "ghp_0123456789abcdefLITERAL"

BAD_VALUES: list[tuple[str, Callable[[Values], None], str]] = [
    ("replicas-string", _set("replicas", "3"), "at '/replicas': got string, want integer"),
    ("replicas-zero", _set("replicas", 0), "at '/replicas': minimum: got 0, want 1"),
    ("engine-host-socket", _set("engine.mode", "host"), "at '/engine/mode': value must be one of"),
    ("engine-unset", _drop("engine.mode"), "at '/engine/mode': value must be one of"),
    ("git-url-missing", _drop("config.git.url"), "at '/config/git': missing property 'url'"),
    ("registry-missing", _drop("config.registry"), "at '/config': missing property 'registry'"),
    ("registry-url-missing", _drop("config.registry.url"), "missing property 'url'"),
    ("unknown-top-level", _set("replica", 3), "additional properties 'replica' not allowed"),
    (
        "leader-election-in-config",
        _set("config.leaderElection", {"enabled": True}),
        "at '/config': additional properties 'leaderElection' not allowed",
    ),
    ("unknown-config-key", _set("config.git.branch", "main"), "'branch' not allowed"),
    ("literal-secret", _set("config.webhooks.github", LITERAL), "at '/config/webhooks/github'"),
    (
        "literal-password",
        _set("config.registry.credentials", {"username": "env:U", "password": LITERAL}),
        "at '/config/registry/credentials/password'",
    ),
    ("port-range", _set("config.http.port", 70000), "at '/config/http/port': maximum"),
    ("jobs-type", _set("config.builds.jobs", "two"), "at '/config/builds/jobs'"),
    (
        "remote-without-tls",
        _set("engine", {"mode": "remote", "remote": {"host": "tcp://builder:2376"}}),
        "at '/engine/remote/tlsSecret'",
    ),
    (
        "remote-without-host",
        _set("engine", {"mode": "remote", "remote": {"tlsSecret": "tls"}}),
        "at '/engine/remote/host'",
    ),
    (
        "remote-plain-http",
        _set("engine", {"mode": "remote", "remote": {"host": "http://b:2375", "tlsSecret": "t"}}),
        "at '/engine/remote/host'",
    ),
    (
        "dind-tcp-listener",
        _set("engine.dind", {"extraArgs": ["--host=tcp://0.0.0.0:2375"]}),
        "at '/engine/dind/extraArgs/0'",
    ),
    (
        "host-docker-socket",
        _set("extraVolumes", [{"name": "docker", "hostPath": {"path": "/var/run/docker.sock"}}]),
        "at '/extraVolumes/0'",
    ),
    (
        "workload-identity-without-client",
        _set("azureWorkloadIdentity", {"enabled": True}),
        "at '/azureWorkloadIdentity/clientId'",
    ),
    ("client-id-not-a-guid", _set("azureWorkloadIdentity.clientId", "me"), "clientId"),
    ("ingress-without-host", _set("ingress", {"enabled": True}), "at '/ingress/hosts'"),
    ("ingress-exposes-status", _set("ingress.paths", ["/"]), "at '/ingress/paths/0'"),
    (
        "csi-without-objects",
        _set("secretsStoreCsi", {"enabled": True, "keyvaultName": "team-vault"}),
        "at '/secretsStoreCsi/objects'",
    ),
    (
        "pdb-word",
        _set("podDisruptionBudget.maxUnavailable", "one"),
        "at '/podDisruptionBudget/maxUnavailable'",
    ),
    ("cache-relative", _set("config.git.cacheDir", "cache"), "at '/config/git/cacheDir'"),
]


@pytest.mark.parametrize(
    ("change", "message"),
    [pytest.param(change, message, id=name) for name, change, message in BAD_VALUES],
)
def test_schema_refuses(change: Callable[[Values], None], message: str) -> None:
    values = copy.deepcopy(case_values("defaults"))
    chart().validate_schema(values)  # the base is fine: the change alone is refused
    change(values)
    with pytest.raises(helm_python.HelmValuesError) as refused:
        chart().validate_schema(values)
    assert message in str(refused.value)
    assert LITERAL not in str(refused.value)
    with pytest.raises(helm_python.HelmValuesError):
        chart().render(values, name=RELEASE, namespace=NAMESPACE)


RENDER_REFUSALS: list[tuple[str, Values, str]] = [
    (
        "persistent-cache-with-replicas",
        {"replicas": 2, "gitCache": {"persistence": {"enabled": True}}},
        "gitCache.persistence is for one replica",
    ),
    (
        "csi-without-tenant",
        {
            "secretsStoreCsi": {
                "enabled": True,
                "keyvaultName": "team-vault",
                "clientId": "11111111-2222-3333-4444-555555555555",
                "objects": [{"objectName": "x"}],
            }
        },
        "secretsStoreCsi.tenantId",
    ),
    (
        "lease-renewal-too-long",
        {"leaderElection": {"enabled": True, "renewDeadlineSeconds": 15}},
        "renewDeadlineSeconds",
    ),
    (
        "acr-mode-with-a-local-engine",
        INLINE_CASES["acr"] | {"config": case_values("defaults")["config"]},
        "engine.mode acr renders no Docker engine: set config.builds.engine to acr (it is local)",
    ),
    (
        "acr-mode-with-builds-engine-local",
        INLINE_CASES["acr"]
        | {
            "config": ACR_CONFIG
            | {"builds": {"engine": "local", "acr": ACR_CONFIG["builds"]["acr"]}}
        },
        "set config.builds.engine to acr (it is local)",
    ),
    (
        "acr-mode-without-its-registry",
        INLINE_CASES["acr"] | {"config": ACR_CONFIG | {"builds": {"engine": "acr"}}},
        "engine.mode acr needs config.builds.acr",
    ),
    (
        "acr-mode-without-workload-identity",
        INLINE_CASES["acr"] | {"azureWorkloadIdentity": {"enabled": False}},
        "set azureWorkloadIdentity.enabled to true",
    ),
    (
        "acr-builds-with-dind",
        {"config": ACR_CONFIG},
        "config.builds.engine acr builds with ACR Tasks: set engine.mode to acr (it is dind)",
    ),
    (
        "acr-builds-with-remote",
        case_values("remote") | {"config": ACR_CONFIG},
        "set engine.mode to acr (it is remote)",
    ),
]


@pytest.mark.parametrize(
    ("extra", "message"),
    [pytest.param(extra, message, id=name) for name, extra, message in RENDER_REFUSALS],
)
def test_render_refuses(extra: Values, message: str) -> None:
    values = case_values("defaults") | extra
    with pytest.raises(helm_python.HelmError) as refused:
        chart().render(values, name=RELEASE, namespace=NAMESPACE)
    assert message in str(refused.value)


# -- the schema and the docs follow the controller ----------------------------------------------


def _aliases(model: type[BaseModel]) -> set[str]:
    return {field.alias or name for name, field in model.model_fields.items()}


def test_values_schema_mirrors_the_configuration_model() -> None:
    schema = chart().schema
    assert schema is not None
    config_schema = schema["properties"]["config"]
    assert config_schema["additionalProperties"] is False
    sections = set(config_schema["properties"])
    assert sections == _aliases(Config) - CHART_MANAGED_CONFIG
    for name, field in Config.model_fields.items():
        alias = field.alias or name
        if alias in CHART_MANAGED_CONFIG:
            continue
        model = field.annotation
        assert isinstance(model, type)
        assert issubclass(model, BaseModel)
        section = config_schema["properties"][alias]
        assert section["additionalProperties"] is False, alias
        assert set(section["properties"]) == _aliases(model), alias


@functools.cache
def chart_schema() -> ModuleType:
    """scripts/chart-schema: makes the schema of `config` from the model, and compares."""
    loader = importlib.machinery.SourceFileLoader(
        "chart_schema", str(ROOT / "scripts" / "chart-schema")
    )
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def committed_config_schema() -> dict[str, Any]:
    """The `config` part of helm/envship/values.schema.json, as committed."""
    values = json.loads((CHART / "values.schema.json").read_text(encoding="utf-8"))
    config: dict[str, Any] = values["properties"]["config"]
    return config


def drift(model: type[BaseModel] = Config, committed: dict[str, Any] | None = None) -> list[str]:
    """What differs between the chart's schema of `config` and the one `model` makes."""
    script = chart_schema()
    found: list[str] = script.differences(
        committed_config_schema() if committed is None else committed, script.config_schema(model)
    )
    return found


def test_the_config_schema_is_made_from_the_model() -> None:
    assert drift() == [], "helm/envship/values.schema.json is out of date: run scripts/chart-schema"
    assert set(chart_schema().CHART_MANAGED) == CHART_MANAGED_CONFIG
    schema = chart().schema  # what Helm validates with is that file
    assert schema is not None
    assert schema["properties"]["config"] == committed_config_schema()


class _GitWithDepth(Git):
    depth: int = 1


class _SlowerIntervals(Intervals):
    reconcile: float = Field(default=30.0, gt=0)


class _RegistryNeedingCa(Registry):
    ca_file: str | None = Field(alias="caFile")  # no default: required


class _FractionalConnections(Http):
    max_connections: float = Field(default=256, alias="maxConnections", ge=1)


MODEL_DRIFT: list[tuple[str, dict[str, Any], list[str]]] = [
    ("key-added", {"git": (_GitWithDepth, ...)}, ["git.properties.depth: in the model only"]),
    ("section-added", {"mirror": (Gc, Gc())}, ["mirror: in the model only"]),
    (
        "default-changed",
        {"intervals": (_SlowerIntervals, _SlowerIntervals())},
        ["intervals.properties.reconcile.default: the chart says 60.0, the model 30.0"],
    ),
    (
        "now-required",
        {"registry": (_RegistryNeedingCa, ...)},
        [
            "registry.properties.caFile.default: in the chart's schema only",
            'registry.required: the chart says ["url"], the model ["url", "caFile"]',
        ],
    ),
    (
        "type-changed",
        {"http": (_FractionalConnections, _FractionalConnections())},
        ['http.properties.maxConnections.type: the chart says "integer", the model "number"'],
    ),
]


@pytest.mark.parametrize(
    ("sections", "expected"),
    [pytest.param(sections, expected, id=name) for name, sections, expected in MODEL_DRIFT],
)
def test_a_model_that_drifted_from_the_chart_is_caught(
    sections: dict[str, Any], expected: list[str]
) -> None:
    """A copy of the model with one change: the comparison the test above makes names it."""
    drifted = create_model("Config", __base__=Config, **sections)
    found = drift(drifted)
    assert len(found) == len(expected), found
    for line, start in zip(found, expected, strict=True):
        assert line.startswith(f"config.properties.{start}"), found


def _edit(path: str, change: Callable[[dict[str, Any], str], None]) -> Callable[[Any], None]:
    def edit(schema: dict[str, Any]) -> None:
        *parents, leaf = path.split(".")
        node = schema
        for key in parents:
            node = node[key]
        change(node, leaf)

    return edit


CHART_DRIFT: list[tuple[str, Callable[[Any], None], str]] = [
    (
        "key-only-in-the-chart",
        _edit("properties.http.properties.tls", lambda n, k: n.update({k: {"type": "boolean"}})),
        "config.properties.http.properties.tls: in the chart's schema only",
    ),
    (
        "key-left-out-of-the-chart",
        _edit("properties.gc.properties.dryRun", lambda n, k: n.pop(k)),
        "config.properties.gc.properties.dryRun: in the model only",
    ),
    (
        "enum-only-in-the-chart",
        _edit("properties.specs.properties.prefix.enum", lambda n, k: n.update({k: ["envship"]})),
        "config.properties.specs.properties.prefix.enum: in the chart's schema only",
    ),
    (
        "bound-changed",
        _edit("properties.http.properties.port.maximum", lambda n, k: n.update({k: 70000})),
        "config.properties.http.properties.port.maximum: the chart says 70000, the model 65535",
    ),
    (
        "default-changed",
        _edit("properties.git.properties.ref.default", lambda n, k: n.update({k: "master"})),
        'config.properties.git.properties.ref.default: the chart says "master", the model "main"',
    ),
    (
        "no-longer-required",
        _edit("required", lambda n, k: n.update({k: ["git"]})),
        'config.required: the chart says ["git"], the model ["git", "registry"]',
    ),
]


@pytest.mark.parametrize(
    ("change", "expected"),
    [pytest.param(change, expected, id=name) for name, change, expected in CHART_DRIFT],
)
def test_a_chart_schema_that_drifted_from_the_model_is_caught(
    change: Callable[[Any], None], expected: str
) -> None:
    committed = copy.deepcopy(committed_config_schema())
    change(committed)
    found = drift(committed=committed)
    assert len(found) == 1, found
    assert found[0].startswith(expected), found


@pytest.mark.parametrize(
    "text",
    [
        "keyvault://team-vault/git-token",
        "keyvault://team-vault/git-token/0123abcd",
        "keyvault://vault.example.org:8443/name",
        "keyvault://team-vault",
        "keyvault://team-vault/a/b/c",
        "keyvault://team-vault//b",
        "keyvault://team-vault/a/",
        "keyvault:team-vault/a",
        "file:/mnt/secrets/acr-password",
        "file:",
        "env:GIT_TOKEN",
        "env:",
        "ENV:GIT_TOKEN",
        "ghp_0123456789abcdef",
        "",
    ],
)
def test_the_schemas_secret_reference_is_what_envship_accepts(text: str) -> None:
    pattern = SECRET_REFERENCE_SCHEMA["not"]["not"]["pattern"]
    try:
        SecretRef.parse(text)
    except SecretError:
        accepted = False
    else:
        accepted = True
    assert (re.search(pattern, text) is not None) is accepted


DIG_DEFAULT = re.compile(r'\bdig((?: "\w+")+) (\S+) \.Values\.config\b')
"""A template's fallback for a configuration key the values leave out: dig "KEY"... DEFAULT."""


def _at(node: Any, path: list[str]) -> Any:
    for key in path:
        node = node[key]
    return node


def test_the_charts_defaults_of_configuration_keys_are_the_models() -> None:
    model = Config(git={"url": "https://example.org/specs.git"}, registry={"url": "r.test/p"})
    defaults = model.model_dump(by_alias=True, mode="json")
    values = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    # config in values.yaml
    leaves = [key.split(".") for key in _leaves(values["config"], "")]
    assert ["git", "cacheDir"] in leaves
    for path in leaves:
        assert _at(values["config"], path) == _at(defaults, path), ".".join(path)
    # what the templates fall back on
    fallbacks = [
        (keys.split('"')[1::2], default)
        for template in sorted((CHART / "templates").iterdir())
        for keys, default in DIG_DEFAULT.findall(template.read_text(encoding="utf-8"))
    ]
    assert {".".join(path) for path, _ in fallbacks} >= {
        "git.cacheDir",
        "http.port",
        "intervals.grace",
    }
    for path, default in fallbacks:
        assert yaml.safe_load(default) == _at(defaults, path), ".".join(path)
    # the chart's own leaderElection values, which it writes into the section
    chart_section = values["leaderElection"]
    assert chart_section == {key: defaults["leaderElection"][key] for key in chart_section}


OPAQUE_VALUES = frozenset(
    {"config", "strategy", "podSecurityContext", "securityContext", "resources"}
)
"""Values passed through whole (Kubernetes objects, the configuration file): one README row."""


def _leaves(node: Any, prefix: str = "") -> Iterator[str]:
    if isinstance(node, dict) and node and prefix.rstrip(".") not in OPAQUE_VALUES:
        for key, value in node.items():
            yield from _leaves(value, f"{prefix}{key}.")
    else:
        yield prefix.rstrip(".")


def test_chart_readme_documents_every_value() -> None:
    readme = (CHART / "README.md").read_text(encoding="utf-8")
    defaults = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    keys = list(_leaves(defaults))
    assert "engine.remote.tlsSecret" in keys
    missing = [key for key in keys if f"`{key}`" not in readme]
    assert missing == []
