"""Build with BuildKit through the docker CLI; pull, push and inspect as the classic builder.

docker-py cannot drive BuildKit, so the build itself runs the docker CLI against the same
engine docker-py talks to (DOCKER_HOST, else docker-py's default socket):

- `docker buildx build --load` when the CLI has the buildx plugin;
- else `docker build` with `DOCKER_BUILDKIT=1` when the CLI has BuildKit built in (Docker CLI
  18.09 to 22.x; from 23.0 on, a CLI builds with BuildKit only through buildx).

Which CLI: the one named (`--docker-cli`, `builds.dockerCli`), else the first `docker` on PATH
with buildx, else the first with BuildKit built in. The build context is envship's
deterministic tar, sent on standard input (`... -`), the Dockerfile named inside it.

What never reaches the CLI's arguments: secrets, and build argument values (they go in the
child's environment, `--build-arg NAME` naming them). The child's environment is a short list
(PATH, HOME, proxies, DOCKER_*, BUILDX_*), not envship's own, which may hold `env:` secrets.
Build secrets are anonymous in-memory files (memfd), sealed, inherited by the child alone and
named `--secret id=ID,src=/dev/fd/N`; the CLI reads that path each time a RUN step mounts the
secret (a pipe would be empty on the second read), and nothing is written to disk.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from controller.adapters.builder import (
    BuildError,
    Built,
    DockerBuilder,
    EngineError,
    Log,
    PullError,
    context_tar,
)
from controller.core.errors import Misconfigured
from controller.core.render import Rendered

if TYPE_CHECKING:
    import docker

Mode = Literal["buildx", "builtin"]
CacheChoice = Literal["auto", "registry", "inline", "off"]
Exported = Literal["inline", "registry"]
BUILTIN_FROM = (18, 9)
BUILTIN_UNTIL = (23, 0)
"""Docker CLI versions with BuildKit built in (`DOCKER_BUILDKIT=1 docker build`)."""
MIN_API = (1, 39)
"""The engine API of Docker 18.09, the first engine with BuildKit."""
SECRET_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
INSTALL = (
    "install a docker CLI that builds with BuildKit: the buildx plugin (Debian 13 and later: "
    "apt-get install docker-buildx; Docker's own packages: docker-buildx-plugin), or a CLI with "
    "BuildKit built in (18.09 to 22.x, e.g. Debian 12's docker.io); or name one with "
    "--docker-cli / builds.dockerCli"
)
PASSED_ENV = frozenset(
    {"PATH", "HOME", "TMPDIR", "XDG_RUNTIME_DIR", "XDG_CONFIG_HOME", "LANG", "LC_ALL"}
    | {"HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy"}
)
"""What the child's environment takes from envship's, besides DOCKER_*, BUILDX_*, BUILDKIT_*."""
PASSED_PREFIXES = ("DOCKER_", "BUILDX_", "BUILDKIT_")


def version_tuple(text: str) -> tuple[int, int]:
    """`20.10.24+dfsg1` -> (20, 10); what cannot be read is (0, 0)."""
    match = re.match(r"^v?(\d+)\.(\d+)", text.strip())
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


@dataclass(frozen=True, slots=True)
class Cli:
    """A docker CLI that can build with BuildKit, and how."""

    path: str
    version: str
    mode: Mode
    driver: str | None = None
    """buildx's driver for the current builder (docker, docker-container, kubernetes, remote);
    None without buildx (the engine's own BuildKit)."""

    def __str__(self) -> str:
        how = (
            f"buildx, driver {self.driver or '?'}" if self.mode == "buildx" else "BuildKit built in"
        )
        return f"{self.path} ({self.version}, {how})"

    @property
    def exports_registry_cache(self) -> bool:
        """The docker driver (the engine's own BuildKit) exports inline cache only."""
        return self.mode == "buildx" and self.driver not in (None, "docker")


Run = Callable[[Sequence[str], Mapping[str, str]], tuple[int, str, str]]
"""Run a command with an environment: (exit code, standard output, standard error)."""


def run_quietly(argv: Sequence[str], env: Mapping[str, str]) -> tuple[int, str, str]:
    try:
        done = subprocess.run(
            list(argv),
            env=dict(env),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return 127, "", f"{type(exc).__name__}: {exc}"
    return done.returncode, done.stdout, done.stderr


def candidates(path: str | None = None) -> list[str]:
    """Every executable `docker` on PATH, in order, each real file once."""
    found: list[str] = []
    seen: set[str] = set()
    for folder in (path if path is not None else os.environ.get("PATH", "")).split(os.pathsep):
        if not folder:
            continue
        candidate = os.path.join(folder, "docker")
        if not (os.path.isfile(candidate) and os.access(candidate, os.X_OK)):
            continue
        real = os.path.realpath(candidate)
        if real not in seen:
            seen.add(real)
            found.append(candidate)
    return found


@dataclass(frozen=True, slots=True)
class Probe:
    """What one CLI can do: its version, whether it has buildx, and the engine's API version
    as it sees it (None: it did not reach the engine, `engine` says why)."""

    path: str
    version: str | None
    buildx: bool
    server_api: str | None = None
    engine: str = ""
    driver: str | None = None

    def mode(self) -> Mode | None:
        if self.buildx:
            return "buildx"
        if self.version and BUILTIN_FROM <= version_tuple(self.version) < BUILTIN_UNTIL:
            return "builtin"
        return None

    def why_not(self) -> str:
        if self.version is None:
            return f"{self.path} does not run as a docker CLI"
        if version_tuple(self.version) >= BUILTIN_UNTIL:
            return (
                f"{self.path} {self.version} has no buildx plugin (from 23.0 on the docker CLI "
                "builds with BuildKit only through buildx)"
            )
        return f"{self.path} {self.version} predates BuildKit (18.09) and has no buildx plugin"


def probe(path: str, env: Mapping[str, str], run: Run = run_quietly) -> Probe:
    code, out, err = run([path, "version", "--format", "{{json .}}"], env)
    try:
        data = json.loads(out.strip().splitlines()[0]) if out.strip() else None
    except (ValueError, IndexError):
        data = None
    if not isinstance(data, dict) or not isinstance(data.get("Client"), dict):
        return Probe(path, None, buildx=False)
    version = str(data["Client"].get("Version") or "")
    server = data.get("Server") if isinstance(data.get("Server"), dict) else None
    api = str(server.get("ApiVersion") or "") if server else None
    engine = "" if api else _first_line(err) or f"exit code {code}"
    buildx, _, _ = run([path, "buildx", "version"], env)
    driver = None
    if buildx == 0:
        _code, inspected, _err = run([path, "buildx", "inspect"], env)
        driver = next(
            (
                line.split(":", 1)[1].strip()
                for line in inspected.splitlines()
                if line.strip().startswith("Driver:")
            ),
            None,
        )
    return Probe(
        path, version, buildx=buildx == 0, server_api=api or None, engine=engine, driver=driver
    )


def choose(probes: Sequence[Probe]) -> Cli | None:
    """The first CLI with buildx, else the first with BuildKit built in."""
    for wanted in ("buildx", "builtin"):
        for found in probes:
            if found.mode() == wanted and found.version is not None:
                return Cli(found.path, found.version, wanted, found.driver)
    return None


def find_cli(
    env: Mapping[str, str], explicit: str | None = None, run: Run = run_quietly
) -> tuple[Cli, Probe]:
    """The CLI builds run with (see the module's docstring), and what it saw of the engine.
    Raises EngineError saying what is missing and what to install."""
    if explicit:
        path = explicit if os.sep in explicit else _which(explicit, env)
        if path is None or not os.path.isfile(path):
            raise EngineError(f"the docker CLI {explicit} is not there; {INSTALL}")
        probes = [probe(path, env, run)]
    else:
        paths = candidates(env.get("PATH", ""))
        if not paths:
            raise EngineError(f"no docker CLI on PATH; {INSTALL}")
        probes = [probe(path, env, run) for path in paths]
    chosen = choose(probes)
    if chosen is None:
        reasons = "; ".join(p.why_not() for p in probes)
        raise EngineError(f"no docker CLI can build with BuildKit: {reasons}; {INSTALL}")
    return chosen, next(p for p in probes if p.path == chosen.path)


def _which(name: str, env: Mapping[str, str]) -> str | None:
    for folder in env.get("PATH", "").split(os.pathsep):
        candidate = os.path.join(folder, name)
        if folder and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def child_environment(source: Mapping[str, str], docker_host: str) -> dict[str, str]:
    """The CLI's environment: the short list of what it needs, DOCKER_HOST always set (the
    engine docker-py talks to), default attestations off (an image loaded into the engine)."""
    env = {
        key: value
        for key, value in source.items()
        if key in PASSED_ENV or key.startswith(PASSED_PREFIXES)
    }
    env["DOCKER_HOST"] = source.get("DOCKER_HOST") or docker_host
    env.pop("DOCKER_CONTEXT", None)  # DOCKER_HOST names the engine; a context would hide it
    env["BUILDX_NO_DEFAULT_ATTESTATIONS"] = "1"
    return env


def build_command(
    cli: Cli,
    *,
    dockerfile_path: str,
    tag: str,
    labels: Mapping[str, str],
    platform: str,
    build_args: Sequence[str] = (),
    secret_fds: Mapping[str, int] | None = None,
    cache_from: Sequence[str] = (),
    cache_to: Sequence[str] = (),
) -> list[str]:
    """The CLI's arguments for one build, the context on standard input. Build arguments are
    named only (`--build-arg NAME`: the CLI takes the value from its environment)."""
    argv = [cli.path, "buildx", "build", "--load"] if cli.mode == "buildx" else [cli.path, "build"]
    argv += ["--progress=plain", "-f", dockerfile_path, "--tag", tag, "--platform", platform]
    for key, value in sorted(labels.items()):
        argv += ["--label", f"{key}={value}"]
    for name in sorted(build_args):
        argv += ["--build-arg", name]
    for secret_id, fd in sorted((secret_fds or {}).items()):
        if not SECRET_ID.match(secret_id):
            raise BuildError(f"build failed: {secret_id!r} is no valid build secret id")
        argv += ["--secret", f"id={secret_id},src=/dev/fd/{fd}"]
    for source in cache_from:
        argv += ["--cache-from", source]
    for destination in cache_to:
        argv += ["--cache-to", destination]
    argv.append("-")
    return argv


class CacheUnsupported(Misconfigured):
    """The cache mode asked for cannot be done by this CLI and builder: the operator must act."""


def cache_kind(cli: Cli, choice: CacheChoice) -> Exported | None:
    """How builds keep their cache in the registry with this CLI: `auto` is the registry cache
    where buildx's driver exports it, else inline cache (in the image's config)."""
    if choice == "off":
        return None
    if choice == "registry" and not cli.exports_registry_cache:
        raise CacheUnsupported(
            f"builds.cache registry needs buildx with a driver that exports cache "
            f"(docker-container, kubernetes or remote), and {cli} has none; use inline or auto"
        )
    if choice == "auto":
        return "registry" if cli.exports_registry_cache else "inline"
    return choice


def cache_arguments(
    cli: Cli, kind: Exported, ref: str
) -> tuple[list[str], list[str], dict[str, str]]:
    """`--cache-from` and `--cache-to` values, and build arguments, that import the cache
    from `ref` and export it (inline: into the image, which envship then tags `ref`)."""
    if cli.mode == "builtin":
        # the engine's BuildKit: `--cache-from IMAGE`, inline export by a build argument
        return [ref], [], {"BUILDKIT_INLINE_CACHE": "1"}
    source = [f"type=registry,ref={ref}"]
    if kind == "registry":
        return source, [f"type=registry,ref={ref},mode=max"], {}
    return source, ["type=inline"], {}


MEMORY_FILESYSTEMS = frozenset({"tmpfs", "ramfs"})


def memory_folder(env: Mapping[str, str], mounts: str | None = None) -> str | None:
    """A writable folder held in memory (XDG_RUNTIME_DIR, else /dev/shm), for the docker CLI's
    registry credentials: never on disk. None when there is none."""
    if mounts is None:
        try:
            with open("/proc/self/mounts", encoding="utf-8") as handle:
                mounts = handle.read()
        except OSError:
            return None
    points = {}
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) >= 3:
            points[fields[1].replace("\\040", " ")] = fields[2]
    # a private folder is made inside (mkdtemp, 0700): a shared tmpfs is fine
    for folder in (env.get("XDG_RUNTIME_DIR", ""), "/dev/shm"):  # noqa: S108
        if not folder or not os.path.isdir(folder) or not os.access(folder, os.W_OK | os.X_OK):
            continue
        real = os.path.realpath(folder)
        holder = max(
            (p for p in points if real == p or real.startswith(p.rstrip("/") + "/")),
            key=len,
            default=None,
        )
        if holder is not None and points[holder] in MEMORY_FILESYSTEMS:
            return real
    return None


@contextlib.contextmanager
def docker_config(
    auths: Mapping[str, Mapping[str, str]], env: Mapping[str, str], folder: str
) -> Iterator[dict[str, str]]:
    """A docker CLI configuration holding only `auths` (host -> username, password), in a
    private folder under `folder` (in memory), removed on exit: the environment to run the CLI
    with. The user's buildx state and CLI plugins stay where they are."""
    import base64  # noqa: PLC0415 - only builds that need registry credentials
    import shutil  # noqa: PLC0415
    import tempfile  # noqa: PLC0415

    original = env.get("DOCKER_CONFIG") or os.path.join(env.get("HOME", "/"), ".docker")
    private = tempfile.mkdtemp(prefix="envship-docker-", dir=folder)
    try:
        entries = {
            host: {
                "auth": base64.b64encode(
                    f"{auth.get('username', '')}:{auth.get('password', '')}".encode()
                ).decode()
            }
            for host, auth in auths.items()
        }
        fd = os.open(
            os.path.join(private, "config.json"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600
        )
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump({"auths": entries}, handle)
        plugins = os.path.join(original, "cli-plugins")
        if os.path.isdir(plugins):
            os.symlink(plugins, os.path.join(private, "cli-plugins"))
        changed = {"DOCKER_CONFIG": private}
        changed.setdefault(
            "BUILDX_CONFIG", env.get("BUILDX_CONFIG") or os.path.join(original, "buildx")
        )
        yield changed
    finally:
        shutil.rmtree(private, ignore_errors=True)


@contextlib.contextmanager
def secret_descriptors(secrets: Mapping[str, str] | None) -> Iterator[dict[str, int]]:
    """Each secret in an anonymous, sealed in-memory file (memfd): id -> descriptor, closed on
    exit. Nothing touches a file system; only the child the descriptors are passed to can open
    them (as /dev/fd/N), as often as it needs, from the start."""
    import fcntl  # noqa: PLC0415 - Linux only, and only builds with secrets need it

    descriptors: dict[str, int] = {}
    try:
        for secret_id, value in (secrets or {}).items():
            fd = os.memfd_create("envship-build-secret", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
            descriptors[secret_id] = fd
            data = memoryview(value.encode())
            while data:
                data = data[os.write(fd, data) :]
            seals = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals | fcntl.F_SEAL_WRITE)
        yield descriptors
    finally:
        for fd in descriptors.values():
            os.close(fd)


_ERROR = re.compile(r"^(?:error|ERROR)(?:\s*:|\s)\s*(.*)$")
_PREFIXES = (
    "failed to build: ",
    "failed to solve: ",
    "failed to solve with frontend dockerfile.v0: ",
    "rpc error: code = Unknown desc = ",
)
_UNREACHABLE = (
    "cannot connect to the docker daemon",
    "error during connect",
    "is the docker daemon running",
    "connection refused",
    "no such host",
    "failed to dial",
)
_PULL = (
    "failed to resolve source metadata",
    "pull access denied",
    "failed to authorize",
    "failed to fetch anonymous token",
    "failed to fetch oauth token",
)


def reason_of(lines: Sequence[str]) -> str:
    """The build's own words for why it failed: its last top-level error line, without the
    wrappers around the cause."""
    for line in reversed(lines):
        match = _ERROR.match(line.strip())
        if match:
            reason = match.group(1).strip()
            changed = True
            while changed:
                changed = False
                for prefix in _PREFIXES:
                    if reason.startswith(prefix):
                        reason, changed = reason[len(prefix) :], True
            return reason or line.strip()
    return _first_line("\n".join(reversed(lines))) or "the docker CLI failed"


def failure_of(code: int, lines: Sequence[str]) -> Exception:
    """A failed CLI run as envship's error: killed or engine unreachable -> EngineError, a base
    the engine could not pull -> PullError, anything else the build's -> BuildError."""
    if code < 0:
        return EngineError(f"the docker CLI was killed during the build (signal {-code})")
    reason = reason_of(lines)
    lowered = reason.lower()
    if any(mark in lowered for mark in _UNREACHABLE):
        return EngineError(f"the Docker engine failed during the build: {reason}")
    if any(mark in lowered for mark in _PULL):
        return PullError(f"a base image could not be pulled during the build: {reason}")
    return BuildError(f"build failed: {reason}")


class BuildKitBuilder(DockerBuilder):
    """The classic builder's pulls, pushes and inspections (docker-py); builds by BuildKit
    through the docker CLI (`docker_cli`: a path or name; None: chosen from PATH)."""

    buildkit = True

    def __init__(
        self,
        docker_cli: str | None = None,
        client: docker.DockerClient | None = None,
        *,
        cache: CacheChoice = "auto",
    ) -> None:
        super().__init__(client)
        self.docker_cli = docker_cli
        self.cache = cache
        self._cli: Cli | None = None
        self._lock = threading.Lock()
        self._said: set[str] = set()
        self._folder: str | None = None
        self._folder_known = False

    def environment(self) -> dict[str, str]:
        from docker.constants import DEFAULT_UNIX_SOCKET  # noqa: PLC0415 - see builder.py

        return child_environment(os.environ, DEFAULT_UNIX_SOCKET.replace("http+unix", "unix"))

    def cli(self) -> Cli:
        """The CLI builds run with, found once (`ping` says what is missing)."""
        with self._lock:
            if self._cli is None:
                self._cli, _seen = find_cli(self.environment(), self.docker_cli)
            return self._cli

    def ping(self) -> None:
        """The engine answers with an API that has BuildKit, and a docker CLI that builds with
        BuildKit reaches it: else an EngineError that says what is missing."""
        super().ping()
        version = self.api.version()
        api, system = str(version.get("ApiVersion") or ""), str(version.get("Os") or "linux")
        if version_tuple(api) < MIN_API or system != "linux":
            raise EngineError(
                f"the Docker engine ({version.get('Version', '?')}, API {api or '?'}, {system}) "
                "has no BuildKit: it needs a Linux engine of 18.09 or later (API 1.39); "
                "upgrade it, or use the classic builder (builds.builder: classic)"
            )
        with self._lock:
            cli, seen = find_cli(self.environment(), self.docker_cli)
            if seen.server_api is None:
                raise EngineError(
                    f"the docker CLI {cli.path} does not reach the Docker engine: {seen.engine}"
                )
            cache_kind(cli, self.cache)
            self._cli = cli

    def build(
        self,
        rendered: Rendered,
        *,
        tag: str,
        labels: Mapping[str, str],
        platform: str,
        log: Log,
        build_args: Mapping[str, str] | None = None,
        secrets: Mapping[str, str] | None = None,
        cache_ref: str | None = None,
        cache_import: bool = True,
        registry_auth: Mapping[str, Mapping[str, str]] | None = None,
    ) -> Built:
        """Build with BuildKit from envship's context; every output line goes to `log` as it
        comes. The cache is imported from and exported to `cache_ref` (see `cache_kind`);
        the CLI gets `registry_auth` in a configuration of its own, in memory. Failures: see
        `failure_of`."""
        cli = self.cli()
        env = self.environment()
        args = dict(build_args or {})
        clash = sorted(set(args) & set(env))
        if clash:
            raise BuildError(f"build failed: build arguments {', '.join(clash)} are reserved")
        kind = cache_kind(cli, self.cache) if cache_ref else None
        cache_from: list[str] = []
        cache_to: list[str] = []
        auths = {h: a for h, a in (registry_auth or {}).items() if a}
        folder = self._memory_folder(env) if auths else None
        if auths and folder is None:
            self._say_once(
                log,
                "no-memory-folder",
                "the docker CLI gets no registry credentials (there is no memory-backed folder "
                "for them: XDG_RUNTIME_DIR or /dev/shm), so this build imports no cache from "
                "the registry",
            )
            kind, auths = None, {}
        if kind is not None and cache_ref is not None:
            cache_from, cache_to, cache_args = cache_arguments(cli, kind, cache_ref)
            if not cache_import:  # nothing there yet: BuildKit would say so as an error
                cache_from = []
            args |= cache_args
        env |= args
        if cli.mode == "builtin":
            env["DOCKER_BUILDKIT"] = "1"
        context = context_tar(rendered)
        lines: list[str] = []
        with contextlib.ExitStack() as stack:
            if auths and folder is not None:
                env |= stack.enter_context(docker_config(auths, env, folder))
            fds = stack.enter_context(secret_descriptors(secrets))
            argv = build_command(
                cli,
                dockerfile_path=rendered.dockerfile_path,
                tag=tag,
                labels=labels,
                platform=platform,
                build_args=tuple(args),
                secret_fds=fds,
                cache_from=cache_from,
                cache_to=cache_to,
            )
            code = self._run(argv, env, context, tuple(fds.values()), lines, log)
        if code != 0:
            raise failure_of(code, lines)
        data = self._inspect(tag)
        if data is None:
            raise EngineError(f"the built image {tag} is missing from the engine")
        return Built(str(data["Id"]), "\n".join(lines), kind)

    def _memory_folder(self, env: Mapping[str, str]) -> str | None:
        """`memory_folder`, looked up once (the mounts do not change under a running envship)."""
        with self._lock:
            if not self._folder_known:
                self._folder, self._folder_known = memory_folder(env), True
            return self._folder

    def _say_once(self, log: Log, key: str, text: str) -> None:
        with self._lock:
            if key in self._said:
                return
            self._said.add(key)
        log(text)

    @staticmethod
    def _run(
        argv: Sequence[str],
        env: Mapping[str, str],
        context: bytes,
        fds: Sequence[int],
        lines: list[str],
        log: Log,
    ) -> int:
        """Run the CLI: the context written on its standard input while its output (standard
        error with it) is read line by line into `lines` and `log`."""
        try:
            child = subprocess.Popen(
                list(argv),
                env=dict(env),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                pass_fds=tuple(fds),
            )
        except OSError as exc:
            raise EngineError(f"the docker CLI {argv[0]} cannot run: {exc.strerror}") from None
        stdin, stdout = child.stdin, child.stdout
        if stdin is None or stdout is None:  # never: both are pipes
            raise EngineError("the docker CLI's pipes could not be opened")

        def feed() -> None:
            with contextlib.suppress(OSError):  # the CLI stopped reading: its output says why
                stdin.write(context)
            with contextlib.suppress(OSError):
                stdin.close()

        writer = threading.Thread(target=feed, name="buildkit-context", daemon=True)
        writer.start()
        try:
            for raw in stdout:
                line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                lines.append(line)
                log(line)
        finally:
            stdout.close()
            code = child.wait()
            writer.join(10)
        return code


__all__ = [
    "BuildKitBuilder",
    "CacheUnsupported",
    "Cli",
    "Probe",
    "build_command",
    "cache_arguments",
    "cache_kind",
    "candidates",
    "child_environment",
    "choose",
    "docker_config",
    "failure_of",
    "find_cli",
    "memory_folder",
    "probe",
    "reason_of",
    "secret_descriptors",
    "version_tuple",
]
