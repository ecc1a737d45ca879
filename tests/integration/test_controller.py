"""`envship run` end to end: a real bare git repository, the real TLS registry with basic auth,
the real Docker engine, the controller as a separate process, driven over HTTP and signals."""

from __future__ import annotations

import hashlib
import hmac
import json
import signal
import subprocess
import sys
import time
import uuid

from tests.support.canaries import record_output
from tests.support.controller_process import GRACE, Launcher, wait_until
from tests.support.infra import Registry
from tests.support.paths import ROOT
from tests.support.upstream import Upstream


def specs(base: str, marker: str) -> dict[str, str]:
    return {
        "envs/one/Dockerfile": f"FROM {base}\nRUN echo one-{marker} > /one\n",
        "envs/two/Dockerfile": f"FROM {base}\nRUN echo two-{marker} > /two\n",
        "envs/broken/azureml_environment.json": "{not json",
        "README.md": "the team's environments\n",
    }


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
