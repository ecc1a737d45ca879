"""The acr build engine: envship schedules ACR Tasks runs through the real Azure SDK, against a
stand-in that speaks ARM's run APIs and the blob protocol and performs each run with the real
local engine, pushing to the real TLS + basic-auth registry (tests/support/acrtasks_standin.py).

envship itself is given no Docker engine (DOCKER_HOST points nowhere): everything it builds,
ACR Tasks builds. The CLI signs in as on a laptop, through the Azure CLI (a stand-in `az` whose
tokens the tests' Entra issuer signs)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from controller.adapters.acrtasks import AcrTasksBuilder, AcrTasksSettings
from controller.adapters.folder import FolderTree
from controller.adapters.registries import RegistryPool, RegistrySettings
from controller.adapters.secrets import CredentialRefs, SecretRef
from controller.core.discovery import DiscoveryOptions, discover
from controller.pipeline.options import SyncOptions, Target
from controller.pipeline.outcome import Reporter
from controller.pipeline.sync import Sync
from tests.support.acrtasks_standin import AcrTasksStandIn
from tests.support.azure_cli import AzureCli
from tests.support.canaries import record_output
from tests.support.controller_process import Launcher, wait_until
from tests.support.envship import Envship, Run
from tests.support.helpers import write
from tests.support.identity import EntraIssuer, IssuingCredential
from tests.support.infra import Certs, Registry
from tests.support.paths import ROOT

NO_ENGINE = "unix:///nonexistent/envship-has-no-engine.sock"


@pytest.fixture
def acr(
    certs: Certs, entra: EntraIssuer, target: Registry, engine: docker.DockerClient
) -> Iterator[AcrTasksStandIn]:
    socket = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    standin = AcrTasksStandIn(certs, entra, target, socket).start()
    yield standin
    standin.stop()


def acr_args(acr: AcrTasksStandIn) -> list[str]:
    return [
        "--engine", "acr",
        "--acr-subscription", acr.subscription,
        "--acr-resource-group", acr.resource_group,
        "--acr-registry", acr.name,
        "--acr-endpoint", acr.endpoint,
    ]  # fmt: skip


def acr_env(envship: Envship, az: AzureCli, certs: Certs, **extra: str) -> dict[str, str]:
    return envship.env(DOCKER_HOST=NO_ENGINE, **az.env(certs.ca_file), **extra)


def sync(
    envship: Envship, specs: Path, prefix: str, acr: AcrTasksStandIn, az: AzureCli, certs: Certs,
    *extra: str,
) -> Run:  # fmt: skip
    return envship.sync(specs, prefix, *acr_args(acr), *extra, env=acr_env(envship, az, certs))


def test_runs_build_push_and_are_verified_with_no_engine_beside_envship(
    envship: Envship,
    acr: AcrTasksStandIn,
    az: AzureCli,
    certs: Certs,
    target: Registry,
    public_bases: Registry,
    private_bases: Registry,
    tmp_path: Path,
):
    base = f"{public_bases.host}/base/busybox:1"
    private = f"{private_bases.host}/private/busybox:1"
    specs = write(
        tmp_path / "specs",
        {
            "app/Dockerfile": f"FROM {base}\nCOPY data.txt /data.txt\nRUN cat /data.txt\n",
            "app/data.txt": "payload\n",
            "secret-base/Dockerfile": f"FROM {private}\nRUN echo private > /which\n",
        },
    )
    env = acr_env(
        envship, az, certs,
        BASE_USER=private_bases.username or "", BASE_PASS=private_bases.password or "",
    )  # fmt: skip
    args = [*acr_args(acr), "--base-auth", f"{private_bases.host}=env:BASE_USER,env:BASE_PASS",
            "--tag", "latest"]  # fmt: skip
    first = envship.sync(specs, "acr1", *args, env=env)
    assert first.result.returncode == 0, first.result.stderr
    assert first.actions() == {"app": "built", "secret-base": "built"}
    assert acr.requests["scheduled"] == 2
    for name, item in first.items.items():
        repository, tag = str(item["image"]).split("/", 1)[1].rsplit(":", 1)
        assert target.manifest_digest(repository, tag) == item["digest"], name
        assert target.manifest_digest(repository, "latest") == item["digest"], name
        labels = target.labels(repository, tag)
        assert labels["io.envship.hash"] == item["hash"]
        assert "org.opencontainers.image.created" in labels
    # the run's log streamed into envship's progress, in ACR Tasks' words
    progress = first.result.stderr
    assert "[app] Step 1/5 : FROM" in progress
    assert "[app] payload" in progress  # RUN cat /data.txt, on the run's agent
    assert "[app] Run ID: cb" in progress
    assert "was successful after" in progress
    assert "[app] pushed by ACR Tasks: sha256:" in progress
    # the private base's credentials entered the run as secret custom registry credentials
    bodies = [json.loads(b) for b in acr.schedule_bodies]
    custom = [b["credentials"].get("customRegistries") or {} for b in bodies]
    assert any(private_bases.host in c for c in custom)
    assert all(b["credentials"]["sourceRegistry"]["loginMode"] == "Default" for b in bodies)
    assert private_bases.password
    assert private_bases.password not in first.result.stdout + first.result.stderr
    # signed in through the Azure CLI, for Resource Manager
    assert any("--resource https://management.azure.com" in call for call in az.calls())

    again = envship.sync(specs, "acr1", *args, env=env)
    assert again.result.returncode == 0, again.result.stderr
    assert set(again.actions().values()) == {"up-to-date"}
    assert acr.requests["scheduled"] == 2  # nothing scheduled for what is there


def test_a_failing_run_is_the_spec_s_to_fix_and_its_log_tail_is_kept(
    envship: Envship, acr: AcrTasksStandIn, az: AzureCli, certs: Certs,
    public_bases: Registry, tmp_path: Path,
):  # fmt: skip
    base = f"{public_bases.host}/base/busybox:1"
    specs = write(
        tmp_path / "specs",
        {
            "bad/Dockerfile": f"FROM {base}\nRUN echo about-to-fail && exit 3\n",
            "good/Dockerfile": f"FROM {base}\nRUN echo fine > /fine\n",
        },
    )
    run = sync(envship, specs, "acr2", acr, az, certs)
    assert run.result.returncode == 1
    items = run.items
    assert items["good"]["action"] == "built"
    assert items["bad"]["action"] == "failed"
    assert items["bad"]["next"] == "fix the spec"
    error = str(items["bad"]["error"])
    assert "ACR Tasks run cb" in error
    assert " failed" in error
    assert any("about-to-fail" in line for line in items["bad"]["log_tail"])  # type: ignore[union-attr]


def test_throttled_schedules_are_backed_off_and_said(
    envship: Envship, acr: AcrTasksStandIn, az: AzureCli, certs: Certs,
    public_bases: Registry, tmp_path: Path,
):  # fmt: skip
    acr.throttle = 6  # more than the SDK's own retries of one request
    specs = write(
        tmp_path / "specs", {"app/Dockerfile": f"FROM {public_bases.host}/base/busybox:1\n"}
    )
    run = sync(envship, specs, "acr3", acr, az, certs)
    assert run.result.returncode == 0, run.result.stderr
    assert run.actions() == {"app": "built"}
    assert acr.requests["throttled"] == 6
    assert "[app] ACR Tasks is throttling new runs" in run.result.stderr


def test_a_lost_log_is_said_and_the_outcome_comes_from_the_run(
    envship: Envship, acr: AcrTasksStandIn, az: AzureCli, certs: Certs,
    public_bases: Registry, target: Registry, tmp_path: Path,
):  # fmt: skip
    acr.lose_logs = True
    specs = write(
        tmp_path / "specs", {"app/Dockerfile": f"FROM {public_bases.host}/base/busybox:1\n"}
    )
    run = sync(envship, specs, "acr4", acr, az, certs)
    assert run.result.returncode == 0, run.result.stderr
    item = run.items["app"]
    assert item["action"] == "built"
    assert "[app] the run's log could not be read to its end" in run.result.stderr
    repository, tag = str(item["image"]).split("/", 1)[1].rsplit(":", 1)
    assert target.manifest_digest(repository, tag) == item["digest"]


def test_expiring_tokens_and_log_urls_are_renewed_during_a_run(
    envship: Envship, acr: AcrTasksStandIn, az: AzureCli, certs: Certs, entra: EntraIssuer,
    public_bases: Registry, tmp_path: Path,
):  # fmt: skip
    az.configure(entra.tenant, lifetime=2)  # each token outlives barely a poll or two
    acr.sas_lifetime = 1.0  # and each log URL
    specs = write(
        tmp_path / "specs",
        {"app/Dockerfile": f"FROM {public_bases.host}/base/busybox:1\nRUN sleep 4 && echo slept\n"},
    )
    run = sync(envship, specs, "acr5", acr, az, certs, "--acr-timeout", "600")
    assert run.result.returncode == 0, run.result.stderr
    assert run.actions() == {"app": "built"}
    (only,) = acr.runs.values()
    assert only.log_requests >= 2  # the expired log URL was asked for again
    assert acr.requests["blob refused"] >= 1
    assert "[app] slept" in run.result.stderr
    assert "was successful after" in run.result.stderr
    assert len(az.calls()) >= 3  # tokens were renewed as they expired


def test_an_identity_acr_refuses_is_for_the_operator(
    envship: Envship, acr: AcrTasksStandIn, certs: Certs, public_bases: Registry, tmp_path: Path,
):  # fmt: skip
    stranger = AzureCli(tmp_path / "stranger", EntraIssuer("another-tenant"))
    specs = write(
        tmp_path / "specs", {"app/Dockerfile": f"FROM {public_bases.host}/base/busybox:1\n"}
    )
    run = sync(envship, specs, "acr6", acr, stranger, certs)
    assert run.result.returncode == 1
    item = run.items["app"]
    assert item["action"] == "failed"
    assert item["next"] == "operator must act"
    assert "ACR Tasks refused envship's identity" in str(item["error"])
    assert acr.requests["scheduled"] == 0


def test_what_acr_tasks_cannot_build_is_refused_before_a_run(
    envship: Envship, acr: AcrTasksStandIn, az: AzureCli, certs: Certs,
    public_bases: Registry, tmp_path: Path,
):  # fmt: skip
    base = f"{public_bases.host}/base/busybox:1"
    specs = write(
        tmp_path / "specs",
        {
            "mounts/Dockerfile": f"FROM {base}\nRUN --mount=type=cache,target=/c echo hi\n",
            "plain/Dockerfile": f"FROM {base}\n",
        },
    )
    run = sync(envship, specs, "acr7", acr, az, certs)
    items = run.items
    assert items["plain"]["action"] == "built"
    assert items["mounts"]["action"] == "failed"
    assert items["mounts"]["next"] == "operator must act"
    assert "RUN --mount needs BuildKit, which ACR Tasks' docker build is not" in str(
        items["mounts"]["error"]
    )
    assert acr.requests["scheduled"] == 1


def test_a_killed_sync_leaves_no_moving_tag_and_the_next_one_converges(
    envship: Envship, acr: AcrTasksStandIn, az: AzureCli, certs: Certs,
    public_bases: Registry, target: Registry, tmp_path: Path,
):  # fmt: skip
    acr.start_delay = 3.0  # the run is going when envship dies
    specs = write(
        tmp_path / "specs",
        {"app/Dockerfile": f"FROM {public_bases.host}/base/busybox:1\nRUN echo v1 > /v\n"},
    )
    argv = [
        sys.executable, "-m", "controller.cli", "sync", str(specs),
        *envship.target_args("acr8"), *acr_args(acr), "--tag", "latest", "-o", "json",
    ]  # fmt: skip
    process = subprocess.Popen(
        argv, env=acr_env(envship, az, certs), cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(r.status == "Running" for r in acr.runs.values()):
        time.sleep(0.05)
    assert acr.runs, "no run was scheduled"
    process.send_signal(signal.SIGKILL)
    process.wait(10)
    acr.wait_idle()
    (first,) = acr.runs.values()
    assert first.status == "Succeeded"  # ACR finished the run envship no longer watched
    assert "latest" not in target.tags("acr8/app")  # nothing tagged that envship did not verify

    acr.start_delay = 0.0
    again = sync(envship, specs, "acr8", acr, az, certs, "--tag", "latest")
    assert again.result.returncode == 0, again.result.stderr
    item = again.items["app"]
    assert item["action"] in ("up-to-date", "built")
    repository, tag = str(item["image"]).split("/", 1)[1].rsplit(":", 1)
    digest = target.manifest_digest(repository, tag)
    assert digest is not None
    assert target.labels(repository, tag)["io.envship.hash"] == item["hash"]
    assert target.manifest_digest(repository, "latest") == digest


# -- in-process: timeouts and cancellation, with the adapter's own settings ------------------


def in_process_sync(
    acr: AcrTasksStandIn, entra: EntraIssuer, target: Registry, certs: Certs,
    lines: list[str], **settings: object,
) -> tuple[Sync, list[AcrTasksBuilder]]:  # fmt: skip
    made: list[AcrTasksBuilder] = []
    acr_settings = AcrTasksSettings(
        subscription=acr.subscription, resource_group=acr.resource_group, registry=acr.name,
        endpoint=acr.endpoint, poll_seconds=0.2,
        credential_factory=lambda: IssuingCredential(entra), **settings,  # type: ignore[arg-type]
    )  # fmt: skip

    def factory() -> AcrTasksBuilder:
        builder = AcrTasksBuilder(acr_settings)
        made.append(builder)
        return builder

    registry = RegistrySettings.for_target(
        target.host,
        ca_file=certs.ca_file,
        plain_http=(),
        base_credentials={},
        target_credentials=CredentialRefs(
            SecretRef.parse("env:ENVSHIP_ACR_TEST_USER"),
            SecretRef.parse("env:ENVSHIP_ACR_TEST_PASS"),
        ),
        acr_identity=False,
    )
    os.environ["ENVSHIP_ACR_TEST_USER"] = target.username or ""
    os.environ["ENVSHIP_ACR_TEST_PASS"] = target.password or ""
    sync = Sync(
        Target(target.host, "acrin"), RegistryPool(registry), SyncOptions(jobs=2),
        Reporter(lines.append), factory,
    )  # fmt: skip
    return sync, made


@pytest.fixture
def trusting_ca(certs: Certs, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", certs.ca_file)


def test_a_run_past_its_timeout_is_for_the_operator(
    acr: AcrTasksStandIn, entra: EntraIssuer, target: Registry, certs: Certs,
    public_bases: Registry, tmp_path: Path, trusting_ca: None,
):  # fmt: skip
    specs = write(
        tmp_path / "specs",
        {"slow/Dockerfile": f"FROM {public_bases.host}/base/busybox:1\nRUN sleep 6\n"},
    )
    lines: list[str] = []
    sync, _made = in_process_sync(acr, entra, target, certs, lines, timeout=2)
    results = sync.run(discover(FolderTree(specs), DiscoveryOptions(prefix="acrin")))
    record_output(*lines)
    (result,) = results
    assert result.outcome == "failed"
    assert result.failure is not None
    assert str(result.failure.policy) == "operator must act"
    assert "took longer than its timeout" in result.failure.message
    (run,) = acr.runs.values()
    assert run.status == "Timeout"
    assert target.tags("acrin/slow") == []  # a run that timed out pushed nothing


def test_closing_the_engine_cancels_the_runs_in_flight(
    acr: AcrTasksStandIn, entra: EntraIssuer, target: Registry, certs: Certs,
    public_bases: Registry, tmp_path: Path, trusting_ca: None,
):  # fmt: skip
    acr.start_delay = 30.0
    specs = write(
        tmp_path / "specs", {"app/Dockerfile": f"FROM {public_bases.host}/base/busybox:1\n"}
    )
    lines: list[str] = []
    sync, made = in_process_sync(acr, entra, target, certs, lines)
    outcome: list[object] = []
    worker = threading.Thread(
        target=lambda: outcome.extend(
            sync.run(discover(FolderTree(specs), DiscoveryOptions(prefix="acrin")))
        )
    )
    worker.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not acr.runs:
        time.sleep(0.05)
    time.sleep(0.5)
    made[0].close()  # as the controller does on shutdown
    worker.join(30)
    record_output(*lines)
    assert not worker.is_alive()
    (run,) = acr.runs.values()
    assert acr.requests["cancel"] == 1
    acr.wait_idle(10)
    assert run.status == "Canceled"
    (result,) = outcome
    assert result.outcome == "failed"  # type: ignore[attr-defined]
    assert str(result.failure.policy) == "retry later"  # type: ignore[attr-defined]


def test_one_engine_serves_sync_after_sync_as_the_controller_keeps_it(
    acr: AcrTasksStandIn, entra: EntraIssuer, target: Registry, certs: Certs,
    public_bases: Registry, tmp_path: Path, trusting_ca: None,
):  # fmt: skip
    lines: list[str] = []
    first, made = in_process_sync(acr, entra, target, certs, lines)
    shared = first.builds.builder()  # the controller's runner hands every sync the same one
    outcomes = []
    base = f"{public_bases.host}/base/busybox:1"
    for round_ in ("one", "two"):
        dockerfile = f"FROM {base}\nRUN echo {round_}\n"
        specs = write(tmp_path / round_, {f"{round_}/Dockerfile": dockerfile})
        sync, _ = in_process_sync(acr, entra, target, certs, lines)
        sync.builds._builder_factory = lambda: shared
        outcomes += [
            r.outcome
            for r in sync.run(discover(FolderTree(specs), DiscoveryOptions(prefix="acrin")))
        ]
        sync.close()  # as each reconcile's sync does: the shared builder is closed, then reused
    record_output(*lines)
    assert outcomes == ["built", "built"]
    assert acr.requests["scheduled"] == 2
    assert made  # the first sync's factory made the shared builder


def test_the_controller_builds_on_acr_tasks_with_no_engine_and_reports_each_run(
    launch: Launcher, acr: AcrTasksStandIn, az: AzureCli, certs: Certs, target: Registry,
):  # fmt: skip
    files = {
        "envs/one/Dockerfile": f"FROM {launch.base}\nRUN echo one\n",
        "envs/bad/Dockerfile": f"FROM {launch.base}\nRUN exit 4\n",
    }
    builds = {
        "engine": "acr",
        "acr": {"subscription": acr.subscription, "resourceGroup": acr.resource_group,
                "registry": acr.name, "endpoint": acr.endpoint},
    }  # fmt: skip
    controller, _upstream, _secret = launch(
        files, builds=builds, env={"DOCKER_HOST": NO_ENGINE, **az.env(certs.ca_file)}
    )
    wait_until(
        lambda: {e["phase"] for e in controller.envs().values()} >= {"Ready", "Stalled"},
        180, "both environments reconciled", controller,
    )  # fmt: skip
    status = controller.status()
    assert status["engine"] == {"usable": True, "error": None}  # ACR Tasks answers: no engine
    envs = controller.envs()
    one, bad = envs["one"], envs["bad"]
    assert one["phase"] == "Ready"
    repository, tag = one["image"].split("/", 1)[1].rsplit(":", 1)
    assert target.manifest_digest(repository, tag) == one["digest"]
    assert one["build_seconds"] > 0
    assert bad["phase"] == "Stalled"
    assert "ACR Tasks run cb" in bad["last_error"]
    assert bad["next"] == "fix the spec"
    assert controller.metric("envship_environment_build_seconds", outcome="built") > 0
    assert controller.metric("envship_environment_build_seconds", outcome="failed") > 0
    assert acr.requests["scheduled"] == 2
