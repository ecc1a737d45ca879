"""The controller's configuration file: validation, environment overrides, no secrets echoed."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.adapters.buildkit import BuildKitBuilder
from controller.compose import builder_factory
from controller.compose.service import secret_references, wiring_of
from controller.service.config import ConfigError, load

MINIMAL = """
git:
  url: https://example.org/team/specs.git
  credentials: {username: env:GIT_USER, password: keyvault://team-vault/git-token}
registry:
  url: myacr.azurecr.io/ml
  acrIdentity: true
  baseAuth:
    private.example.org: {username: env:BASE_USER, password: file:/var/run/secrets/base/password}
webhooks:
  github: keyvault://team-vault/github-webhook
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "envship.yaml"
    path.write_text(text)
    return path


def test_defaults_and_references(tmp_path: Path):
    config = load(write(tmp_path, MINIMAL))
    assert config.git.ref == "main"
    assert config.registry.acr_identity
    assert config.intervals.reconcile == 60.0
    assert config.http.port == 8080
    refs = config.registry.base_auth["private.example.org"].refs()
    assert str(refs.password) == "file:/var/run/secrets/base/password"
    assert config.gc.enabled is False


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("ENVSHIP_INTERVALS__RECONCILE", "15")
    monkeypatch.setenv("ENVSHIP_REGISTRY__URL", "127.0.0.1:5000/override")
    monkeypatch.setenv("ENVSHIP_HTTP__PORT", "9090")
    config = load(write(tmp_path, MINIMAL))
    assert config.intervals.reconcile == 15.0
    assert config.registry.url == "127.0.0.1:5000/override"
    assert config.http.port == 9090


def test_errors_name_the_key_and_never_echo_a_literal_secret(tmp_path: Path):
    text = MINIMAL.replace("keyvault://team-vault/git-token", "ghp_literalTOKEN123456")
    with pytest.raises(ConfigError) as literal:
        load(write(tmp_path, text))
    assert "git.credentials.password" in str(literal.value)
    assert "ghp_literalTOKEN123456" not in str(literal.value)
    with pytest.raises(ConfigError, match=r"http\.port"):
        load(write(tmp_path, MINIMAL + "http: {port: 70000}\n"))
    with pytest.raises(ConfigError, match="unknown"):
        load(write(tmp_path, MINIMAL + "unknown: 1\n"))
    with pytest.raises(ConfigError, match="registry"):
        load(write(tmp_path, "git: {url: x}\n"))
    with pytest.raises(ConfigError, match="cannot be read"):
        load(tmp_path / "missing.yaml")


@pytest.mark.parametrize(
    ("key", "value", "held"),
    [
        ("git.url", "https://user:hunter2-pw@example.org/r.git", "a user name and password"),
        ("git.url", "deploy:hunter2-pw@example.org:team/r.git", "a password"),
        ("git.url", "https://example.org/r.git?private_token=hunter2-pw", "a token in the query"),
        ("git.url", "https://ghp_0123456789abcdefghijABCDEFGHIJ0123@github.com/o/r", "GitHub"),
        ("registry.url", "puller:hunter2-pw@myacr.azurecr.io/ml", "user name and password"),
        ("registry.url", "https://puller@myacr.azurecr.io/ml", "user-info"),
    ],
)
def test_urls_with_credentials_are_refused_naming_the_key(
    tmp_path: Path, key: str, value: str, held: str
):
    section = key.split(".", maxsplit=1)[0]
    text = MINIMAL.replace(
        "https://example.org/team/specs.git" if section == "git" else "myacr.azurecr.io/ml",
        value,
    )
    with pytest.raises(ConfigError) as refused:
        load(write(tmp_path, text))
    message = str(refused.value)
    assert key in message
    assert held in message
    assert "hunter2-pw" not in message
    assert "0123456789abcdefghij" not in message


def test_http_address_and_limits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    config = load(write(tmp_path, MINIMAL))
    assert (config.http.address, config.http.idle_timeout) == ("0.0.0.0", 15.0)  # noqa: S104
    extra = "http: {address: '::1', headerTimeout: 2, maxConnections: 32, bodyMemory: 1024}\n"
    config = load(write(tmp_path, MINIMAL + extra))
    assert (config.http.address, config.http.header_timeout) == ("::1", 2.0)
    assert (config.http.max_connections, config.http.body_memory) == (32, 1024)
    monkeypatch.setenv("ENVSHIP_HTTP__ADDRESS", "10.1.2.3")  # the chart's listen: podIP
    assert load(write(tmp_path, MINIMAL)).http.address == "10.1.2.3"
    monkeypatch.setenv("ENVSHIP_HTTP__ADDRESS", "$(POD_IP)")  # not expanded: no such variable
    with pytest.raises(ConfigError, match=r"http\.address.*IP address"):
        load(write(tmp_path, MINIMAL))


def test_the_builder_and_its_secrets(tmp_path: Path):
    default = wiring_of(load(write(tmp_path, MINIMAL)))
    assert default.builder == "buildkit"
    assert default.build_secrets == {}
    assert builder_factory(default).func is BuildKitBuilder  # type: ignore[attr-defined]
    classic = wiring_of(load(write(tmp_path, MINIMAL + "builds:\n  builder: classic\n")))
    assert builder_factory(classic).__name__ == "DockerBuilder"  # type: ignore[attr-defined]

    chosen = MINIMAL + (
        "builds:\n  builder: buildkit\n  dockerCli: /opt/docker/bin/docker\n"
        "  secrets: {pip-token: keyvault://team-vault/pip-token}\n"
    )
    wiring = wiring_of(load(write(tmp_path, chosen)))
    assert wiring.builder == "buildkit"
    assert str(wiring.build_secrets["pip-token"]) == "keyvault://team-vault/pip-token"
    factory = builder_factory(wiring)
    assert factory.func is BuildKitBuilder  # type: ignore[attr-defined]
    assert factory.args == ("/opt/docker/bin/docker",)  # type: ignore[attr-defined]
    # the readiness check tries build secrets too (`/readyz` names one that cannot be read)
    assert "keyvault://team-vault/pip-token" in secret_references(load(write(tmp_path, chosen)))

    for wrong, key in [
        ("  builder: kaniko\n", "builds.builder"),
        ("  secrets: {'a,src=/etc/shadow': env:X}\n", "builds.secrets"),
        ("  secrets: {token: literal-value}\n", "builds.secrets.token"),
    ]:
        with pytest.raises(ConfigError) as caught:
            load(write(tmp_path, MINIMAL + "builds:\n" + wrong))
        assert key in str(caught.value)
        assert "literal-value" not in str(caught.value)


def test_envship_s_own_build_secret_id_cannot_be_configured(tmp_path: Path):
    taken = MINIMAL + "builds:\n  secrets: {envship-pip-conf: env:MINE}\n"
    with pytest.raises(ConfigError) as refused:
        load(write(tmp_path, taken))
    assert "the build secret id envship-pip-conf is envship's own" in str(refused.value)
    assert "builds.cache" not in str(refused.value)
    cached = wiring_of(load(write(tmp_path, MINIMAL + "builds:\n  cache: inline\n")))
    assert cached.build_cache == "inline"
    assert wiring_of(load(write(tmp_path, MINIMAL))).build_cache == "auto"


def test_publishing_to_azure_ml_is_wired(tmp_path: Path):
    publish = (
        "publish:\n  azureml: {subscription: s, resourceGroup: g, workspace: w,"
        " endpoint: 'https://management.example'}\n"
    )
    wiring = wiring_of(load(write(tmp_path, MINIMAL + publish)))
    assert wiring.publish is not None
    assert (wiring.publish.subscription, wiring.publish.resource_group) == ("s", "g")
    assert wiring.publish.workspace == "w"
    assert wiring.publish.endpoint == "https://management.example"
    assert wiring_of(load(write(tmp_path, MINIMAL))).publish is None


def test_publishing_goes_to_a_workspace_or_an_azure_ml_registry_not_both(tmp_path: Path):
    registry = "publish:\n  azureml: {registry: shared-ml}\n"
    wiring = wiring_of(load(write(tmp_path, MINIMAL + registry)))
    assert wiring.publish is not None
    assert wiring.publish.registry == "shared-ml"
    assert wiring.publish.workspace is None
    both = "publish:\n  azureml: {registry: r, subscription: s, resourceGroup: g, workspace: w}\n"
    for text in (both, "publish:\n  azureml: {subscription: s}\n"):
        with pytest.raises(ConfigError, match="give either subscription, resourceGroup and work"):
            load(write(tmp_path, MINIMAL + text))
