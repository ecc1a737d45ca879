"""Chaos: `envship run` killed with SIGKILL at random moments, and a registry that refuses or
times out a share of requests. A real bare git repository, the real TLS registry with basic
auth (behind a faulty HTTPS proxy in the second test), the real Docker engine, the controller
as a separate process.

What must hold whatever happens: no tag ever points at content of another hash (for every
repository of the test and every 32-hex tag, the image's `io.envship.hash` label starts with
the tag), a killed controller leaves nothing that breaks its next start, and once the faults
stop the controller converges: every environment Ready at the head revision.

Randomness comes from one seed (`ENVSHIP_CHAOS_SEED`, default below), so a failure can be
replayed; each test keeps to a time budget of about two minutes.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pygit2
import pytest
import requests
import yaml

from tests.support.canaries import record_output
from tests.support.faulty_proxy import FaultyProxy
from tests.support.infra import Certs, Registry, free_port
from tests.support.paths import ROOT
from tests.support.upstream import Upstream

SEED = int(os.environ.get("ENVSHIP_CHAOS_SEED", "18"))
BUDGET = 120.0
"""Seconds each test may take, start to end."""
NAMES = ("alpha", "beta", "gamma", "delta")
HEX32 = re.compile(r"[0-9a-f]{32}")
LABEL_HASH = "io.envship.hash"
MANIFESTS = (
    "application/vnd.docker.distribution.manifest.v2+json, "
    "application/vnd.oci.image.manifest.v1+json"
)
STEPS = ("building ", "pushing ")


class Deadline:
    """The test's time budget: every wait is cut to what is left of it."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self, doing: str) -> float:
        remaining = self.end - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"the test's {BUDGET:.0f} s budget ran out while {doing}")
        return remaining


# -- the controller process -----------------------------------------------------------------------


@dataclass
class Process:
    """One `envship run`."""

    process: subprocess.Popen[bytes]
    url: str
    stderr: Path
    stdout: Path

    def status(self) -> dict[str, Any]:
        response = requests.get(self.url + "/status", timeout=5)
        response.raise_for_status()
        return dict(response.json())

    def metric(self, name: str) -> float:
        text = requests.get(self.url + "/metrics", timeout=5).text
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith((name + "{", name + " "))
        )

    def records(self) -> list[dict[str, Any]]:
        """The JSON log records written so far (a line cut by SIGKILL is skipped)."""
        records = []
        text = self.stderr.read_text(errors="replace") if self.stderr.exists() else ""
        for line in text.splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict):
                    records.append(record)
        return records

    def kill(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def output(self) -> tuple[str, str]:
        return tuple(  # type: ignore[return-value]
            path.read_text(errors="replace") if path.exists() else ""
            for path in (self.stdout, self.stderr)
        )


@dataclass
class Chaos:
    """A bare repository with the test's environments, a configuration, and the runs of
    `envship run` on it (same configuration, same git cache every time)."""

    folder: Path
    base: str
    registry_host: str
    target: Registry
    certs: Certs
    reconcile: float = 600.0
    """The periodic reconcile's interval (without changes, it asks the registry nothing)."""
    prefix: str = field(default_factory=lambda: f"chaos-{uuid.uuid4().hex[:8]}")
    runs: list[Process] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.upstream = Upstream(self.folder / "specs.git")
        self.cache = self.folder / "cache" / "git"
        self.port = free_port()
        config = {
            "git": {"url": self.upstream.path.as_uri(), "ref": "main", "cacheDir": str(self.cache)},
            "specs": {"root": "envs"},
            "registry": {
                "url": f"{self.registry_host}/{self.prefix}",
                "caFile": self.certs.ca_file,
                "credentials": {
                    "username": "env:ENVSHIP_TEST_USER",
                    "password": "env:ENVSHIP_TEST_PASS",
                },
            },
            "builds": {"jobs": 2},
            "intervals": {"reconcile": self.reconcile, "resync": 3600, "jitter": 0.05, "grace": 5},
            "http": {"port": self.port},
        }
        self.config = self.folder / "envship.yaml"
        self.config.write_text(yaml.safe_dump(config))
        home = self.folder / "home"
        home.mkdir(exist_ok=True)
        self.env = {
            **os.environ,
            "HOME": str(home),
            "ENVSHIP_TEST_USER": self.target.username or "",
            "ENVSHIP_TEST_PASS": self.target.password or "",
        }

    def commit(self, markers: dict[str, str]) -> str:
        files = {
            f"envs/{name}/Dockerfile": (
                f"FROM {self.base}\nRUN busybox sleep 0.5 && echo {name}-{marker} > /{name}\n"
            )
            for name, marker in markers.items()
        }
        return self.upstream.commit(files)

    @property
    def head(self) -> str:
        return str(self.upstream.repo.references["refs/heads/main"].target)

    def start(self) -> Process:
        number = len(self.runs)
        stdout, stderr = self.folder / f"run{number}.out", self.folder / f"run{number}.err"
        with stdout.open("wb") as out, stderr.open("wb") as err:
            process = subprocess.Popen(
                [sys.executable, "-m", "controller.cli", "run", "--config", str(self.config)],
                stdout=out,
                stderr=err,
                env=self.env,
                cwd=ROOT,
            )
        run = Process(process, f"http://127.0.0.1:{self.port}", stderr, stdout)
        self.runs.append(run)
        return run

    def close(self) -> None:
        for run in self.runs:
            run.kill()
            record_output(*run.output())


@contextlib.contextmanager
def chaos_on(
    tmp_path: Path,
    public_bases: Registry,
    target: Registry,
    certs: Certs,
    registry_host: str,
    reconcile: float = 600.0,
) -> Iterator[Chaos]:
    base = f"{public_bases.host}/base/busybox:1"
    chaos = Chaos(tmp_path / "chaos", base, registry_host, target, certs, reconcile)
    try:
        yield chaos
    finally:
        chaos.close()


def wait(check: Callable[[], bool], deadline: Deadline, doing: str, run: Process) -> None:
    while True:
        if run.process.poll() is not None:
            _out, err = run.output()
            raise AssertionError(f"envship run exited ({run.process.returncode}) {doing}:\n{err}")
        with contextlib.suppress(requests.RequestException, KeyError, ValueError):
            if check():
                return
        time.sleep(min(0.1, deadline.left(doing)))


# -- the registry, read directly ------------------------------------------------------------------


def hash_tags_are_consistent(registry: Registry, prefix: str) -> int:
    """Assert that every 32-hex tag of every repository under `prefix` names an image whose
    `io.envship.hash` label starts with the tag. Returns how many tags were checked."""
    session = registry.session()
    repositories: list[str] = []
    page: str | None = f"{registry.url}/v2/_catalog?n=1000"
    while page:
        catalog = session.get(page, timeout=10)
        catalog.raise_for_status()
        repositories += [
            r for r in catalog.json().get("repositories") or [] if r.startswith(prefix + "/")
        ]
        follow = catalog.links.get("next", {}).get("url")
        page = f"{registry.url}{follow}" if follow and follow.startswith("/") else follow
    checked = 0
    for repository in repositories:
        for tag in registry.tags(repository):
            if not HEX32.fullmatch(tag):
                continue
            manifest = session.get(
                f"{registry.url}/v2/{repository}/manifests/{tag}",
                headers={"Accept": MANIFESTS},
                timeout=10,
            )
            manifest.raise_for_status()
            config = manifest.json()["config"]["digest"]
            blob = session.get(f"{registry.url}/v2/{repository}/blobs/{config}", timeout=10)
            blob.raise_for_status()
            labels = blob.json().get("config", {}).get("Labels") or {}
            content = str(labels.get(LABEL_HASH, "")).removeprefix("sha256:")
            assert content.startswith(tag), (
                f"{repository}:{tag} points at an image of hash {content or '(no label)'}"
            )
            checked += 1
    return checked


def converged(chaos: Chaos, run: Process, deadline: Deadline) -> dict[str, dict[str, Any]]:
    """Wait until every environment is Ready at the head revision; check their images."""
    label = f"main@sha1:{chaos.head}"

    def all_ready() -> bool:
        status = run.status()
        envs = status["environments"]
        return bool(
            status["ready"]
            and status["revision"] == label
            and {e["name"] for e in envs} == set(NAMES)
            and all(e["phase"] == "Ready" and e["revision"] == label for e in envs)
        )

    wait(all_ready, deadline, "waiting for every environment to be Ready at the head", run)
    envs = {env["name"]: env for env in run.status()["environments"]}
    for name, env in envs.items():
        repository, tag = env["image"].split("/", 1)[1].rsplit(":", 1)
        assert repository == f"{chaos.prefix}/{name}"
        assert tag == env["hash"].removeprefix("sha256:")[:32]
        assert chaos.target.manifest_digest(repository, tag) == env["digest"]
        assert chaos.target.labels(repository, tag)[LABEL_HASH] == env["hash"]
        assert env["attempts"] == 0
        assert env["next_retry"] is None
        assert env["last_error"] is None
    return envs


# -- 1. SIGKILL at random moments ---------------------------------------------------------------

ROUNDS = 6
MOMENTS = (
    ("reconcile started", 0.15),  # the clone (first round) or a fetch, discovery, planning
    ("building ", 1.2),
    ("", 4.0),  # any moment after the process started
    ("pushing ", 0.25),
)
"""Where each round kills: after the first log line starting with the text (none: after the
start of the process), a random delay of up to the given seconds."""


def interrupted(records: list[dict[str, Any]]) -> list[str]:
    """Builds or pushes a killed run had started and not finished: `env: step`."""
    open_steps: dict[str, str] = {}
    for record in records:
        env, msg = record.get("env"), str(record.get("msg", ""))
        if not env:
            continue
        if msg.startswith(STEPS):
            open_steps[env] = msg.split(" ", 1)[0]
        elif msg.startswith(("pushed ", "failed: ", "built ")):
            open_steps.pop(env, None)
    return [f"{env}: {step}" for env, step in sorted(open_steps.items())]


def test_kill_9_at_random_moments_converges_and_never_mislabels_a_tag(
    tmp_path: Path, engine: object, target: Registry, public_bases: Registry, certs: Certs
) -> None:
    deadline = Deadline(BUDGET)
    rng = random.Random(SEED)
    run_id = uuid.uuid4().hex[:10]
    with chaos_on(tmp_path, public_bases, target, certs, target.host) as chaos:
        markers = {name: f"{run_id}-0" for name in NAMES}
        chaos.commit(markers)
        kills: list[str] = []
        cut: list[str] = []
        for number in range(ROUNDS):
            if number:
                # new content for some environments, so every round has builds to cut short
                for name in rng.sample(NAMES, 2):
                    markers[name] = f"{run_id}-{number}"
                chaos.commit(markers)
            run = chaos.start()
            moment, spread = MOMENTS[number % len(MOMENTS)]
            extra = rng.uniform(0.0, spread)
            if moment:
                # a moment after the controller logs that it starts a step

                def reached(run: Process = run, moment: str = moment) -> bool:
                    return any(str(r.get("msg", "")).startswith(moment) for r in run.records())

                wait(reached, deadline, f"waiting for {moment!r} in round {number}", run)
            time.sleep(min(extra, deadline.left("waiting to kill")))
            how = f"{extra:.2f} s after {repr(moment) if moment else 'the start'}"
            run.kill()
            records = run.records()
            cut += interrupted(records)
            last = str(records[-1].get("msg", "")) if records else "(no log yet)"
            kills.append(f"round {number}: killed {how}; last log: {last}")
            # never a tag on content of another hash, whenever the controller died
            hash_tags_are_consistent(target, chaos.prefix)

        final = chaos.start()
        envs = converged(chaos, final, deadline)
        checked = hash_tags_are_consistent(target, chaos.prefix)
        assert checked >= len(envs)
        summary = "\n".join(kills)
        # the kills did cut builds short (and pushes, as the seed has it: see the summary)
        assert any(c.endswith("building") for c in cut), f"no build was cut short:\n{summary}"

        # a killed run left nothing that broke the next start: every start fetched from the
        # cache it left, and no reconcile ended stale (git and the registry were up throughout)
        for run in chaos.runs:
            _out, err = run.output()
            assert "Traceback" not in err, err
            for record in run.records():
                msg = str(record.get("msg", ""))
                assert not msg.startswith(("reconcile ended: stale", "reconcile ended: error")), (
                    f"{msg}: {record.get('error')}\n{summary}"
                )
        first = [r for r in final.records() if str(r.get("msg", "")).startswith("reconcile ended")]
        assert first, "the last run never ended a reconcile"
        assert first[0]["msg"].startswith("reconcile ended: success"), first
        cache = pygit2.Repository(str(chaos.cache))
        assert cache.is_bare
        assert str(cache.references["refs/remotes/origin/main"].target) == chaos.head
        assert not list(chaos.cache.parent.glob(".git.*.tmp"))
        assert not list(chaos.cache.rglob("*.lock"))

        # after convergence nothing more happens (no retry loop)
        reconciles = final.metric("envship_reconcile_total")
        time.sleep(min(2.0, deadline.left("watching for more reconciles")))
        assert final.metric("envship_reconcile_total") == reconciles
        print(f"kills (seed {SEED}):\n{summary}\ninterrupted: {cut}")


# -- 2. a registry refusing and timing out requests ----------------------------------------------

REFUSING = (10.0, 30.0, 0.5)
"""Phase 1: at least and at most so many seconds (until an environment failed twice), and the
share of envship's requests answered 503 at once."""
ENGINE_SHARE = 0.05
"""Phase 1: the share of the engine's requests (pushes) refused. The engine retries a refused
upload itself, 5 s, 10 s, ... apart, so more would only make the test long."""
HOLDING = (55.0, 0.3)
"""Phase 2: at most so many seconds (until a held request outlasted envship's 30 s registry
timeout), and the share of envship's requests held for 35 s (the default seed holds the first
one: see `FaultyProxy`). The engine's requests all pass."""
CLIENT_TIMEOUT = 30.0
WINDOW = 5.0
MAX_REQUESTS_PER_WINDOW = 60
"""envship's own registry requests in any window while faulty; a hot loop makes thousands."""


@pytest.fixture
def faulty(target: Registry, certs: Certs) -> Iterator[FaultyProxy]:
    proxy = FaultyProxy(target, certs, seed=SEED, hold_seconds=35.0).start()
    try:
        yield proxy
    finally:
        proxy.stop()


def observe(
    run: Process,
    snapshots: list[dict[str, Any]],
    until: Callable[[], bool],
    least: float,
    most: float,
) -> None:
    """Poll the status for at least `least` seconds, until `until()` or `most` seconds."""
    start = time.monotonic()
    while time.monotonic() - start < most:
        if run.process.poll() is not None:
            raise AssertionError(f"envship run exited:\n{run.output()[1]}")
        with contextlib.suppress(requests.RequestException, ValueError):
            snapshots.append(run.status())
        if time.monotonic() - start >= least and until():
            return
        time.sleep(0.25)
    raise AssertionError(f"the phase did not reach its goal in {most:.0f} s")


def failed_twice(snapshots: list[dict[str, Any]]) -> bool:
    return any(
        env["phase"] == "Failed" and env["attempts"] >= 2
        for snapshot in snapshots[-1:]
        for env in snapshot["environments"]
    )


def test_a_registry_refusing_and_timing_out_requests_backs_off_then_converges(
    tmp_path: Path,
    engine: object,
    target: Registry,
    public_bases: Registry,
    certs: Certs,
    faulty: FaultyProxy,
) -> None:
    deadline = Deadline(BUDGET)
    with chaos_on(tmp_path, public_bases, target, certs, faulty.host, reconcile=2.0) as chaos:
        chaos.commit({name: uuid.uuid4().hex[:12] for name in NAMES})
        snapshots: list[dict[str, Any]] = []

        # phase 1: half of envship's requests refused, until an environment failed twice
        least, most, share = REFUSING
        faulty.faulty(share, 0.0, ENGINE_SHARE)
        started = time.monotonic()
        run = chaos.start()
        observe(run, snapshots, lambda: failed_twice(snapshots), least, most)

        # phase 2: new content for every environment (retried at once), and a share of
        # envship's requests held, until one was held past envship's timeout
        most, share = HOLDING
        changed = time.monotonic()
        chaos.commit({name: uuid.uuid4().hex[:12] for name in NAMES})
        faulty.faulty(share, 1.0, 0.0)

        def outlasted() -> bool:
            held = [s for s in faulty.requests(changed) if s.action == "held"]
            return bool(held) and time.monotonic() - held[0].at > CLIENT_TIMEOUT + 1

        observe(run, snapshots, outlasted, 0.0, min(most, deadline.left("holding requests")))
        healed = time.monotonic()
        faulty.healthy()
        hash_tags_are_consistent(target, chaos.prefix)

        # the proxy did refuse and hold requests, and a held one outlasted envship's timeout
        assert faulty.count("refused") >= 1
        assert faulty.count("held") >= 1
        records = run.records()
        errors = [str(r.get("error") or "") for r in records]
        assert any("HTTP 503" in e or "503 Service Unavailable" in e for e in errors)

        # failed environments show their attempts and next retry, attempts only grow
        failed = [
            env
            for snapshot in snapshots
            for env in snapshot["environments"]
            if env["phase"] == "Failed"
        ]
        assert failed, "no environment was seen Failed"
        for env in failed:
            assert env["attempts"] >= 1, env
            assert env["next_retry"] is not None, env
            assert env["last_error"], env
        assert max(env["attempts"] for env in failed) >= 2
        attempts: dict[str, int] = {}
        for snapshot in snapshots:
            for env in snapshot["environments"]:
                if env["phase"] in ("Ready", "Stalled") or not env["attempts"]:
                    attempts.pop(env["name"], None)
                else:
                    assert env["attempts"] >= attempts.get(env["name"], 0), env
                    attempts[env["name"]] = env["attempts"]

        # backoff: an environment's next attempt fails no sooner than the delay it announced,
        # unless its files changed meanwhile (the commit of phase 2 retries it at once)
        wall = time.time() - time.monotonic()
        changed += wall
        failures: dict[str, list[tuple[float, int, float]]] = {}
        for record in records:
            match = re.match(r"failed \(attempt (\d+)\), retrying in (\d+) s", str(record["msg"]))
            if match and record.get("env"):
                at = datetime.fromisoformat(str(record["ts"]).replace("Z", "+00:00")).timestamp()
                failures.setdefault(record["env"], []).append((at, int(match[1]), float(match[2])))
        assert failures
        for name, seen in failures.items():
            for (at, number, delay), (next_at, next_number, _) in itertools.pairwise(seen):
                if next_number == 1:
                    continue  # Ready in between: the count starts again
                assert next_number == number + 1, (name, seen)
                if not at < changed <= next_at:
                    assert next_at - at >= delay - 0.6, (name, seen)  # "%.0f s" rounds

        # no hot loop: few requests in any window
        own = faulty.requests(started, healed, engine=False)
        windows = [
            sum(1 for s in own if start <= s.at < start + WINDOW)
            for start in (started + WINDOW * i for i in range(int((healed - started) // WINDOW)))
        ]
        assert max(windows) <= MAX_REQUESTS_PER_WINDOW, windows

        # healthy again: it converges, the tags are right, and then it is quiet
        converged(chaos, run, deadline)
        hash_tags_are_consistent(target, chaos.prefix)
        took = time.monotonic() - healed
        # the reconcile that waited on the held request reported its timeout when it ended
        errors = [str(r.get("error") or "") for r in run.records()]
        assert any("timed out" in e for e in errors), "no request timed out"
        quiet = time.monotonic()
        time.sleep(min(3.0, deadline.left("watching for more registry requests")))
        assert faulty.requests(quiet) == []
        print(
            f"seed {SEED}: {len(faulty.requests())} requests, {faulty.count('refused')} refused, "
            f"{faulty.count('held')} held; envship requests per {WINDOW:.0f} s: {windows}; "
            f"failures: { {n: [a for _, a, _ in s] for n, s in failures.items()} }; "
            f"converged {took:.1f} s after healing"
        )
