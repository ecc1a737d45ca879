"""Session-wide real services for the integration tests (see infra.py)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors
import pytest

from tests.canaries import record_output
from tests.integration.controller_process import Launcher
from tests.integration.infra import (
    Certs,
    Registry,
    busybox_rootfs_tar,
    docker_engine,
    import_image,
    make_certs,
    need,
    new_password,
    push,
)
from tests.integration.python_base import PYTHON_VERSION, cached, python_image

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("infra")


@pytest.fixture(scope="session")
def engine(workdir: Path) -> Iterator[docker.DockerClient]:
    with docker_engine(workdir) as client:
        yield client


@pytest.fixture(scope="session")
def certs(workdir: Path) -> Certs:
    return make_certs(workdir / "certs")


@pytest.fixture(scope="session")
def target(workdir: Path, certs: Certs) -> Iterator[Registry]:
    """The registry envship pushes to: TLS and basic auth."""
    registry = Registry(workdir / "target", certs, "envship", new_password()).start()
    yield registry
    registry.stop()


@pytest.fixture(scope="session")
def public_bases(workdir: Path, engine: docker.DockerClient) -> Iterator[Registry]:
    """An anonymous plain-HTTP registry on loopback holding base/busybox:1."""
    registry = Registry(workdir / "public").start()
    import_image(engine, busybox_rootfs_tar("public"), f"{registry.host}/base/busybox:1")
    push(engine, f"{registry.host}/base/busybox:1", None)
    yield registry
    registry.stop()


@pytest.fixture(scope="session")
def private_bases(workdir: Path, certs: Certs, engine: docker.DockerClient) -> Iterator[Registry]:
    """A TLS registry with basic auth holding a private base image."""
    registry = Registry(workdir / "private", certs, "puller", new_password()).start()
    reference = f"{registry.host}/private/busybox:1"
    import_image(engine, busybox_rootfs_tar("private"), reference)
    push(engine, reference, registry.auth())
    engine.api.remove_image(reference)
    yield registry
    registry.stop()


@pytest.fixture(scope="session")
def python_base(
    workdir: Path, engine: docker.DockerClient, public_bases: Registry
) -> Iterator[str]:
    """bookworm's Python pushed to the public base registry as base/python:3.11."""
    if cached(engine) is None:
        need(shutil.which("mmdebstrap") is not None, "mmdebstrap is not installed")
    local = python_image(engine, workdir / "python-base")
    reference = f"{public_bases.host}/base/python:{PYTHON_VERSION}"
    engine.api.tag(local, reference.rsplit(":", 1)[0], PYTHON_VERSION)
    push(engine, reference, None)
    yield reference
    # Only the tag goes (the registry it names is gone after the session); the cached image stays.
    with contextlib.suppress(docker.errors.APIError):
        engine.api.remove_image(reference, noprune=True)


@dataclass
class Run:
    result: subprocess.CompletedProcess[str]

    @property
    def items(self) -> dict[str, dict[str, object]]:
        return {item["name"]: item for item in json.loads(self.result.stdout)}

    def actions(self) -> dict[str, object]:
        return {name: item["action"] for name, item in self.items.items()}


@dataclass
class Envship:
    """Runs the envship command as a user would, with secrets only in environment variables."""

    home: Path
    target: Registry
    certs: Certs

    def env(self, **extra: str) -> dict[str, str]:
        env = {
            **os.environ,
            "HOME": str(self.home),
            "ENVSHIP_TEST_USER": self.target.username or "",
            "ENVSHIP_TEST_PASS": self.target.password or "",
        }
        env.update(extra)
        return env

    def target_args(self, prefix: str) -> list[str]:
        return [
            "--registry",
            f"{self.target.host}/{prefix}",
            "--ca-file",
            self.certs.ca_file,
            "--username",
            "env:ENVSHIP_TEST_USER",
            "--password",
            "env:ENVSHIP_TEST_PASS",
        ]

    def __call__(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "controller.cli", *args],
            capture_output=True,
            text=True,
            env=env or self.env(),
            cwd=ROOT,
            check=False,
            timeout=600,
        )
        record_output(result.stdout, result.stderr)
        return result

    def sync(self, specs: Path, prefix: str, *extra: str, env: dict[str, str] | None = None) -> Run:
        result = self("sync", str(specs), *self.target_args(prefix), "-o", "json", *extra, env=env)
        assert "Traceback" not in result.stderr, result.stderr
        return Run(result)


@pytest.fixture
def envship(tmp_path: Path, engine: docker.DockerClient, target: Registry, certs: Certs) -> Envship:
    home = tmp_path / "home"
    home.mkdir()
    return Envship(home, target, certs)


@pytest.fixture
def launch(
    tmp_path: Path,
    engine: object,
    target: Registry,
    public_bases: Registry,
    certs: Certs,
) -> Iterator[Launcher]:
    launcher = Launcher(tmp_path, target, certs, f"{public_bases.host}/base/busybox:1", [])
    try:
        yield launcher
    finally:
        for controller in launcher.started:
            if controller.process.poll() is None:
                controller.process.kill()
                controller.process.wait(10)
            record_output(*controller.output())
