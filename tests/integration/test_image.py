"""The controller's own image (deploy/Dockerfile), built and run the way it is deployed.

The build is offline, as where the build containers cannot reach an index: the wheelhouse is
made on this host (`pip wheel`, whose cache keeps reruns quick), the build runs with no network
at all, on the Debian + Python base image the suite makes itself (python_base.py). The docker
CLI comes from a stand-in for docker:28-cli (which cannot be pulled here) made from this
machine's own CLI, the one envship itself would pick, passed as DOCKER_CLI_IMAGE. The container
runs as a cluster would run it: read-only root filesystem, the image's non-root user, every
capability dropped, no-new-privileges, /tmp a tmpfs and the git cache a volume. The controller
fetches its specs from a git server on loopback over HTTP and over SSH (host networking), and
builds with BuildKit through the image's CLI against the engine's socket.

Two images are built per module (wheelhouse about 10 s, each build about 35 s): the default one,
with envship's every extra (leader election), and one built with `EXTRAS=` (none); they, the
images of the builds' steps and the stand-in CLI images are removed at the end.
"""

from __future__ import annotations

import contextlib
import getpass
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import tomllib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors
import docker.utils.build
import pytest
import requests
import yaml
from docker.models.containers import Container

from controller.adapters.builder import EngineError
from controller.adapters.buildkit import Cli, find_cli
from tests.support.canaries import record_output
from tests.support.gitserver import SSHD, GitHttpServer, SshServer
from tests.support.infra import Registry, free_port, need
from tests.support.paths import ROOT
from tests.support.python_base import PYTHON_VERSION
from tests.support.upstream import SshKeys, Upstream

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
VERSION = str(PYPROJECT["project"]["version"])
DOCKERFILE = "deploy/Dockerfile"
USER = "65532:65532"
CACHE = "/var/cache/envship"
HOME = "/home/envship"
MB = 1024 * 1024
ADDED_LIMIT = 280 * MB
"""What the image may add to its base besides the docker CLI (whose layers are measured apart,
see CLI_SLACK). Measured: 208 MB, the venv (the leader-election extra 121 MB of it: kubernetes,
half of which is its asyncio twin `kubernetes.aio`, and what only it needs)."""
CORE_ADDED_LIMIT = 150 * MB
"""The same without extras (`--build-arg EXTRAS=`). Measured: 87 MB."""
CLI_SLACK = 1 * MB
"""The docker CLI's layers hold the CLI and its buildx plugin, and nothing else: their size is
those files' size, plus at most this (tar headers, folders). Measured with the stand-in (Debian
12's CLI 20.10, no buildx): 43.5 MB, its files 43.5 MB. docker:28-cli's CLI and buildx weigh
about 100 MB (the CLI about 40 MB, buildx about 60 MB); its docker-compose plugin is left out."""
CLI = "/usr/local/bin/docker"
PLUGINS = "/usr/local/libexec/docker/cli-plugins"
DOCKER_CONFIG = "/tmp/.docker"
EXTRAS_SAVED = 100 * MB
"""What leaving the leader-election extra out saves at least. Measured: 121 MB."""
LOCKS = ("deploy/requirements.txt", "deploy/requirements-leader-election.txt")
"""What the image installs by default: envship's dependencies, and what its default extra adds."""
ALL_LOCKS = (*LOCKS, "deploy/requirements-azureml.txt")
"""Every lock the build context holds (the azureml extra's too: EXTRAS may name it)."""
GRACE = 2.0
"""intervals.grace: what `docker stop` may wait for before the exit."""
HARDENED: dict[str, Any] = {
    "read_only": True,
    "cap_drop": ["ALL"],
    "security_opt": ["no-new-privileges"],
    "tmpfs": {"/tmp": ""},
}


# -- the build context --------------------------------------------------------------------------


def dockerignore(root: Path) -> list[str]:
    """The patterns of `root/.dockerignore`, read as docker-py and the docker CLI read them."""
    lines = (root / ".dockerignore").read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def context_paths(root: Path) -> set[str]:
    """The files and folders under `root` that a build of deploy/Dockerfile is sent."""
    return set(docker.utils.build.exclude_paths(str(root), dockerignore(root), DOCKERFILE))


def copy_context(source: Path, target: Path) -> None:
    for relative in sorted(context_paths(source)):
        origin = source / relative
        if origin.is_dir():
            (target / relative).mkdir(parents=True, exist_ok=True)
        else:
            (target / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(origin, target / relative)


def make_wheelhouse(context: Path) -> None:
    """wheels/: the very files deploy/requirements.txt locks (wheels, and the source archive of
    a dependency published only so), hash-checked, so the build needs no index."""
    done = subprocess.run(
        [
            *(sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check"),
            *("--require-hashes", "--no-deps", "--dest", str(context / "wheels")),
            *(arg for lock in LOCKS for arg in ("-r", str(context / lock))),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert done.returncode == 0, f"pip wheel failed:\n{done.stdout[-2000:]}{done.stderr[-4000:]}"
    # What setuptools left in the project folder: not part of the context.
    shutil.rmtree(context / "build", ignore_errors=True)
    for egg_info in context.glob("*.egg-info"):
        shutil.rmtree(egg_info)


def test_the_build_context_holds_only_what_the_image_needs(tmp_path: Path) -> None:
    shutil.copy(ROOT / ".dockerignore", tmp_path / ".dockerignore")
    files = [
        "pyproject.toml",
        "README.md",
        "controller/__init__.py",
        "controller/core/model.py",
        "controller/__pycache__/cli.cpython-311.pyc",
        "controller/core/__pycache__/model.cpython-311.pyc",
        "wheels/pygit2-1.0-cp311-cp311-manylinux_2_28_x86_64.whl",
        "deploy/Dockerfile",
        "deploy/README.md",
        *ALL_LOCKS,
        "tests/unit/cli/test_cli.py",
        "docs/deploy.md",
        "helm/envship/Chart.yaml",
        "scripts/test",
        "bench/bench_plan.py",
        ".venv/bin/python",
        ".git/config",
        ".env",
        "build/lib/controller/cli/main.py",
        "envship.egg-info/PKG-INFO",
    ]
    for name in files:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    sent = {path for path in context_paths(tmp_path) if not (tmp_path / path).is_dir()}
    assert sent == {
        ".dockerignore",
        "pyproject.toml",
        "README.md",
        "controller/__init__.py",
        "controller/core/model.py",
        "wheels/pygit2-1.0-cp311-cp311-manylinux_2_28_x86_64.whl",
        *ALL_LOCKS,
        DOCKERFILE,
    }
    # and the repository's own context: every module of the package, nothing beside it
    sent = {path for path in context_paths(ROOT) if not (ROOT / path).is_dir()}
    modules = {str(path.relative_to(ROOT)) for path in (ROOT / "controller").rglob("*.py")}
    assert modules <= sent
    extra = sent - modules - {".dockerignore", "pyproject.toml", "README.md", DOCKERFILE}
    assert set(ALL_LOCKS) <= extra
    extra -= set(ALL_LOCKS)
    assert all(path.startswith(("controller/", "wheels/")) for path in extra), extra
    assert not any("__pycache__" in path for path in extra), extra


# -- the docker CLI -----------------------------------------------------------------------------

PLUGIN_FOLDERS = (
    "~/.docker/cli-plugins",
    "/usr/local/lib/docker/cli-plugins",
    "/usr/local/libexec/docker/cli-plugins",
    "/usr/lib/docker/cli-plugins",
    "/usr/libexec/docker/cli-plugins",
)
"""Where a docker CLI looks for its plugins (after $DOCKER_CONFIG/cli-plugins)."""
COMPOSE_STAND_IN = b"#!/bin/sh\necho 'a plugin the image leaves out' >&2\nexit 1\n"
REFUSED_CLI = b"""#!/bin/sh
# A docker CLI of 25.0 without buildx: it cannot build with BuildKit.
if [ "$1" = version ]; then
    echo '{"Client":{"Version":"25.0.0","ApiVersion":"1.44"},"Server":null}'
    echo 'Cannot connect to the Docker daemon' >&2
    exit 1
fi
echo "docker: unknown command: docker $1" >&2
exit 1
"""
"""The CLI of a DOCKER_CLI_IMAGE envship cannot build with."""


@dataclass
class CliImage:
    """A stand-in for docker:28-cli: the CLI at /usr/local/bin/docker, plugins beside it."""

    tag: str
    cli: Cli | None
    kept: int
    """The bytes of what deploy/Dockerfile keeps of it: the CLI and its buildx plugin."""


def buildx_plugin() -> Path | None:
    config = os.environ.get("DOCKER_CONFIG")
    folders = [*([f"{config}/cli-plugins"] if config else []), *PLUGIN_FOLDERS]
    for folder in folders:
        plugin = Path(folder).expanduser() / "docker-buildx"
        if plugin.is_file() and os.access(plugin, os.X_OK):
            return plugin
    return None


def add_file(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), 0o755
    archive.addfile(info, io.BytesIO(data))


def cli_image_tar(cli: bytes, buildx: Path | None) -> bytes:
    """A root filesystem as docker:28-cli lays it out; its docker-compose a stand-in too."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for folder in ("usr", "usr/local", "usr/local/bin", "usr/local/libexec"):
            info = tarfile.TarInfo(folder)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            archive.addfile(info)
        for folder in ("usr/local/libexec/docker", PLUGINS.lstrip("/")):
            info = tarfile.TarInfo(folder)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            archive.addfile(info)
        add_file(archive, CLI.lstrip("/"), cli)
        if buildx is not None:
            add_file(archive, f"{PLUGINS.lstrip('/')}/docker-buildx", buildx.read_bytes())
        add_file(archive, f"{PLUGINS.lstrip('/')}/docker-compose", COMPOSE_STAND_IN)
    return buffer.getvalue()


@contextlib.contextmanager
def cli_image(engine: docker.DockerClient, cli: Cli | None) -> Iterator[CliImage]:
    """`cli` (None: REFUSED_CLI) as a docker:28-cli stand-in, imported into the engine."""
    if cli is None:
        data, buildx = REFUSED_CLI, None
    else:
        data = Path(os.path.realpath(cli.path)).read_bytes()
        buildx = buildx_plugin() if cli.mode == "buildx" else None
        assert cli.mode == "builtin" or buildx is not None, f"where is the buildx of {cli}?"
    tag = f"envship-test/docker-cli:{uuid.uuid4().hex[:12]}"
    repository, version = tag.rsplit(":", 1)
    engine.api.import_image_from_data(
        cli_image_tar(data, buildx), repository=repository, tag=version
    )
    kept = len(data) + (buildx.stat().st_size if buildx is not None else 0)
    try:
        yield CliImage(tag, cli, kept)
    finally:
        with contextlib.suppress(docker.errors.APIError):
            engine.images.remove(tag, force=True)


@pytest.fixture(scope="module")
def docker_cli(engine: docker.DockerClient) -> Iterator[CliImage]:
    """This machine's docker CLI that envship would build with, as the image's DOCKER_CLI_IMAGE
    (a CLI linked against libc runs on the Debian base)."""
    try:
        cli, _seen = find_cli(os.environ)
    except EngineError as exc:
        need(False, f"no docker CLI here to put in the image: {exc}")
        raise
    print(f"\ndocker CLI for the image: {cli}")
    with cli_image(engine, cli) as image:
        yield image


# -- the image ----------------------------------------------------------------------------------


@dataclass
class Image:
    tag: str
    attrs: dict[str, Any]
    base_size: int
    cli_size: int
    """What the layers that copy the docker CLI and its plugins add."""
    log: str
    seconds: float

    @property
    def config(self) -> dict[str, Any]:
        return dict(self.attrs["Config"])

    @property
    def size(self) -> int:
        return int(self.attrs["Size"])


STEP = re.compile(r"^ ---> ([0-9a-f]{12})\s*$", re.MULTILINE)
"""The classic builder's line naming the image a step made (or found in its cache)."""
CLI_LAYER = re.compile(rf"\bCOPY .* in ({re.escape(CLI)}|{re.escape(PLUGINS)}/?)\s*$")
"""The history of the final stage's copies of the docker CLI and its plugins."""


def cli_size(engine: docker.DockerClient, tag: str) -> int:
    layers = [layer for layer in engine.api.history(tag) if CLI_LAYER.search(layer["CreatedBy"])]
    assert len(layers) == 2, engine.api.history(tag)
    return sum(int(layer["Size"]) for layer in layers)


def build(
    engine: docker.DockerClient,
    context: Path,
    tag: str,
    base: str,
    docker_cli: str,
    log: list[str],
    extras: str | None = None,
) -> None:
    """Build with the classic builder and no network; its output goes to `log`. `docker_cli`:
    the DOCKER_CLI_IMAGE build argument; `extras`: EXTRAS (None: the Dockerfile's default)."""
    buildargs = {"BASE_IMAGE": base, "DOCKER_CLI_IMAGE": docker_cli}
    if extras is not None:
        buildargs["EXTRAS"] = extras
    for item in engine.api.build(
        path=str(context),
        dockerfile=DOCKERFILE,
        tag=tag,
        buildargs=buildargs,
        network_mode="none",
        pull=False,
        rm=True,
        forcerm=True,
        decode=True,
    ):
        log.append(str(item.get("stream", "")))
        if "error" in item:
            tail = "".join(log)[-4000:]
            raise AssertionError(f"docker build failed: {item['error']}\n{tail}")


def remove_build(engine: docker.DockerClient, tag: str, log: str) -> None:
    """Remove the image and the untagged images of the steps: the build stage's are no parents
    of the image, so removing the image leaves them (a few hundred MB a run)."""
    with contextlib.suppress(docker.errors.APIError):
        engine.images.remove(tag, force=True)
    for step in reversed(STEP.findall(log)):
        with contextlib.suppress(docker.errors.APIError):
            if not engine.images.get(step).tags:  # never the base image, nor any tagged one
                engine.images.remove(step)


@pytest.fixture(scope="module")
def context(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The build context with its wheelhouse: the image is built offline."""
    host = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert host == PYTHON_VERSION, (
        f"the wheelhouse is made with this Python ({host}); the base image has {PYTHON_VERSION}"
    )
    context = tmp_path_factory.mktemp("image-context")
    copy_context(ROOT, context)
    started = time.monotonic()
    make_wheelhouse(context)
    print(f"\nwheelhouse {time.monotonic() - started:.1f} s")
    return context


@contextlib.contextmanager
def built(
    engine: docker.DockerClient,
    context: Path,
    python_base: str,
    docker_cli: CliImage,
    extras: str | None = None,
) -> Iterator[Image]:
    tag = f"envship-test/controller:{uuid.uuid4().hex[:12]}"
    log: list[str] = []
    try:
        started = time.monotonic()
        build(engine, context, tag, python_base, docker_cli.tag, log, extras)
        seconds = time.monotonic() - started
        attrs = engine.images.get(tag).attrs
        base_size = int(engine.images.get(python_base).attrs["Size"])
        print(f"\ndocker build (EXTRAS {extras!r}) {seconds:.1f} s")
        yield Image(tag, attrs, base_size, cli_size(engine, tag), "".join(log), seconds)
    finally:
        remove_build(engine, tag, "".join(log))


@pytest.fixture(scope="module")
def image(
    engine: docker.DockerClient, python_base: str, context: Path, docker_cli: CliImage
) -> Iterator[Image]:
    """The image as deploy/Dockerfile builds it by default: with the leader-election extra."""
    with built(engine, context, python_base, docker_cli) as image:
        yield image


@pytest.fixture(scope="module")
def core_image(
    engine: docker.DockerClient, python_base: str, context: Path, docker_cli: CliImage
) -> Iterator[Image]:
    """The image built with `--build-arg EXTRAS=`: envship without its extras."""
    with built(engine, context, python_base, docker_cli, extras="") as image:
        yield image


@pytest.fixture
def cache(engine: docker.DockerClient) -> Iterator[str]:
    """A new named volume for the git cache (it takes the ownership of the image's folder)."""
    volume = engine.volumes.create(f"envship-test-cache-{uuid.uuid4().hex[:12]}")
    try:
        yield str(volume.name)
    finally:
        with contextlib.suppress(docker.errors.APIError):
            volume.remove(force=True)


def run(
    engine: docker.DockerClient,
    image: Image,
    command: list[str],
    *,
    entrypoint: list[str] | None = None,
    volumes: dict[str, dict[str, str]] | None = None,
    **options: Any,
) -> tuple[int, str]:
    """Run a hardened container to its end: (exit code, stdout and stderr)."""
    container = engine.containers.create(
        image.tag, command, entrypoint=entrypoint, volumes=volumes or {}, **HARDENED, **options
    )
    try:
        container.start()
        code = int(container.wait(timeout=120)["StatusCode"])
        output = container.logs(stdout=True, stderr=True).decode(errors="replace")
        record_output(output)
        return code, output
    finally:
        container.remove(force=True)


def test_the_image_is_offline_built_non_root_labelled_and_small(
    image: Image, docker_cli: CliImage
) -> None:
    assert "installing from the wheelhouse only (no index)" in image.log
    config = image.config
    assert config["User"] == USER
    assert config["User"].split(":")[0] not in ("", "0", "root")
    assert config["Entrypoint"] == ["envship"]
    assert config["Cmd"] == ["run", "--config", "/etc/envship/config.yaml"]
    assert set(config["ExposedPorts"]) == {"8080/tcp"}
    assert set(config["Volumes"]) == {CACHE, "/tmp"}
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["HOME"] == HOME
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["PATH"].startswith("/opt/envship/bin:")
    labels = config["Labels"]
    assert labels["org.opencontainers.image.version"] == VERSION
    assert labels["org.opencontainers.image.licenses"] == "MIT"
    assert "org.opencontainers.image.source" in labels
    assert labels["io.envship.extras"] == "leader-election"
    assert env["DOCKER_CONFIG"] == DOCKER_CONFIG
    added = image.size - image.base_size - image.cli_size
    print(
        f"\nimage {image.size / MB:.0f} MB: base {image.base_size / MB:.0f} MB"
        f" + envship {added / MB:.0f} MB (limit {ADDED_LIMIT / MB:.0f} MB)"
        f" + docker CLI {image.cli_size / MB:.1f} MB (its files {docker_cli.kept / MB:.1f} MB)"
    )
    assert added < ADDED_LIMIT
    assert docker_cli.kept <= image.cli_size < docker_cli.kept + CLI_SLACK


LEADER_ELECTION_CONFIG = {
    "git": {"url": "https://git.example.org/specs.git"},
    "registry": {"url": "registry.example.org/ml"},
    "leaderElection": {"enabled": True, "namespace": "envship"},
}
"""Leader election on, outside a cluster: the client loads, then finds no credentials."""


def test_the_image_without_extras_is_smaller_and_says_what_leader_election_needs(
    engine: docker.DockerClient, image: Image, core_image: Image, tmp_path: Path
) -> None:
    saved = image.size - core_image.size
    added = core_image.size - core_image.base_size - core_image.cli_size
    print(
        f"\nimage without extras {core_image.size / MB:.0f} MB:"
        f" base {core_image.base_size / MB:.0f} MB + envship {added / MB:.0f} MB"
        f" (limit {CORE_ADDED_LIMIT / MB:.0f} MB);"
        f" the leader-election extra adds {saved / MB:.0f} MB"
    )
    assert "extras: none" in core_image.log
    assert "extras: leader-election" in image.log
    assert core_image.config["Labels"]["io.envship.extras"] == ""
    assert added < CORE_ADDED_LIMIT
    assert saved > EXTRAS_SAVED
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(LEADER_ELECTION_CONFIG))
    config.chmod(0o644)
    mounted = {str(config): {"bind": "/etc/envship/config.yaml", "mode": "ro"}}
    code, output = run(engine, image, [], volumes=mounted, user=USER)
    assert code == 2, output
    assert "envship: leader election: no Kubernetes credentials" in output
    code, output = run(engine, core_image, [], volumes=mounted, user=USER)
    assert code == 2, output
    assert "envship: leader election: needs the Kubernetes client" in output
    assert "pip install 'envship[leader-election]'" in output
    assert "Traceback" not in output


def test_an_unknown_extra_stops_the_build(
    engine: docker.DockerClient, python_base: str, context: Path, docker_cli: CliImage
) -> None:
    with (
        pytest.raises(AssertionError) as refused,
        built(engine, context, python_base, docker_cli, "k8s"),
    ):
        pass
    assert "EXTRAS: each must be one of envship's extras: azureml" in str(refused.value)
    assert "leader-election" in str(refused.value)


def test_a_docker_cli_that_cannot_build_with_buildkit_stops_the_build(
    engine: docker.DockerClient, python_base: str, context: Path
) -> None:
    with (
        cli_image(engine, None) as refused_cli,
        pytest.raises(AssertionError) as refused,
        built(engine, context, python_base, refused_cli),
    ):
        pass
    assert (
        "DOCKER_CLI_IMAGE: /opt/docker-cli/docker 25.0.0 has no buildx plugin (from 23.0 on the"
        " docker CLI builds with BuildKit only through buildx)"
    ) in str(refused.value)


def test_the_container_runs_read_only_as_its_user_without_capabilities(
    engine: docker.DockerClient, image: Image, cache: str
) -> None:
    script = """
        id -u; id -g
        touch /probe 2>/dev/null && echo "root: writable" || echo "root: read-only"
        touch "$HOME/probe" 2>/dev/null && echo "home: writable" || echo "home: read-only"
        touch /tmp/probe && echo "tmp: writable"
        mkdir /var/cache/envship/git && echo "cache: writable"
        grep -E '^(CapEff|CapPrm|NoNewPrivs):' /proc/self/status
        for path in /src /opt/envship/bin/pip /usr/bin/gcc /usr/bin/cc; do
            test -e "$path" && echo "present: $path"
        done
        true
    """
    # no user given: the image's own
    code, output = run(
        engine,
        image,
        ["-c", script],
        entrypoint=["sh"],
        volumes={cache: {"bind": CACHE, "mode": "rw"}},
    )
    assert code == 0, output
    lines = [line.split() for line in output.splitlines()]
    assert lines == [
        ["65532"],
        ["65532"],
        ["root:", "read-only"],
        ["home:", "read-only"],
        ["tmp:", "writable"],
        ["cache:", "writable"],
        ["CapPrm:", "0000000000000000"],
        ["CapEff:", "0000000000000000"],
        ["NoNewPrivs:", "1"],
    ], output


def test_envship_version_and_pygit2_with_ssh(engine: docker.DockerClient, image: Image) -> None:
    code, output = run(engine, image, ["--version"], user=USER)
    assert (code, output.strip()) == (0, f"envship, version {VERSION}")

    check = (
        "import json, pygit2; from pygit2.enums import Feature; "
        "print(json.dumps({'libgit2': pygit2.LIBGIT2_VERSION, 'features': repr(pygit2.features),"
        " 'ssh': bool(pygit2.features & Feature.SSH),"
        " 'https': bool(pygit2.features & Feature.HTTPS)}))"
    )
    code, output = run(engine, image, ["-c", check], entrypoint=["python3"], user=USER)
    assert code == 0, output
    print(f"\npygit2 in the image: {output.strip()}")
    found = json.loads(output)
    assert found["ssh"], found
    assert found["https"], found


def test_envship_in_the_image_finds_its_docker_cli(
    engine: docker.DockerClient, image: Image, docker_cli: CliImage
) -> None:
    assert docker_cli.cli is not None
    # as the image's own user, read-only: the CLI runs and says its version
    code, output = run(engine, image, ["--version"], entrypoint=[CLI])
    assert code == 0, output
    assert output.startswith(f"Docker version {docker_cli.cli.version}, "), output
    # envship's own choice, with the container's environment (no engine: only the CLI is asked)
    check = (
        "import json, os; from controller.adapters.buildkit import find_cli; "
        "cli, seen = find_cli(os.environ); "
        "print(json.dumps({'path': cli.path, 'version': cli.version, 'mode': cli.mode}))"
    )
    code, output = run(engine, image, ["-c", check], entrypoint=["/opt/envship/bin/python"])
    assert code == 0, output
    assert json.loads(output) == {
        "path": CLI,
        "version": docker_cli.cli.version,
        "mode": docker_cli.cli.mode,
    }, output
    code, output = run(engine, image, [PLUGINS], entrypoint=["ls", "-A"])
    assert code == 0, output
    kept = ["docker-buildx"] if docker_cli.cli.mode == "buildx" else []
    assert output.split() == kept, output  # the stand-in's docker-compose is left out
    assert f"docker CLI: /opt/docker-cli/docker ({docker_cli.cli.version}, " in image.log


# -- the controller -----------------------------------------------------------------------------


@dataclass
class Running:
    container: Container
    url: str

    def get(self, path: str) -> requests.Response:
        return requests.get(self.url + path, timeout=5)

    def logs(self) -> str:
        return bytes(self.container.logs(stdout=True, stderr=True)).decode(errors="replace")

    def wait_until(self, check: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.container.reload()
            if self.container.status != "running":
                raise AssertionError(f"the container stopped before {what}:\n{self.logs()}")
            with contextlib.suppress(requests.RequestException):
                if check():
                    return
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}:\n{self.logs()}")


@contextlib.contextmanager
def controller(
    engine: docker.DockerClient,
    image: Image,
    folder: Path,
    config: dict[str, Any],
    mounts: dict[str, dict[str, str]],
    **options: Any,
) -> Iterator[Running]:
    """`envship run` in the image with its default command, on the host's network (the test's
    git server and registry listen on loopback), `config` mounted where the command reads it;
    `options`: more of the container's (docker-py's names)."""
    port = free_port()
    config = {**config, "http": {"port": port}}
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o644)
    volumes = {**mounts, str(path): {"bind": "/etc/envship/config.yaml", "mode": "ro"}}
    container = engine.containers.run(
        image.tag,
        detach=True,
        network_mode="host",
        user=USER,
        volumes=volumes,
        **HARDENED,
        **options,
    )
    running = Running(container, f"http://127.0.0.1:{port}")
    try:
        yield running
    finally:
        record_output(running.logs())
        container.remove(force=True)


def settings(upstream_url: str, registry: Registry) -> dict[str, Any]:
    return {
        "git": {"url": upstream_url, "ref": "main"},
        "registry": {"url": f"{registry.host}/image-test", "plainHttp": [registry.host]},
        # only the first reconcile, at the start
        "intervals": {"reconcile": 3600, "resync": 7200, "grace": GRACE},
    }


def serves_and_stops(running: Running, head: str) -> None:
    serves(running, head)
    stops(running)


def serves(running: Running, head: str) -> dict[str, Any]:
    """Probes answer and the first reconcile fetched `head` into the cache volume: /status."""
    running.wait_until(lambda: running.get("/healthz").status_code == 200, 60, "/healthz")
    running.wait_until(lambda: running.get("/readyz").status_code == 200, 180, "/readyz")
    status: dict[str, Any] = running.get("/status").json()
    assert status["revision"] == f"main@sha1:{head}", status
    assert not status.get("stale"), status
    return status


def stops(running: Running) -> None:
    """`docker stop` ends the process cleanly within the grace period and nothing was written
    outside the volumes."""
    started = time.monotonic()
    running.container.stop(timeout=int(GRACE) + 20)
    seconds = time.monotonic() - started
    code = int(running.container.wait(timeout=30)["StatusCode"])
    logs = running.logs()
    print(f"\ndocker stop: exit code {code} after {seconds:.1f} s (grace {GRACE:.0f} s)")
    assert code == 0, logs
    assert seconds < GRACE + 5, f"docker stop took {seconds:.1f} s"
    assert "stopped" in logs, logs
    assert "Traceback" not in logs, logs
    # Docker makes the mount points of files and folders the image lacks (and shows their
    # folders changed); any other change would be a write outside the volumes.
    mounts = [Path(mount["Destination"]) for mount in running.container.attrs["Mounts"]]
    expected = {str(path) for mount in mounts for path in (mount, *mount.parents)}
    changes = [change["Path"] for change in running.container.diff() or []]
    assert set(changes) <= expected, changes


def test_the_controller_serves_its_probes_and_stops_cleanly(
    engine: docker.DockerClient,
    image: Image,
    cache: str,
    public_bases: Registry,
    tmp_path: Path,
) -> None:
    upstream = Upstream(tmp_path / "git" / "specs.git")
    head = str(upstream.commit({"README.md": "no environments yet\n"}))
    with GitHttpServer(tmp_path / "git") as server:
        config = settings(server.url("specs.git"), public_bases)
        volumes = {cache: {"bind": CACHE, "mode": "rw"}}
        with controller(engine, image, tmp_path, config, volumes) as running:
            serves_and_stops(running, head)


def test_the_controller_fetches_over_ssh_with_known_hosts_in_its_home(
    engine: docker.DockerClient,
    image: Image,
    cache: str,
    public_bases: Registry,
    tmp_path: Path,
) -> None:
    need(Path(SSHD).exists() and shutil.which("ssh-keygen") is not None, "no sshd / ssh-keygen")
    upstream = Upstream(tmp_path / "specs.git")
    head = str(upstream.commit({"README.md": "no environments yet\n"}))
    key, public = SshKeys(tmp_path / "keys").make("deploy")
    key.chmod(0o644)  # mounted read-only for uid 65532, as a Kubernetes Secret would be
    server = SshServer(tmp_path / "sshd", [public])
    server.start()
    try:
        known_hosts = tmp_path / "known_hosts"
        known_hosts.write_text(server.known_hosts)
        config = settings(f"ssh://127.0.0.1:{server.port}{upstream.path}", public_bases)
        config["git"]["sshKey"] = "file:/etc/envship/ssh/key"
        config["git"]["sshUser"] = getpass.getuser()  # sshd serves git as this host's user
        volumes = {
            cache: {"bind": CACHE, "mode": "rw"},
            str(key): {"bind": "/etc/envship/ssh/key", "mode": "ro"},
            str(known_hosts): {"bind": f"{HOME}/.ssh/known_hosts", "mode": "ro"},
        }
        with controller(engine, image, tmp_path, config, volumes) as running:
            serves_and_stops(running, head)
    finally:
        server.stop()


BUILDKIT_ONLY = """\
FROM {base}
RUN --mount=type=cache,target=/var/cache/envship-test \\
    echo {marker} > /marker && cp /marker /var/cache/envship-test/marker
"""
"""A step the classic builder refuses: built, it was built with BuildKit."""


def test_the_controller_builds_with_buildkit_through_the_image_s_docker_cli(
    engine: docker.DockerClient,
    image: Image,
    cache: str,
    public_bases: Registry,
    tmp_path: Path,
) -> None:
    host = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    need(host.startswith("unix://"), f"the engine is not on a local socket ({host})")
    socket = host.removeprefix("unix://")
    marker = uuid.uuid4().hex
    dockerfile = BUILDKIT_ONLY.format(base=f"{public_bases.host}/base/busybox:1", marker=marker)
    upstream = Upstream(tmp_path / "git" / "specs.git")
    head = str(upstream.commit({"cli/Dockerfile": dockerfile}))
    with GitHttpServer(tmp_path / "git") as server:
        config = settings(server.url("specs.git"), public_bases)
        config["builds"] = {"builder": "buildkit"}
        volumes = {
            cache: {"bind": CACHE, "mode": "rw"},
            # where docker-py's default /var/run/docker.sock leads (Debian: /var/run -> /run)
            socket: {"bind": "/run/docker.sock", "mode": "rw"},
        }
        group = str(os.stat(socket).st_gid)  # as `--group-add` in deploy/README.md
        with controller(engine, image, tmp_path, config, volumes, group_add=[group]) as running:
            status = serves(running, head)
            assert status["engine"] == {"usable": True, "error": None}, status
            (built_env,) = status["environments"]
            assert (built_env["name"], built_env["phase"]) == ("cli", "Ready"), built_env
            repository, tag = str(built_env["image"]).split("/", 1)[1].rsplit(":", 1)
            assert public_bases.manifest_digest(repository, tag) == built_env["digest"]
            # the CLI kept its state in DOCKER_CONFIG, on the /tmp volume
            code, listing = running.container.exec_run(["ls", "-A", DOCKER_CONFIG], user=USER)
            assert code == 0, listing
            assert listing.split(), listing
            stops(running)
