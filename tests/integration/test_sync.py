"""envship sync against a real Docker engine and real registries."""

from __future__ import annotations

import json
from pathlib import Path

import docker

from tests.support.canaries import secret_file
from tests.support.envship import Envship
from tests.support.infra import Registry, busybox_rootfs_tar, import_image, push


def write(folder: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return folder


def busybox_specs(folder: Path, base: str) -> Path:
    v1 = {
        "name": "saved-v1",
        "version": "7",
        "environmentVariables": {"GREETING": "hello $USER"},
        "python": {"userManagedDependencies": True, "interpreterPath": "/bin/sh"},
        "docker": {"baseImage": base, "platform": {"os": "Linux", "architecture": "amd64"}},
    }
    return write(
        folder,
        {
            "one/Dockerfile": f"FROM {base}\nRUN echo one > /one\n",
            "same/Dockerfile": f"FROM {base}\nRUN echo one > /one\n",
            "ctx/Dockerfile": f"FROM {base}\nCOPY data.txt /data.txt\n",
            "ctx/data.txt": "payload\n",
            "v1/azureml_environment.json": json.dumps(v1),
            "v2.yml": "name: from-v2\nbuild:\n  path: ctx\n",
        },
    )


def test_sync_builds_once_then_nothing_then_exactly_what_changed(
    envship: Envship, public_bases: Registry, target: Registry, tmp_path: Path
):
    base = f"{public_bases.host}/base/busybox:1"
    specs = busybox_specs(tmp_path / "specs", base)
    first = envship.sync(specs, "t1")
    assert first.result.returncode == 0, first.result.stderr
    assert first.actions() == {
        "one": "built",
        "same": "copied",
        "from-v2": "built",
        "saved-v1": "built",
    }
    items = first.items
    for name, item in items.items():
        repository, tag = str(item["image"]).split("/", 1)[1].rsplit(":", 1)
        assert target.manifest_digest(repository, tag) == item["digest"], name
        labels = target.labels(repository, tag)
        assert labels["io.envship.hash"] == item["hash"]
        assert str(item["hash"]).removeprefix("sha256:").startswith(tag)
        assert "org.opencontainers.image.created" in labels
        assert json.loads(labels["io.envship.inputs"])["scheme"] == "envship/2"

    second = envship.sync(specs, "t1")
    assert second.result.returncode == 0
    assert set(second.actions().values()) == {"up-to-date"}
    assert "plan: 4 environments, 0 to build, 0 to copy, 4 up to date" in second.result.stderr

    (specs / "ctx" / "data.txt").write_text("changed\n")
    third = envship.sync(specs, "t1")
    assert third.actions() == {
        "one": "up-to-date",
        "same": "up-to-date",
        "from-v2": "built",
        "saved-v1": "up-to-date",
    }


def test_hash_render_and_plan_give_the_hash_sync_builds(
    envship: Envship, public_bases: Registry, tmp_path: Path
):
    base = f"{public_bases.host}/base/busybox:1"
    specs = busybox_specs(tmp_path / "specs", base)
    synced = envship.sync(specs, "t-hash")
    assert synced.result.returncode == 0, synced.result.stderr
    planned = envship("plan", str(specs), "-o", "json")  # no registry: bases still pinned
    assert planned.returncode == 0, planned.stderr
    by_name = {item["name"]: item for item in json.loads(planned.stdout)}
    for name, item in synced.items.items():
        assert by_name[name]["hash"] == item["hash"], name
        hashed = envship("hash", name, "--path", str(specs))
        assert hashed.returncode == 0, hashed.stderr
        assert hashed.stdout.strip() == item["hash"]
        assert "not pinned" not in hashed.stderr
    rendered = envship("render", "one", "--path", str(specs))
    assert f"FROM {base}@sha256:" in rendered.stdout

    # unpinned, a hash is not sync's: said, and marked
    offline = envship("hash", "one", "--path", str(specs), "--no-resolve-base")
    assert offline.stdout.strip() != synced.items["one"]["hash"]
    table = envship("plan", str(specs), "--no-resolve-base")
    assert table.returncode == 0
    unreachable = write(tmp_path / "gone", {"x/Dockerfile": "FROM 127.0.0.1:9/nothing:1\n"})
    gone = envship("hash", "x", "--path", str(unreachable))
    assert gone.returncode == 0
    assert "note: base image 127.0.0.1:9/nothing:1 could not be resolved" in gone.stderr
    assert "a sync that can pin it gives another hash" in gone.stderr
    marked = envship("plan", str(unreachable))
    assert "* 1 hashed with base images not pinned to digests" in marked.stdout


def test_refused_and_failed_are_counted_apart(
    envship: Envship, public_bases: Registry, tmp_path: Path
):
    specs = write(
        tmp_path / "specs",
        {
            "ok/Dockerfile": f"FROM {public_bases.host}/base/busybox:1\n",
            "refused/Dockerfile": "RUN echo no base\n",
            "failed/Dockerfile": "FROM 127.0.0.1:9/unreachable:1\n",
        },
    )
    run = envship.sync(specs, "t-counts", "-o", "table")
    assert run.result.returncode == 1
    out = run.result.stdout
    assert "\n1 refused:\n  refused: refused/Dockerfile: has no FROM instruction" in out
    assert (
        "\n1 failed:\n  failed: base image 127.0.0.1:9/unreachable:1 could not be resolved" in out
    )


def test_environment_variables_reach_the_image_literally(
    envship: Envship, public_bases: Registry, engine: docker.DockerClient, tmp_path: Path
):
    base = f"{public_bases.host}/base/busybox:1"
    specs = busybox_specs(tmp_path / "specs", base)
    run = envship.sync(specs, "t2")
    assert run.result.returncode == 0, run.result.stderr
    image = str(run.items["saved-v1"]["image"])
    output = engine.containers.run(image, ["sh", "-c", "echo $GREETING"], remove=True)
    assert output.decode().strip() == "hello $USER"


def test_failures_stay_with_their_environment(
    envship: Envship, public_bases: Registry, target: Registry, tmp_path: Path
):
    base = f"{public_bases.host}/base/busybox:1"
    specs = write(
        tmp_path / "specs",
        {
            "good/Dockerfile": f"FROM {base}\nRUN echo good > /good\n",
            "failing-run/Dockerfile": f"FROM {base}\nRUN echo boom && exit 7\n",
            "missing-base/Dockerfile": f"FROM {public_bases.host}/base/nothing:1\n",
            "bad-spec/azureml_environment.json": "{broken",
        },
    )
    run = envship.sync(specs, "t3")
    assert run.result.returncode == 1
    items = run.items
    assert items["good"]["action"] == "built"
    assert items["failing-run"]["action"] == "failed"
    error = str(items["failing-run"]["error"])
    assert error.startswith("build failed: ")  # envship's words, then the build's reason
    assert "exit 7" in error
    # the build output is kept per environment
    assert any("boom" in line for line in items["failing-run"]["log_tail"])
    assert items["failing-run"]["next"] == "fix the spec"  # a RUN step fails the same way again
    assert items["missing-base"]["action"] == "failed"
    assert "base/nothing:1 does not exist" in str(items["missing-base"]["error"])
    assert items["missing-base"]["next"] == "retry later"  # the base may yet be pushed
    assert items["good"]["next"] is None
    assert items["bad-spec"]["action"] == "refused"  # the spec, not the moment, is wrong
    assert "invalid JSON" in str(items["bad-spec"]["error"])
    assert items["bad-spec"]["next"] == "fix the spec"
    assert target.tags("t3/failing-run") == []
    assert target.tags("t3/missing-base") == []


def test_private_base_image_needs_its_credentials_in_memory_only(
    envship: Envship, private_bases: Registry, tmp_path: Path
):
    base = f"{private_bases.host}/private/busybox:1"
    specs = write(
        tmp_path / "specs", {"private/Dockerfile": f"FROM {base}\nRUN cat /etc/base-marker\n"}
    )
    without = envship.sync(specs, "t4")
    assert without.actions() == {"private": "failed"}
    assert "could not be resolved" in str(without.items["private"]["error"])

    # the username from the environment, the password from a mounted secret file
    password_file = secret_file(tmp_path / "base-password", private_bases.password or "")
    env = envship.env(BASE_USER=private_bases.username or "")
    auth = f"{private_bases.host}=env:BASE_USER,file:{password_file}"
    # the classic builder prints a RUN step's output even when its engine has built it before
    run = envship.sync(specs, "t4", "--base-auth", auth, "--builder", "classic", env=env)
    assert run.result.returncode == 0, run.result.stdout + run.result.stderr
    assert run.actions() == {"private": "built"}
    assert "base-private" in run.result.stderr  # the RUN step printed the private base's marker
    # Credentials never reach a file: no Docker config, nothing under HOME holds the password.
    assert not (envship.home / ".docker" / "config.json").exists()
    for path in envship.home.rglob("*"):
        if path.is_file():
            assert private_bases.password not in path.read_text(errors="replace")
    assert private_bases.password not in run.result.stdout + run.result.stderr


def test_a_moved_base_tag_rebuilds_exactly_the_environments_on_it(
    envship: Envship, public_bases: Registry, engine: docker.DockerClient, tmp_path: Path
):
    moving = f"{public_bases.host}/base/moving:1"
    import_image(engine, busybox_rootfs_tar("first"), moving)
    push(engine, moving, None)
    stable = f"{public_bases.host}/base/busybox:1"
    specs = write(
        tmp_path / "specs",
        {
            "on-moving/Dockerfile": f"FROM {moving}\nRUN cat /etc/base-marker\n",
            "on-stable/Dockerfile": f"FROM {stable}\nRUN cat /etc/base-marker\n",
        },
    )
    first = envship.sync(specs, "t5", "--builder", "classic")
    assert first.actions() == {"on-moving": "built", "on-stable": "built"}
    import_image(engine, busybox_rootfs_tar("second"), moving)
    push(engine, moving, None)
    second = envship.sync(specs, "t5", "--builder", "classic")
    assert second.actions() == {"on-moving": "built", "on-stable": "up-to-date"}
    assert "base-second" in second.result.stderr
    explain = envship("explain", "on-stable", "--path", str(specs), *envship.target_args("t5"))
    assert "up to date" in explain.stdout


def test_moving_tags_follow_successful_pushes_only(
    envship: Envship, public_bases: Registry, target: Registry, tmp_path: Path
):
    base = f"{public_bases.host}/base/busybox:1"
    specs = write(tmp_path / "specs", {"app/Dockerfile": f"FROM {base}\nRUN echo 1 > /v\n"})
    first = envship.sync(specs, "t6", "--tag", "latest")
    digest = first.items["app"]["digest"]
    assert target.manifest_digest("t6/app", "latest") == digest
    (specs / "app" / "Dockerfile").write_text(f"FROM {base}\nRUN exit 1\n")
    failed = envship.sync(specs, "t6", "--tag", "latest")
    assert failed.actions() == {"app": "failed"}
    assert target.manifest_digest("t6/app", "latest") == digest


def test_explain_names_the_inputs_that_differ(
    envship: Envship, public_bases: Registry, tmp_path: Path
):
    base = f"{public_bases.host}/base/busybox:1"
    v1 = {
        "name": "explained",
        "python": {"userManagedDependencies": True},
        "environmentVariables": {"MODE": "a"},
        "docker": {"baseImage": base},
    }
    specs = write(tmp_path / "specs", {"e/azureml_environment.json": json.dumps(v1)})
    assert envship.sync(specs, "t7").actions() == {"explained": "built"}
    v1["environmentVariables"] = {"MODE": "b", "EXTRA": "1"}
    write(specs, {"e/azureml_environment.json": json.dumps(v1)})
    result = envship("explain", "explained", "--path", str(specs), *envship.target_args("t7"))
    assert result.returncode == 0, result.stderr
    assert "would be rebuilt" in result.stdout
    assert "environment.EXTRA: added 1" in result.stdout
    assert "environment.MODE: a -> b" in result.stdout
