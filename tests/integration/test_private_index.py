"""Private package indexes: builds install from a private TLS + basic-auth index through the
`envship-pip-conf` BuildKit secret, with no host network and no forwarder; the credentials reach
pip alone, never the image (config, history, any layer) or envship's output.

The index listens on the engine's bridge gateway, where a build container reaches the host (as
a private index elsewhere on the network would be reached), not on loopback. Managed builds run
envship's rendered conda step on a base with a conda stand-in (tests/support/conda_shim.py): the
real pip, the real BuildKit mounts.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import pytest

from tests.support.canaries import secret_file
from tests.support.conda_shim import conda_base
from tests.support.envship import Envship, Run
from tests.support.helpers import write
from tests.support.images import files_of, image_parts
from tests.support.infra import Certs, Registry, bridge_gateway, make_certs, push
from tests.support.private_index import PrivateIndex

DEMO_WHEEL = "envship_private_demo-1.0-py3-none-any.whl"


@pytest.fixture(scope="module")
def gateway(engine: docker.DockerClient) -> str:
    return bridge_gateway(engine)


@pytest.fixture
def index(certs: Certs, gateway: str, tmp_path: Path) -> Iterator[PrivateIndex]:
    server = PrivateIndex(make_certs(tmp_path / "index-certs", gateway, ca=certs.ca))
    server.address = gateway
    server.add("envship-private-demo", "1.0", "ANSWER = 42\n")
    server.add("envship-private-extra", "1.0", "EXTRA = 1\n")
    server.add("envship-private-extra", "2.0", "EXTRA = 2\n")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def shim_base(
    engine: docker.DockerClient, python_base: str, public_bases: Registry, certs: Certs
) -> str:
    """The conda stand-in base, pushed to the public base registry."""
    reference = f"{public_bases.host}/base/conda-shim:1"
    ca_pem = Path(certs.ca_file).read_bytes()
    conda_base(engine, python_base, reference, ca_pem)
    push(engine, reference, None)
    return reference


def conda_spec(base: str, extra_version: str) -> dict[str, str]:
    return {
        "private-pip/environment.yml": (
            "$schema: https://azuremlschemas.azureedge.net/latest/environment.schema.json\n"
            "name: private-pip\n"
            f"image: {base}\n"
            "conda_file: conda.yml\n"
        ),
        "private-pip/conda.yml": (
            "channels:\n  - conda-forge\n"
            "dependencies:\n  - python=3.11\n  - pip\n"
            "  - pip:\n"
            "    - envship-private-demo==1.0\n"
            f"    - envship-private-extra=={extra_version}\n"
        ),
    }


def sync_with_index(
    envship: Envship, specs: Path, prefix: str, index: PrivateIndex, folder: Path, *extra: str
) -> tuple[Run, str]:
    password_file = secret_file(folder / "index-password", index.password)
    run = envship.sync(
        specs,
        prefix,
        "--private-index",
        index.url,
        "--index-auth",
        f"{index.host}=env:INDEX_USER,file:{password_file}",
        *extra,
        env=envship.env(INDEX_USER=index.username),
    )
    return run, run.result.stdout + run.result.stderr


def run_python(engine: docker.DockerClient, image: str, code: str) -> str:
    output = engine.containers.run(image, ["python", "-c", code], remove=True)
    return bytes(output).decode().strip()


def scan_for(parts: dict[str, bytes], *values: str) -> list[str]:
    return [name for name, data in parts.items() for v in values if v.encode() in data]


def test_a_managed_pip_build_installs_from_the_private_index_through_a_build_secret(
    envship: Envship,
    shim_base: str,
    index: PrivateIndex,
    target: Registry,
    engine: docker.DockerClient,
    tmp_path: Path,
):
    specs = write(tmp_path / "specs", conda_spec(shim_base, "1.0"))
    run, output = sync_with_index(envship, specs, "idx1", index, tmp_path)
    assert run.actions() == {"private-pip": "built"}, output
    image = str(run.items["private-pip"]["image"])
    code = "import envship_private_demo as d, envship_private_extra as e; print(d.ANSWER, e.EXTRA)"
    assert run_python(engine, image, code) == "42 1"
    assert index.requests["refused"] == 0  # pip sent the credentials from the first request
    assert index.files_served[DEMO_WHEEL] == 1

    repository, tag = image.split("/", 1)[1].rsplit(":", 1)
    parts = image_parts(target, repository, tag)
    assert scan_for(parts, index.password) == []  # manifest, config, history, every layer
    files = files_of(parts)
    assert not any(path.endswith("envship-pip-conf") for path in files)
    assert "var/cache/envship/pip" not in {p.rsplit("/", 1)[0] for p in files}
    # the rendered step ran with its cache folders (the stand-in logs what it was given)
    shim_log = files["envship-conda-shim.log"].decode()
    assert "pkgs=/var/cache/envship/conda-pkgs pip_cache=/var/cache/envship/pip" in shim_log
    assert index.password not in output

    # One pin changed: the environment is rebuilt, and the wheel that did not change comes out
    # of pip's cache mount, not from the index again.
    specs = write(tmp_path / "specs", conda_spec(shim_base, "2.0"))
    again, output = sync_with_index(envship, specs, "idx1", index, tmp_path)
    assert again.actions() == {"private-pip": "built"}, output
    assert run_python(engine, str(again.items["private-pip"]["image"]), code) == "42 2"
    assert index.files_served[DEMO_WHEEL] == 1
    assert index.files_served["envship_private_extra-2.0-py3-none-any.whl"] == 1


def test_a_dockerfile_mounts_the_pip_configuration_itself(
    envship: Envship,
    python_base: str,
    index: PrivateIndex,
    certs: Certs,
    target: Registry,
    engine: docker.DockerClient,
    tmp_path: Path,
):
    specs = write(
        tmp_path / "specs",
        {
            "app/ca.pem": Path(certs.ca_file).read_text(),
            "app/Dockerfile": (
                f"FROM {python_base}\n"
                "COPY ca.pem /ca.pem\n"
                "RUN --mount=type=secret,id=envship-pip-conf \\\n"
                "    PIP_CONFIG_FILE=/run/secrets/envship-pip-conf PIP_CERT=/ca.pem \\\n"
                "    python3 -m pip install --no-cache-dir --break-system-packages "
                "envship-private-demo\n"
            ),
        },
    )
    run, output = sync_with_index(envship, specs, "idx2", index, tmp_path)
    assert run.actions() == {"app": "built"}, output
    app = str(run.items["app"]["image"])
    answer = engine.containers.run(
        app, ["python3", "-c", "import envship_private_demo as m; print(m.ANSWER)"], remove=True
    )
    assert bytes(answer).decode().strip() == "42"
    repository, tag = app.split("/", 1)[1].rsplit(":", 1)
    assert scan_for(image_parts(target, repository, tag), index.password) == []
    assert index.password not in output


def test_the_classic_builder_refuses_a_managed_pip_build_with_private_indexes(
    envship: Envship, shim_base: str, index: PrivateIndex, target: Registry, tmp_path: Path
):
    specs = write(tmp_path / "specs", conda_spec(shim_base, "1.0"))
    run, output = sync_with_index(envship, specs, "idx3", index, tmp_path, "--builder", "classic")
    item = run.items["private-pip"]
    assert item["action"] == "failed", output
    assert str(item["error"]) == (
        "private package indexes reach builds only as a BuildKit build secret, and the classic "
        "builder has none; choose BuildKit (builds.builder: buildkit, or --builder buildkit)"
    )
    assert item["next"] == "operator must act"
    assert index.requests["served"] == 0
    assert target.tags("idx3/private-pip") == []
