"""BuildKit's registry cache: which kind each CLI and driver gets, the CLI's arguments, and the
docker CLI configuration that carries registry credentials in memory only."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest

from controller.adapters.buildkit import (
    CacheUnsupported,
    Cli,
    build_command,
    cache_arguments,
    cache_kind,
    docker_config,
    memory_folder,
)
from controller.core.errors import Policy, policy_of

BUILTIN = Cli("/opt/b/docker", "20.10.24+dfsg1", "builtin")
BUILDX_DOCKER = Cli("/opt/a/docker", "28.2.2", "buildx", "docker")
BUILDX_CONTAINER = Cli("/opt/a/docker", "28.2.2", "buildx", "docker-container")
REF = "registry.example.org/envship/app:buildcache"


def test_auto_is_the_registry_cache_where_the_driver_exports_it_else_inline():
    assert cache_kind(BUILDX_CONTAINER, "auto") == "registry"
    assert cache_kind(BUILDX_DOCKER, "auto") == "inline"
    assert cache_kind(BUILTIN, "auto") == "inline"
    assert cache_kind(BUILTIN, "inline") == "inline"
    assert cache_kind(BUILDX_CONTAINER, "off") is None


def test_a_registry_cache_the_builder_cannot_export_is_the_operator_s_to_fix():
    with pytest.raises(CacheUnsupported) as caught:
        cache_kind(BUILDX_DOCKER, "registry")
    assert "buildx with a driver that exports cache" in str(caught.value)
    assert "driver docker" in str(caught.value)
    assert policy_of(caught.value) is Policy.MISCONFIGURED


def test_cache_arguments_for_each_cli():
    assert cache_arguments(BUILTIN, "inline", REF) == ([REF], [], {"BUILDKIT_INLINE_CACHE": "1"})
    assert cache_arguments(BUILDX_DOCKER, "inline", REF) == (
        [f"type=registry,ref={REF}"],
        ["type=inline"],
        {},
    )
    assert cache_arguments(BUILDX_CONTAINER, "registry", REF) == (
        [f"type=registry,ref={REF}"],
        [f"type=registry,ref={REF},mode=max"],
        {},
    )
    argv = build_command(
        BUILDX_CONTAINER, dockerfile_path="Dockerfile", tag="t", labels={}, platform="p",
        cache_from=[f"type=registry,ref={REF}"], cache_to=[f"type=registry,ref={REF},mode=max"],
    )  # fmt: skip
    assert argv[-5:] == [
        "--cache-from", f"type=registry,ref={REF}",
        "--cache-to", f"type=registry,ref={REF},mode=max", "-",
    ]  # fmt: skip


def test_the_memory_folder_is_a_tmpfs_never_a_disk(tmp_path: Path):
    runtime = tmp_path / "run"
    runtime.mkdir()
    mounts = f"/dev/sda1 / ext4 rw 0 0\ntmpfs {runtime} tmpfs rw 0 0\n"
    assert memory_folder({"XDG_RUNTIME_DIR": str(runtime)}, mounts) == str(runtime)
    on_disk = f"/dev/sda1 / ext4 rw 0 0\n/dev/sda2 {tmp_path} ext4 rw 0 0\n"
    found = memory_folder({"XDG_RUNTIME_DIR": str(runtime)}, on_disk)
    assert found != str(runtime)  # a folder on disk is never chosen
    assert memory_folder({}, "/dev/sda1 / ext4 rw 0 0\n") is None


def test_the_cli_configuration_holds_the_credentials_and_is_removed(tmp_path: Path):
    home = tmp_path / "home"
    plugins = home / ".docker" / "cli-plugins"
    plugins.mkdir(parents=True)
    auths = {"registry.example.org": {"username": "u", "password": "s3cret-value"}}
    with docker_config(auths, {"HOME": str(home)}, str(tmp_path)) as changed:
        folder = Path(changed["DOCKER_CONFIG"])
        config = folder / "config.json"
        assert oct(config.stat().st_mode & 0o777) == "0o600"
        assert oct(folder.stat().st_mode & 0o777) == "0o700"
        entry = json.loads(config.read_text())["auths"]["registry.example.org"]["auth"]
        assert base64.b64decode(entry) == b"u:s3cret-value"
        # the user's CLI plugins (buildx) and buildx state are still found
        assert os.readlink(folder / "cli-plugins") == str(plugins)
        assert changed["BUILDX_CONFIG"] == str(home / ".docker" / "buildx")
    assert not folder.exists()
