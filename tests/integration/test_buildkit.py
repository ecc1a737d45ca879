"""Builds with BuildKit through the docker CLI (`--builder buildkit`), against the real engine and
the real TLS + basic-auth registry: cache and secret mounts, a secret that reaches the RUN step
and nothing else, failures with envship's policies, and no usable CLI."""

from __future__ import annotations

import hashlib
import secrets
import stat
from pathlib import Path

import docker

from tests.support.canaries import canary
from tests.support.envship import Envship, Run
from tests.support.images import files_of, image_parts
from tests.support.infra import Registry

MOUNTS = """\
FROM {base}
RUN echo {run} > /run-marker
RUN --mount=type=cache,target=/var/cache/envship-test \\
    echo warm > /var/cache/envship-test/marker && ls /var/cache/envship-test
RUN --mount=type=secret,id=token sha256sum /run/secrets/token | cut -d' ' -f1 > /token.sha256
RUN --mount=type=secret,id=token wc -c < /run/secrets/token > /token.length \\
    && echo secret-read-twice
"""


def write(folder: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return folder


def secret_sync(
    envship: Envship, specs: Path, prefix: str, value: str, *extra: str
) -> tuple[Run, str]:
    env = envship.env(BUILD_TOKEN=value)
    run = envship.sync(specs, prefix, "--build-secret", "token=env:BUILD_TOKEN", *extra, env=env)
    return run, run.result.stdout + run.result.stderr


def test_cache_and_secret_mounts_build_and_push_and_the_secret_stays_out_of_the_image(
    envship: Envship, public_bases: Registry, target: Registry, tmp_path: Path, cli_kind: str
):
    prefix = f"bk1-{cli_kind}"
    base = f"{public_bases.host}/base/busybox:1"
    # A secret's value is in no cache key: a fresh marker keeps the engine's cache of an earlier
    # run (another secret) from answering for these steps.
    marker = secrets.token_hex(8)
    specs = write(tmp_path / "specs", {"mounts/Dockerfile": MOUNTS.format(base=base, run=marker)})
    value = canary("build-secret")
    run, output = secret_sync(envship, specs, prefix, value, "--builder", "buildkit")
    assert run.result.returncode == 0, output
    item = run.items["mounts"]
    assert item["action"] == "built", item
    repository, tag = str(item["image"]).split("/", 1)[1].rsplit(":", 1)
    assert target.manifest_digest(repository, tag) == item["digest"]
    assert target.labels(repository, tag)["io.envship.hash"] == item["hash"]
    assert "secret-read-twice" in output  # the build's plain progress streams through envship

    parts = image_parts(target, repository, tag)
    files = files_of(parts)
    # The RUN steps read the secret, both of them (each mount reads it afresh)...
    assert files["token.sha256"].decode().strip() == hashlib.sha256(value.encode()).hexdigest()
    assert int(files["token.length"].decode()) == len(value)
    assert "var/cache/envship-test/marker" not in files  # a cache mount is no layer
    # ...and the value is nowhere in the image, nor in what envship printed.
    leaks = [name for name, data in parts.items() if value.encode() in data]
    assert leaks == []
    assert value not in output

    again, _ = secret_sync(envship, specs, prefix, value, "--builder", "buildkit")
    assert again.actions() == {"mounts": "up-to-date"}


def test_the_classic_builder_refuses_mounts_with_envship_s_own_message(
    envship: Envship, public_bases: Registry, target: Registry, tmp_path: Path
):
    base = f"{public_bases.host}/base/busybox:1"
    specs = write(tmp_path / "specs", {"mounts/Dockerfile": MOUNTS.format(base=base, run="c")})
    run, _output = secret_sync(
        envship, specs, "bk2", canary("build-secret"), "--builder", "classic"
    )
    assert run.result.returncode == 1
    item = run.items["mounts"]
    assert item["action"] == "failed"
    assert str(item["error"]) == (
        "Dockerfile line 3: RUN --mount (cache, secret) needs BuildKit, which the classic "
        "builder is not; choose BuildKit (builds.builder: buildkit, or --builder buildkit)"
    )
    assert item["next"] == "operator must act"
    assert target.tags("bk2/mounts") == []


def test_a_failing_run_step_is_the_spec_s_with_its_output(
    envship: Envship, public_bases: Registry, target: Registry, tmp_path: Path, cli_kind: str
):
    prefix = f"bk3-{cli_kind}"
    base = f"{public_bases.host}/base/busybox:1"
    specs = write(
        tmp_path / "specs",
        {
            "good/Dockerfile": f"FROM {base}\nRUN echo good > /good\n",
            "failing/Dockerfile": f"FROM {base}\nRUN echo boom && exit 7\n",
            "missing/Dockerfile": f"FROM {base}\nCOPY not-there.txt /\n",
            "syntax/Dockerfile": f"FROM {base}\nRUN --mount=type=nonsense true\n",
        },
    )
    run = envship.sync(specs, prefix, "--builder", "buildkit")
    assert run.result.returncode == 1
    items = run.items
    assert items["good"]["action"] == "built"
    for name in ("failing", "missing", "syntax"):
        assert items[name]["action"] == "failed", name
        assert str(items[name]["error"]).startswith("build failed: "), items[name]
        assert items[name]["next"] == "fix the spec", name
        assert target.tags(f"{prefix}/{name}") == []
    assert "exit code: 7" in str(items["failing"]["error"])
    assert any("boom" in line for line in items["failing"]["log_tail"])  # type: ignore[union-attr]
    assert "not-there.txt" in str(items["missing"]["error"])
    assert "nonsense" in str(items["syntax"]["error"])


def test_no_cli_that_builds_with_buildkit_is_a_clear_error(
    envship: Envship, public_bases: Registry, tmp_path: Path, engine: docker.DockerClient
):
    """PATH holds only a docker CLI from 23.0 on without buildx (a stand-in that answers as
    one): envship says what is missing and what to install, and retries later."""
    folder = tmp_path / "bin"
    folder.mkdir()
    cli = folder / "docker"
    cli.write_text(
        "#!/bin/sh\n"
        'case "$1" in\n'
        '  version) echo \'{"Client":{"Version":"28.2.2"},"Server":{"ApiVersion":"1.41"}}\';;\n'
        '  *) echo "docker: unknown command: docker $1" >&2; exit 1;;\n'
        "esac\n"
    )
    cli.chmod(cli.stat().st_mode | stat.S_IXUSR)
    base = f"{public_bases.host}/base/busybox:1"
    specs = write(tmp_path / "specs", {"one/Dockerfile": f"FROM {base}\nRUN true\n"})
    run = envship.sync(specs, "bk4", "--builder", "buildkit", env=envship.env(PATH=str(folder)))
    assert run.result.returncode == 1, run.result.stderr
    item = run.items["one"]
    error = str(item["error"])
    assert error.startswith("no docker CLI can build with BuildKit: "), error
    assert f"{cli} 28.2.2 has no buildx plugin" in error
    assert "apt-get install docker-buildx" in error
    assert item["next"] == "retry later"

    named = envship.sync(specs, "bk4", "--builder", "buildkit", "--docker-cli", str(tmp_path / "x"))
    assert "the docker CLI " in str(named.items["one"]["error"])
    assert "is not there" in str(named.items["one"]["error"])
