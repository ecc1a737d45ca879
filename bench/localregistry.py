"""A CNCF distribution registry (`docker-registry`) on 127.0.0.1 for the benchmarks: plain HTTP,
filesystem storage, and an access log that counts the requests envship made.

Standard library only: the controller benchmark's outer process imports it before envship.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

ACCESS = re.compile(r'"(?P<method>[A-Z]+) /v2/(?P<path>\S*) HTTP/[0-9.]+" (?P<status>\d{3}) ')
"""One request in distribution's access log."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def binary() -> str | None:
    return shutil.which("docker-registry") or shutil.which("registry")


def access_log(path: Path) -> list[tuple[str, str, int]]:
    """(method, path below /v2/, status) of every request in the access log at `path`."""
    found = []
    for line in path.read_text(errors="replace").splitlines():
        match = ACCESS.search(line)
        if match:
            found.append((match["method"], match["path"], int(match["status"])))
    return found


def settled(path: Path) -> int:
    """Requests in the access log once it stops growing (lines land just after the response)."""
    count = len(access_log(path))
    while True:
        time.sleep(0.15)
        now = len(access_log(path))
        if now == count:
            return count
        count = now


@dataclass
class LocalRegistry:
    """`start()` it on a free port with its storage under `folder`, `stop()` it."""

    folder: Path
    delete: bool = False
    """Allow deleting manifests (garbage collection)."""
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.folder / "registry.log"

    def start(self) -> LocalRegistry:
        found = binary()
        if found is None:
            raise SystemExit("docker-registry is not installed (Debian: docker-registry)")
        self.folder.mkdir(parents=True, exist_ok=True)
        storage: dict[str, object] = {"filesystem": {"rootdirectory": str(self.folder / "data")}}
        if self.delete:
            storage["delete"] = {"enabled": True}
        config = {  # JSON is YAML: no YAML writer needed
            "version": 0.1,
            "log": {"level": "warn"},  # the access log is written at any level
            "storage": storage,
            "http": {"addr": self.host, "relativeurls": True, "secret": "envship-bench"},
        }
        path = self.folder / "config.yml"
        path.write_text(json.dumps(config))
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [found, "serve", str(path)], stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                connection.request("GET", "/v2/")
                if connection.getresponse().status == 200:
                    return self
            if self.process.poll() is not None:
                raise RuntimeError(f"the registry exited: {self.log.read_text()[-2000:]}")
            time.sleep(0.05)
        raise RuntimeError(f"the registry on {self.host} did not answer in 20 s")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
            self.process = None

    def requests(self) -> list[tuple[str, str, int]]:
        return access_log(self.log)

    def settled(self) -> int:
        return settled(self.log)

    @staticmethod
    def version() -> str:
        with contextlib.suppress(OSError):
            command = [binary() or "docker-registry", "--version"]
            out = subprocess.run(command, capture_output=True, text=True, check=False).stdout
            return out.split()[-1] if out.split() else "unknown"
        return "unknown"
