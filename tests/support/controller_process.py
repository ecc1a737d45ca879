"""`envship run` as a separate process on a bare git repository of its own, for the
integration tests: the `launch` fixture (tests/integration/conftest.py) starts one per call and
kills what is left at the end."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import yaml

from tests.support.canaries import canary
from tests.support.infra import Certs, Registry, free_port
from tests.support.paths import ROOT
from tests.support.upstream import Content, Upstream

GRACE = 30


@dataclass
class Controller:
    process: subprocess.Popen[bytes]
    url: str
    stdout: Path
    stderr: Path
    env: dict[str, str] = field(repr=False)  # holds the test's secrets

    def get(self, path: str) -> requests.Response:
        return requests.get(self.url + path, timeout=10)

    def status(self) -> dict[str, Any]:
        response = self.get("/status")
        response.raise_for_status()
        return dict(response.json())

    def envs(self) -> dict[str, dict[str, Any]]:
        return {env["name"]: env for env in self.status()["environments"]}

    def metric(self, name: str, **labels: str) -> float:
        """The sum of the samples of `name` whose labels include `labels`."""
        total = 0.0
        for line in self.get("/metrics").text.splitlines():
            if not line.startswith(name + "{"):
                continue
            series, value = line.rsplit(" ", 1)
            if all(f'{k}="{v}"' in series for k, v in labels.items()):
                total += float(value)
        return total

    def hook(self, body: bytes, headers: dict[str, str]) -> requests.Response:
        return requests.post(
            self.url + "/hooks/github",
            data=body,
            headers={"Content-Type": "application/json", "X-GitHub-Event": "push", **headers},
            timeout=10,
        )

    def output(self) -> tuple[str, str]:
        return (
            self.stdout.read_text(errors="replace") if self.stdout.exists() else "",
            self.stderr.read_text(errors="replace") if self.stderr.exists() else "",
        )


def wait_until(check: Callable[[], bool], timeout: float, what: str, process: Controller) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.process.poll() is not None:
            raise AssertionError(f"envship run exited ({process.process.returncode}) before {what}")
        try:
            if check():
                return
        except (requests.RequestException, KeyError, ValueError):
            pass
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@dataclass
class Launcher:
    tmp_path: Path
    target: Registry
    certs: Certs
    base: str
    started: list[Controller]

    def __call__(
        self,
        files: dict[str, Content],
        *,
        grace: float = GRACE,
        resolve_base: bool = True,
        builds: dict[str, Any] | None = None,
        env: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> tuple[Controller, Upstream, str]:
        """`envship run` on a new bare repository holding `files` (specs under envs/)."""
        folder = self.tmp_path / f"run{len(self.started)}"
        folder.mkdir()
        upstream = Upstream(folder / "specs.git")
        upstream.commit(files)
        hook_secret = canary("webhook")
        port = free_port()
        config = {
            "git": {
                "url": upstream.path.as_uri(),
                "ref": "main",
                "cacheDir": str(folder / "cache"),
            },
            "specs": {"root": "envs"},
            "registry": {
                "url": f"{self.target.host}/ctl",
                "caFile": self.certs.ca_file,
                "credentials": {
                    "username": "env:ENVSHIP_TEST_USER",
                    "password": "env:ENVSHIP_TEST_PASS",
                },
            },
            "builds": {"jobs": 2, "resolveBase": resolve_base, **(builds or {})},
            # Long enough that only the webhooks of the test trigger reconciles.
            "intervals": {"reconcile": 600, "resync": 3600, "jitter": 0.05, "grace": grace},
            "http": {"port": port},
            "webhooks": {"github": "env:ENVSHIP_TEST_HOOK"},
        }
        config.update(extra or {})
        config_file = folder / "cfg.yaml"
        config_file.write_text(yaml.safe_dump(config))
        home = folder / "home"
        home.mkdir()
        environment = {
            **os.environ,
            **(env or {}),
            "HOME": str(home),
            "ENVSHIP_TEST_USER": self.target.username or "",
            "ENVSHIP_TEST_PASS": self.target.password or "",
            "ENVSHIP_TEST_HOOK": hook_secret,
        }
        stdout, stderr = folder / "stdout.log", folder / "stderr.log"
        with stdout.open("wb") as out, stderr.open("wb") as err:
            process = subprocess.Popen(
                [sys.executable, "-m", "controller.cli", "run", "--config", str(config_file)],
                stdout=out,
                stderr=err,
                env=environment,
                cwd=ROOT,
            )
        controller = Controller(process, f"http://127.0.0.1:{port}", stdout, stderr, environment)
        self.started.append(controller)
        return controller, upstream, hook_secret
