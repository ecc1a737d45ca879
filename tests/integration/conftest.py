"""Session-wide real services for the integration tests (see tests/support/infra.py)."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import pytest

from tests.support.azure_cli import AzureCli
from tests.support.buildkit_cli import CLI_KINDS, use_cli
from tests.support.canaries import record_output
from tests.support.controller_process import Launcher
from tests.support.envship import Envship
from tests.support.identity import EntraIssuer
from tests.support.infra import (
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
from tests.support.python_base import PYTHON_VERSION, cached, python_image


@pytest.fixture(scope="session")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("infra")


@pytest.fixture(scope="session")
def engine(workdir: Path, certs: Certs) -> Iterator[docker.DockerClient]:
    with docker_engine(workdir, certs.ca_file) as client:
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


@pytest.fixture
def entra() -> EntraIssuer:
    """The tests' Entra ID, for the stand-ins of Azure services (ACR Tasks, Azure ML)."""
    return EntraIssuer()


@pytest.fixture
def az(tmp_path: Path, entra: EntraIssuer) -> AzureCli:
    """An Azure CLI whose tokens `entra` signs, for envship processes (AzureCliCredential)."""
    return AzureCli(tmp_path / "az", entra)


@pytest.fixture(params=CLI_KINDS)
def cli_kind(request: pytest.FixtureRequest, envship: Envship) -> str:
    """Run the test once per way the docker CLI builds with BuildKit (`CLI_KINDS`)."""
    return use_cli(envship, str(request.param))
