"""BuildKit through the docker CLI, without an engine: which CLI is chosen, the arguments and
environment a build gets, where secrets go, and how failures map to envship's errors."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from controller.adapters.builder import (
    BuildError,
    EngineError,
    NeedsBuildKit,
    PullError,
    refuse_buildkit_features,
)
from controller.adapters.buildkit import (
    Cli,
    Probe,
    build_command,
    candidates,
    child_environment,
    choose,
    failure_of,
    find_cli,
    probe,
    reason_of,
    secret_descriptors,
)
from controller.core.dockerfile import run_mounts
from controller.core.model import ContextFile
from controller.core.render import Rendered

BUILDX = Cli("/opt/a/docker", "28.2.2", "buildx")
BUILTIN = Cli("/opt/b/docker", "20.10.24+dfsg1", "builtin")


def fake_docker(folder: Path, version: str, *, buildx: bool, server: bool = True) -> Path:
    """A stand-in docker CLI answering `version --format {{json .}}` and `buildx version`."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "docker"
    server_json = '{"ApiVersion":"1.41","Os":"linux"}' if server else "null"
    path.write_text(
        "#!/bin/sh\n"
        'case "$1" in\n'
        f'  version) echo \'{{"Client":{{"Version":"{version}"}},"Server":{server_json}}}\''
        + ("" if server else "; echo 'Cannot connect to the Docker daemon' >&2; exit 1")
        + ";;\n"
        + (
            "  buildx) echo 'github.com/docker/buildx v0.20.1';;\n"
            if buildx
            else "  buildx) echo 'docker: unknown command: docker buildx' >&2; exit 1;;\n"
        )
        + "esac\n"
    )
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def path_of(*folders: Path) -> dict[str, str]:
    return {"PATH": os.pathsep.join(str(f) for f in folders)}


# -- which CLI ---------------------------------------------------------------------------------


def test_a_new_cli_without_buildx_is_passed_over_for_one_with_buildkit_built_in(tmp_path: Path):
    new = fake_docker(tmp_path / "new", "28.2.2", buildx=False)
    old = fake_docker(tmp_path / "old", "20.10.24+dfsg1", buildx=False)
    cli, seen = find_cli(path_of(new.parent, old.parent))
    assert cli == Cli(str(old), "20.10.24+dfsg1", "builtin")
    assert seen.server_api == "1.41"


def test_buildx_anywhere_on_path_wins_over_built_in(tmp_path: Path):
    old = fake_docker(tmp_path / "old", "20.10.24", buildx=False)
    new = fake_docker(tmp_path / "new", "27.5.1", buildx=True)
    cli, _ = find_cli(path_of(old.parent, new.parent))
    assert cli == Cli(str(new), "27.5.1", "buildx")


def test_the_same_file_twice_on_path_is_probed_once(tmp_path: Path):
    real = fake_docker(tmp_path / "real", "20.10.24", buildx=False)
    (tmp_path / "link").mkdir()
    (tmp_path / "link" / "docker").symlink_to(real)
    assert candidates(os.pathsep.join([str(real.parent), str(tmp_path / "link")])) == [str(real)]


def test_no_cli_with_buildkit_says_what_is_missing_and_what_to_install(tmp_path: Path):
    new = fake_docker(tmp_path / "new", "28.2.2", buildx=False)
    ancient = fake_docker(tmp_path / "ancient", "18.06.3", buildx=False)
    with pytest.raises(EngineError) as caught:
        find_cli(path_of(new.parent, ancient.parent))
    message = str(caught.value)
    assert f"{new} 28.2.2 has no buildx plugin" in message
    assert "from 23.0 on the docker CLI builds with BuildKit only through buildx" in message
    assert f"{ancient} 18.06.3 predates BuildKit" in message
    assert "apt-get install docker-buildx" in message
    assert "docker.io" in message
    assert "--docker-cli" in message


def test_no_cli_at_all(tmp_path: Path):
    with pytest.raises(EngineError, match="no docker CLI on PATH"):
        find_cli(path_of(tmp_path))


def test_an_explicit_cli_is_the_only_one_tried(tmp_path: Path):
    good = fake_docker(tmp_path / "good", "20.10.24", buildx=False)
    new = fake_docker(tmp_path / "new", "28.2.2", buildx=False)
    with pytest.raises(EngineError, match="has no buildx plugin"):
        find_cli(path_of(good.parent), str(new))
    with pytest.raises(EngineError, match="is not there"):
        find_cli(path_of(good.parent), str(tmp_path / "missing" / "docker"))
    cli, _ = find_cli(path_of(new.parent, good.parent), str(good))
    assert cli.path == str(good)


def test_a_cli_that_does_not_reach_the_engine_says_so(tmp_path: Path):
    cli = fake_docker(tmp_path / "x", "20.10.24", buildx=False, server=False)
    seen = probe(str(cli), path_of(cli.parent))
    assert seen.server_api is None
    assert "Cannot connect to the Docker daemon" in seen.engine


@pytest.mark.parametrize(
    ("version", "buildx", "mode"),
    [
        ("18.09.0", False, "builtin"),
        ("22.06.0-beta.0", False, "builtin"),
        ("23.0.0", False, None),
        ("18.06.1-ce", False, None),
        ("18.06.1-ce", True, "buildx"),
        ("28.2.2", True, "buildx"),
        ("garbage", False, None),
    ],
)
def test_what_each_version_can_do(version: str, buildx: bool, mode: str | None):
    assert Probe("/x/docker", version, buildx).mode() == mode
    chosen = choose([Probe("/x/docker", version, buildx)])
    assert (chosen.mode if chosen else None) == mode


def test_a_probe_that_cannot_run_is_not_a_cli():
    def run(argv: Sequence[str], env: Mapping[str, str]) -> tuple[int, str, str]:
        return 127, "", "FileNotFoundError"

    assert probe("/nowhere/docker", {}, run).version is None
    assert "does not run as a docker CLI" in probe("/nowhere/docker", {}, run).why_not()


# -- arguments and environment ---------------------------------------------------------------


def test_buildx_arguments():
    argv = build_command(
        BUILDX,
        dockerfile_path="sub/Dockerfile",
        tag="reg.example/p/env:abc",
        labels={"b": "2", "a": "1"},
        platform="linux/amd64",
        build_args=("VERSION",),
        secret_fds={"token": 7},
    )
    assert argv == [
        "/opt/a/docker", "buildx", "build", "--load", "--progress=plain",
        "-f", "sub/Dockerfile", "--tag", "reg.example/p/env:abc", "--platform", "linux/amd64",
        "--label", "a=1", "--label", "b=2",
        "--build-arg", "VERSION",
        "--secret", "id=token,src=/dev/fd/7",
        "-",
    ]  # fmt: skip


def test_built_in_arguments():
    argv = build_command(
        BUILTIN, dockerfile_path="Dockerfile", tag="t:1", labels={}, platform="linux/arm64"
    )
    assert argv == [
        "/opt/b/docker", "build", "--progress=plain", "-f", "Dockerfile", "--tag", "t:1",
        "--platform", "linux/arm64", "-",
    ]  # fmt: skip


def test_a_secret_id_cannot_smuggle_options():
    with pytest.raises(BuildError, match="no valid build secret id"):
        build_command(
            BUILDX, dockerfile_path="D", tag="t", labels={}, platform="p",
            secret_fds={"x,src=/etc/shadow": 3},
        )  # fmt: skip


def test_the_child_gets_a_short_environment_and_the_engine_docker_py_uses():
    source = {
        "PATH": "/bin",
        "HOME": "/home/u",
        "ENVSHIP_TEST_PASS": "canary-hidden",
        "AWS_SECRET_ACCESS_KEY": "x",
        "DOCKER_CONFIG": "/cfg",
        "DOCKER_CONTEXT": "elsewhere",
        "HTTPS_PROXY": "http://proxy:3128",
    }
    env = child_environment(source, "unix:///run/default.sock")
    assert env == {
        "PATH": "/bin",
        "HOME": "/home/u",
        "DOCKER_CONFIG": "/cfg",
        "HTTPS_PROXY": "http://proxy:3128",
        "DOCKER_HOST": "unix:///run/default.sock",
        "BUILDX_NO_DEFAULT_ATTESTATIONS": "1",
    }
    assert child_environment({"DOCKER_HOST": "tcp://e:2376"}, "unix://x")["DOCKER_HOST"] == (
        "tcp://e:2376"
    )


# -- secrets ---------------------------------------------------------------------------------


def test_secrets_are_sealed_memory_files_a_child_reads_as_often_as_it_likes():
    value = "canary-unit-" + os.urandom(8).hex()
    script = "import sys\nfor _ in range(3):\n    print(open(sys.argv[1]).read())\n"
    with secret_descriptors({"token": value}) as fds:
        fd = fds["token"]
        assert os.readlink(f"/proc/self/fd/{fd}").startswith("/memfd:")
        with pytest.raises(PermissionError):
            os.write(fd, b"more")  # sealed
        done = subprocess.run(
            [sys.executable, "-c", script, f"/dev/fd/{fd}"],
            pass_fds=(fd,),
            capture_output=True,
            text=True,
            check=True,
        )
        assert done.stdout.split() == [value] * 3
        # not inherited by a child it was not passed to
        other = subprocess.run(
            [sys.executable, "-c", script, f"/dev/fd/{fd}"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert other.returncode != 0
    with pytest.raises(OSError, match="Bad file descriptor"):
        os.fstat(fd)  # closed once the build is over


# -- failures --------------------------------------------------------------------------------


def test_a_failing_run_step_is_the_spec_s():
    builtin = [
        "#5 [2/2] RUN echo boom && exit 7",
        "#5 0.231 boom",
        "#5 ERROR: executor failed running [/bin/sh -c echo boom && exit 7]: exit code: 7",
        "------",
        "error: failed to solve: rpc error: code = Unknown desc = executor failed running "
        "[/bin/sh -c echo boom && exit 7]: exit code: 7",
    ]
    error = failure_of(1, builtin)
    assert isinstance(error, BuildError)
    assert str(error) == (
        "build failed: executor failed running [/bin/sh -c echo boom && exit 7]: exit code: 7"
    )
    buildx = [
        '#5 ERROR: process "/bin/sh -c exit 7" did not complete successfully: exit code: 7',
        'ERROR: failed to build: failed to solve: process "/bin/sh -c exit 7" did not complete '
        "successfully: exit code: 7",
    ]
    assert str(failure_of(1, buildx)) == (
        'build failed: process "/bin/sh -c exit 7" did not complete successfully: exit code: 7'
    )


def test_the_engine_and_the_pulls_are_not_the_spec_s():
    unreachable = [
        "Cannot connect to the Docker daemon at unix:///x. Is the docker daemon running?"
    ]
    assert isinstance(failure_of(1, unreachable), EngineError)
    assert isinstance(failure_of(-9, ["#1 building"]), EngineError)
    assert "signal 9" in str(failure_of(-9, []))
    pull = [
        "error: failed to solve: failed to resolve source metadata for reg/x:1: pull access denied"
    ]
    assert isinstance(failure_of(1, pull), PullError)


def test_a_reason_without_an_error_line_is_the_last_line():
    assert reason_of(["one", "two", ""]) == "two"
    assert reason_of([]) == "the docker CLI failed"


# -- the classic builder refuses what it cannot do --------------------------------------------


def rendered(dockerfile: str) -> Rendered:
    return Rendered("Dockerfile", dockerfile, (ContextFile("Dockerfile", dockerfile.encode()),))


def test_the_classic_builder_refuses_secrets_and_mounts():
    plain = rendered("FROM a\nRUN true\n")
    refuse_buildkit_features(plain, None)
    with pytest.raises(NeedsBuildKit, match=r"cannot pass build secrets \(token\)"):
        refuse_buildkit_features(plain, {"token": "value-never-shown"})
    mounted = rendered("FROM a\nRUN --mount=type=cache,target=/c \\\n  true\n")
    with pytest.raises(NeedsBuildKit) as caught:
        refuse_buildkit_features(mounted, None)
    assert str(caught.value) == (
        "Dockerfile line 2: RUN --mount (cache) needs BuildKit, which the classic builder is "
        "not; choose BuildKit (builds.builder: buildkit, or --builder buildkit)"
    )
    assert caught.value.policy.value == "operator must act"


def test_secret_mount_ids():
    text = (
        "FROM a\nRUN --mount=type=secret,id=tok --mount=type=cache,target=/c true\n"
        "RUN --mount=type=secret,target=/run/secrets/other true\nRUN --mount=target=/src true\n"
    )
    assert [(m.type, m.secret_id) for m in run_mounts(text)] == [
        ("secret", "tok"), ("cache", None), ("secret", "other"), ("bind", None),
    ]  # fmt: skip
