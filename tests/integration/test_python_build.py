"""Real `pip install` steps in real builds, on a Debian + Python base made with mmdebstrap.

A tiny package is built into a wheel at test time by the base image's own pip (Debian's pip,
setuptools and wheel: offline, nothing from PyPI), then installed during envship's builds: from a
wheel folder in a v2 build context, and from a PEP 503 index served by the test to a venv that a
v1 environment's BaseDockerfile creates.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import json
import secrets
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import docker
import docker.errors
import pytest

from tests.support.envship import Envship
from tests.support.infra import Registry, need

PACKAGE = "demo-greeter"
MODULE = "demo_greeter"
VERSION = "0.1.0"
PYPROJECT = (
    "[build-system]\n"
    'requires = ["setuptools"]\n'
    'build-backend = "setuptools.build_meta"\n\n'
    "[project]\n"
    f'name = "{PACKAGE}"\n'
    f'version = "{VERSION}"\n\n'
    "[tool.setuptools]\n"
    f'packages = ["{MODULE}"]\n'
)
IMPORT_CHECK = f"import sys, {MODULE}; print({MODULE}.greet()); print(sys.executable)"


@dataclass(frozen=True)
class Wheel:
    file_name: str
    data: bytes
    greeting: str
    """What `greet()` returns: unique per test session, so the engine's build cache cannot
    answer for a pip step and a passing import proves this session's install."""


def tar_of(files: dict[str, bytes]) -> bytes:
    buffer = BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            archive.addfile(info, BytesIO(data))
    return buffer.getvalue()


def run_in(client: docker.DockerClient, image: str, command: list[str]) -> str:
    output = client.containers.run(image, command, remove=True, network_disabled=True)
    return bytes(output).decode()


@pytest.fixture(scope="session")
def demo_wheel(engine: docker.DockerClient, python_base: str) -> Wheel:
    """A wheel built now with `pip wheel` in the base image."""
    greeting = f"hello from {PACKAGE} {secrets.token_hex(6)}"
    source = {
        "pyproject.toml": PYPROJECT,
        f"{MODULE}/__init__.py": f'def greet() -> str:\n    return "{greeting}"\n',
    }
    command = [
        "python3",
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "--no-index",
        "--no-cache-dir",
        "--wheel-dir",
        "/out",
        "/src",
    ]
    # put_archive/get_archive rather than bind mounts: works with any engine, leaves no root files.
    container = engine.containers.create(python_base, command, network_disabled=True)
    try:
        container.put_archive("/", tar_of({f"src/{n}": t.encode() for n, t in source.items()}))
        container.start()
        status = container.wait(timeout=300)
        assert status["StatusCode"] == 0, container.logs().decode()
        stream, _stat = container.get_archive("/out")
        data = b"".join(stream)
    finally:
        container.remove(force=True)
    with tarfile.open(fileobj=BytesIO(data)) as archive:
        for member in archive.getmembers():
            if member.name.endswith(".whl"):
                extracted = archive.extractfile(member)
                assert extracted is not None
                return Wheel(Path(member.name).name, extracted.read(), greeting)
    raise AssertionError("pip wheel made no wheel")


def bridge_gateway(engine: docker.DockerClient, image: str) -> str:
    """The host's address as build containers on the default bridge see it."""
    script = (
        "import socket, struct\n"
        "for line in open('/proc/net/route').readlines()[1:]:\n"
        "    fields = line.split()\n"
        "    if fields[1] == '00000000':\n"
        "        print(socket.inet_ntoa(struct.pack('<L', int(fields[2], 16))))\n"
    )
    output = engine.containers.run(image, ["python3", "-c", script], remove=True)
    return bytes(output).decode().strip()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def package_index(folder: Path, host: str, wheel: Wheel) -> Iterator[str]:
    """A PEP 503 simple index holding the wheel, on `host`; yields its URL."""
    name, data = wheel.file_name, wheel.data
    project = folder / "simple" / PACKAGE
    project.mkdir(parents=True)
    (folder / "files").mkdir()
    (folder / "files" / name).write_bytes(data)
    sha256 = hashlib.sha256(data).hexdigest()
    (project / "index.html").write_text(
        f'<!DOCTYPE html><html><body><a href="../../files/{name}#sha256={sha256}">{name}</a>'
        "</body></html>\n"
    )
    try:
        server = http.server.ThreadingHTTPServer(
            (host, 0), lambda *a: QuietHandler(*a, directory=str(folder))
        )
    except OSError as exc:
        need(False, f"cannot serve a package index on the bridge gateway {host}: {exc}")
        raise
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}/simple/"
    finally:
        server.shutdown()
        server.server_close()


def write(folder: Path, files: dict[str, str | bytes]) -> Path:
    for name, content in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return folder


def image_labels(engine: docker.DockerClient, image: str) -> dict[str, str]:
    return dict(engine.api.inspect_image(image)["Config"]["Labels"] or {})


def target_digest_of(reference: str, engine: docker.DockerClient) -> str:
    """The registry digest of a base image the engine pushed."""
    repository = reference.rsplit(":", 1)[0]
    for repo_digest in engine.api.inspect_image(reference)["RepoDigests"]:
        name, _, digest = repo_digest.partition("@")
        if name == repository:
            return digest
    raise AssertionError(f"{reference} was not pushed")


def test_v2_build_context_pip_installs_a_wheel_from_the_context(
    envship: Envship,
    python_base: str,
    demo_wheel: Wheel,
    engine: docker.DockerClient,
    target: Registry,
    tmp_path: Path,
):
    wheel_name, wheel = demo_wheel.file_name, demo_wheel.data
    dockerfile = (
        f"FROM {python_base}\n"
        "COPY wheels/ /wheels/\n"
        "RUN python3 -m pip install --no-index --find-links /wheels "
        f"{PACKAGE} --break-system-packages\n"
        'CMD ["python3"]\n'
    )
    specs = write(
        tmp_path / "specs",
        {
            "py.yml": (
                "$schema: https://azuremlschemas.azureedge.net/latest/environment.schema.json\n"
                "name: py-wheel\nversion: 3\nbuild:\n  path: ctx\n"
            ),
            "ctx/Dockerfile": dockerfile,
            f"ctx/wheels/{wheel_name}": wheel,
        },
    )
    first = envship.sync(specs, "py1")
    assert first.result.returncode == 0, first.result.stdout + first.result.stderr
    assert first.actions() == {"py-wheel": "built"}
    assert f"Successfully installed {PACKAGE}-{VERSION}" in first.result.stderr

    item = first.items["py-wheel"]
    image = str(item["image"])
    output = run_in(engine, image, ["python3", "-c", IMPORT_CHECK]).splitlines()
    assert output == [demo_wheel.greeting, "/usr/bin/python3"]

    repository, tag = image.split("/", 1)[1].rsplit(":", 1)
    assert target.manifest_digest(repository, tag) == item["digest"]
    labels = target.labels(repository, tag)
    assert labels == image_labels(engine, image)  # the registry holds what was built
    assert labels["io.envship.hash"] == item["hash"]
    assert labels["io.envship.python.interpreter"] == "python"
    inputs = json.loads(labels["io.envship.inputs"])
    pushed_base = target_digest_of(python_base, engine)  # envship pinned the base it pulled
    assert inputs["base"] == {"dockerfile": "Dockerfile", "digests": {python_base: pushed_base}}
    assert [entry[0] for entry in inputs["context"]] == ["Dockerfile", f"wheels/{wheel_name}"]
    assert inputs["context"][1][2] == hashlib.sha256(wheel).hexdigest()

    second = envship.sync(specs, "py1")
    assert second.result.returncode == 0, second.result.stderr
    assert second.actions() == {"py-wheel": "up-to-date"}


def test_v1_user_managed_venv_gets_a_package_from_an_index(
    envship: Envship,
    python_base: str,
    demo_wheel: Wheel,
    engine: docker.DockerClient,
    target: Registry,
    tmp_path: Path,
):
    gateway = bridge_gateway(engine, python_base)
    with package_index(tmp_path / "index", gateway, demo_wheel) as index:
        base_dockerfile = (
            f"FROM {python_base}\n"
            "RUN python3 -m venv /opt/venv\n"
            "RUN /opt/venv/bin/python -m pip install --no-cache-dir --disable-pip-version-check "
            f"--index-url {index} --trusted-host {gateway} {PACKAGE}=={VERSION}\n"
            "ENV PATH=/opt/venv/bin:$PATH\n"
        )
        saved = {
            "name": "py-venv",
            "version": "2",
            "environmentVariables": {"DEMO_MODE": "venv $HOME stays literal"},
            "python": {
                "userManagedDependencies": True,
                "interpreterPath": "/opt/venv/bin/python",
                "condaDependenciesFile": None,
                "baseCondaEnvironment": None,
            },
            "docker": {
                "enabled": False,
                "baseImage": None,
                "platform": {"os": "Linux", "architecture": "amd64"},
            },
            "r": None,
        }
        specs = write(
            tmp_path / "specs",
            {
                "py-venv/azureml_environment.json": json.dumps(saved, indent=4),
                "py-venv/BaseDockerfile": base_dockerfile,
            },
        )
        run = envship.sync(specs, "py2")
    assert run.result.returncode == 0, run.result.stdout + run.result.stderr
    assert run.actions() == {"py-venv": "built"}
    assert f"Successfully installed {PACKAGE}-{VERSION}" in run.result.stderr

    item = run.items["py-venv"]
    image = str(item["image"])
    repository, tag = image.split("/", 1)[1].rsplit(":", 1)
    labels = target.labels(repository, tag)
    interpreter = labels["io.envship.python.interpreter"]
    assert interpreter == "/opt/venv/bin/python"
    assert labels["io.envship.hash"] == item["hash"]
    inputs = json.loads(labels["io.envship.inputs"])
    assert inputs["python"] == {"interpreter": "/opt/venv/bin/python", "mode": "user"}
    assert inputs["environment"] == {"DEMO_MODE": "venv $HOME stays literal"}
    assert inputs["base"]["digests"] == {python_base: target_digest_of(python_base, engine)}

    # The interpreter the label names has the package; `python` on PATH is that interpreter;
    # the system Python does not see the venv's packages.
    expected = [demo_wheel.greeting, interpreter]
    assert run_in(engine, image, [interpreter, "-c", IMPORT_CHECK]).splitlines() == expected
    assert run_in(engine, image, ["python", "-c", IMPORT_CHECK]).splitlines() == expected
    with pytest.raises(docker.errors.ContainerError):
        run_in(engine, image, ["/usr/bin/python3", "-c", f"import {MODULE}"])
    mode = run_in(engine, image, [interpreter, "-c", "import os; print(os.environ['DEMO_MODE'])"])
    assert mode.strip() == "venv $HOME stays literal"
