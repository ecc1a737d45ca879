"""Benchmark "sync": `envship plan` and `envship sync` against a real registry.

Starts its own CNCF distribution registry (`docker-registry`, Debian's package) on a free
loopback port in a temporary folder, makes a busybox base image (Debian's busybox-static,
`docker import`) and pushes it there, then:

1. plan of 1,000 environments (`envship plan DIR --registry HOST/prefix -o json`, subprocess):
   cold (nothing in the registry: every manifest HEAD answers 404) and warm (after a sync that
   built and pushed all of them), median of 3 each; registry requests counted from the
   registry's access log;
2. 100 environments: the pipeline users run today, `docker build` + `docker push` of every
   environment in turn (a shell script, the engine's cache warm), against `envship sync` when
   nothing changed (median of 3 each); the first `envship sync` (which builds all of them) is
   timed too;
3. where the time of a no-change sync goes: the same command in a fresh interpreter with
   its imports, discovery and registry checks (`Sync.plan`, `requests_made`) timed apart.

Every environment is a folder with a Dockerfile: `FROM` the local busybox base, one distinct
`RUN` line. Every run is checked (exit status, exactly the expected environments, every one
planned / built / up to date as expected, the same hashes in every run, the registry holding
what was reported), so an error cannot pass for a fast run. Docker comes from DOCKER_HOST or
the default socket. Images the benchmark made are removed from the engine at the end.

    python bench/bench_sync.py                 # print the tables
    python bench/bench_sync.py --write-docs    # also rewrite the section in docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import hashlib
import io
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import textwrap
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import docker

# docker and requests are imported where they are used: `probe` times envship's imports in a
# fresh interpreter running this file, where they must not be loaded already.

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DOCS = REPO / "docs" / "benchmarks.md"
SECTION = "## Sync against a registry"
sys.path.insert(0, str(HERE))
from localregistry import LocalRegistry  # noqa: E402
from report import cpu_model, memory, write_docs  # noqa: E402

STEPS = ("discovery", "checks", "provenance", "authenticator")
"""The steps of a sync `probe` times apart."""
PLAN_COUNT = 1000
SYNC_COUNT = 100
RUNS = 3
TARGET_RATIO = 100.0
PREFIX = "bench"
"""Repository prefix envship pushes under; the baseline pushes under `ci/`."""
BASE = "base/busybox:1"
WIDTH = 96
"""Prose in the docs is wrapped at this width (tables are not)."""
BUSY_LOAD = 0.5
"""A 1-minute load average above this means other work skews the numbers."""


# -- the registry and the engine ---------------------------------------------------------------


class SyncRegistry(LocalRegistry):
    """The benchmark's target registry, which can also say what it holds."""

    def digest(self, repository: str, reference: str) -> str | None:
        import requests  # noqa: PLC0415 - see the top

        accept = (
            "application/vnd.docker.distribution.manifest.v2+json, "
            "application/vnd.oci.image.manifest.v1+json"
        )
        response = requests.head(
            f"http://{self.host}/v2/{repository}/manifests/{reference}",
            headers={"Accept": accept},
            timeout=10,
        )
        if response.status_code == 404:
            return None
        response.raise_for_status()
        return response.headers.get("Docker-Content-Digest")


def kind(path: str) -> str:
    if "/manifests/" in path:
        return "manifest"
    if "/blobs/uploads/" in path:
        return "upload"
    if "/blobs/" in path:
        return "blob"
    return "ping" if path == "" else "other"


def describe_requests(logged: list[tuple[str, str, int]]) -> str:
    """`1,000 HEAD manifest 404, 1 HEAD manifest 200`, most frequent first."""
    counts = Counter(f"{method} {kind(path)} {status}" for method, path, status in logged)
    return ", ".join(f"{n:,} {what}" for what, n in counts.most_common())


def busybox_rootfs_tar() -> bytes:
    """A busybox root filesystem (Debian's busybox-static) as a tar for `docker import`."""
    busybox = shutil.which("busybox")
    if busybox is None:
        raise SystemExit("busybox is not installed (Debian: apt-get install busybox-static)")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for folder in ("bin", "tmp", "etc"):
            info = tarfile.TarInfo(folder)
            info.type = tarfile.DIRTYPE
            info.mode = 0o1777 if folder == "tmp" else 0o755
            archive.addfile(info)
        archive.add(busybox, arcname="bin/busybox")
        for applet in ("sh", "echo", "true", "cat", "ls"):
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type = tarfile.SYMTYPE
            link.linkname = "busybox"
            archive.addfile(link)
    return buffer.getvalue()


def push_base(client: docker.DockerClient, host: str) -> str:
    """Import the busybox base as `host/base/busybox:1` and push it; returns its digest."""
    repository, tag = f"{host}/{BASE}".rsplit(":", 1)
    client.api.import_image_from_data(busybox_rootfs_tar(), repository=repository, tag=tag)
    digest = None
    for item in client.api.push(repository, tag=tag, stream=True, decode=True):
        if "error" in item:
            raise RuntimeError(f"push of the base image failed: {item['error']}")
        digest = (item.get("aux") or {}).get("Digest") or digest
    if not digest:
        raise RuntimeError("push of the base image reported no digest")
    return str(digest)


def remove_images(client: docker.DockerClient, host: str) -> int:
    """Remove every image tagged under `host/` (only this benchmark's registry), the base last."""
    import docker  # noqa: PLC0415 - see the top

    tags = [t for image in client.images.list() for t in image.tags if t.startswith(f"{host}/")]
    removed = 0
    for tag in sorted(tags, key=lambda t: t == f"{host}/{BASE}"):
        with contextlib.suppress(docker.errors.DockerException):
            client.api.remove_image(tag)
            removed += 1
    return removed


# -- environments ----------------------------------------------------------------------------


def generate(folder: Path, count: int, label: str, base: str) -> list[str]:
    """`count` Dockerfile folders `<label>-NNNN`, FROM `base`, one distinct RUN line each.

    The label is in the RUN line, so two sets never share the engine's build cache."""
    names = []
    for index in range(count):
        name = f"{label}-{index:04d}"
        (folder / name).mkdir(parents=True)
        (folder / name / "Dockerfile").write_text(
            f"FROM {base}\nRUN echo {name} > /envship-bench\n", encoding="utf-8"
        )
        names.append(name)
    return names


# -- running envship -------------------------------------------------------------------------


def envship_command() -> list[str]:
    """The installed `envship` script next to this interpreter, else `python -m controller.cli`."""
    script = Path(sys.executable).with_name("envship")
    if script.exists():
        return [str(script)]
    found = shutil.which("envship")
    return [found] if found else [sys.executable, "-m", "controller.cli"]


@dataclass
class Run:
    seconds: float
    items: list[dict[str, Any]]
    stderr: str
    requests: list[tuple[str, str, int]]


class Bench:
    def __init__(self, registry: SyncRegistry, scratch: Path) -> None:
        self.registry = registry
        self.scratch = scratch
        self.loads: list[float] = []
        self.hashes: dict[str, str] = {}
        """environment name -> content hash, the same in every run."""
        self.digests: dict[str, str] = {}
        """environment name -> image digest pushed by the first sync."""

    def sample_load(self) -> None:
        self.loads.append(os.getloadavg()[0])

    def envship(self, *args: str) -> Run:
        """One `envship` run as a subprocess: wall time, JSON output, requests it caused."""
        output = self.scratch / "envship.json"
        before = self.registry.settled()
        self.sample_load()
        with output.open("wb") as sink:
            start = time.perf_counter()
            completed = subprocess.run(
                [*envship_command(), *args], stdout=sink, stderr=subprocess.PIPE, check=False
            )
            elapsed = time.perf_counter() - start
        stderr = completed.stderr.decode(errors="replace")
        if completed.returncode != 0:
            raise AssertionError(
                f"envship {args[0]} exited with {completed.returncode}: {stderr[-2000:]}"
            )
        self.registry.settled()
        logged = self.registry.requests()[before:]
        return Run(elapsed, json.loads(output.read_bytes()), stderr, logged)

    def check(self, run: Run, names: list[str], action: str, where: str) -> None:
        """Exactly `names`, every one with `action`, no error, the hashes seen before."""
        got = sorted(str(i["name"]) for i in run.items)
        if got != sorted(names):
            raise AssertionError(f"{where}: {len(got)} environments, expected {len(names)}")
        wrong = [i for i in run.items if i["action"] != action or i["error"] or not i["hash"]]
        if wrong:
            raise AssertionError(f"{where}: {len(wrong)} not {action!r}, first: {wrong[0]}")
        for item in run.items:
            known = self.hashes.setdefault(item["name"], item["hash"])
            if known != item["hash"]:
                raise AssertionError(f"{where}: {item['name']} changed its hash")
            if action in ("built", "up-to-date") and "digest" in item:
                if not str(item["digest"] or "").startswith("sha256:"):
                    raise AssertionError(f"{where}: {item['name']} has no digest")
                pushed = self.digests.setdefault(item["name"], item["digest"])
                if pushed != item["digest"]:
                    raise AssertionError(f"{where}: {item['name']} points at another image")

    def check_requests(self, run: Run, expected: Counter[str], where: str) -> None:
        got = Counter(f"{method} {kind(path)} {status}" for method, path, status in run.requests)
        if got != expected:
            raise AssertionError(
                f"{where}: registry requests {dict(got)}, expected {dict(expected)}"
            )

    def check_registry(self, names: list[str], where: str) -> None:
        """The registry holds every pushed image under its hash tag, with the reported digest."""
        for name in names:
            tag = self.hashes[name].removeprefix("sha256:")[:32]
            if self.registry.digest(f"{PREFIX}/{name}", tag) != self.digests[name]:
                raise AssertionError(f"{where}: the registry does not hold {name}'s image")

    def plan(self, folder: Path, names: list[str], action: str, where: str) -> Run:
        registry = f"{self.registry.host}/{PREFIX}"
        run = self.envship("plan", str(folder), "--registry", registry, "--output", "json")
        self.check(run, names, action, where)
        status = 404 if action == "build" else 200
        # One manifest HEAD per environment, one for the base image: nothing else.
        expected = Counter({f"HEAD manifest {status}": len(names)})
        expected["HEAD manifest 200"] += 1
        self.check_requests(run, expected, where)
        return run

    def sync(
        self, folder: Path, names: list[str], action: str, where: str, jobs: int | None
    ) -> Run:
        registry = f"{self.registry.host}/{PREFIX}"
        extra = ["--jobs", str(jobs)] if jobs else []
        run = self.envship("sync", str(folder), "--registry", registry, "--output", "json", *extra)
        self.check(run, names, action, where)
        n = len(names)
        built = n if action == "built" else 0
        summary = f"plan: {n} environments, {built} to build, 0 to copy, {n - built} up to date"
        if summary not in run.stderr:
            raise AssertionError(f"{where}: no {summary!r} in the output: {run.stderr[-500:]}")
        if action == "up-to-date":
            expected = Counter({"HEAD manifest 200": n + 1})
            self.check_requests(run, expected, where)
        return run


# -- the baseline: docker build + docker push per environment ---------------------------------


@dataclass
class Baseline:
    seconds: float
    log: str
    requests: list[tuple[str, str, int]]


def ci_script(folder: Path, names: list[str], host: str) -> Path:
    """What a CI job does today: build and push every environment, one after the other."""
    lines = ["#!/bin/sh", "set -e"]
    for name in names:
        image = f"{host}/ci/{name}:latest"
        lines.append(f'docker build -t {image} "{folder / name}" && docker push {image}')
    script = folder.parent / f"ci-{folder.name}.sh"
    script.write_text("\n".join(lines) + "\n")
    return script


def run_baseline(bench: Bench, script: Path, names: list[str], *, warm: bool) -> Baseline:
    before = bench.registry.settled()
    bench.sample_load()
    # DOCKER_BUILDKIT=0: the classic builder (the only one a CLI without buildx has from 23.0
    # on); its output below is stable to check.
    env = {**os.environ, "DOCKER_BUILDKIT": "0"}
    start = time.perf_counter()
    completed = subprocess.run(
        ["sh", str(script)], capture_output=True, env=env, check=False, text=True
    )
    elapsed = time.perf_counter() - start
    log = completed.stdout + completed.stderr
    if completed.returncode != 0:
        raise AssertionError(f"docker build + push failed ({completed.returncode}): {log[-2000:]}")
    n = len(names)
    counts = {
        "tagged": log.count("Successfully tagged "),
        "pushed": len(re.findall(r"^latest: digest: sha256:[0-9a-f]{64} ", log, re.MULTILINE)),
        "cached": log.count("---> Using cache"),
        "ran": log.count("---> Running in "),
    }
    if counts["tagged"] != n or counts["pushed"] != n:
        raise AssertionError(f"baseline: {counts} for {n} environments")
    if warm and (counts["cached"] != n or counts["ran"] != 0):
        raise AssertionError(f"baseline: the engine's cache was not warm: {counts}")
    bench.registry.settled()
    logged = bench.registry.requests()[before:]
    for name in names:
        if bench.registry.digest(f"ci/{name}", "latest") is None:
            raise AssertionError(f"baseline: ci/{name}:latest is not in the registry")
    return Baseline(elapsed, log, logged)


# -- where the time of a no-change sync goes ------------------------------------------------


def packages() -> set[str]:
    return {name.split(".")[0] for name in sys.modules}


def timer(phases: dict[str, Any], name: str, function: Any) -> Any:
    """`function`, the time of its calls added up in `phases[name]`, the top-level packages
    they loaded in `phases[name + "_loads"]`, the last call's arguments and result kept."""
    phases.setdefault(name, 0.0)
    phases.setdefault(f"{name}_loads", [])

    def timed(*args: Any, **kwargs: Any) -> Any:
        before = packages()
        begin = time.perf_counter()
        result = function(*args, **kwargs)
        phases[name] += time.perf_counter() - begin
        phases[f"{name}_loads"] = sorted({*phases[f"{name}_loads"], *(packages() - before)})
        phases[f"{name}_result"] = (args, result)
        return result

    return timed


def probe(folder: str, registry: str, count: int, out: str) -> None:
    """`envship sync FOLDER --registry REGISTRY -o json` in this fresh interpreter (started by
    `breakdown`), with its imports, discovery, git lookup and registry checks timed apart; then
    the cost of one registry check, one at a time. Nothing of envship is changed: the steps are
    wrapped in place. Writes the timings as JSON to `out`."""
    start = time.perf_counter()
    from controller.adapters.registries import RegistryPool, RegistrySettings  # noqa: PLC0415
    from controller.cli import commands as cli  # noqa: PLC0415 - the imports are timed
    from controller.cli import options  # noqa: PLC0415
    from controller.cli.main import main  # noqa: PLC0415
    from controller.pipeline.planning import CHECK_WORKERS  # noqa: PLC0415
    from controller.pipeline.sync import Sync, Target  # noqa: PLC0415

    imported = time.perf_counter()
    phases: dict[str, Any] = {"workers": CHECK_WORKERS}
    options.discover = timer(phases, "discovery", options.discover)  # type: ignore[attr-defined]
    Sync.plan = timer(phases, "checks", Sync.plan)  # type: ignore[method-assign]
    # The registry client's sign-in set-up, called once per host; outside `Sync.plan` here
    # because the base image lives on the target registry.
    authenticator = RegistryPool.authenticator
    RegistryPool.authenticator = timer(  # type: ignore[method-assign]
        phases, "authenticator", authenticator
    )
    # The git source and revision for the image labels, where the CLI looks them up.
    provenance = getattr(cli, "provenance", None)
    phases["provenance"] = 0.0
    if provenance is not None:
        cli.provenance = timer(phases, "provenance", provenance)  # type: ignore[attr-defined]
    stdout, stderr = io.StringIO(), io.StringIO()
    called = time.perf_counter()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        main(["sync", folder, "--registry", registry, "--output", "json"], standalone_mode=False)
    ran = time.perf_counter()
    RegistryPool.authenticator = authenticator  # type: ignore[method-assign]
    (sync, _envs), items = phases.pop("checks_result")
    for name in ("discovery", "provenance", "authenticator"):
        phases.pop(f"{name}_result", None)
    phases["requests_made"] = sync.registry.requests_made
    results = json.loads(stdout.getvalue())
    if len(results) != count or any(r["action"] != "up-to-date" for r in results):
        raise AssertionError(f"probe: {Counter(r['action'] for r in results)}")
    if f"{count} up to date" not in stderr.getvalue() or phases["requests_made"] != count + 1:
        raise AssertionError(f"probe: {phases}, {stderr.getvalue()[-500:]}")

    # One check at a time: first with a new client per repository, then again on the same
    # clients (the cache bypassed).
    keys = [(str(i.env.repository), str(i.tag)) for i in items]
    pool = RegistryPool(RegistrySettings())
    client = pool.get(Target.parse(registry, "envship").host)
    client.digest(*keys[0], refresh=True)  # learn the scheme (plain HTTP) first
    timed = []
    for refresh in (False, True):
        begin = time.perf_counter()
        for key in keys[1:]:
            if client.digest(*key, refresh=refresh) is None:
                raise AssertionError(f"probe: {key} is not in the registry")
        timed.append((time.perf_counter() - begin) / (len(keys) - 1))
    pool.close()
    phases.update(imports=imported - start, main=ran - called, new=timed[0], open=timed[1])
    phases["inside"] = time.perf_counter() - start
    Path(out).write_text(json.dumps(phases))


@dataclass
class Breakdown:
    total: float
    """The wall time of the probe less its own measurements after the command."""
    startup: float
    """Interpreter start-up and exit: the wall time less what the process measured inside."""
    imports: float
    discovery: float
    checks: float
    provenance: float
    """`provenance(path)` in the CLI (pygit2: the source and revision labels), 0 without it."""
    authenticator: float
    loads: dict[str, list[str]]
    """Top-level packages each timed step loaded."""
    rest: float
    """The command less discovery and checks: options, settings, plan summary, JSON output."""
    requests_made: int
    workers: int
    new_connection: float
    open_connection: float
    import_costs: list[tuple[str, float]]


def import_costs() -> list[tuple[str, float]]:
    """Seconds of `import controller.cli.commands` (what `sync` loads) per top-level package
    (`-X importtime`)."""
    completed = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import controller.cli.commands"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    microseconds: Counter[str] = Counter()
    for line in completed.stderr.splitlines():
        parts = line.removeprefix("import time:").split("|")
        if len(parts) != 3 or not parts[0].strip().isdigit():
            continue
        microseconds[parts[2].strip().split(".")[0]] += int(parts[0])
    return [(package, us / 1e6) for package, us in microseconds.most_common()]


def breakdown(folder: Path, host: str, count: int, scratch: Path) -> Breakdown:
    """`RUNS` probes of a no-change sync, each in a fresh interpreter; medians."""
    runs = []
    out = scratch / "probe.json"
    for _ in range(RUNS):
        command = [
            sys.executable, __file__, "--probe", str(folder), f"{host}/{PREFIX}", str(count),
            str(out),
        ]  # fmt: skip
        start = time.perf_counter()
        subprocess.run(command, check=True)
        total = time.perf_counter() - start
        phases = json.loads(out.read_text())
        runs.append({**phases, "total": total})

    def median(key: str) -> float:
        return statistics.median(float(r[key]) for r in runs)

    return Breakdown(
        total=statistics.median(
            r["total"] - (r["inside"] - r["imports"] - r["main"]) for r in runs
        ),
        startup=statistics.median(r["total"] - r["inside"] for r in runs),
        imports=median("imports"),
        discovery=median("discovery"),
        checks=median("checks"),
        provenance=median("provenance"),
        authenticator=median("authenticator"),
        loads={k: runs[0].get(f"{k}_loads", []) for k in STEPS},
        rest=statistics.median(r["main"] - sum(r.get(k, 0.0) for k in STEPS) for r in runs),
        requests_made=int(runs[0]["requests_made"]),
        workers=int(runs[0]["workers"]),
        new_connection=median("new"),
        open_connection=median("open"),
        import_costs=import_costs(),
    )


# -- the whole benchmark ---------------------------------------------------------------------


@dataclass
class Results:
    plan_count: int
    sync_count: int
    plan_cold: list[float]
    plan_cold_requests: str
    first_sync_big: float
    first_sync_big_requests: int
    plan_warm: list[float]
    plan_warm_requests: str
    baseline_first: float
    baseline: list[float]
    baseline_requests: str
    first_sync: float
    first_sync_requests: int
    no_change: list[float]
    no_change_requests: str
    split: Breakdown
    jobs: str
    loads: list[float] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return statistics.median(self.baseline) / statistics.median(self.no_change)


def measure(scratch: Path, plan_count: int, sync_count: int, jobs: int | None) -> Results:
    import docker  # noqa: PLC0415 - see the top

    client = docker.from_env(timeout=600)
    client.ping()
    if shutil.which("docker") is None:
        raise SystemExit("the docker command is needed for the baseline (docker build + push)")
    registry = SyncRegistry(scratch / "registry", delete=True).start()
    bench = Bench(registry, scratch)
    try:
        push_base(client, registry.host)
        base = f"{registry.host}/{BASE}"
        print(f"registry on {registry.host}; base {base} pushed", flush=True)

        # 1. plan of `plan_count` environments, cold then warm.
        big = scratch / "plan-envs"
        big_names = generate(big, plan_count, "plan", base)
        cold = [bench.plan(big, big_names, "build", f"cold plan {n + 1}") for n in range(RUNS)]
        print(f"cold plan of {plan_count}: {[round(r.seconds, 2) for r in cold]} s", flush=True)
        print(f"first sync of {plan_count} (builds all of them)...", flush=True)
        first_big = bench.sync(big, big_names, "built", f"first sync of {plan_count}", jobs)
        bench.check_registry(big_names, f"after the first sync of {plan_count}")
        print(f"first sync of {plan_count}: {first_big.seconds:.1f} s", flush=True)
        warm = [bench.plan(big, big_names, "up-to-date", f"warm plan {n + 1}") for n in range(RUNS)]
        print(f"warm plan of {plan_count}: {[round(r.seconds, 2) for r in warm]} s", flush=True)

        # 2. `sync_count` environments: envship's first sync, then the baseline, then no-change.
        small = scratch / "sync-envs"
        names = generate(small, sync_count, "sync", base)
        first = bench.sync(small, names, "built", f"first sync of {sync_count}", jobs)
        bench.check_registry(names, f"after the first sync of {sync_count}")
        print(f"first sync of {sync_count}: {first.seconds:.1f} s", flush=True)
        script = ci_script(small, names, registry.host)
        warmup = run_baseline(bench, script, names, warm=False)
        print(f"docker build + push, warm-up: {warmup.seconds:.1f} s", flush=True)
        baselines = [run_baseline(bench, script, names, warm=True) for _ in range(RUNS)]
        print(f"docker build + push: {[round(b.seconds, 2) for b in baselines]} s", flush=True)
        unchanged = [
            bench.sync(small, names, "up-to-date", f"no-change sync {n + 1}", None)
            for n in range(RUNS)
        ]
        bench.check_registry(names, "after the no-change syncs")
        print(f"no-change sync: {[round(r.seconds, 3) for r in unchanged]} s", flush=True)

        # 3. where the time goes.
        bench.sample_load()
        split = breakdown(small, registry.host, sync_count, scratch)
        baseline_requests = {len(b.requests) for b in baselines}
        if len(baseline_requests) != 1:
            raise AssertionError(f"baseline runs made {baseline_requests} requests")
        return Results(
            plan_count=plan_count,
            sync_count=sync_count,
            plan_cold=[r.seconds for r in cold],
            plan_cold_requests=describe_requests(cold[0].requests),
            first_sync_big=first_big.seconds,
            first_sync_big_requests=len(first_big.requests),
            plan_warm=[r.seconds for r in warm],
            plan_warm_requests=describe_requests(warm[0].requests),
            baseline_first=warmup.seconds,
            baseline=[b.seconds for b in baselines],
            baseline_requests=describe_requests(baselines[0].requests),
            first_sync=first.seconds,
            first_sync_requests=len(first.requests),
            no_change=[r.seconds for r in unchanged],
            no_change_requests=describe_requests(unchanged[0].requests),
            split=split,
            jobs=f"`--jobs {jobs}`"
            if jobs
            else f"`--jobs` left at its default: {max(1, (os.cpu_count() or 2) // 2)}, CPUs/2",
            loads=bench.loads,
        )
    finally:
        registry.stop()
        removed = remove_images(client, registry.host)
        print(f"removed {removed} image tags from the engine", flush=True)
        client.close()


# -- reporting ---------------------------------------------------------------------------------


def versions() -> dict[str, str]:
    import docker  # noqa: PLC0415 - see the top

    client = docker.from_env(timeout=30)
    try:
        info = client.info()
        engine = f"{client.version().get('Version', '?')} ({info.get('Driver', '?')} storage)"
    finally:
        client.close()
    cli = subprocess.run(
        ["docker", "version", "--format", "{{.Client.Version}}"],
        capture_output=True, text=True, check=False,
    ).stdout.strip()  # fmt: skip
    return {
        "Docker engine": engine,
        "docker CLI": cli or "?",
        "registry": f"CNCF distribution {LocalRegistry.version()}, filesystem storage",
    }


def machine(load: float, loads: list[float]) -> dict[str, str]:
    return {
        "CPUs (`nproc`)": str(len(os.sched_getaffinity(0))),
        "CPU model": cpu_model(),
        "memory": memory(),
        "OS": f"{platform.system()} {platform.release()}",
        "Python": f"{platform.python_implementation()} {platform.python_version()}",
        **versions(),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "load average (1 min) at start": f"{load:.2f}",
        "load average (1 min) before timed runs": f"{min(loads):.2f} to {max(loads):.2f}",
    }


def seconds(values: list[float]) -> str:
    """`median s (min-max)`."""
    middle = statistics.median(values)
    digits = 2 if middle >= 1 else 3
    return f"{middle:.{digits}f} s ({min(values):.{digits}f}-{max(values):.{digits}f})"


def tables(r: Results) -> str:
    s = r.split
    per_env = statistics.median(r.baseline) / r.sync_count
    cli = statistics.median(r.no_change)
    plan_rows = [
        "| run | registry | wall time: median of 3 (range) | registry requests per run |",
        "|---|---|---:|---|",
        f"| `envship plan`, cold | none of the {r.plan_count:,} images | {seconds(r.plan_cold)} "
        f"| {r.plan_cold_requests} |",
        f"| `envship sync`, first: builds and pushes all {r.plan_count:,} | none | "
        f"{r.first_sync_big:.0f} s (once) | {r.first_sync_big_requests:,} |",
        f"| `envship plan`, warm | all {r.plan_count:,} images | {seconds(r.plan_warm)} "
        f"| {r.plan_warm_requests} |",
    ]
    sync_rows = [
        "| pipeline | wall time | per environment | registry requests per run |",
        "|---|---:|---:|---|",
        f"| `docker build` + `docker push` of every environment, engine cache warm: median of 3 "
        f"(range) | {seconds(r.baseline)} | {per_env * 1000:.0f} ms | {r.baseline_requests} |",
        f"| `envship sync`, first run: builds and pushes all {r.sync_count} "
        f"| {r.first_sync:.1f} s (once) | {r.first_sync / r.sync_count * 1000:.0f} ms "
        f"| {r.first_sync_requests:,} |",
        f"| `envship sync`, nothing changed: median of 3 (range) | {seconds(r.no_change)} "
        f"| {cli / r.sync_count * 1000:.1f} ms | {r.no_change_requests} |",
    ]

    def loads(step: str) -> str:
        found = [p for p in s.loads.get(step, []) if not p.startswith("_")]
        return f"; loads {', '.join(found)}" if found else ""

    parts = [
        (
            "interpreter start-up and exit (the wall time less what the process timed inside; "
            "includes loading `bench_sync.py` itself)",
            s.startup,
        ),
        ("imports (`from controller.cli import commands`)", s.imports),
        (
            f"discovery + hashing of the {r.sync_count} folders (`discover`{loads('discovery')})",
            s.discovery,
        ),
        (
            "registry client set-up (`RegistryPool.authenticator`, anonymous here"
            f"{loads('authenticator')})",
            s.authenticator,
        ),
        (
            f"registry checks (`Sync.plan`: {s.requests_made} manifest HEADs, {s.workers} "
            f"threads{loads('checks')})",
            s.checks,
        ),
    ]
    if s.provenance:
        parts.append(
            (
                f"git source and revision for the image labels (`provenance`{loads('provenance')})",
                s.provenance,
            )
        )
    parts.append(("the rest of the command (options, settings, JSON output)", s.rest))
    split_rows = ["| part | time | share |", "|---|---:|---:|"] + [
        f"| {what} | {t * 1000:.0f} ms | {t / s.total:.0%} |" for what, t in parts
    ]
    split_rows.append(f"| total, median of {RUNS} | {s.total * 1000:.0f} ms | |")
    imports = sum(t for _, t in s.import_costs)
    top = ", ".join(f"{name} {t * 1000:.0f} ms" for name, t in s.import_costs[:8])
    intro = (
        f"Where the time of a no-change `envship sync` of {r.sync_count} goes (the same command "
        f"run by `bench_sync.py --probe` in a fresh interpreter; medians of each part over {RUNS} "
        "runs):"
    )
    by_package = (
        "The imports by top-level package (`python -X importtime`, self times, "
        f"{imports * 1000:.0f} ms in all with the tool's own overhead): {top}."
    )
    per_check = (
        "One registry check (a manifest HEAD through python-dxf and requests, answered by "
        f"distribution on the same CPUs) costs {s.checks / s.requests_made * 1000:.1f} ms of wall "
        f"time with {s.workers} in flight, {s.open_connection * 1000:.1f} ms one at a time on an "
        f"open connection, and {s.new_connection * 1000:.1f} ms one at a time on a repository's "
        "first check (a new per-repository client)."
    )
    return (
        f"Plan of {r.plan_count:,} environments:\n\n"
        + "\n".join(plan_rows)
        + f"\n\nNo-change sync against rebuild-everything, {r.sync_count} environments:\n\n"
        + "\n".join(sync_rows)
        + f"\n\n{wrap(intro)}\n\n"
        + "\n".join(split_rows)
        + f"\n\n{wrap(by_package)}\n\n{wrap(per_check)}"
    )


def wrap(text: str) -> str:
    return textwrap.fill(text, WIDTH, break_on_hyphens=False, break_long_words=False)


def reading(r: Results) -> str:
    """What the numbers imply, computed from them (and worded by them), so it cannot go stale."""
    s = r.split
    baseline = statistics.median(r.baseline)
    needed = baseline / TARGET_RATIO
    floor = s.startup + s.checks
    parallel = s.checks / s.requests_made
    cold = statistics.median(r.plan_cold)
    warm = statistics.median(r.plan_warm)
    points = [
        f"The baseline is at its cheapest here: a warm cache and a registry on the same machine, "
        f"{baseline / r.sync_count * 1000:.0f} ms per environment. {TARGET_RATIO:.0f}× needs a "
        f"no-change sync of {r.sync_count} in {needed * 1000:.0f} ms.",
        f"Start-up and exit ({s.startup * 1000:.0f} ms) and the {s.requests_made} registry checks "
        f"({s.checks * 1000:.0f} ms) alone come to {floor * 1000:.0f} ms: "
        + (
            "start-up and exit alone exceed the aim's budget, so no change to the imports or "
            "the requests can meet it on this setup."
            if s.startup >= needed
            else f"{baseline / floor:.0f}× at best even with no import time at all, so the aim "
            "needs fewer or cheaper registry requests as well as faster imports."
            if floor > needed
            else "within the aim's budget; the imports are what stands in the way."
        ),
        f"With {s.workers} check threads a check costs {parallel * 1000:.1f} ms of wall time, one "
        f"at a time {s.open_connection * 1000:.1f} ms: "
        + (
            "the threads buy little here, because the client's per-request work holds the GIL "
            "and the registry runs on the same CPUs. Against a registry across a network the "
            "round trip dominates and the threads overlap it (not measured here)."
            if parallel > 0.7 * s.open_connection
            else f"the threads overlap {s.open_connection / parallel:.1f} checks at a time."
        ),
        f"Planning {r.plan_count:,} takes {cold:.2f} s cold (every HEAD a 404) and {warm:.2f} s "
        f"warm (every HEAD a 200 with the manifest's digest), "
        f"{(warm - cold) / r.plan_count * 1000:+.2f} ms per environment.",
    ]
    return "\n".join(
        textwrap.fill(p, WIDTH, initial_indent="- ", subsequent_indent="  ") for p in points
    )


def verdict(r: Results) -> str:
    met = r.ratio >= TARGET_RATIO
    return (
        f"Aim, a no-change sync at least {TARGET_RATIO:.0f}× faster than rebuilding and pushing "
        f"every one of {r.sync_count} environments: **{'met' if met else 'missed'}**, "
        f"{r.ratio:.0f}× ({statistics.median(r.baseline):.2f} s against "
        f"{statistics.median(r.no_change):.3f} s)."
    )


def section(r: Results, info: dict[str, str]) -> str:
    machine_rows = "\n".join(f"| {k} | {v} |" for k, v in info.items())
    return f"""{SECTION}

What it measures (`bench/bench_sync.py`): `envship plan` and `envship sync` as subprocesses
against a real registry, a CNCF distribution (`docker-registry`) started by the benchmark on a
free loopback port, plain HTTP, filesystem storage in a temporary folder. Every environment is a
folder with a Dockerfile, `FROM` a busybox base image (Debian's busybox-static, `docker import`)
pushed to that registry, and one distinct `RUN echo ... > /envship-bench` line, so every image
is tiny and a build is dominated by the engine's fixed costs, not by its content.

- **Plan of {r.plan_count:,}**: `envship plan DIR --registry 127.0.0.1:PORT/{PREFIX} -o json`,
  {RUNS} runs cold (no image in the registry: every manifest HEAD answers 404), then one
  `envship sync` that builds and pushes all of them ({r.jobs}),
  then {RUNS} runs warm.
- **No-change sync against rebuild-everything, {r.sync_count} environments**: the pipeline
  users run today is a shell script with `docker build -t 127.0.0.1:PORT/ci/NAME:latest DIR &&
  docker push ...` per environment, one after the other (the classic builder, `DOCKER_BUILDKIT=0`,
  whose output the benchmark checks; envship builds with its default builder). It runs once to
  warm the engine's cache (every `RUN` step then reports `Using cache`, every layer `already
  exists` in the registry), then {RUNS} timed runs.
  envship: the first `envship sync -o json` (progress on stderr) builds and pushes all
  {r.sync_count} (timed once), then {RUNS} timed runs with nothing changed.
- **registry requests**: counted from the registry's access log between the start and the end
  of each run; the in-process count is `OciRegistry.requests_made`. envship also opens one TLS
  probe connection per run to learn that the loopback registry speaks plain HTTP; it never
  reaches the access log.
- **where the time goes**: the same no-change sync run {RUNS} more times by
  `bench_sync.py --probe` in a fresh interpreter that imports the CLI, then calls its `main`
  with `discover`, `RegistryPool.authenticator`, `Sync.plan` and `provenance` wrapped in timers
  that also note the packages each step loads (envship itself unchanged); start-up and exit are
  the wall time less what the process timed inside. The per-check costs are measured after
  that in the same process.

Every run is checked: exit status 0, exactly the generated environments, each planned `build` /
`built` / `up-to-date` as expected, the same hashes in every run, the registry holding the
digest each `built` reported (and the no-change runs reporting the same digests), the exact
count of manifest HEADs per plan, and every baseline run tagging and pushing every environment
with its `RUN` step from the cache. Timings on a shared or busy machine are noisy: the load
averages are recorded below.

{tables(r)}

{wrap(verdict(r))}

Reading the numbers:

{reading(r)}

Machine:

| | |
|---|---|
{machine_rows}

Reproduce (needs a Docker engine at `DOCKER_HOST` or the default socket, the `docker` command,
`docker-registry` and `busybox-static`; takes about {estimate(r)} minutes, most of it the first
sync of {r.plan_count:,}; removes its registry, folders and images):

```sh
bash scripts/test --fast   # makes .venv from the lock (or scripts/quickstart)
.venv/bin/python bench/bench_sync.py --write-docs --save results.json
.venv/bin/python bench/bench_sync.py --render results.json --write-docs  # re-render only
```
"""


def estimate(r: Results) -> int:
    total = (
        r.first_sync_big + r.first_sync + r.baseline_first + sum(r.baseline)
        + sum(r.plan_cold) + sum(r.plan_warm) + sum(r.no_change)
    )  # fmt: skip
    return max(1, round(total / 60 + 1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write-docs", action="store_true", help=f"rewrite {SECTION!r}")
    parser.add_argument("--plan-count", type=int, default=PLAN_COUNT)
    parser.add_argument("--sync-count", type=int, default=SYNC_COUNT)
    parser.add_argument("--jobs", type=int, help="--jobs of the first syncs (default: envship's)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--save", metavar="FILE", help="also write the results as JSON")
    parser.add_argument(
        "--render", metavar="FILE", help="measure nothing: print (and --write-docs) saved results"
    )
    parser.add_argument("--probe", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.probe:
        folder, registry, count, out = args.probe
        probe(folder, registry, int(count), out)
        return 0
    if args.render:
        saved = json.loads(Path(args.render).read_text())
        results = Results(**{**saved["results"], "split": Breakdown(**saved["results"]["split"])})
        info = saved["machine"]
    else:
        results, info = run(args)
    print()
    print(tables(results))
    print()
    print(verdict(results))
    print(reading(results))
    print("; ".join(f"{k}: {v}" for k, v in info.items()))
    if args.save:
        saved = {"results": dataclasses.asdict(results), "machine": info}
        Path(args.save).write_text(json.dumps(saved, indent=2))
    if args.write_docs:
        write_docs(DOCS, SECTION, section(results, info))
        print(f"wrote {DOCS.relative_to(REPO)}")
    return 0


def revision() -> tuple[str, str]:
    """(the commit with a note on uncommitted changes to controller/, a digest of controller/'s
    sources): what was measured, and whether it changed during the run."""
    digest = hashlib.sha256()
    for path in sorted((REPO / "controller").rglob("*.py")):
        digest.update(path.relative_to(REPO).as_posix().encode() + b"\0" + path.read_bytes())
    git = ["git", "-C", str(REPO)]
    commit = subprocess.run(
        [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    dirty = subprocess.run(
        [*git, "status", "--porcelain", "--", "controller"],
        capture_output=True, text=True, check=False,
    ).stdout.strip()  # fmt: skip
    note = f"commit {commit or 'unknown'}" + (
        " + uncommitted changes in controller/" if dirty else ""
    )
    return note, digest.hexdigest()


def run(args: argparse.Namespace) -> tuple[Results, dict[str, str]]:
    before, sources = revision()
    load = os.getloadavg()[0]
    if load > BUSY_LOAD:
        print(f"warning: load average {load:.2f}; other work may skew the timings", flush=True)
    scratch = Path(tempfile.mkdtemp(prefix="envship-bench-sync-"))
    try:
        results = measure(scratch, args.plan_count, args.sync_count, args.jobs)
    finally:
        if args.keep:
            print(f"kept {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    info = machine(load, results.loads)
    after, sources_after = revision()
    if sources == sources_after:
        info["envship measured"] = before
    elif before == after:
        info["envship measured"] = f"{before}; controller/ changed during the run"
    else:
        info["envship measured"] = f"{before} at the start, {after} at the end"
    return results, info


if __name__ == "__main__":
    sys.exit(main())
