"""Benchmark "controller": reconcile from a real bare git repository at 10,000 environments.

The benchmark (the outer process) generates N environments (`generate.py`) into a work tree,
commits them with `git` and pushes them to a bare repository; computes every environment's image
tag with `discover` on the work tree and writes those N images (one tiny manifest each) straight
into the filesystem storage of a CNCF distribution registry (`docker-registry`), which it then
starts on a free loopback port, plain HTTP. Nothing is built: a registry already holding every
image is the state a controller restarted on a converged repository finds.

Then a fresh interpreter (the inner process: the controller process, whose peak RSS is reported)
runs the real `Controller` with a `GitSource` fetching `file://` from the bare repository, a
`SyncRunner` on a real `RegistryPool` (base images not resolved: offline), and the controller's
web application (`make_app`, `start_server`) on a free loopback port. The one thing replaced is
the Docker engine: a stub builder that says it has every base image and refuses to build, so
the moment a build would start is the controller's own "building <image>" Reporter line, and the
build then fails (and is undone by restoring the file).

1. startup: the first reconcile of the N environments (every image up to date, N manifest HEADs);
2. nothing changed: `request_reconcile` + `wait_for`, repeated; the reconcile's own time (from its
   fetch to its end), the wall time of the request, and the registry requests (the access log
   and `OciRegistry.requests_made`): the aim is <= 20 ms and none;
3. one environment changed: a requirement added to one `requirements.txt`, committed and pushed
   (not timed); then from the start of the reconcile's fetch to the "building" line of that
   environment (aim <= 100 ms), with where the time went (fetch, tree + discovery, change keys,
   selection, registry check); checked: exactly that environment synced, with its new hash, the
   other N-1 skipped as unchanged; then the file is restored and the next reconcile finds its old
   image up to date (one manifest HEAD);
4. webhook to build start: the same change, then a signed GitHub `push` webhook POSTed to the
   web app; from the POST to the "building" line (an unsigned one first: 401, nothing requested);
5. memory: peak RSS of the controller process, and its RSS after the first reconcile.

    python bench/bench_controller.py                 # print the results
    python bench/bench_controller.py --write-docs    # also append/replace the section in docs
    python bench/bench_controller.py --profile       # also profile one changed-env reconcile
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import datetime
import hashlib
import hmac
import http.client
import io
import json
import logging
import os
import platform
import pstats
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DOCS = REPO / "docs" / "benchmarks.md"
SECTION = "## Controller: reconcile"
COUNT = 10_000
PREFIX = "bench"
BRANCH = "main"
UNCHANGED_RUNS = 30
CHANGED_RUNS = 5
WEBHOOK_RUNS = 5
AIM_UNCHANGED = 0.020
AIM_CHANGED = 0.100
SECRET = "envship-bench-webhook-secret"  # noqa: S105 - a throwaway secret of this benchmark
GIT_ENV = {
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@example.invalid",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@example.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
}

sys.path.insert(0, str(HERE))
from localregistry import LocalRegistry, access_log, settled  # noqa: E402
from report import cpu_model, memory, write_docs  # noqa: E402

# -- helpers shared by both processes ------------------------------------------------------------


def git(cwd: Path, *args: str) -> str:
    completed = subprocess.run(
        ["git", *args],
        cwd=cwd,
        env={**os.environ, **GIT_ENV},
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)}: {completed.stderr.strip()}")
    return completed.stdout.strip()


# -- outer: repository and registry ------------------------------------------------------------


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write(path: Path, data: bytes | str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    path.write_bytes(data)


def prepopulate(storage: Path, images: list[tuple[str, str]]) -> None:
    """Write one tiny image per (repository, tag) into distribution's filesystem storage, as a
    push would leave it: the blobs once, and per repository the links to them and the tag."""
    config = json.dumps(
        {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}},
        sort_keys=True,
    ).encode()
    config_hex = sha256(config)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {
                "mediaType": "application/vnd.docker.container.image.v1+json",
                "size": len(config),
                "digest": f"sha256:{config_hex}",
            },
            "layers": [],
        },
        indent=3,
    ).encode()
    manifest_hex = sha256(manifest)
    v2 = storage / "docker" / "registry" / "v2"
    for hexdigest, data in ((config_hex, config), (manifest_hex, manifest)):
        write(v2 / "blobs" / "sha256" / hexdigest[:2] / hexdigest / "data", data)
    for repository, tag in images:
        repo = v2 / "repositories" / repository
        link = f"sha256:{manifest_hex}"
        write(repo / "_layers" / "sha256" / config_hex / "link", f"sha256:{config_hex}")
        write(repo / "_manifests" / "revisions" / "sha256" / manifest_hex / "link", link)
        tag_dir = repo / "_manifests" / "tags" / tag
        write(tag_dir / "current" / "link", link)
        write(tag_dir / "index" / "sha256" / manifest_hex / "link", link)


def prepare(scratch: Path, count: int) -> tuple[Path, Path, list[tuple[str, str]]]:
    """Work tree + bare repository holding `count` environments; their (repository, tag)."""
    from generate import ROOT, generate  # noqa: PLC0415

    from controller.adapters.folder import FolderTree  # noqa: PLC0415
    from controller.core.discovery import DiscoveryOptions, discover  # noqa: PLC0415
    from controller.core.hashing import content_hash  # noqa: PLC0415
    from controller.core.naming import tag_for  # noqa: PLC0415

    work, bare = scratch / "work", scratch / "remote.git"
    generate(work, count)
    git(work, "init", "-q", "-b", BRANCH)
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", f"{count} environments")
    git(scratch, "init", "-q", "--bare", str(bare))
    git(work, "remote", "add", "origin", str(bare))
    git(work, "push", "-q", "origin", BRANCH)
    envs = discover(FolderTree(str(work)), DiscoveryOptions(root=ROOT, prefix=PREFIX))
    refused = [e for e in envs if e.error is not None or e.build is None or not e.repository]
    if refused or len(envs) != count:
        raise AssertionError(f"{len(envs)} environments, {len(refused)} refused")
    images = [(str(e.repository), tag_for(content_hash(e.build))) for e in envs]  # type: ignore[arg-type]
    return work, bare, images


# -- inner: the controller process -------------------------------------------------------------


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Timers:
    """Seconds spent in wrapped functions, per name, since the last `reset`."""

    def __init__(self) -> None:
        self.spent: dict[str, float] = {}

    def reset(self) -> None:
        self.spent = {}

    def wrap(self, owner: Any, name: str, label: str) -> None:
        original = getattr(owner, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.spent[label] = self.spent.get(label, 0.0) + time.perf_counter() - start

        setattr(owner, name, timed)


class BuildStarts(logging.Handler):
    """The controller's log lines of steps that start a build (`BUILDING`), time-stamped."""

    def __init__(self, steps: frozenset[str]) -> None:
        super().__init__(logging.INFO)
        self.steps = steps
        self.lines: list[tuple[float, str, str]] = []
        self.event = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        env = getattr(record, "env", None)
        if env and getattr(record, "step", None) in self.steps:
            self.lines.append((time.perf_counter(), str(env), text))
            self.event.set()

    def clear(self) -> None:
        self.lines = []
        self.event.clear()


def inner(scratch: Path, host: str, count: int, profile: bool) -> dict[str, Any]:  # noqa: PLR0915
    from generate import ROOT  # noqa: PLC0415

    from controller.adapters.builder import BuildError  # noqa: PLC0415
    from controller.adapters.gitsource import GitSettings, GitSource  # noqa: PLC0415
    from controller.adapters.registries import RegistryPool, RegistrySettings  # noqa: PLC0415
    from controller.adapters.secrets import SecretStore  # noqa: PLC0415
    from controller.core.discovery import DiscoveryOptions  # noqa: PLC0415
    from controller.core.naming import implicit_name, tag_for  # noqa: PLC0415
    from controller.http.app import WebhookSecrets, make_app, start_server  # noqa: PLC0415
    from controller.pipeline.outcome import BUILDING  # noqa: PLC0415
    from controller.pipeline.runner import SyncRunner  # noqa: PLC0415
    from controller.pipeline.sync import Sync, SyncOptions, Target  # noqa: PLC0415
    from controller.service import controller as controller_module  # noqa: PLC0415
    from controller.service import reconcile as reconcile_module  # noqa: PLC0415
    from controller.service.metrics import Metrics  # noqa: PLC0415

    work, bare, log_path = (
        scratch / "work",
        scratch / "remote.git",
        scratch / "registry" / "registry.log",
    )
    timers = Timers()
    fetch_starts: list[float] = []

    class TimedSource(GitSource):
        def fetch(self) -> Any:
            fetch_starts.append(time.perf_counter())
            return super().fetch()

    asked: list[str] = []

    class StubBuilder:
        """The engine, replaced: has every base, refuses to build (after the build started)."""

        def ping(self) -> None:
            pass

        def has_image(self, reference: str) -> bool:
            return True

        def image_labels(self, reference: str) -> dict[str, str] | None:
            return None

        def build(self, rendered: Any, *, tag: str, **_: Any) -> None:
            asked.append(tag)
            raise BuildError("benchmark: not built")

    source = TimedSource(
        GitSettings(url=f"file://{bare}", ref=BRANCH, cache_dir=scratch / "cache"), SecretStore()
    )
    target = Target(host, PREFIX)
    settings = RegistrySettings()
    store = SecretStore()
    pools: list[RegistryPool] = []

    def pool_factory() -> RegistryPool:
        pools.append(RegistryPool(settings, store))
        return pools[-1]

    runner = SyncRunner(
        target,
        pool_factory,
        SyncOptions(jobs=1, resolve_bases=False),
        builder_factory=StubBuilder,  # type: ignore[arg-type]
    )
    metrics = Metrics()
    controller = controller_module.Controller(
        source, runner, DiscoveryOptions(root=ROOT, prefix=PREFIX), metrics=metrics
    )
    timers.wrap(GitSource, "fetch", "fetch")
    timers.wrap(source, "tree", "tree")
    timers.wrap(reconcile_module, "discover", "discover")
    timers.wrap(reconcile_module, "change_key", "change keys")
    timers.wrap(controller.reconciler, "select", "select")
    timers.wrap(Sync, "plan", "registry check (Sync.plan)")
    runs_of_runner: list[int] = []
    timers.wrap(runner, "run", "sync")
    original_run = runner.run

    def counted_run(*args: Any, **kwargs: Any) -> Any:
        runs_of_runner.append(len(args[0]))
        return original_run(*args, **kwargs)

    runner.run = counted_run  # type: ignore[method-assign]
    starts = BuildStarts(frozenset(str(step) for step in BUILDING))
    ctl_log = logging.getLogger("envship.controller")
    ctl_log.setLevel(logging.INFO)
    ctl_log.addHandler(starts)
    ctl_log.propagate = False
    logging.getLogger("envship").setLevel(logging.ERROR)

    def requests_made() -> int:
        return sum(r.requests_made for p in pools for r in p._registries.values())

    result: dict[str, Any] = {"count": count}

    # 1. startup ---------------------------------------------------------------------------
    before_log = settled(log_path)
    start = time.perf_counter()
    controller.start(schedule=False)
    outcome = controller.wait_for(1, 3600)
    first = time.perf_counter() - start
    if (
        not outcome
        or outcome["result"] != "success"
        or outcome.get("actions") != {"up-to-date": count}
    ):
        raise AssertionError(f"first reconcile: {outcome}")
    logged = access_log(log_path)[before_log:]
    heads = sum(1 for m, p, s in logged if m == "HEAD" and "/manifests/" in p and s == 200)
    if heads != count or requests_made() < count:
        raise AssertionError(f"first reconcile: {heads} manifest HEADs logged, {count} expected")
    result["first"] = {
        "seconds": first,
        "requests_logged": len(logged),
        "manifest_heads": heads,
        "requests_made": requests_made(),
        "spent": dict(timers.spent),
    }
    result["rss_after_first_mib"] = rss_mib()
    print(f"first reconcile: {first:.1f} s, {len(logged)} registry requests", file=sys.stderr)

    def reconcile(reason: str) -> tuple[dict[str, Any], float]:
        begin = time.perf_counter()
        ticket = controller.request_reconcile(reason)
        done = controller.wait_for(ticket, 600)
        wall = time.perf_counter() - begin
        if done is None:
            raise AssertionError(f"{reason}: no outcome")
        return done, wall

    # 2. nothing changed -------------------------------------------------------------------
    before_log = settled(log_path)
    before_made, before_runs, before_fetches = requests_made(), len(runs_of_runner), source.fetches
    internal, walls, fetches = [], [], []
    for _ in range(UNCHANGED_RUNS):
        timers.reset()
        done, wall = reconcile("bench unchanged")
        if done["result"] != "unchanged":
            raise AssertionError(f"nothing changed: {done}")
        internal.append(done["seconds"])
        walls.append(wall)
        fetches.append(timers.spent.get("fetch", 0.0))
    logged = access_log(log_path)[before_log:] if settled(log_path) else []
    if len(logged) or requests_made() != before_made or len(runs_of_runner) != before_runs:
        raise AssertionError(f"nothing changed: {len(logged)} registry requests")
    if source.fetches - before_fetches != UNCHANGED_RUNS:
        raise AssertionError("nothing changed: not every reconcile fetched")
    result["unchanged"] = {
        "runs": UNCHANGED_RUNS,
        "internal": internal,
        "wall": walls,
        "fetch": fetches,
        "requests_logged": len(logged),
        "requests_made": requests_made() - before_made,
    }

    # 3./4. one environment changed ---------------------------------------------------------
    pip_files = sorted((work / ROOT).glob("team-*/pip/*/requirements.txt"))
    if len(pip_files) < CHANGED_RUNS + WEBHOOK_RUNS + 1:
        raise AssertionError("too few pip environments to change")
    step = len(pip_files) // (CHANGED_RUNS + WEBHOOK_RUNS + 1)
    chosen = iter(pip_files[::step])

    def change(path: Path, marker: str) -> tuple[str, str]:
        original = path.read_text()
        path.write_text(original + f"envship-bench-marker=={marker}\n")
        git(work, "commit", "-q", "-am", f"change {path.parent.name}")
        git(work, "push", "-q", "origin", BRANCH)
        # a plain pip folder is named after its path below the root
        return implicit_name(path.parent.relative_to(work).as_posix(), ROOT), original

    def restore(path: Path, original: str, name: str) -> None:
        path.write_text(original)
        git(work, "commit", "-q", "-am", f"restore {name}")
        git(work, "push", "-q", "origin", BRANCH)
        before = requests_made()
        done, _ = reconcile("bench restore")
        if done.get("synced") != 1 or done.get("actions") != {"up-to-date": 1}:
            raise AssertionError(f"restore {name}: {done}")
        if requests_made() - before > 1:  # 0: the client remembers the image it saw
            raise AssertionError(f"restore {name}: {requests_made() - before} registry requests")

    def check_changed(done: dict[str, Any], name: str) -> None:
        if done.get("synced") != 1 or done.get("skipped", {}).get("unchanged") != count - 1:
            raise AssertionError(f"{name}: {done}")
        if [env for _, env, _ in starts.lines] != [name]:
            raise AssertionError(f"{name}: builds started for {[e for _, e, _ in starts.lines]}")
        read = controller.reconciler.parsed.read
        if read != 1:
            raise AssertionError(f"{name}: discovery read {read} environments")
        status = controller.board.get(name)
        if status is None or not status.hash or len(asked) != 1:
            raise AssertionError(f"{name}: {status}, builds asked {asked}")
        repository, _, tag = asked[0].rpartition(":")
        if not repository.endswith(f"/{PREFIX}/{name.lower()}") or tag != tag_for(status.hash):
            raise AssertionError(f"{name}: built {asked[0]}, hash {status.hash}")

    changed: list[dict[str, Any]] = []
    for index in range(CHANGED_RUNS):
        path = next(chosen)
        name, original = change(path, f"1.0.{index}")
        starts.clear()
        asked.clear()
        timers.reset()
        fetch_starts.clear()
        made = requests_made()
        done, wall = reconcile("bench changed")
        check_changed(done, name)
        begin = fetch_starts[0]
        changed.append(
            {
                "env": name,
                "to_build": starts.lines[0][0] - begin,
                "reconcile": done["seconds"],
                "spent": dict(timers.spent),
                "requests_made": requests_made() - made,
                "read": controller.reconciler.parsed.read,
                "parsed": controller.reconciler.parsed.parsed,
            }
        )
        restore(path, original, name)
    result["changed"] = changed

    profile_text = ""
    if profile:
        path = next(chosen)
        name, original = change(path, "9.9.9")
        starts.clear()
        asked.clear()
        profiler = cProfile.Profile()
        unprofiled = controller.reconciler.reconcile

        def profiled(*args: Any, **kwargs: Any) -> Any:  # in the reconcile worker's thread
            profiler.enable()
            try:
                return unprofiled(*args, **kwargs)
            finally:
                profiler.disable()

        controller.reconciler.reconcile = profiled  # type: ignore[method-assign]
        done, _ = reconcile("bench profile")
        controller.reconciler.reconcile = unprofiled  # type: ignore[method-assign]
        check_changed(done, name)
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(45)
        stats = pstats.Stats(profiler, stream=out)
        stats.sort_stats("tottime").print_stats(25)
        profile_text = out.getvalue()
        restore(path, original, name)
    result["profile"] = profile_text

    # webhook -> build start -------------------------------------------------------------
    app = make_app(controller, secrets=WebhookSecrets(github=lambda: SECRET), metrics=metrics)
    loop = asyncio.new_event_loop()
    server: dict[str, Any] = {}
    ready = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        runner_web = loop.run_until_complete(start_server(app, host="127.0.0.1", port=0))
        server["runner"] = runner_web
        server["port"] = runner_web.addresses[0][1]
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    ready.wait(10)
    port = server["port"]

    def post(body: bytes, signature: str | None) -> tuple[int, dict[str, Any]]:
        headers = {"Content-Type": "application/json", "X-GitHub-Event": "push"}
        if signature is not None:
            headers["X-Hub-Signature-256"] = signature
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        connection.request("POST", "/hooks/github", body=body, headers=headers)
        response = connection.getresponse()
        data = json.loads(response.read() or b"{}")
        connection.close()
        return response.status, data

    body = json.dumps({"ref": f"refs/heads/{BRANCH}", "after": "0" * 40}).encode()
    signature = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    requested = controller._requested
    status, _ = post(body, "sha256=" + "0" * 64)
    unsigned, _ = post(body, None)
    if status != 401 or unsigned != 401 or controller._requested != requested:
        raise AssertionError(f"bad signatures: {status}, {unsigned}, a reconcile was requested")

    hooks: list[dict[str, Any]] = []
    for index in range(WEBHOOK_RUNS):
        path = next(chosen)
        name, original = change(path, f"2.0.{index}")
        starts.clear()
        asked.clear()
        timers.reset()
        fetch_starts.clear()
        begin = time.perf_counter()
        status, data = post(body, signature)
        answered = time.perf_counter()
        if status != 202 or "ticket" not in data:
            raise AssertionError(f"webhook: {status} {data}")
        if not starts.event.wait(60):
            raise AssertionError(f"webhook: no build started for {name}")
        served = controller.wait_for(int(data["ticket"]), 600)
        if served is None:
            raise AssertionError("webhook: no outcome")
        check_changed(served, name)
        hooks.append(
            {
                "env": name,
                "to_build": starts.lines[0][0] - begin,
                "answered": answered - begin,
                "to_fetch": fetch_starts[0] - begin,
            }
        )
        restore(path, original, name)
    result["webhook"] = hooks

    asyncio.run_coroutine_threadsafe(server["runner"].cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    controller.stop(10)
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["rss_end_mib"] = rss_mib()
    return result


# -- report ----------------------------------------------------------------------------------


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def spread(values: list[float]) -> str:
    """median (min-max), in ms"""
    return f"{ms(statistics.median(values))} ({min(values) * 1000:.1f}-{max(values) * 1000:.1f})"


def mark(value: float, aim: float) -> str:
    return "**met**" if value <= aim else "**missed**"


def section(r: dict[str, Any], info: dict[str, str]) -> str:
    n = r["count"]
    un = r["unchanged"]
    ch = r["changed"]
    wh = r["webhook"]
    un_med = statistics.median(un["internal"])
    ch_times = [c["to_build"] for c in ch]
    ch_med = statistics.median(ch_times)
    wh_times = [w["to_build"] for w in wh]
    parts: dict[str, list[float]] = {}
    for c in ch:
        for label, seconds in c["spent"].items():
            parts.setdefault(label, []).append(seconds)
    order = ["fetch", "discover", "change keys", "select", "registry check (Sync.plan)"]
    reads = ", ".join(str(c["read"]) for c in ch)
    parses = ", ".join(str(c["parsed"]) for c in ch)
    why = f"""
What keeps it short: the controller remembers what discovery parsed and read, by git object id
(`DiscoveryCache`). A new commit is compared with the last tree by object id down the changed
folders alone; only the folders the change touches are discovered again (a file added or
removed, a YAML document whose role changed, and the folders below one that turned into a
Dockerfile context or a v2 build folder), and only the environments whose inputs changed are
read again (environments read in these reconciles: {reads}; YAML files parsed: {parses}).
An unchanged environment comes back as the same object, so its change key is reused, and the
{n - 1:,} unchanged environments move to the new revision in one batch. A claim on the root
folder itself or above it, or a tree the cache cannot compare with, takes the full discovery,
which still parses only changed YAML blobs and reads only environments whose inputs changed,
but walks every folder.
"""
    if ch_med > AIM_CHANGED:
        why += f"""
The aim was missed in this run: profile one reconcile with `bench_controller.py --profile` to
see where the {ms(ch_med)} go.
"""
    part_rows = "\n".join(
        f"| {label} | {ms(statistics.median(parts[label]))} |" for label in order if label in parts
    )
    none = un["requests_logged"] == 0 and un["requests_made"] == 0
    row_unchanged = (
        f"| reconcile, nothing changed: its duration, median of {un['runs']} (range) "
        f"| {spread(un['internal'])} | <= 20 ms: {mark(un_med, AIM_UNCHANGED)} |"
    )
    row_requests = (
        f"| the same: registry requests ({un['runs']} reconciles) "
        f"| {un['requests_logged']} in the access log, {un['requests_made']} made "
        f"| none: {'**met**' if none else '**missed**'} |"
    )
    row_changed = (
        f"| one environment changed: fetch start to its build start, median of {len(ch)} "
        f"(range) | {spread(ch_times)} | <= 100 ms: {mark(ch_med, AIM_CHANGED)} |"
    )
    first = r["first"]
    machine_rows = "\n".join(f"| {k} | {v} |" for k, v in info.items())
    return f"""{SECTION}

What it measures (`bench/bench_controller.py`): the controller (`envship run`'s `Controller`,
`GitSource`, `SyncRunner`, web application) at {n:,} environments from `bench/generate.py`
(the mix of the plan benchmark), committed with `git` to a work tree and pushed to a real bare
repository, which `GitSource` fetches over `file://` into its own bare cache; the registry is
a real CNCF distribution (`docker-registry`) on a free loopback port, plain HTTP, holding every
environment's image already (the benchmark writes {n:,} one-manifest images straight into its
filesystem storage before starting it: a controller restarted on a converged repository). Base
images are not resolved (offline, as `--no-resolve-base`). Nothing is built: the Docker engine is
replaced by a stub that has every base image and refuses to build, so the moment a build starts
is the controller's own `building <image>` Reporter line (the line that turns an environment
`Building`), time-stamped by a log handler; the failed build is then undone by restoring the file
(the next reconcile finds the old image up to date with one manifest HEAD). The controller runs
in a fresh interpreter, the "controller process" below, with the web application served by
aiohttp in the same process.

- **startup**: the first reconcile, every image up to date ({first["manifest_heads"]:,} manifest
  HEADs): {first["seconds"]:.1f} s.
- **nothing changed**: `request_reconcile` then `wait_for`, {un["runs"]} times; the reconcile's
  own duration (from its fetch to its end, as in its outcome and the reconcile metric) and the
  wall time of the request; registry requests counted in the access log and by
  `OciRegistry.requests_made`, and the sync never called.
- **one environment changed**: a requirement appended to one `requirements.txt`, committed and
  pushed (not timed), then a reconcile: from the start of its fetch to the `building` line of
  that environment, {len(ch)} times (each a different environment). Checked each time: that
  environment alone synced (and read by discovery), built under its new hash, the other {n - 1:,}
  skipped as unchanged.
- **webhook to build start**: the same change, then a GitHub `push` webhook signed with
  `X-Hub-Signature-256`, POSTed to `/hooks/github`; from the POST to the `building` line,
  {len(wh)} times. Checked first: a wrongly signed and an unsigned webhook get 401 and request
  nothing.
- **memory**: peak RSS of the controller process over all of the above, and its RSS right after
  the first reconcile.

| measurement at {n:,} environments | result | aim |
|---|---:|---|
{row_unchanged}
| the same, wall time of request + wait, median (range) | {spread(un["wall"])} | |
| the same: its git fetch alone, median | {ms(statistics.median(un["fetch"]))} | |
{row_requests}
{row_changed}
| the same: registry requests per reconcile | {", ".join(str(c["requests_made"]) for c in ch)} | |
| webhook POST to build start, median of {len(wh)} (range) | {spread(wh_times)} | |
| the same: POST answered (202), median | {ms(statistics.median(w["answered"] for w in wh))} | |
| first reconcile after start-up (all {n:,} up to date) | {first["seconds"]:.1f} s | |
| controller process: RSS after the first reconcile | {r["rss_after_first_mib"]:.0f} MiB | |
| controller process: peak RSS | {r["peak_rss_mib"]:.0f} MiB | |

Where the time of a one-environment-changed reconcile goes, up to its build (medians of {len(ch)};
each part timed by wrapping the function, envship unchanged):

| part | time |
|---|---:|
{part_rows}
{why}
Machine:

| | |
|---|---|
{machine_rows}

Reproduce (needs `git` and `docker-registry`; no Docker engine; takes about
{max(1, round(r.get("total_seconds", 120) / 60))} minutes; removes its folders and registry):

```sh
bash scripts/test --fast   # makes .venv from the lock (or scripts/quickstart)
.venv/bin/python bench/bench_controller.py --write-docs
```
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=COUNT)
    parser.add_argument("--write-docs", action="store_true", help=f"rewrite {SECTION!r}")
    parser.add_argument("--profile", action="store_true", help="profile one changed reconcile")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--inner", nargs=2, metavar=("SCRATCH", "HOST"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.inner:
        out = inner(Path(args.inner[0]), args.inner[1], args.count, args.profile)
        print(json.dumps(out))
        return 0
    began = time.perf_counter()
    load = os.getloadavg()[0]
    scratch = Path(tempfile.mkdtemp(prefix="envship-bench-ctl-"))
    registry = LocalRegistry(scratch / "registry")
    try:
        print(f"generating {args.count} environments, committing, pushing", file=sys.stderr)
        _, _, images = prepare(scratch, args.count)
        registry.folder.mkdir(parents=True)
        prepopulate(registry.folder / "data", images)
        registry.start()
        load_before = os.getloadavg()[0]
        command = [sys.executable, __file__, "--inner", str(scratch), registry.host]
        command += ["--count", str(args.count)] + (["--profile"] if args.profile else [])
        completed = subprocess.run(command, stdout=subprocess.PIPE, check=False)
        if completed.returncode != 0:
            raise SystemExit(f"the controller process failed ({completed.returncode})")
        result = json.loads(completed.stdout)
        version = registry.version()
    finally:
        registry.stop()
        if args.keep:
            print(f"kept {scratch}", file=sys.stderr)
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    result["total_seconds"] = time.perf_counter() - began
    import pygit2  # noqa: PLC0415

    info = {
        "CPUs (`nproc`)": str(len(os.sched_getaffinity(0))),
        "CPU model": cpu_model(),
        "memory": memory(),
        "OS": f"{platform.system()} {platform.release()}",
        "Python": f"{platform.python_implementation()} {platform.python_version()}",
        "pygit2 / libgit2": f"{getattr(pygit2, '__version__', '?')} / {pygit2.LIBGIT2_VERSION}",
        "git": git(REPO, "--version").removeprefix("git version "),
        "registry": f"CNCF distribution {version}, filesystem storage",
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "load average (1 min) at start": f"{load:.2f}",
        "load average (1 min) before the controller started": f"{load_before:.2f}",
    }
    if result.get("profile"):
        print(result["profile"])
    text = section(result, info)
    print(text)
    if args.write_docs:
        write_docs(DOCS, SECTION, text)
        print(f"wrote {DOCS.relative_to(REPO)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
