"""The controller's configuration file: validation, environment overrides, no secrets echoed."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.config import ConfigError, load

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
