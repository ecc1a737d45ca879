"""The controller's own image (deploy/Dockerfile), built and run the way it is deployed.

The build is offline, as where the build containers cannot reach an index: the wheelhouse is
made on this host (`pip wheel`, whose cache keeps reruns quick), the build runs with no network
at all, on the Debian + Python base image the suite makes itself (python_base.py). The container
runs as a cluster would run it: read-only root filesystem, the image's non-root user, every
capability dropped, no-new-privileges, /tmp a tmpfs and the git cache a volume. The controller
fetches its specs from a git server on loopback over HTTP and over SSH (host networking).

Two images are built per module (wheelhouse about 10 s, each build about 35 s): the default one,
with envship's every extra (leader election), and one built with `EXTRAS=` (none); they and the
images of the builds' steps are removed at the end.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import re
import shutil
import subprocess
import sys
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
"""What the image may add to its base. Measured: 208 MB, the venv (the leader-election extra
121 MB of it: kubernetes, half of which is its asyncio twin `kubernetes.aio`, and what only it
needs)."""
CORE_ADDED_LIMIT = 150 * MB
"""The same without extras (`--build-arg EXTRAS=`). Measured: 87 MB."""
EXTRAS_SAVED = 100 * MB
"""What leaving the leader-election extra out saves at least. Measured: 121 MB."""
LOCKS = ("deploy/requirements.txt", "deploy/requirements-leader-election.txt")
"""What the image installs: envship's dependencies, and what its extra adds."""
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
        *LOCKS,
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
        *LOCKS,
        DOCKERFILE,
    }
    # and the repository's own context: every module of the package, nothing beside it
    sent = {path for path in context_paths(ROOT) if not (ROOT / path).is_dir()}
    modules = {str(path.relative_to(ROOT)) for path in (ROOT / "controller").rglob("*.py")}
    assert modules <= sent
    extra = sent - modules - {".dockerignore", "pyproject.toml", "README.md", DOCKERFILE}
    assert set(LOCKS) <= extra
    extra -= set(LOCKS)
    assert all(path.startswith(("controller/", "wheels/")) for path in extra), extra
    assert not any("__pycache__" in path for path in extra), extra


# -- the image ----------------------------------------------------------------------------------


@dataclass
class Image:
    tag: str
    attrs: dict[str, Any]
    base_size: int
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


def build(
    engine: docker.DockerClient,
    context: Path,
    tag: str,
    base: str,
    log: list[str],
    extras: str | None = None,
) -> None:
    """Build with the classic builder and no network; its output goes to `log`. `extras`: the
    EXTRAS build argument (None: the Dockerfile's default)."""
    buildargs = {"BASE_IMAGE": base} if extras is None else {"BASE_IMAGE": base, "EXTRAS": extras}
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
    engine: docker.DockerClient, context: Path, python_base: str, extras: str | None = None
) -> Iterator[Image]:
    tag = f"envship-test/controller:{uuid.uuid4().hex[:12]}"
    log: list[str] = []
    try:
        started = time.monotonic()
        build(engine, context, tag, python_base, log, extras)
        seconds = time.monotonic() - started
        attrs = engine.images.get(tag).attrs
        base_size = int(engine.images.get(python_base).attrs["Size"])
        print(f"\ndocker build (EXTRAS {extras!r}) {seconds:.1f} s")
        yield Image(tag, attrs, base_size, "".join(log), seconds)
    finally:
        remove_build(engine, tag, "".join(log))


@pytest.fixture(scope="module")
def image(engine: docker.DockerClient, python_base: str, context: Path) -> Iterator[Image]:
    """The image as deploy/Dockerfile builds it by default: with the leader-election extra."""
    with built(engine, context, python_base) as image:
        yield image


@pytest.fixture(scope="module")
def core_image(engine: docker.DockerClient, python_base: str, context: Path) -> Iterator[Image]:
    """The image built with `--build-arg EXTRAS=`: envship without its extras."""
    with built(engine, context, python_base, extras="") as image:
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


def test_the_image_is_offline_built_non_root_labelled_and_small(image: Image) -> None:
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
    added = image.size - image.base_size
    print(
        f"\nimage {image.size / MB:.0f} MB: base {image.base_size / MB:.0f} MB"
        f" + envship {added / MB:.0f} MB (limit {ADDED_LIMIT / MB:.0f} MB)"
    )
    assert added < ADDED_LIMIT


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
    added = core_image.size - core_image.base_size
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
    engine: docker.DockerClient, python_base: str, context: Path
) -> None:
    with pytest.raises(AssertionError) as refused, built(engine, context, python_base, "k8s"):
        pass
    assert "EXTRAS: each must be one of envship's extras: leader-election" in str(refused.value)


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
) -> Iterator[Running]:
    """`envship run` in the image with its default command, on the host's network (the test's
    git server and registry listen on loopback), `config` mounted where the command reads it."""
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
    """Probes answer, the first reconcile fetched `head` into the cache volume, `docker stop`
    ends the process cleanly within the grace period and nothing was written outside the
    volumes."""
    running.wait_until(lambda: running.get("/healthz").status_code == 200, 60, "/healthz")
    running.wait_until(lambda: running.get("/readyz").status_code == 200, 120, "/readyz")
    status = running.get("/status").json()
    assert status["revision"] == f"main@sha1:{head}", status
    assert not status.get("stale"), status

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
