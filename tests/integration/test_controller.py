"""`envship run` end to end: a real bare git repository, the real TLS registry with basic auth,
the real Docker engine, the controller as a separate process, driven over HTTP and signals."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from tests.canaries import canary, record_output
from tests.integration.conftest import ROOT
from tests.integration.infra import Certs, Registry, free_port
from tests.test_gitsource import Upstream

GRACE = 30


@dataclass
class Controller:
    process: subprocess.Popen[bytes]
    url: str
    stdout: Path
    stderr: Path
    env: dict[str, str]

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


def specs(base: str, marker: str) -> dict[str, str]:
    return {
        "envs/one/Dockerfile": f"FROM {base}\nRUN echo one-{marker} > /one\n",
        "envs/two/Dockerfile": f"FROM {base}\nRUN echo two-{marker} > /two\n",
        "envs/broken/azureml_environment.json": "{not json",
        "README.md": "the team's environments\n",
    }


@dataclass
class Launcher:
    tmp_path: Path
    target: Registry
    certs: Certs
    base: str
    started: list[Controller]

    def __call__(
        self, files: dict[str, str], *, grace: float = GRACE
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
            "builds": {"jobs": 2},
            # Long enough that only the webhooks of the test trigger reconciles.
            "intervals": {"reconcile": 600, "resync": 3600, "jitter": 0.05, "grace": grace},
            "http": {"port": port},
            "webhooks": {"github": "env:ENVSHIP_TEST_HOOK"},
        }
        config_file = folder / "cfg.yaml"
        config_file.write_text(yaml.safe_dump(config))
        home = folder / "home"
        home.mkdir()
        env = {
            **os.environ,
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
                env=env,
                cwd=ROOT,
            )
        controller = Controller(process, f"http://127.0.0.1:{port}", stdout, stderr, env)
        self.started.append(controller)
        return controller, upstream, hook_secret


@pytest.fixture
def launch(
    tmp_path: Path,
    engine: object,
    target: Registry,
    public_bases: Registry,
    certs: Certs,
) -> Iterator[Launcher]:
    launcher = Launcher(tmp_path, target, certs, f"{public_bases.host}/base/busybox:1", [])
    try:
        yield launcher
    finally:
        for controller in launcher.started:
            if controller.process.poll() is None:
                controller.process.kill()
                controller.process.wait(10)
            record_output(*controller.output())


def head(upstream: Upstream) -> str:
    return str(upstream.repo.references["refs/heads/main"].target)


def repository_and_tag(image: str) -> tuple[str, str]:
    repository, tag = image.split("/", 1)[1].rsplit(":", 1)
    return repository, tag


def test_run_reconciles_from_git_on_signed_webhooks_and_stops_on_sigterm(
    launch: Launcher, target: Registry
):
    controller, upstream, secret = launch(specs(launch.base, uuid.uuid4().hex[:12]))
    wait_until(lambda: controller.get("/healthz").status_code == 200, 60, "/healthz", controller)
    wait_until(lambda: controller.get("/readyz").status_code == 200, 300, "/readyz", controller)

    # the first reconcile built everything at the head of main
    first = head(upstream)
    status = controller.status()
    assert status["revision"] == f"main@sha1:{first}"
    envs = controller.envs()
    assert {name: env["phase"] for name, env in envs.items()} == {
        "one": "Ready",
        "two": "Ready",
        "broken": "Stalled",
    }
    assert "azureml_environment.json" in envs["broken"]["last_error"]
    for name in ("one", "two"):
        env = envs[name]
        assert env["revision"] == f"main@sha1:{first}"
        assert env["reference"] == f"{env['image']}@{env['digest']}"
        repository, tag = repository_and_tag(env["image"])
        assert repository == f"ctl/{name}"
        assert target.manifest_digest(repository, tag) == env["digest"]
        assert target.labels(repository, tag)["io.envship.hash"] == env["hash"]
    old_two = envs["two"]

    # refused webhooks trigger nothing
    reconciles = controller.metric("envship_reconcile_total")
    last = status["last_reconcile"]
    body = json.dumps({"ref": "refs/heads/main", "after": first}).encode()
    assert controller.hook(body, {}).status_code == 401
    wrong = hmac.new(b"not-the-secret", body, hashlib.sha256).hexdigest()
    assert controller.hook(body, {"X-Hub-Signature-256": f"sha256={wrong}"}).status_code == 401
    time.sleep(1.5)
    assert controller.metric("envship_webhooks_total", provider="github", result="rejected") == 2
    assert controller.metric("envship_reconcile_total") == reconciles
    assert controller.status()["last_reconcile"] == last

    # a commit and a signed webhook: the changed environment is rebuilt
    changed = f"FROM {launch.base}\nRUN echo two-{uuid.uuid4().hex} > /two\n"
    second = upstream.change({"envs/two/Dockerfile": changed.encode()})
    body = json.dumps({"ref": "refs/heads/main", "after": second}).encode()
    signature = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    answer = controller.hook(body, {"X-Hub-Signature-256": f"sha256={signature}"})
    assert answer.status_code == 202, answer.text
    assert isinstance(answer.json()["ticket"], int)
    label = f"main@sha1:{second}"

    def two_is_ready_at_the_new_revision() -> bool:
        two = controller.envs()["two"]
        return bool(two["phase"] == "Ready" and two["revision"] == label)

    wait_until(two_is_ready_at_the_new_revision, 300, "the rebuilt environment", controller)
    envs = controller.envs()
    two = envs["two"]
    assert two["hash"] != old_two["hash"]
    repository, tag = repository_and_tag(two["image"])
    assert tag != repository_and_tag(old_two["image"])[1]
    assert target.manifest_digest(repository, tag) == two["digest"]
    assert target.labels(repository, tag)["io.envship.hash"] == two["hash"]
    assert envs["one"]["phase"] == "Ready"
    assert envs["one"]["revision"] == label  # unchanged, not rebuilt, but at the new revision
    assert controller.status()["revision"] == label
    assert controller.metric("envship_builds_total", outcome="built") == 3
    assert controller.metric("envship_git_requests_total") >= 2

    # envship status shows the same as a table
    shown = subprocess.run(
        [sys.executable, "-m", "controller.cli", "status", "--url", controller.url],
        capture_output=True,
        text=True,
        env=controller.env,
        cwd=ROOT,
        check=False,
        timeout=60,
    )
    record_output(shown.stdout, shown.stderr)
    assert shown.returncode == 0, shown.stderr
    row = next(line for line in shown.stdout.splitlines() if line.startswith("two "))
    assert "Ready" in row
    assert f"main@sha1:{second[:12]}" in row
    tag = repository_and_tag(two["image"])[1]
    assert f"two:{tag[:12]}@{two['digest'].removeprefix('sha256:')[:12]}" in row
    assert len(row) <= 120

    # SIGTERM: not ready any more, then a clean exit well within the grace period
    started = time.monotonic()
    controller.process.send_signal(signal.SIGTERM)
    assert controller.process.wait(GRACE + 15) == 0
    assert time.monotonic() - started < GRACE
    _out, err = controller.output()
    assert "Traceback" not in err
    records = [json.loads(line) for line in err.splitlines() if line.strip()]
    assert any(r.get("env") == "two" and r.get("reconcileID") for r in records)
    assert any(r.get("revision") == label for r in records)
    assert records[-1]["msg"] == "stopped"


def test_sigterm_during_a_build_lets_it_finish_within_the_grace_period(
    launch: Launcher, target: Registry
):
    marker = uuid.uuid4().hex[:12]
    slow = {"envs/slow/Dockerfile": f"FROM {launch.base}\nRUN sleep 4 && echo {marker} > /m\n"}
    controller, _upstream, _secret = launch(slow)

    def building() -> bool:
        return bool(controller.envs()["slow"]["phase"] == "Building")

    wait_until(building, 120, "the build to start", controller)
    assert controller.get("/readyz").status_code == 503  # the first reconcile is not done
    controller.process.send_signal(signal.SIGTERM)
    wait_until(
        lambda: controller.get("/readyz").json()["reason"] == "stopping", 10, "stopping", controller
    )
    assert controller.process.wait(GRACE + 15) == 0
    # the build was not cut short: its image is in the registry
    _out, err = controller.output()
    records = [json.loads(line) for line in err.splitlines() if line.strip()]
    built = [r for r in records if r["msg"].startswith("built ")]
    assert len(built) == 1, err
    image = built[0]["msg"].split()[1].split("@")[0]
    repository, tag = repository_and_tag(image)
    assert target.labels(repository, tag)["io.envship.hash"].removeprefix("sha256:").startswith(tag)
    assert records[-1]["msg"] == "stopped"


def test_sigterm_exits_after_the_grace_period_when_a_build_runs_on(launch: Launcher):
    marker = uuid.uuid4().hex[:12]
    slow = {"envs/slow/Dockerfile": f"FROM {launch.base}\nRUN sleep 30 && echo {marker} > /m\n"}
    controller, _upstream, _secret = launch(slow, grace=1)

    def building() -> bool:
        return bool(controller.envs()["slow"]["phase"] == "Building")

    wait_until(building, 120, "the build to start", controller)
    started = time.monotonic()
    controller.process.send_signal(signal.SIGTERM)
    assert controller.process.wait(20) == 0
    assert time.monotonic() - started < 10
    _out, err = controller.output()
    assert "still running after the 1 s grace period" in err
