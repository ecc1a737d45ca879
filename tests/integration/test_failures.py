"""Failures end with a clear error on the environments they touch; the rest completes, and no
tag is ever left pointing at content of another hash."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.envship import Envship, Run
from tests.support.faulty_proxy import FaultyProxy
from tests.support.helpers import write
from tests.support.infra import Certs, Registry, new_password


def specs_on(base: str, folder: Path) -> Path:
    return write(
        folder,
        {
            "alpha/Dockerfile": f"FROM {base}\nRUN echo alpha > /a\n",
            "beta/Dockerfile": f"FROM {base}\nRUN echo beta > /b\n",
        },
    )


def assert_tags_match_content(registry: Registry, repositories: list[str]) -> None:
    """Every hash tag in these repositories holds an image built from that hash."""
    for repository in repositories:
        for tag in registry.tags(repository):
            labels = registry.labels(repository, tag)
            if len(tag) == 32:
                assert labels["io.envship.hash"].removeprefix("sha256:").startswith(tag)


@pytest.fixture
def own_target(tmp_path: Path, certs: Certs) -> Iterator[Registry]:
    registry = Registry(tmp_path / "own", certs, "envship", new_password()).start()
    yield registry
    registry.stop()


def own_args(registry: Registry, certs: Certs, prefix: str) -> list[str]:
    return [
        "--registry", f"{registry.host}/{prefix}", "--ca-file", certs.ca_file,
        "--username", "env:OWN_USER", "--password", "env:OWN_PASS", "-o", "json",
    ]  # fmt: skip


def test_registry_down(
    envship: Envship, public_bases: Registry, own_target: Registry, tmp_path: Path
):
    specs = specs_on(f"{public_bases.host}/base/busybox:1", tmp_path / "specs")
    env = envship.env(OWN_USER="envship", OWN_PASS=own_target.password or "")
    own_target.stop()
    result = envship("sync", str(specs), *own_args(own_target, envship.certs, "down"), env=env)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    items = Run(result).items
    for name in ("alpha", "beta"):
        assert items[name]["action"] == "failed"
        assert "registry check failed" in str(items[name]["error"])
        assert "connection failed" in str(items[name]["error"])


def test_registry_refusing_auth(
    envship: Envship, public_bases: Registry, own_target: Registry, tmp_path: Path
):
    specs = specs_on(f"{public_bases.host}/base/busybox:1", tmp_path / "specs")
    wrong = "wrong-" + new_password()
    env = envship.env(OWN_USER="envship", OWN_PASS=wrong)
    result = envship("sync", str(specs), *own_args(own_target, envship.certs, "auth"), env=env)
    assert result.returncode == 1
    for item in Run(result).items.values():
        assert item["action"] == "failed"
        assert "refused" in str(item["error"])
    assert wrong not in result.stdout + result.stderr


def test_engine_unreachable_fails_builds_only(
    envship: Envship, public_bases: Registry, target: Registry, tmp_path: Path
):
    base = f"{public_bases.host}/base/busybox:1"
    specs = specs_on(base, tmp_path / "specs")
    assert envship.sync(specs, "engine").actions() == {"alpha": "built", "beta": "built"}
    write(specs, {"gamma/Dockerfile": f"FROM {base}\nRUN echo gamma > /g\n"})
    write(specs, {"alpha-twin/Dockerfile": f"FROM {base}\nRUN echo alpha > /a\n"})
    env = envship.env(DOCKER_HOST="unix:///nonexistent/docker.sock")
    run = envship.sync(specs, "engine", env=env)
    assert run.result.returncode == 1
    actions = run.actions()
    assert actions == {
        "alpha": "up-to-date",
        "alpha-twin": "copied",
        "beta": "up-to-date",
        "gamma": "failed",
    }
    assert "Docker engine is not reachable" in str(run.items["gamma"]["error"])
    assert target.tags("engine/gamma") == []
    assert_tags_match_content(target, ["engine/alpha", "engine/alpha-twin", "engine/beta"])


def test_push_rejected_leaves_no_tag(
    envship: Envship, public_bases: Registry, own_target: Registry, tmp_path: Path
):
    specs = specs_on(f"{public_bases.host}/base/busybox:1", tmp_path / "specs")
    env = envship.env(OWN_USER="envship", OWN_PASS=own_target.password or "")
    own_target.restart(readonly=True)
    result = envship("sync", str(specs), *own_args(own_target, envship.certs, "ro"), env=env)
    assert result.returncode == 1
    for item in Run(result).items.values():
        assert item["action"] == "failed"
        assert "push of" in str(item["error"])
    own_target.restart(readonly=False)
    assert own_target.tags("ro/alpha") == []
    assert own_target.tags("ro/beta") == []
    # the registry healthy again, the next sync converges
    again = envship("sync", str(specs), *own_args(own_target, envship.certs, "ro"), env=env)
    assert {i["action"] for i in Run(again).items.values()} == {"built"}
    assert_tags_match_content(own_target, ["ro/alpha", "ro/beta"])


def test_a_push_cut_midway_leaves_no_tag_and_the_next_sync_converges(
    envship: Envship, public_bases: Registry, target: Registry, certs: Certs, tmp_path: Path
):
    """The connection drops in the middle of the manifest upload (the layers are pushed by
    then): the environment fails with the push named, no tag appears, and the next sync builds
    it again and tags it."""
    specs = specs_on(f"{public_bases.host}/base/busybox:1", tmp_path / "specs")
    proxy = FaultyProxy(target, certs).start()
    try:
        proxy.cut_manifests(1)
        args = [
            "--registry", f"{proxy.host}/cut", "--ca-file", certs.ca_file,
            "--username", "env:ENVSHIP_TEST_USER", "--password", "env:ENVSHIP_TEST_PASS",
            "--jobs", "1", "-o", "json",
        ]  # fmt: skip
        first = envship("sync", str(specs), *args)
        assert first.returncode == 1, first.stderr
        outcomes = Run(first).actions()
        assert sorted(outcomes.values()) == ["built", "failed"], outcomes
        failed = next(name for name, action in outcomes.items() if action == "failed")
        error = str(Run(first).items[failed]["error"])
        assert "push of" in error, error
        assert proxy.count("cut") == 1
        assert target.tags(f"cut/{failed}") == []

        again = envship("sync", str(specs), *args)
        assert again.returncode == 0, again.stderr
        assert Run(again).actions() == {
            failed: "built",
            **{name: "up-to-date" for name in outcomes if name != failed},
        }
        assert_tags_match_content(target, ["cut/alpha", "cut/beta"])
        assert all(target.tags(f"cut/{name}") for name in outcomes)
    finally:
        proxy.stop()
