"""Private package indexes: the real pip reaches a private index through envship's loopback
forwarder; the credentials never reach pip, its output, or any file."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
import requests

from controller.adapters.indexproxy import IndexProxy
from tests.support.canaries import record_output, secret_file
from tests.support.envship import Envship
from tests.support.helpers import write
from tests.support.infra import Certs
from tests.support.private_index import PrivateIndex


@pytest.fixture
def index(certs: Certs) -> Iterator[PrivateIndex]:
    server = PrivateIndex(certs)
    server.add("envship-private-demo", "1.0", "ANSWER = 42\n")
    server.start()
    yield server
    server.stop()


def pip_download(url: str, destination: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--isolated", "--no-deps", "--no-cache-dir",
         "--disable-pip-version-check", "--index-url", url, "--trusted-host", "127.0.0.1",
         "-d", str(destination), "envship-private-demo"],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    record_output(result.stdout, result.stderr)
    return result


def test_pip_installs_from_a_private_index_through_the_forwarder(
    index: PrivateIndex, certs: Certs, tmp_path: Path
):
    forgotten: list[str] = []
    configured = (index.username, index.password)  # what the secret store holds
    proxy = IndexProxy(
        {index.host: lambda: configured},
        indexes=[index.url],
        forget={index.host: lambda: forgotten.append(index.host)},
        ca_file=certs.ca_file,
        port=0,
    ).start()
    try:
        token = proxy.grant()
        routed = proxy.route(index.url, token)
        assert routed.startswith("http://127.0.0.1:")
        assert token in routed
        assert index.password not in routed
        assert proxy.route("https://pypi.org/simple/", token) == "https://pypi.org/simple/"
        result = pip_download(routed, tmp_path / "wheels")
        assert result.returncode == 0, result.stdout + result.stderr
        assert (tmp_path / "wheels" / "envship_private_demo-1.0-py3-none-any.whl").exists()
        # the page, then the wheel behind an absolute link outside /simple/
        assert index.requests["served"] >= 2
        assert index.password not in result.stdout + result.stderr

        index.password = index.password + "-rotated"  # rotated at the index, not yet in the store
        refused = pip_download(routed, tmp_path / "again")
        assert refused.returncode != 0
        # told the store to read the secret afresh (pip asks again after a 401: once per try)
        assert forgotten
        assert set(forgotten) == {index.host}
    finally:
        proxy.stop()


def test_only_a_granted_build_and_only_the_index_and_its_links_are_forwarded(
    index: PrivateIndex, certs: Certs
):
    proxy = IndexProxy(
        {index.host: lambda: (index.username, index.password)},
        indexes=[index.url],
        ca_file=certs.ca_file,
        port=0,
    ).start()
    try:
        token = proxy.grant()
        here = f"{proxy.base}/{token}/{index.host}"
        wheel = "envship_private_demo-1.0-py3-none-any.whl"

        def get(url: str) -> requests.Response:
            response = requests.get(url, timeout=10)
            record_output(response.text)
            return response

        # a file beside the index, before any page linked to it: not forwarded
        early = get(f"{here}/files/{wheel}")
        assert early.status_code == 403
        assert "only the index and the files it links to are forwarded" in early.text
        served = index.requests["served"]
        for path in ("/v2/_catalog", "/status", "/simple/../status", "/simple/%2e%2e/status"):
            answer = get(f"{here}{path}")
            assert answer.status_code == 403, path
        assert index.requests["served"] == served  # none of them reached the index

        page = get(f"{here}/simple/envship-private-demo/")
        assert page.status_code == 200
        assert f"{here}/files/{wheel}" in page.text  # rewritten to the grant's address
        assert get(f"{here}/files/{wheel}").status_code == 200  # linked: forwarded

        other = proxy.grant()  # another build's grant has not been shown that page
        assert get(f"{proxy.base}/{other}/{index.host}/files/{wheel}").status_code == 403
        assert get(f"{proxy.base}/{other}/{index.host}/simple/").status_code == 200

        proxy.revoke(token)  # the build ended
        gone = get(f"{here}/simple/envship-private-demo/")
        assert gone.status_code == 404
        assert "not a running build's address" in gone.text
        assert get(f"{proxy.base}/{index.host}/simple/").status_code == 404  # no grant at all
    finally:
        proxy.stop()


def test_hosts_that_are_not_configured_are_not_forwarded(certs: Certs):
    proxy = IndexProxy({}, ca_file=certs.ca_file, port=0).start()
    try:
        token = proxy.grant()
        response = requests.get(f"{proxy.base}/{token}/evil.example.org/simple/", timeout=10)
        assert response.status_code == 403
        assert "not a configured private index" in response.text
    finally:
        proxy.stop()


def test_a_build_installs_from_the_private_index_and_the_image_holds_no_secret(
    envship: Envship,
    python_base: str,
    index: PrivateIndex,
    engine: docker.DockerClient,
    tmp_path: Path,
):
    specs = write(
        tmp_path / "specs",
        {
            "app/Dockerfile": (
                f"FROM {python_base}\n"
                "ARG PIP_EXTRA_INDEX_URL\n"
                "ARG PIP_TRUSTED_HOST\n"
                "RUN python3 -m pip install --no-cache-dir --break-system-packages "
                '--index-url "$PIP_EXTRA_INDEX_URL" envship-private-demo\n'
            ),
            # declares no index argument: no grant and no host network, so loopback services
            # (the index, a registry, the controller) are out of its reach
            "other/Dockerfile": (
                f"FROM {python_base}\n"
                'RUN python3 -c "import socket; s = socket.socket(); '
                f"print('reached' if s.connect_ex(('127.0.0.1', {index.port})) == 0 "
                "else 'unreachable')\" > /reached\n"
            ),
        },
    )
    password_file = secret_file(tmp_path / "index-password", index.password)
    run = envship.sync(
        specs,
        "idx",
        "--private-index",
        index.url,
        "--index-auth",
        f"{index.host}=env:INDEX_USER,file:{password_file}",
        env=envship.env(INDEX_USER=index.username),
    )
    assert run.actions() == {"app": "built", "other": "built"}, run.result.stdout
    reached = engine.containers.run(
        str(run.items["other"]["image"]), ["cat", "/reached"], remove=True
    )
    assert reached.decode().strip() == "unreachable"
    image = str(run.items["app"]["image"])
    output = engine.containers.run(
        image, ["python3", "-c", "import envship_private_demo as m; print(m.ANSWER)"], remove=True
    )
    assert output.decode().strip() == "42"
    history = json.dumps(engine.api.history(image))
    assert "PIP_EXTRA_INDEX_URL" in history
    assert index.password not in history
    saved = b"".join(engine.api.get_image(image))  # every layer and the config
    assert index.password.encode() not in saved
    assert index.password not in run.result.stdout + run.result.stderr
