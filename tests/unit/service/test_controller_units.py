"""The controller without a registry or an engine: a real bare git repository and GitSource, a
sync stand-in that plans with the real core against an in-memory registry, and fake time.

Covered: request coalescing and tickets, nothing done for an unchanged revision, only changed
environments synced, backoff and its reset, Stalled specs, git and registry outages (stale),
full resyncs, the Building phase, stop with a grace period, the schedules, metrics,
JSON logs, and the `envship status` / `envship run` command edges.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from controller.adapters.builder import BuildError, EngineError
from controller.adapters.gitsource import GitSettings, GitSource, GitSourceError, Revision
from controller.adapters.redact import REDACTOR
from controller.adapters.registry import RegistryError
from controller.adapters.secrets import SecretStore
from controller.cli.main import main
from controller.core.backoff import Backoff
from controller.core.discovery import DiscoveryOptions
from controller.core.errors import Failure
from controller.core.hashing import content_hash
from controller.core.model import Environment
from controller.core.naming import tag_for
from controller.core.plan import plan
from controller.core.tree import SourceTree
from controller.pipeline.outcome import Reporter, Result, Step
from controller.pipeline.planning import CHECK
from controller.service.controller import Controller, GcPolicy
from controller.service.logs import JsonFormatter
from controller.service.metrics import Metrics
from tests.support.upstream import Upstream

BASE = "registry.test/base/busybox:1"
SPECS = {
    "envs/a/Dockerfile": f"FROM {BASE}\nRUN echo a\n",
    "envs/b/Dockerfile": f"FROM {BASE}\nRUN echo b\n",
    "envs/bad/azureml_environment.json": "{not json",
    "README.md": "not a spec\n",
}
GOOD_V1 = json.dumps(
    {
        "name": "bad",
        "python": {"userManagedDependencies": True, "interpreterPath": "/bin/sh"},
        "docker": {"baseImage": BASE},
    }
)


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def wall(self) -> datetime:
        return datetime(2025, 1, 1, tzinfo=UTC) + timedelta(seconds=self.t)


class FakeRunner:
    """`Sync.run` in memory: the real core plan against a dict of images."""

    def __init__(self) -> None:
        self.images: dict[tuple[str, str], str] = {}
        self.failing: set[str] = set()
        """Names whose build fails for a reason that may pass (the engine): retried."""
        self.broken: set[str] = set()
        """Names whose build fails for the spec's own reasons (a RUN step): held."""
        self.down = False
        self.calls: list[tuple[list[str], bool]] = []
        self.gate: threading.Event | None = None
        self.building = threading.Event()
        self.closed = False
        self.engine_problem: str | None = None

    def run(
        self,
        envs: Sequence[Environment],
        *,
        revision: str,
        fresh: bool,
        reporter: Reporter,
        held: frozenset[str] = frozenset(),
    ) -> list[Result]:
        self.calls.append((sorted(e.name for e in envs), fresh))
        present: dict[tuple[str, str], str | None] = {}
        failures: dict[str, Failure] = {}
        for env in envs:
            assert env.ok
            assert env.build is not None
            assert env.repository
            key = (env.repository, tag_for(content_hash(env.build)))
            if self.down:
                error = RegistryError("registry.test: connection failed")
                failures[env.path] = Failure(f"registry check failed: {error}", error, CHECK)
            else:
                present[key] = self.images.get(key)
        results = []
        for item in plan(envs, "registry.test", present, failures, held):
            name = item.env.name
            if item.action in ("failed", "held"):
                results.append(Result(item, item.action, failure=item.failure))
                continue
            if item.action == "up-to-date":
                results.append(Result(item, "up-to-date", digest=item.digest))
                continue
            reporter.line(name, f"building {item.image}", Step.BUILD)
            self.building.set()
            if self.gate is not None:
                assert self.gate.wait(10)
            if name in self.failing:
                error = EngineError("the Docker engine failed during the build: ReadTimeout")
                results.append(Result(item, "failed", failure=Failure(str(error), error, "build")))
                continue
            if name in self.broken:
                error = BuildError("build failed: RUN echo failed")
                results.append(Result(item, "failed", failure=Failure(str(error), error, "build")))
                continue
            assert item.hash
            assert item.tag
            assert item.env.repository
            digest = "sha256:" + hashlib.sha256(item.hash.encode()).hexdigest()
            self.images[(item.env.repository, item.tag)] = digest
            outcome = "built" if item.action == "build" else "copied"
            results.append(Result(item, outcome, digest, seconds=1.5))
        return results

    def check_engine(self) -> str | None:
        return self.engine_problem

    def close(self) -> None:
        self.closed = True


class FlakySource:
    """A GitSource that can be made unreachable."""

    def __init__(self, source: GitSource) -> None:
        self.source = source
        self.broken = False

    @property
    def fetches(self) -> int:
        return self.source.fetches

    @property
    def received_objects(self) -> int:
        return self.source.received_objects

    def fetch(self) -> Revision:
        if self.broken:
            raise GitSourceError("git fetch from https://user:pw@git.test/x: connection refused")
        return self.source.fetch()

    def tree(self, revision: Revision) -> SourceTree:
        return self.source.tree(revision)


@pytest.fixture
def upstream(tmp_path: Path) -> Upstream:
    repo = Upstream(tmp_path / "upstream.git")
    repo.commit(SPECS)
    return repo


class Rig:
    def __init__(self, upstream: Upstream, tmp_path: Path) -> None:
        self.upstream = upstream
        self.git = GitSource(
            GitSettings(str(upstream.path), "main", tmp_path / "cache"), SecretStore()
        )
        self.source = FlakySource(self.git)
        self.runner = FakeRunner()
        self.clock = FakeClock()
        self.metrics = Metrics()
        self.controllers: list[Controller] = []

    def controller(self, **options: Any) -> Controller:
        controller = Controller(
            self.source,
            self.runner,
            DiscoveryOptions(root="envs", prefix="team"),
            metrics=self.metrics,
            clock=self.clock,
            now=self.clock.wall,
            spread=lambda: 0.5,
            **options,
        )
        self.controllers.append(controller)
        return controller

    def started(self, **options: Any) -> Controller:
        controller = self.controller(**options).start(schedule=False)
        outcome = controller.wait_for(1, 10)
        assert outcome is not None
        assert outcome["result"] in ("success", "failed"), outcome
        return controller

    def commit(self, files: dict[str, str]) -> str:
        return self.upstream.change({path: text.encode() for path, text in files.items()})

    def label(self, commit: str) -> str:
        return f"main@sha1:{commit}"

    def head(self) -> str:
        return str(self.upstream.repo.references["refs/heads/main"].target)


@pytest.fixture
def rig(upstream: Upstream, tmp_path: Path) -> Iterator[Rig]:
    rig = Rig(upstream, tmp_path)
    yield rig
    for controller in rig.controllers:
        if rig.runner.gate is not None:
            rig.runner.gate.set()
        controller.stop(5)


def reconcile(
    controller: Controller, reason: str = "test", *, full: bool = False
) -> dict[str, Any]:
    outcome = controller.wait_for(controller.request_reconcile(reason, full=full), 10)
    assert outcome is not None
    return outcome


def envs_of(controller: Controller) -> dict[str, dict[str, Any]]:
    return {env["name"]: env for env in controller.status()["environments"]}


def metric(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


# -- one reconcile ------------------------------------------------------------------------------


def test_first_reconcile_syncs_everything_then_an_unchanged_revision_does_nothing(rig: Rig):
    assert not rig.controller().ready()
    controller = rig.started()
    assert controller.ready()
    assert rig.runner.calls == [(["a", "b"], False)]
    label = rig.label(rig.head())
    envs = envs_of(controller)
    for name in ("a", "b"):
        env = envs[name]
        assert env["phase"] == "Ready"
        assert env["revision"] == label
        assert env["image"].startswith(f"registry.test/team/{name}:")
        assert env["reference"] == f"{env['image']}@{env['digest']}"
        assert env["build_seconds"] == 1.5
        assert env["attempts"] == 0
    assert envs["bad"]["phase"] == "Stalled"
    assert "azureml_environment.json" in envs["bad"]["last_error"]
    status = controller.status()
    assert status["revision"] == label
    assert status["last_reconcile"] is not None
    assert not status["stale"]

    received = metric(rig.metrics, "envship_git_received_objects_total")
    assert received > 0  # the clone
    again = reconcile(controller)
    assert again["result"] == "unchanged"
    assert metric(rig.metrics, "envship_git_received_objects_total") == received  # none sent
    assert rig.runner.calls == [(["a", "b"], False)]  # no registry call at all
    assert rig.git.fetches == 2  # git is asked every time
    assert metric(rig.metrics, "envship_reconcile_total", result="unchanged") == 1
    assert metric(rig.metrics, "envship_builds_total", outcome="built") == 2
    assert metric(rig.metrics, "envship_git_requests_total", kind="fetch") == 2


def test_a_commit_syncs_only_the_environments_it_changed(rig: Rig):
    controller = rig.started()
    before = envs_of(controller)
    assert controller.reconciler.parsed.read == 3  # a, b and bad, on the first reconcile
    commit = rig.commit({"envs/b/Dockerfile": f"FROM {BASE}\nRUN echo b2\n", "README.md": "x\n"})
    outcome = reconcile(controller, "webhook github push")
    assert (
        controller.reconciler.parsed.read == 1
    )  # only b's folder changed: a and bad are not read again
    assert outcome["result"] == "success"
    assert outcome["skipped"] == {"stalled": 1, "held": 0, "waiting": 0, "unchanged": 1}
    assert rig.runner.calls[-1] == (["b"], False)
    after = envs_of(controller)
    assert after["b"]["hash"] != before["b"]["hash"]
    assert after["a"]["hash"] == before["a"]["hash"]
    for name in ("a", "b", "bad"):
        assert after[name]["revision"] == rig.label(commit)

    # a commit that touches no environment syncs none
    rig.commit({"README.md": "y\n"})
    assert reconcile(controller)["synced"] == 0
    assert len(rig.runner.calls) == 2


def test_environments_gone_from_git_leave_the_board(rig: Rig):
    controller = rig.started()
    rig.upstream.commit({"envs/a/Dockerfile": SPECS["envs/a/Dockerfile"]})
    reconcile(controller)
    assert set(envs_of(controller)) == {"a"}


# -- coalescing and tickets ------------------------------------------------------------------


def test_requests_while_a_reconcile_runs_coalesce_into_exactly_one_more(rig: Rig):
    rig.runner.gate = threading.Event()
    controller = rig.controller().start(schedule=False)
    assert rig.runner.building.wait(10)  # reconcile 1 (ticket 1) is running
    tickets = [controller.request_reconcile(f"webhook {i % 3}") for i in range(10)]
    assert tickets == list(range(2, 12))
    assert controller.wait_for(5, 0.05) is None  # not served yet: times out
    rig.runner.gate.set()
    first = controller.wait_for(1, 10)
    assert first is not None
    assert first["reconcile"] == 1
    assert first["tickets"] == [1, 1]
    outcomes = [controller.wait_for(t, 10) for t in tickets]
    assert all(o is not None and o["reconcile"] == 2 for o in outcomes)
    assert outcomes[0] is not None
    assert outcomes[0]["tickets"] == [2, 11]
    assert outcomes[0]["reasons"] == {f"webhook {i % 3}": 4 if i == 0 else 3 for i in range(3)}
    assert rig.git.fetches == 2  # two reconciles, not eleven
    assert controller.wait_for(99, 0.01) is None  # never issued


def test_a_full_resync_request_is_kept_when_coalesced(rig: Rig):
    controller = rig.started()
    rig.runner.images.clear()  # someone deleted the tags
    assert reconcile(controller)["result"] == "unchanged"
    outcome = reconcile(controller, "resync", full=True)
    assert outcome["full"] is True
    assert rig.runner.calls[-1] == (["a", "b"], True)
    assert outcome["actions"] == {"built": 2}
    assert len(rig.runner.images) == 2


# -- failures --------------------------------------------------------------------------------


def test_a_failed_environment_backs_off_is_retried_when_due_and_resets_on_success(rig: Rig):
    rig.runner.failing.add("b")
    controller = rig.started()
    b = envs_of(controller)["b"]
    assert b["phase"] == "Failed"
    assert b["attempts"] == 1
    assert b["last_error"] == "the Docker engine failed during the build: ReadTimeout"
    assert b["next"] == "retry later"
    assert b["next_retry"] == "2025-01-01T00:16:41Z"  # clock 1000 s + 1 s
    assert envs_of(controller)["a"]["phase"] == "Ready"  # one environment never blocks others

    assert reconcile(controller)["result"] == "unchanged"  # waiting: nothing to do
    rig.clock.t += 1.5
    outcome = reconcile(controller, "retry")
    assert outcome["result"] == "failed"
    assert rig.runner.calls[-1] == (["b"], False)
    assert envs_of(controller)["b"]["attempts"] == 2
    rig.clock.t += 1.0  # the second delay is 2 s
    assert reconcile(controller)["result"] == "unchanged"
    rig.clock.t += 1.5
    rig.runner.failing.clear()
    assert reconcile(controller)["result"] == "success"
    b = envs_of(controller)["b"]
    assert (b["phase"], b["attempts"], b["next_retry"], b["last_error"]) == ("Ready", 0, None, None)
    assert metric(rig.metrics, "envship_builds_total", outcome="failed") == 2


def test_a_failing_run_step_is_held_not_retried_until_its_inputs_change(rig: Rig):
    rig.runner.broken.add("b")
    controller = rig.started()
    b = envs_of(controller)["b"]
    assert (b["phase"], b["next"], b["attempts"], b["next_retry"]) == (
        "Stalled", "fix the spec", 0, None,
    )  # fmt: skip
    assert b["last_error"] == "build failed: RUN echo failed"
    builds = metric(rig.metrics, "envship_builds_total", outcome="failed")
    for _ in range(3):  # time passes, webhooks arrive: nothing is built again
        rig.clock.t += 3600
        outcome = reconcile(controller, "webhook")
        assert outcome["result"] == "unchanged"
    calls = len(rig.runner.calls)
    rig.commit({"README.md": "another commit, b unchanged\n"})
    outcome = reconcile(controller)
    assert outcome["skipped"]["held"] == 1
    assert len(rig.runner.calls) == calls  # a is unchanged, b is held: nothing to sync
    assert metric(rig.metrics, "envship_builds_total", outcome="failed") == builds
    # a full resync asks again with the same inputs: the plan holds the hash, nothing is built
    calls = len(rig.runner.calls)
    reconcile(controller, "resync", full=True)
    assert len(rig.runner.calls) == calls + 1
    assert envs_of(controller)["b"]["phase"] == "Stalled"
    assert metric(rig.metrics, "envship_builds_total", outcome="failed") == builds
    # its inputs change: built again at once
    rig.runner.broken.clear()
    rig.commit({"envs/b/Dockerfile": f"FROM {BASE}\nRUN echo fixed\n"})
    reconcile(controller)
    assert envs_of(controller)["b"]["phase"] == "Ready"


def test_a_manual_reconcile_releases_a_held_build(rig: Rig):
    rig.runner.broken.add("b")
    controller = rig.started()
    assert envs_of(controller)["b"]["phase"] == "Stalled"
    rig.runner.broken.clear()  # say the network under the RUN step failed: it passes now
    reconcile(controller, "webhook")
    assert envs_of(controller)["b"]["phase"] == "Stalled"
    reconcile(controller, "manual")  # same revision: by hand, the held build is tried again
    assert rig.runner.calls[-1] == (["b"], False)
    assert envs_of(controller)["b"]["phase"] == "Ready"


def test_a_failed_environment_whose_spec_changes_is_retried_at_once(rig: Rig):
    rig.runner.failing.add("b")
    controller = rig.started()
    rig.runner.failing.clear()
    rig.commit({"envs/b/Dockerfile": f"FROM {BASE}\nRUN echo fixed\n"})
    reconcile(controller)
    assert envs_of(controller)["b"]["phase"] == "Ready"


def test_a_refused_spec_is_stalled_until_its_files_change(
    rig: Rig, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.WARNING, "envship.controller")
    controller = rig.started()
    rig.commit({"envs/a/Dockerfile": f"FROM {BASE}\nRUN echo a2\n"})
    reconcile(controller)
    reconcile(controller, full=True)
    assert all("bad" not in names for names, _ in rig.runner.calls)
    assert envs_of(controller)["bad"]["phase"] == "Stalled"
    refused = [r for r in caplog.records if r.getMessage().startswith("refused spec")]
    assert len(refused) == 1  # said once, not on every reconcile

    rig.commit({"envs/bad/azureml_environment.json": GOOD_V1})
    reconcile(controller)
    assert rig.runner.calls[-1] == (["bad"], False)
    bad = envs_of(controller)["bad"]
    assert (bad["phase"], bad["last_error"]) == ("Ready", None)


def test_a_git_outage_keeps_the_last_status_marked_stale(rig: Rig):
    controller = rig.started()
    before = envs_of(controller)
    rig.source.broken = True
    outcome = reconcile(controller)
    assert outcome["result"] == "stale"
    assert "pw" not in outcome["error"]  # no URL user-info
    status = controller.status()
    assert status["stale"]
    assert status["stale_reason"].startswith("git: ")
    assert not status["in_sync"]
    assert {n: e["phase"] for n, e in envs_of(controller).items()} == {
        n: e["phase"] for n, e in before.items()
    }
    assert all(e["stale"] for e in status["environments"])

    rig.source.broken = False
    assert reconcile(controller)["result"] == "success"  # not "unchanged": it was stale
    assert not controller.status()["stale"]


def test_a_registry_outage_keeps_the_last_status_marked_stale(rig: Rig):
    controller = rig.started()
    old = envs_of(controller)["a"]
    rig.runner.down = True
    commit = rig.commit({"envs/a/Dockerfile": f"FROM {BASE}\nRUN echo a2\n"})
    outcome = reconcile(controller)
    assert outcome["result"] == "stale"
    assert controller.status()["stale_reason"].startswith("registry: ")
    a = envs_of(controller)["a"]
    assert (a["phase"], a["hash"], a["attempts"]) == ("Ready", old["hash"], 0)

    rig.runner.down = False
    assert reconcile(controller)["result"] == "success"
    a = envs_of(controller)["a"]
    assert a["hash"] != old["hash"]
    assert a["revision"] == rig.label(commit)
    assert not controller.status()["stale"]


def test_environments_backing_off_keep_their_own_backoff_when_the_registry_is_down(rig: Rig):
    rig.runner.failing.add("b")
    controller = rig.started()
    rig.runner.down = True
    rig.clock.t += 1.5  # b's first delay (1 s) is over
    outcome = reconcile(controller, "retry")
    # only b was due: its failure is its own, not an outage that retries it on every tick
    assert outcome["result"] == "failed"
    assert rig.runner.calls[-1] == (["b"], False)
    b = envs_of(controller)["b"]
    assert (b["phase"], b["attempts"]) == ("Failed", 2)
    assert "connection failed" in b["last_error"]
    assert not controller.status()["stale"]
    calls = len(rig.runner.calls)
    assert reconcile(controller, "tick")["result"] == "unchanged"  # still waiting: 2 s
    assert len(rig.runner.calls) == calls

    # a change to a while b is backing off: a's failure is evidence of an outage; b, synced
    # with it, waits one step longer instead of being retried on every tick
    rig.clock.t += 2.5
    rig.commit({"envs/a/Dockerfile": f"FROM {BASE}\nRUN echo a4\n"})
    assert reconcile(controller)["result"] == "stale"
    assert rig.runner.calls[-1] == (["a", "b"], False)
    assert reconcile(controller, "tick")["result"] == "stale"
    assert rig.runner.calls[-1] == (["a"], False)  # b's next attempt is 4 s away


def test_building_shows_while_the_build_runs(rig: Rig):
    controller = rig.started()
    rig.runner.gate = threading.Event()
    rig.runner.building.clear()
    rig.commit({"envs/a/Dockerfile": f"FROM {BASE}\nRUN echo a3\n"})
    ticket = controller.request_reconcile("test")
    assert rig.runner.building.wait(10)
    assert envs_of(controller)["a"]["phase"] == "Building"
    assert envs_of(controller)["b"]["phase"] == "Ready"
    rig.runner.gate.set()
    assert controller.wait_for(ticket, 10) is not None
    assert envs_of(controller)["a"]["phase"] == "Ready"


def test_an_unexpected_error_does_not_kill_the_worker(rig: Rig):
    controller = rig.started()

    def broken(*_args: Any, **_kwargs: Any) -> list[Result]:
        raise RuntimeError("surprise")

    rig.runner.run = broken  # type: ignore[method-assign]
    rig.commit({"envs/a/Dockerfile": f"FROM {BASE}\nRUN echo a4\n"})
    outcome = reconcile(controller)
    assert outcome["result"] == "error"
    assert controller.status()["stale"]
    assert reconcile(controller)["result"] == "error"  # still serving requests


def test_a_v2_spec_that_breaks_keeps_its_place_and_its_claims(rig: Rig):
    """A typo that breaks a v2 YAML must not turn the folder it builds from into an
    environment of its own: it stays under its name, Stalled, until it is fixed."""
    spec = "name: trainer\nbuild:\n  path: ../ctx\n"
    rig.commit({"envs/v2/train.yml": spec, "envs/ctx/Dockerfile": f"FROM {BASE}\nRUN echo t\n"})
    controller = rig.started()
    envs = envs_of(controller)
    assert envs["trainer"]["phase"] == "Ready"
    assert "ctx" not in envs

    rig.commit({"envs/v2/train.yml": "name: trainer\nbuild:\n  path: ../ctx\n  - oops\n"})
    outcome = reconcile(controller)
    envs = envs_of(controller)
    assert "ctx" not in envs  # nothing discovered in its place
    assert envs["trainer"]["phase"] == "Stalled"
    assert envs["trainer"]["last_error"].startswith("envs/v2/train.yml: invalid YAML at line")
    assert envs["trainer"]["path"] == "envs/v2/train.yml"
    assert outcome["result"] == "success"
    synced = [names for names, _ in rig.runner.calls[1:]]
    assert all("ctx" not in names for names in synced)

    rig.commit({"envs/v2/train.yml": spec})
    reconcile(controller)
    assert envs_of(controller)["trainer"]["phase"] == "Ready"
    assert "ctx" not in envs_of(controller)


def test_the_repositorys_envship_yaml_names_environments_and_a_bad_one_is_said(rig: Rig):
    rig.commit({"envship.yaml": "names:\n  envs/a: alpha\n"})
    controller = rig.started()
    envs = envs_of(controller)
    assert envs["alpha"]["path"] == "envs/a"
    assert "a" not in envs

    rig.commit({"envship.yaml": "names:\n  envs/a: 'not a name!'\n"})
    outcome = reconcile(controller)
    assert outcome["result"] == "stale"
    assert outcome["error"].startswith("specs: envship.yaml: names.envs/a: name 'not a name!'")
    assert controller.status()["stale"]


# -- life -------------------------------------------------------------------------------------


def test_an_engine_that_cannot_build_is_said_at_start_and_on_status_until_it_answers(
    rig: Rig, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.INFO, "envship")
    rig.runner.engine_problem = "the Docker engine is not reachable (ConnectionError)"
    controller = rig.started()
    assert controller.status()["engine"] == {
        "usable": False,
        "error": "the Docker engine is not reachable (ConnectionError)",
    }
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "builds cannot run: the Docker engine is not reachable (ConnectionError)" in said
    assert controller.ready()  # webhooks are still taken: builds fail and are retried
    rig.runner.engine_problem = None
    reconcile(controller)
    assert controller.status()["engine"] == {"usable": True, "error": None}
    assert "the build engine answers again" in caplog.text


def test_a_secret_reference_that_cannot_be_read_is_named_on_status_and_readiness(
    rig: Rig, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    from functools import partial  # noqa: PLC0415

    from aiohttp.test_utils import TestClient, TestServer  # noqa: PLC0415

    from controller.compose.service import unreadable_secrets  # noqa: PLC0415
    from controller.http.app import WebhookSecrets, make_app  # noqa: PLC0415
    from controller.service.config import load  # noqa: PLC0415

    caplog.set_level(logging.INFO, "envship")
    hook = tmp_path / "hook-secret"
    config_file = tmp_path / "config.yaml"
    config_file.write_text(
        "git: {url: https://example.org/specs.git}\n"
        "registry: {url: registry.test/team}\n"
        f"webhooks: {{github: 'file:{hook}', trigger: env:ENVSHIP_TEST_NO_SUCH_VARIABLE}}\n"
    )
    config = load(config_file)
    controller = rig.started(secret_check=partial(unreadable_secrets, config, SecretStore(ttl=0)))
    assert controller.ready()  # reconciled: ready as far as reconciling goes, but
    reason = controller.not_ready_reason()
    assert reason is not None
    assert reason.startswith("secret env:ENVSHIP_TEST_NO_SUCH_VARIABLE cannot be read: ")
    assert reason.endswith("(and 1 more)")
    listed = {s["reference"]: s["error"] for s in controller.status()["secrets"]}
    assert set(listed) == {f"file:{hook}", "env:ENVSHIP_TEST_NO_SUCH_VARIABLE"}
    assert all(listed.values())

    async def probe() -> tuple[int, Any, Any]:
        app = make_app(controller, secrets=WebhookSecrets(), metrics=Metrics())
        async with TestClient(TestServer(app)) as client:
            readyz = await client.get("/readyz")
            status = await (await client.get("/status")).json()
            return readyz.status, await readyz.json(), status

    import asyncio  # noqa: PLC0415

    code, body, status = asyncio.run(probe())
    assert (code, body["reason"]) == (503, reason)
    assert (status["ready"], status["ready_reason"]) == (False, reason)

    hook.write_text("now-readable-webhook-secret\n")
    rig.commit({"envs/a/requirements.txt": "numpy==2.0.0\n"})
    reconcile(controller)
    listed = {s["reference"] for s in controller.status()["secrets"]}
    assert listed == {"env:ENVSHIP_TEST_NO_SUCH_VARIABLE"}
    assert "can be read again" in caplog.text
    assert "now-readable-webhook-secret" not in caplog.text
    assert "now-readable-webhook-secret" not in json.dumps(controller.status())


def test_stop_lets_a_running_reconcile_finish_within_the_grace_period(rig: Rig):
    rig.runner.gate = threading.Event()
    controller = rig.controller().start(schedule=False)
    assert rig.runner.building.wait(10)
    started = time.monotonic()
    assert controller.stop(0.2) is False  # still building after the grace period
    assert time.monotonic() - started < 2
    assert controller.stopping()
    with pytest.raises(RuntimeError):
        controller.request_reconcile("late")
    rig.runner.gate.set()
    assert controller.stop(5) is True
    assert rig.runner.closed


def test_stop_when_idle_returns_at_once_and_releases_waiters(rig: Rig):
    controller = rig.started()
    assert controller.stop(5) is True
    assert controller.wait_for(2, 5) is None


def test_the_schedules_only_request_reconciles(rig: Rig):
    controller = rig.controller(reconcile_interval=0.2, resync_interval=0.5, jitter=0.1)
    controller.start()
    assert sorted(controller._due) == ["periodic", "resync"]  # the worker's own deadlines
    deadline = time.monotonic() + 10
    while (
        time.monotonic() < deadline
        and metric(rig.metrics, "envship_reconcile_total", result="unchanged") < 3
    ):
        time.sleep(0.05)
    assert metric(rig.metrics, "envship_reconcile_total", result="unchanged") >= 3
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not any(full for _, full in rig.runner.calls):
        time.sleep(0.05)
    assert any(full for _, full in rig.runner.calls)  # the resync re-checked everything
    assert controller.stop(5)
    count = metric(rig.metrics, "envship_reconcile_total", result="unchanged")
    time.sleep(0.5)
    assert metric(rig.metrics, "envship_reconcile_total", result="unchanged") == count


def test_the_schedules_spread_by_their_jitter(rig: Rig):
    spreads = iter([0.0, 1.0, 0.5])
    controller = rig.controller(jitter=0.1)
    controller._spread = lambda: next(spreads)
    assert controller._interval(100) == pytest.approx(90)
    assert controller._interval(100) == pytest.approx(110)
    assert controller._interval(100) == pytest.approx(100)


def test_a_failure_schedules_a_retry_when_its_backoff_ends(rig: Rig):
    rig.runner.failing.add("b")
    controller = rig.controller(reconcile_interval=3600, backoff=Backoff(initial=0.2))
    controller.reconciler.clock = time.monotonic  # real time: the schedule runs on it
    controller.start()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and len(rig.runner.calls) < 2:
        time.sleep(0.05)
    assert rig.runner.calls[:2] == [(["a", "b"], False), (["b"], False)]


# -- logs and commands -------------------------------------------------------------------------


def test_json_logs_carry_the_context_and_mask_secrets():
    secret = "s3cret-value-for-the-log-test"
    REDACTOR.add(secret)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("envship.test-logs")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning(
            "token %s refused",
            secret,
            extra={"reconcileID": 7, "revision": "main@sha1:abc", "env": "e", "error": secret},
        )
        try:
            raise ValueError(f"bad {secret}")
        except ValueError:
            logger.exception("boom", extra={"reconcileID": 8})
    finally:
        logger.removeHandler(handler)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert secret not in stream.getvalue()
    first, second = lines
    assert first["level"] == "warning"
    assert first["msg"] == "token *** refused"
    assert (first["reconcileID"], first["revision"], first["env"], first["error"]) == (
        7,
        "main@sha1:abc",
        "e",
        "***",
    )
    assert first["ts"].endswith("Z")
    assert second["error"] == "ValueError: bad ***"
    assert "Traceback" in second["traceback"]


def test_run_refuses_an_invalid_configuration_with_status_2(tmp_path: Path):
    config = tmp_path / "cfg.yaml"
    config.write_text("git: {url: file:///nowhere}\nregistry: {url: r.test/x}\nhttp: {port: 0}\n")
    result = CliRunner().invoke(main, ["run", "--config", str(config)])
    assert result.exit_code == 2
    assert "http.port" in result.output
    missing = CliRunner().invoke(main, ["run", "--config", str(tmp_path / "none.yaml")])
    assert missing.exit_code == 2
    assert "cannot be read" in missing.output


def test_status_prints_a_table(monkeypatch: pytest.MonkeyPatch):
    sha = "0123456789abcdef" * 2 + "01234567"
    snapshot = {
        "revision": f"main@sha1:{sha}",
        "last_reconcile": "2025-01-01T00:00:00Z",
        "stale": False,
        "stale_reason": None,
        "environments": [
            {
                "name": "train",
                "phase": "Ready",
                "revision": f"main@sha1:{sha}",
                "image": "reg.test/team/train:" + "a" * 32,
                "digest": "sha256:" + "b" * 64,
                "last_error": None,
            },
            {
                "name": "broken",
                "phase": "Stalled",
                "revision": f"main@sha1:{sha}",
                "image": None,
                "digest": None,
                "last_error": "broken/azureml_environment.json: invalid JSON\nmore",
            },
        ],
    }

    class Response:
        def raise_for_status(self) -> None:
            return None

        def json(self) -> dict[str, Any]:
            return snapshot

    seen: list[str] = []

    def get(url: str, timeout: float) -> Response:
        seen.append(url)
        return Response()

    monkeypatch.setattr("requests.get", get)
    result = CliRunner().invoke(main, ["status", "--url", "http://127.0.0.1:9999/"])
    assert result.exit_code == 0, result.output
    assert seen == ["http://127.0.0.1:9999/status"]
    lines = result.output.splitlines()
    assert lines[0].startswith("revision main@sha1:0123456789ab,")
    header = next(line for line in lines if line.startswith("NAME"))
    assert header.split() == ["NAME", "PHASE", "REVISION", "IMAGE", "LAST", "ERROR"]
    train = next(line for line in lines if line.startswith("train"))
    assert f"train:{'a' * 12}@bbbbbbbbbbbb" in train  # the image, short; /status has it whole
    assert all(len(line) <= 120 for line in lines), max(lines, key=len)
    assert "main@sha1:0123456789ab " in train
    broken = next(line for line in lines if line.startswith("broken"))
    assert "Stalled" in broken
    assert "invalid JSON" in broken
    assert "more" not in broken
    assert not any(line.startswith("lease ") for line in lines)

    snapshot["leader_election"] = {
        "identity": "envship-1",
        "lease": "envship/envship",
        "leading": False,
        "leader": "envship-0",
    }
    result = CliRunner().invoke(main, ["status", "--url", "http://127.0.0.1:9999/"])
    assert result.output.splitlines()[1] == (
        "lease envship/envship: envship-1 is standing by; leader envship-0"
    )
    snapshot["leader_election"]["leader_address"] = "http://10.0.0.7:8080"
    result = CliRunner().invoke(main, ["status", "--url", "http://127.0.0.1:9999/"])
    assert result.output.splitlines()[1] == (
        "lease envship/envship: envship-1 is standing by; leader envship-0 at http://10.0.0.7:8080"
    )


class FakeElection:
    def __init__(self, leading: bool, address: str | None) -> None:
        self.leading = leading
        self.address = address

    def is_leader(self) -> bool:
        return self.leading

    def leader_address(self) -> str | None:
        return self.address

    def describe(self) -> dict[str, Any]:
        return {"leading": self.leading, "leader_address": self.address}


def test_only_a_follower_names_a_leader_address(rig: Rig):
    controller = rig.controller()
    assert controller.leader_address() is None  # no leader election: it leads itself
    election = FakeElection(leading=False, address="http://10.0.0.7:8080")
    controller.election = election
    assert not controller.leading()
    assert controller.leader_address() == "http://10.0.0.7:8080"
    assert controller.status()["leader_election"]["leader_address"] == "http://10.0.0.7:8080"
    election.leading = True  # a leader never relays, whatever its election says
    assert controller.leader_address() is None
    election.leading, election.address = False, None
    assert controller.leader_address() is None


def test_status_says_when_the_controller_cannot_be_reached():
    result = CliRunner().invoke(main, ["status", "--url", "http://127.0.0.1:1"])
    assert result.exit_code == 1
    assert "connection failed" in result.output


def test_an_outage_schedules_a_retry_with_backoff(rig: Rig):
    rig.source.broken = True
    controller = rig.controller(reconcile_interval=3600, backoff=Backoff(initial=0.2))
    controller.start()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and rig.runner.calls == []:
        if metric(rig.metrics, "envship_reconcile_total", result="stale") >= 2:
            rig.source.broken = False  # retried on its own, twice: now git answers again
        time.sleep(0.05)
    assert rig.runner.calls == [(["a", "b"], False)]
    assert not controller.status()["stale"]


def test_garbage_is_collected_only_on_a_clean_full_resync_when_configured(rig: Rig):
    collected: list[tuple[list[str], float, bool]] = []

    def collect_garbage(
        envs: Sequence[Environment], *, grace: float, dry_run: bool, reporter: Reporter
    ) -> list[object]:
        collected.append((sorted(e.name for e in envs), grace, dry_run))
        return []

    rig.runner.collect_garbage = collect_garbage  # type: ignore[attr-defined]
    off = rig.started()
    reconcile(off, full=True)
    assert collected == []  # not configured: never
    off.stop(5)

    on = rig.started(gc=GcPolicy(grace=3600, dry_run=True))
    reconcile(on, full=True)
    assert collected == []  # a refused spec: which images it owns is unknown, no gc
    valid = '{"name": "bad", "python": {"userManagedDependencies": true}, '
    valid += '"docker": {"baseImage": "busybox:1"}}'
    rig.commit({"envs/bad/azureml_environment.json": valid})
    reconcile(on)
    assert collected == []  # not a full resync
    reconcile(on, full=True)
    assert len(collected) == 1
    assert collected[0][1:] == (3600, True)
    rig.runner.failing.add(collected[0][0][0])
    rig.commit({"envs/" + collected[0][0][0] + "/Dockerfile": "FROM busybox\nRUN echo x\n"})
    reconcile(on, full=True)
    assert len(collected) == 1  # a failed environment: its live hash is uncertain, no gc
