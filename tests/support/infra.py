"""Real infrastructure for the integration tests: a Docker engine, CNCF distribution registries
(TLS, basic auth, token auth, read-only), locally made base images.

Nothing is mocked. A test that needs a service that is missing fails under scripts/test and in
CI (which install everything) and is skipped on a developer machine without it
(tests/support/needs.py).
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import os
import shutil
import socket
import subprocess
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path

import bcrypt
import docker
import requests
import trustme
import yaml

from tests.support.canaries import canary
from tests.support.needs import need

__all__ = ["need"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(check: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():  # type: ignore[operator]
                return
        except Exception:  # noqa: S110 - still starting
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not become ready in {timeout} s")


# -- the Docker engine ------------------------------------------------------------------------


def engine_answers() -> bool:
    try:
        return bool(docker.from_env(timeout=5).ping())
    except Exception:
        return False


SYSTEM_CAS = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt")


@contextlib.contextmanager
def docker_engine(workdir: Path, trust: str | None = None) -> Iterator[docker.DockerClient]:
    """The engine at DOCKER_HOST or the default socket; started here when it is not running.

    An engine started here also trusts the CA in `trust` (beside the system's): its BuildKit
    reads TLS trust from the system store only, so a build that imports cache from a test
    registry needs the test CA there."""
    started: subprocess.Popen[bytes] | None = None
    if not engine_answers():
        need(shutil.which("dockerd") is not None, "no Docker engine (dockerd) is installed")
        need(os.geteuid() == 0, "starting dockerd needs root")
        env = dict(os.environ)
        if trust is not None:
            bundle = workdir / "engine-trust.pem"
            system = next((Path(p) for p in SYSTEM_CAS if Path(p).exists()), None)
            bundle.write_bytes((system.read_bytes() if system else b"") + Path(trust).read_bytes())
            env["SSL_CERT_FILE"] = str(bundle)
        log = (workdir / "dockerd.log").open("wb")
        started = subprocess.Popen(["dockerd"], stdout=log, stderr=subprocess.STDOUT, env=env)
        wait_for(engine_answers, 60, "dockerd")
    client = docker.from_env(timeout=300)
    try:
        yield client
    finally:
        client.close()
        if started is not None:
            started.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                started.wait(20)


# -- TLS --------------------------------------------------------------------------------------


@dataclass
class Certs:
    folder: Path
    ca: trustme.CA

    @property
    def ca_file(self) -> str:
        return str(self.folder / "ca.pem")

    @property
    def cert_file(self) -> str:
        return str(self.folder / "server.pem")

    @property
    def key_file(self) -> str:
        return str(self.folder / "server.key")


def bridge_gateway(engine: docker.DockerClient) -> str:
    """The host's address on the engine's default bridge: where build containers reach the host,
    and an address the engine does not treat as an insecure (loopback) registry."""
    config = engine.networks.get("bridge").attrs["IPAM"]["Config"][0]
    gateway = config.get("Gateway")
    return str(gateway or next(ipaddress.ip_network(config["Subnet"]).hosts()))


def make_certs(folder: Path, *hosts: str, ca: trustme.CA | None = None) -> Certs:
    """A server certificate for loopback (and `hosts`), signed by `ca` or a new CA."""
    folder.mkdir(parents=True, exist_ok=True)
    ca = ca or trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost", *hosts)
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    server.private_key_pem.write_to_path(str(folder / "server.key"))
    server.cert_chain_pems[0].write_to_path(str(folder / "server.pem"))
    return Certs(folder, ca)


# -- registries -------------------------------------------------------------------------------


@dataclass
class Registry:
    """A real CNCF distribution registry on 127.0.0.1 (or `address`)."""

    folder: Path
    certs: Certs | None = None
    username: str | None = None
    password: str | None = None
    token: dict[str, str] | None = None
    """distribution's `auth.token` section, for token-auth registries."""
    readonly: bool = False
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    address: str = "127.0.0.1"

    @property
    def host(self) -> str:
        return f"{self.address}:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.certs else 'http'}://{self.host}"

    def config(self) -> dict[str, object]:
        storage: dict[str, object] = {
            "filesystem": {"rootdirectory": str(self.folder / "data")},
            "delete": {"enabled": True},
        }
        if self.readonly:
            storage["maintenance"] = {"readonly": {"enabled": True}}
        http: dict[str, object] = {"addr": self.host, "relativeurls": True}
        if self.certs:
            http["tls"] = {"certificate": self.certs.cert_file, "key": self.certs.key_file}
        config: dict[str, object] = {
            "version": 0.1,
            "log": {"level": "warn"},
            "storage": storage,
            "http": http,
        }
        if self.username and self.password:
            hashed = bcrypt.hashpw(self.password.encode(), bcrypt.gensalt(rounds=4)).decode()
            htpasswd = self.folder / "htpasswd"
            htpasswd.write_text(f"{self.username}:{hashed}\n")
            config["auth"] = {"htpasswd": {"realm": "envship-test", "path": str(htpasswd)}}
        if self.token:
            config["auth"] = {"token": self.token}
        return config

    def start(self) -> Registry:
        need(shutil.which("docker-registry") is not None, "docker-registry is not installed")
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / "config.yml"
        path.write_text(yaml.safe_dump(self.config()))
        log = (self.folder / "registry.log").open("wb")
        self.process = subprocess.Popen(
            ["docker-registry", "serve", str(path)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        verify = self.certs.ca_file if self.certs else True
        wait_for(
            lambda: (
                requests.get(f"{self.url}/v2/", timeout=2, verify=verify).status_code in (200, 401)
            ),
            20,
            f"registry on {self.host}",
        )
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(10)
            self.process = None

    def restart(self, **changes: object) -> Registry:
        self.stop()
        for key, value in changes.items():
            setattr(self, key, value)
        return self.start()

    def auth(self) -> dict[str, str] | None:
        if self.username and self.password:
            return {"username": self.username, "password": self.password}
        return None

    def session(self) -> requests.Session:
        session = requests.Session()
        session.trust_env = False  # else REQUESTS_CA_BUNDLE silently overrides `verify`
        session.verify = self.certs.ca_file if self.certs else True
        if self.username and self.password:
            session.auth = (self.username, self.password)
        return session

    def tags(self, repository: str) -> list[str]:
        response = self.session().get(f"{self.url}/v2/{repository}/tags/list", timeout=10)
        if response.status_code == 404:
            return []
        response.raise_for_status()
        return list(response.json().get("tags") or [])

    def manifest_digest(self, repository: str, reference: str) -> str | None:
        accept = (
            "application/vnd.docker.distribution.manifest.v2+json, "
            "application/vnd.oci.image.manifest.v1+json"
        )
        response = self.session().head(
            f"{self.url}/v2/{repository}/manifests/{reference}",
            headers={"Accept": accept},
            timeout=10,
        )
        if response.status_code == 404:
            return None
        response.raise_for_status()
        return response.headers.get("Docker-Content-Digest")

    def labels(self, repository: str, reference: str) -> dict[str, str]:
        session = self.session()
        accept = "application/vnd.docker.distribution.manifest.v2+json"
        manifest = session.get(
            f"{self.url}/v2/{repository}/manifests/{reference}",
            headers={"Accept": accept},
            timeout=10,
        )
        manifest.raise_for_status()
        config = manifest.json()["config"]["digest"]
        blob = session.get(f"{self.url}/v2/{repository}/blobs/{config}", timeout=10)
        blob.raise_for_status()
        return dict(blob.json()["config"].get("Labels") or {})


def new_password() -> str:
    """A registry password that is also a canary: it must never appear in output or files."""
    return canary("password")


# -- base images ------------------------------------------------------------------------------


def busybox_rootfs_tar(marker: str = "1") -> bytes:
    """A busybox root filesystem (Debian's busybox-static), as a tar for `docker import`."""
    busybox = shutil.which("busybox")
    need(busybox is not None, "busybox-static is not installed")
    assert busybox is not None
    buffer = BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for folder in ("bin", "tmp", "etc"):
            info = tarfile.TarInfo(folder)
            info.type = tarfile.DIRTYPE
            info.mode = 0o1777 if folder == "tmp" else 0o755
            archive.addfile(info)
        archive.add(busybox, arcname="bin/busybox")
        for applet in ("sh", "ls", "cat", "echo", "true", "env", "mkdir", "rm", "cp", "test"):
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type = tarfile.SYMTYPE
            link.linkname = "busybox"
            archive.addfile(link)
        data = f"base-{marker}\n".encode()
        info = tarfile.TarInfo("etc/base-marker")
        info.size = len(data)
        archive.addfile(info, BytesIO(data))
    return buffer.getvalue()


def import_image(client: docker.DockerClient, rootfs: bytes, reference: str) -> None:
    repository, tag = reference.rsplit(":", 1)
    client.api.import_image_from_data(rootfs, repository=repository, tag=tag)


def push(client: docker.DockerClient, reference: str, auth: dict[str, str] | None) -> str:
    repository, tag = reference.rsplit(":", 1)
    digest = None
    for item in client.api.push(repository, tag=tag, stream=True, decode=True, auth_config=auth):
        if "error" in item:
            raise RuntimeError(f"push of {reference} failed: {item['error']}")
        digest = (item.get("aux") or {}).get("Digest") or digest
    assert digest, f"push of {reference} reported no digest"
    return str(digest)


def basic_header(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
