"""The acr engine's pure parts and its wiring: registry names, platforms, labels, what it
refuses, how Azure's errors become envship's, the CLI flags and the configuration file, and the
per-environment build metric. Runs against ACR Tasks are in tests/integration/test_acr_tasks.py."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import click
import pytest
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError

from controller.adapters.acrtasks import (
    ARM,
    AcrTasksBuilder,
    AcrTasksError,
    AcrTasksRefused,
    AcrTasksSettings,
    _platform,
    _with_labels,
    refuse_buildkit_features,
    registry_name,
    service_error,
)
from controller.adapters.builder import NeedsBuildKit
from controller.adapters.registries import RegistrySettings
from controller.cli.options import BuildArgs
from controller.compose import ACR_RUNS, Wiring, builder_factory
from controller.compose.service import wiring_of
from controller.core.errors import Misconfigured, Policy, RetryLater, policy_of
from controller.core.model import ContextFile
from controller.core.render import Rendered
from controller.pipeline.options import Target
from controller.service.config import ConfigError, load
from controller.service.metrics import Metrics


def rendered(dockerfile: str) -> Rendered:
    return Rendered(
        "Dockerfile",
        dockerfile,
        (ContextFile("Dockerfile", dockerfile.encode()), ContextFile("data.txt", b"x")),
    )


@pytest.mark.parametrize(
    ("host", "name"),
    [
        ("myacr.azurecr.io", "myacr"),
        ("MyAcr.azurecr.io:443", "myacr"),
        ("gov.azurecr.us", "gov"),
        ("china.azurecr.cn", "china"),
        ("azurecr.io", None),
        ("127.0.0.1:5000", None),
        ("registry.example.org", None),
        (None, None),
    ],
)
def test_the_registry_name_comes_from_an_acr_login_server_only(host: str | None, name: str):
    assert registry_name(host) == name


def test_platforms_are_named_as_acr_tasks_names_them():
    assert _platform("linux/amd64") == {"os": "Linux", "architecture": "amd64"}
    assert _platform("linux/arm64/v8") == {"os": "Linux", "architecture": "arm64", "variant": "v8"}
    assert _platform("windows/amd64") == {"os": "Windows", "architecture": "amd64"}
    assert _platform("") == {"os": "Linux", "architecture": "amd64"}


def test_labels_become_a_last_label_instruction_in_the_uploaded_dockerfile():
    base = rendered("FROM busybox\nRUN true\n")
    labelled = _with_labels(base, {"org.opencontainers.image.created": 'a"b$c'})
    assert labelled.dockerfile.splitlines()[-1] == (
        'LABEL "org.opencontainers.image.created"="a\\"b$c"'
    )
    files = {f.path: f.data for f in labelled.files}
    assert files["Dockerfile"].decode() == labelled.dockerfile
    assert files["data.txt"] == b"x"
    assert _with_labels(base, {}) is base


def test_what_needs_buildkit_is_refused_with_what_to_do():
    with pytest.raises(NeedsBuildKit, match="line 2: RUN --mount needs BuildKit") as mounts:
        refuse_buildkit_features(rendered("FROM b\nRUN --mount=type=cache,target=/c true\n"), None)
    assert "builds.engine: local, or --engine local" in str(mounts.value)
    with pytest.raises(NeedsBuildKit, match=r"cannot be given build secrets \(token\)"):
        refuse_buildkit_features(rendered("FROM b\n"), {"token": "s3cr3t-value"})
    refuse_buildkit_features(rendered("FROM b\nRUN true\n"), None)  # nothing to refuse


class _Response:
    def __init__(self, status: int) -> None:
        self.status_code = status
        self.reason = "reason"
        self.headers: dict[str, str] = {}
        self.request = None

    def text(self) -> str:
        return "https://account.blob.core.windows.net/x?sig=leaked-sas-signature"


@pytest.mark.parametrize(
    ("status", "kind", "words", "policy"),
    [
        (401, AcrTasksRefused, "refused envship's identity", Policy.MISCONFIGURED),
        (403, AcrTasksRefused, "may not do this", Policy.MISCONFIGURED),
        (404, AcrTasksRefused, "does not know registry reg", Policy.MISCONFIGURED),
        (500, AcrTasksError, "failed scheduling a run (HTTP 500)", Policy.RETRY_LATER),
        (429, AcrTasksError, "(HTTP 429)", Policy.RETRY_LATER),
    ],
)
def test_azure_errors_become_envship_s_without_the_service_s_text(
    status: int, kind: type[Exception], words: str, policy: Policy
):
    error = HttpResponseError(response=_Response(status))  # type: ignore[arg-type]
    found = service_error(error, "scheduling a run", "reg")
    assert isinstance(found, kind)
    assert words in str(found)
    assert policy_of(found) is policy
    assert "leaked-sas-signature" not in str(found)


def test_a_failed_sign_in_is_the_operator_s():
    found = service_error(ClientAuthenticationError("no token"), "listing runs", "reg")
    assert isinstance(found, AcrTasksRefused)
    assert isinstance(found, Misconfigured)


def test_an_acr_builder_pulls_nothing_and_pushes_only_what_its_run_pushed():
    builder = AcrTasksBuilder(AcrTasksSettings("sub", "rg", "reg"))
    assert builder.remote
    assert not builder.buildkit
    assert builder.image_labels("x/y:z") is None
    assert not builder.has_image("x/y:z")
    with pytest.raises(RetryLater, match=r"no ACR Tasks run pushed reg\.azurecr\.io/app:t"):
        builder.push("reg.azurecr.io/app", "t", None, lambda line: None)


def build_args(**acr: object) -> BuildArgs:
    return BuildArgs(None, (), False, (), **acr)  # type: ignore[arg-type]


def test_the_cli_needs_the_registry_s_resource_and_says_which_flags_are_missing():
    with pytest.raises(click.UsageError) as missing:
        build_args(engine="acr").acr(Target("127.0.0.1:5000", "p"))
    text = str(missing.value)
    assert "--acr-subscription (or AZURE_SUBSCRIPTION_ID)" in text
    assert "--acr-resource-group" in text
    assert "--acr-registry (the registry is not NAME.azurecr.io)" in text
    settings = build_args(
        engine="acr", acr_subscription="s", acr_resource_group="g", acr_timeout=900
    ).acr(Target("team.azurecr.io", "p"))
    assert settings == AcrTasksSettings("s", "g", "team", endpoint=ARM, timeout=900)
    with pytest.raises(click.UsageError, match="go with --engine acr"):
        build_args(acr_subscription="s").acr(Target("team.azurecr.io", "p"))
    assert build_args().acr(Target("team.azurecr.io", "p")) is None


def test_compose_makes_acr_builders_with_the_registry_s_sign_in_and_ten_runs_at_once():
    def credential() -> object:
        raise AssertionError("not called until a build")

    wiring = Wiring(
        target=Target("team.azurecr.io", "p"),
        registry=RegistrySettings(credential_factory=credential),  # type: ignore[arg-type]
        engine="acr",
        acr=AcrTasksSettings("s", "g", "team"),
    )
    made = builder_factory(wiring)
    assert isinstance(made, partial)
    assert made.func is AcrTasksBuilder
    (settings,) = made.args
    assert settings.credential_factory is credential
    assert wiring.default_jobs() == ACR_RUNS == 10
    assert Wiring(target=None, registry=RegistrySettings()).default_jobs() != 0


CONFIG = """
git: {{url: https://example.org/team/specs.git}}
registry: {{url: {registry}/ml, acrIdentity: true}}
builds:
  engine: acr
{acr}
"""


def test_the_configuration_file_names_the_registry_or_takes_it_from_the_login_server(
    tmp_path: Path,
):
    path = tmp_path / "envship.yaml"
    path.write_text(
        CONFIG.format(registry="team.azurecr.io", acr="  acr: {subscription: s, resourceGroup: g}")
    )
    wiring = wiring_of(load(path))
    assert wiring.engine == "acr"
    assert wiring.acr == AcrTasksSettings("s", "g", "team")

    path.write_text(
        CONFIG.format(registry="127.0.0.1:5000", acr="  acr: {subscription: s, resourceGroup: g}")
    )
    with pytest.raises(Misconfigured, match=r"builds.acr.registry: give the registry's resource"):
        wiring_of(load(path))

    path.write_text(CONFIG.format(registry="team.azurecr.io", acr=""))
    with pytest.raises(ConfigError, match="engine: acr needs acr"):
        load(path)

    path.write_text(
        CONFIG.format(
            registry="team.azurecr.io",
            acr="  acr: {subscription: s, resourceGroup: g, endpoint: http://plain}",
        )
    )
    with pytest.raises(ConfigError, match="endpoint"):
        load(path)


def test_each_environment_s_last_build_time_and_outcome_is_a_series_of_its_own():
    metrics = Metrics()
    metrics.observe_build("built", 12.5, "team/app")
    metrics.observe_build("failed", 3.0, "team/other")
    text = metrics.exposition().decode()
    assert 'envship_environment_build_seconds{name="team/app",outcome="built"} 12.5' in text
    assert 'envship_environment_build_seconds{name="team/other",outcome="failed"} 3.0' in text
    metrics.observe_build("failed", 4.0, "team/app")  # the last build replaces the one before
    text = metrics.exposition().decode()
    assert 'name="team/app",outcome="built"' not in text
    assert 'envship_environment_build_seconds{name="team/app",outcome="failed"} 4.0' in text
    metrics.set_environments([{"name": "team/app", "phase": "Failed"}])
    text = metrics.exposition().decode()
    assert 'name="team/other"' not in text.split("envship_environment_build_seconds", 1)[1]
    metrics.remove_environment("team/app")
    assert 'envship_environment_build_seconds{name="team/app"' not in metrics.exposition().decode()


def test_each_published_environment_s_asset_id_is_a_series_of_its_own():
    metrics = Metrics()
    asset = "azureml://subscriptions/s/resourcegroups/g/workspaces/w/environments/app/versions/3"
    metrics.set_environments([{"name": "app", "phase": "Ready", "azureml": asset}, {"name": "b"}])
    text = metrics.exposition().decode()
    assert f'envship_environment_azureml_info{{asset="{asset}",name="app"}} 1.0' in text
    assert 'envship_environment_azureml_info{asset="",name="b"}' not in text
    metrics.set_environments([{"name": "b", "phase": "Ready"}])  # app left
    assert "envship_environment_azureml_info{" not in metrics.exposition().decode()


def test_the_publish_flags_name_a_workspace_or_a_registry():
    from controller.cli.options import publish_settings  # noqa: PLC0415

    assert publish_settings(None, None) is None
    workspace = publish_settings("s/g/w", "https://arm.example")
    assert workspace is not None
    assert (workspace.subscription, workspace.resource_group, workspace.workspace) == (
        "s", "g", "w",
    )  # fmt: skip
    registry = publish_settings(None, None, "shared")
    assert registry is not None
    assert registry.registry == "shared"
    for bad, words in (
        (("s/g", None), "give SUBSCRIPTION/RESOURCE_GROUP/WORKSPACE"),
        (("s/g/w", "http://plain"), "give an https:// URL"),
        ((None, "https://arm.example"), "goes with --publish-workspace"),
    ):
        with pytest.raises(click.UsageError, match=words):
            publish_settings(*bad)
    with pytest.raises(click.UsageError, match="not both"):
        publish_settings("s/g/w", None, "shared")
