"""Curated environments (the azureml-assets layout) whose template files look values up: the
real registry's tag list and a real package index decide the image, and a moved tag or a new
release rebuilds exactly the environment that uses it.

The asset is the real `acpt-pytorch-2.2-cuda12.1` of Azure/azureml-assets (its asset.yaml,
environment.yaml and spec.yaml verbatim), with its base image's host pointed at a local
registry that holds realistic tags, and its requirements at packages of a local index.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from tests.support.envship import Envship
from tests.support.infra import Certs, Registry, busybox_rootfs_tar, import_image, push
from tests.support.paths import CASES
from tests.support.private_index import PrivateIndex

CORPUS = CASES / "corpus" / "repositories" / "azureml-assets"
ASSET = CORPUS / "assets/training/general/environments/acpt-pytorch-2.2-cuda12.1"
BASE = "aifx/acpt/stable-ubuntu2204-cu126-py310-torch280"
TAGS = ("biweekly.202509.1", "biweekly.202511.1", "biweekly.202511.2", "20251130.v1")
REGEX = "{{latest-image-tag:biweekly\\.\\d{6}\\.\\d{1}.*}}"


@pytest.fixture(scope="module")
def bases(public_bases: Registry, engine: docker.DockerClient) -> tuple[Registry, dict[str, str]]:
    """The base image under realistic tags, each its own image; `latest` is 20251130.v1."""
    digests = {}
    for tag in TAGS:
        reference = f"{public_bases.host}/{BASE}:{tag}"
        import_image(engine, busybox_rootfs_tar(tag), reference)
        digests[tag] = push(engine, reference, None)
    engine.api.tag(
        f"{public_bases.host}/{BASE}:20251130.v1", f"{public_bases.host}/{BASE}", "latest"
    )
    digests["latest"] = push(engine, f"{public_bases.host}/{BASE}:latest", None)
    return public_bases, digests


@pytest.fixture(scope="module")
def index(certs: Certs) -> Iterator[PrivateIndex]:
    server = PrivateIndex(certs)
    for version in ("1.59.0", "1.60.0", "1.61.0"):
        server.add("azureml-core", version, "")
    server.add("azureml-core", "1.62.0rc1", "")  # a pre-release: not taken without :pre
    server.add("azureml-core", "1.61.1", "", yanked=True)  # yanked: never taken
    server.add("azureml-mlflow", "1.61.0", "")
    server.start()
    yield server
    server.stop()


def curated(root: Path, registry: Registry, dockerfile_from: str, requirements: str) -> Path:
    """The real asset's files, its context's FROM and requirements given."""
    folder = root / "specs" / "acpt-pytorch-2.2-cuda12.1"
    (folder / "context").mkdir(parents=True)
    for name in ("asset.yaml", "environment.yaml", "spec.yaml"):
        (folder / name).write_bytes((ASSET / name).read_bytes())
    (folder / "context" / "Dockerfile").write_text(
        f"FROM {registry.host}/{BASE}:{dockerfile_from}\n"
        "COPY requirements.txt /requirements.txt\n"
        "RUN cat /requirements.txt\n"
    )
    (folder / "context" / "requirements.txt").write_text(requirements)
    return root / "specs"


def plan_json(envship: Envship, specs: Path, index: PrivateIndex, *extra: str) -> dict[str, object]:
    result = envship(
        "plan",
        str(specs),
        *envship.target_args("curated"),
        "--package-index",
        index.url,
        "-o",
        "json",
        *extra,
        env=envship.env(INDEX_USER=index.username, INDEX_PASS=index.password),
    )
    assert "Traceback" not in result.stderr, result.stderr
    return {
        "code": result.returncode,
        "items": json.loads(result.stdout or "[]"),
        "err": result.stderr,
    }


def test_the_real_assets_files_are_what_this_test_starts_from():
    assert "name: acpt-pytorch-2.2-cuda12.1" in (ASSET / "asset.yaml").read_text()
    assert "{{latest-image-tag:biweekly" in (ASSET / "context" / "Dockerfile").read_text()
    assert "=={{latest-pypi-version}}" in (ASSET / "context" / "requirements.txt").read_text()


def test_tags_and_versions_are_looked_up_filled_hashed_and_built(
    envship: Envship,
    bases: tuple[Registry, dict[str, str]],
    index: PrivateIndex,
    tmp_path: Path,
):
    registry, digests = bases
    specs = curated(
        tmp_path,
        registry,
        REGEX,
        "azureml-core=={{latest-pypi-version}}\nazureml-mlflow=={{latest-pypi-version}}\n",
    )
    auth = ("--index-auth", f"{index.host}=env:INDEX_USER,env:INDEX_PASS")
    run = envship.sync(
        specs,
        "curated",
        "--package-index",
        index.url,
        *auth,
        env=envship.env(INDEX_USER=index.username, INDEX_PASS=index.password),
    )
    assert run.result.returncode == 0, run.result.stdout + run.result.stderr
    item = run.items["acpt-pytorch-2.2-cuda12.1"]
    assert item["action"] == "built"
    assert item["kind"] == "azureml-asset"
    image = str(item["image"])
    repository, tag = image.split("/", 1)[1].rsplit(":", 1)
    labels = envship.target.labels(repository, tag)
    inputs = json.loads(labels["io.envship.inputs"])
    assert inputs["filled"] == {
        f"{registry.host}/{BASE}:{REGEX}": "biweekly.202511.2",  # the greatest matching tag
        "azureml-core=={{latest-pypi-version}}": "1.61.0",  # not the rc, not the yanked one
        "azureml-mlflow=={{latest-pypi-version}}": "1.61.0",
    }
    assert inputs["base"]["digests"] == {
        f"{registry.host}/{BASE}:biweekly.202511.2": digests["biweekly.202511.2"]
    }
    rendered = envship(
        "render", "acpt-pytorch-2.2-cuda12.1", "--path", str(specs), "--package-index",
        index.url, "--ca-file", envship.certs.ca_file,
    )  # fmt: skip
    # an index with credentials needs them: render without --index-auth cannot read it
    assert rendered.returncode == 1
    assert "package index" in rendered.stderr

    # A new base tag: the environment's hash moves (and only that).
    reference = f"{registry.host}/{BASE}:biweekly.202512.1"
    import_image(envship_engine(), busybox_rootfs_tar("202512"), reference)
    push(envship_engine(), reference, None)
    again = envship.sync(
        specs, "curated", "--package-index", index.url, *auth,
        env=envship.env(INDEX_USER=index.username, INDEX_PASS=index.password),
    )  # fmt: skip
    moved = again.items["acpt-pytorch-2.2-cuda12.1"]
    assert moved["action"] == "built"
    assert moved["hash"] != item["hash"]


def envship_engine() -> docker.DockerClient:
    return docker.from_env(timeout=60)


def test_latest_image_tag_without_a_pattern_is_the_tag_latest_points_at(
    envship: Envship,
    bases: tuple[Registry, dict[str, str]],
    index: PrivateIndex,
    tmp_path: Path,
):
    registry, _ = bases
    specs = curated(tmp_path, registry, "{{latest-image-tag}}", "numpy\n")
    rendered = envship(
        "render", "acpt-pytorch-2.2-cuda12.1", "--path", str(specs), "--ca-file",
        envship.certs.ca_file,
    )  # fmt: skip
    assert rendered.returncode == 0, rendered.stderr
    assert rendered.stdout.startswith(f"FROM {registry.host}/{BASE}:20251130.v1@sha256:")


@pytest.mark.parametrize(
    ("dockerfile_from", "requirements", "extra", "words"),
    [
        (REGEX, "numpy\n", ("--no-resolve-base",), "cannot be looked up: base resolution is off"),
        ("{{latest-image-tag:nightly\\..*}}", "numpy\n", (), "matches nightly\\..*"),
        (REGEX, "not-on-the-index=={{latest-pypi-version}}\n", (), "has no release of"),
    ],
)
def test_a_look_up_that_cannot_be_made_refuses_the_environment_naming_it(
    envship: Envship,
    bases: tuple[Registry, dict[str, str]],
    index: PrivateIndex,
    tmp_path: Path,
    dockerfile_from: str,
    requirements: str,
    extra: tuple[str, ...],
    words: str,
):
    registry, _ = bases
    specs = curated(tmp_path, registry, dockerfile_from, requirements)
    planned = plan_json(
        envship, specs, index, "--index-auth", f"{index.host}=env:INDEX_USER,env:INDEX_PASS",
        *extra,
    )  # fmt: skip
    assert planned["code"] == 1
    [item] = planned["items"]  # type: ignore[misc]
    assert item["action"] == "refused", item
    assert item["error"].startswith("acpt-pytorch-2.2-cuda12.1/context/"), item["error"]
    assert words in item["error"]
