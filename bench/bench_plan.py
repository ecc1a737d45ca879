"""Benchmark "plan": discovery + parsing + hashing of 1,000 and 10,000 generated environments.

For each size, `generate.py` writes the environments into a temporary folder, then:

- CLI: `envship plan DIR --root specs --no-resolve-base --output json` as a subprocess, wall
  time (bases are not pinned: this measures discovery and hashing, not registries); the first run
  (right after generation: files in the page cache, a fresh interpreter) and the median of 3
  more; peak RSS of the process.
- in-process: `plan(discover(FolderTree(DIR), DiscoveryOptions(root="specs")))`, median of 5,
  in one process and with `run_jobs=ForkedJobs(2)` (reading and parsing spread over two
  processes), measured in a fresh interpreter so its peak RSS is the planning's own.

Every run is checked: exactly N environments, all planned for a build, none refused, so a
regression that refuses specs cannot pass for a speed-up; and every way of planning must give
the same hashes.

    python bench/bench_plan.py                 # print the table
    python bench/bench_plan.py --write-docs    # also rewrite the section in docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from controller.adapters.folder import FolderTree
from controller.adapters.forked import ForkedJobs
from controller.core.discovery import DiscoveryOptions, JobRunner, discover, run_in_turn
from controller.core.plan import plan
from controller.core.requirements import canonical_requirement

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DOCS = REPO / "docs" / "benchmarks.md"
SECTION = "## Plan: discovery + hashing"
SIZES = (1000, 10_000)
CLI_RUNS = 3
INPROCESS_RUNS = 5
TARGET_SECONDS = 2.0
TARGET_SIZE = 10_000
WORKERS = 2
BUSY_LOAD = 0.5
"""A 1-minute load average above this at the start means other work skews the numbers."""

sys.path.insert(0, str(HERE))
from generate import FORMS, ROOT, generate  # noqa: E402
from report import cpu_model, memory, write_docs  # noqa: E402


@dataclass
class Result:
    count: int
    files: int
    cli_first: float
    cli_median: float
    cli_rss_mib: float
    serial_median: float
    serial_min: float
    forked_median: float
    forked_min: float
    inproc_rss_mib: float


def envship_command() -> list[str]:
    """The installed `envship` script next to this interpreter, else `python -m controller.cli`."""
    script = Path(sys.executable).with_name("envship")
    if script.exists():
        return [str(script)]
    found = shutil.which("envship")
    return [found] if found else [sys.executable, "-m", "controller.cli"]


def check_plan(items: list[dict[str, object]], count: int, where: str) -> str:
    """Exactly `count` environments, every one planned for a build with a hash.

    Returns a digest of every (path, hash) pair, to compare ways of planning.
    """
    refused = [i for i in items if i.get("action") != "build" or i.get("error") or not i["hash"]]
    if refused:
        raise AssertionError(f"{where}: {len(refused)} refused, first: {refused[0]}")
    if len(items) != count:
        raise AssertionError(f"{where}: {len(items)} environments planned, {count} generated")
    pairs = sorted(f"{i['path']} {i['hash']}" for i in items)
    return hashlib.sha256("\n".join(pairs).encode()).hexdigest()


def run_cli(folder: Path, count: int, output: Path) -> tuple[float, float, str]:
    """(wall seconds, peak RSS in MiB, digest) of one `envship plan` run; output checked."""
    command = [
        *envship_command(), "plan", str(folder), "--root", ROOT, "--no-resolve-base",
        "--output", "json",
    ]  # fmt: skip
    with output.open("wb") as sink:
        start = time.perf_counter()
        process = subprocess.Popen(command, stdout=sink)
        _, status, usage = os.wait4(process.pid, 0)
        elapsed = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise AssertionError(f"envship plan exited with {process.returncode}")
    digest = check_plan(json.loads(output.read_bytes()), count, "envship plan")
    return elapsed, usage.ru_maxrss / 1024, digest


def in_process(folder: str, count: int, runs: int) -> dict[str, object]:
    """Time `plan(discover(FolderTree(folder)))` `runs` times in this interpreter, first in
    one process, then over `WORKERS` processes."""
    options = DiscoveryOptions(root=ROOT)
    runners: dict[str, JobRunner] = {"serial": run_in_turn, "forked": ForkedJobs(WORKERS)}
    result: dict[str, object] = {}
    for label, runner in runners.items():
        times = []
        for _ in range(runs):
            canonical_requirement.cache_clear()  # as cold as in a new process
            start = time.perf_counter()
            items = plan(discover(FolderTree(folder), options, run_jobs=runner))
            times.append(time.perf_counter() - start)
            rows: list[dict[str, object]] = [
                {"path": i.env.path, "action": i.action, "error": i.error, "hash": i.hash}
                for i in items
            ]
            result[f"{label}_digest"] = check_plan(rows, count, f"in-process plan ({label})")
            del items, rows
        result[f"{label}_times"] = times
    result["rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def run_in_process(folder: Path, count: int) -> dict[str, object]:
    """`in_process` in a fresh interpreter, so neither the generator nor earlier runs count."""
    command = [sys.executable, __file__, "--inner", str(folder), str(count)]
    completed = subprocess.run(command, capture_output=True, check=True, text=True)
    result: dict[str, object] = json.loads(completed.stdout)
    return result


def count_files(folder: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(folder))


def measure(count: int, scratch: Path) -> Result:
    folder = scratch / f"envs-{count}"
    forms = generate(folder, count)
    print(f"generated {count}: " + ", ".join(f"{forms[f]} {f}" for f in FORMS), flush=True)
    output = scratch / f"plan-{count}.json"
    cli_first, _, digest = run_cli(folder, count, output)
    cli = [run_cli(folder, count, output) for _ in range(CLI_RUNS)]
    inner = run_in_process(folder, count)
    serial, forked = inner["serial_times"], inner["forked_times"]
    assert isinstance(serial, list)
    assert isinstance(forked, list)
    digests = {digest, inner["serial_digest"], inner["forked_digest"], *(d for _, _, d in cli)}
    if len(digests) != 1:
        raise AssertionError("the CLI, one process and forked processes planned different hashes")
    return Result(
        count=count,
        files=count_files(folder),
        cli_first=cli_first,
        cli_median=statistics.median(t for t, _, _ in cli),
        cli_rss_mib=max(r for _, r, _ in cli),
        serial_median=statistics.median(serial),
        serial_min=min(serial),
        forked_median=statistics.median(forked),
        forked_min=min(forked),
        inproc_rss_mib=float(inner["rss_mib"]),  # type: ignore[arg-type]
    )


def load_average() -> float:
    return os.getloadavg()[0]


def machine(load: float) -> dict[str, str]:
    return {
        "CPUs (`nproc`)": str(len(os.sched_getaffinity(0))),
        "CPU model": cpu_model(),
        "memory": memory(),
        "OS": f"{platform.system()} {platform.release()}",
        "Python": f"{platform.python_implementation()} {platform.python_version()}",
        "PyYAML": f"{yaml.__version__} ({'libyaml' if yaml.__with_libyaml__ else 'pure Python'})",
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "load average (1 min) at start": f"{load:.2f}",
    }


def table(results: list[Result]) -> str:
    rows = [
        "| environments | files | CLI: first run | CLI: median of 3 | CLI: peak RSS "
        f"| in-process, 1 process: median of 5 (best) "
        f"| in-process, {WORKERS} processes: median of 5 (best) | in-process: peak RSS |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        rows.append(
            f"| {r.count:,} | {r.files:,} | {r.cli_first:.2f} s | {r.cli_median:.2f} s "
            f"| {r.cli_rss_mib:.0f} MiB | {r.serial_median:.2f} s ({r.serial_min:.2f} s) "
            f"| {r.forked_median:.2f} s ({r.forked_min:.2f} s) | {r.inproc_rss_mib:.0f} MiB |"
        )
    return "\n".join(rows)


def verdict(results: list[Result]) -> str:
    big = next((r for r in results if r.count == TARGET_SIZE), None)
    if big is None:
        return ""

    def mark(seconds: float) -> str:
        return f"**{'met' if seconds < TARGET_SECONDS else 'missed'}** ({seconds:.2f} s)"

    return (
        f"Target, {TARGET_SIZE:,} environments planned in under {TARGET_SECONDS:.0f} s: "
        f"CLI end to end {mark(big.cli_median)}; in-process in one process "
        f"{mark(big.serial_median)}, over {WORKERS} processes {mark(big.forked_median)}."
    )


def section(results: list[Result], info: dict[str, str]) -> str:
    machine_rows = "\n".join(f"| {k} | {v} |" for k, v in info.items())
    return f"""{SECTION}

What it measures: finding every environment below `specs/` in a folder, reading and parsing its
files, and computing its content hash (`envship plan`), for generated repositories of 1,000 and
10,000 environments. The mix (from `bench/generate.py`, seeded, so every run sees the same bytes):
40% Azure ML v1 saved folders (`azureml_environment.json` + `conda_dependencies.yml`), 20% v2
YAMLs with `image` + `conda_file` in a shared sibling folder, 10% v2 YAMLs with `build.path` to a
Dockerfile + `requirements.txt` context, 15% plain conda files, 10% plain `requirements.txt`,
5% plain Dockerfile folders; spread over 25 team folders. Pins are drawn from about 120
distinct requirement lines, so, as in a real repository, the same pins recur across environments.

- **CLI**: `envship plan DIR --root specs --no-resolve-base --output json` as a subprocess
  (bases are not pinned to digests: no registry is asked), wall time, including
  interpreter start-up (about 0.2 s of imports) and writing the JSON. "First run" is the first
  one after the files were generated (page cache warm, interpreter fresh); then the median of
  {CLI_RUNS} runs. The CLI spreads reading and parsing over the CPUs it may run on (forked
  processes, `ForkedJobs`; {len(os.sched_getaffinity(0))} here).
- **in-process**: `plan(discover(FolderTree(DIR), DiscoveryOptions(root="specs")), ...)` in one
  interpreter, median of {INPROCESS_RUNS} runs (best in brackets), with the default runner (one
  process) and with `run_jobs=ForkedJobs({WORKERS})` from `controller.adapters.forked` (reading
  and parsing spread over {WORKERS} forked processes, results in the same order). The requirement
  cache is cleared before each run, as in a new process.
- **peak RSS**: maximum resident memory of the CLI process, and of the interpreter that ran the
  in-process measurements (forked children not included).

Every run checks that exactly N environments were planned for a build and none was refused, and
that the CLI, one process and {WORKERS} processes planned the same hashes. Timings on a shared or
busy machine are noisy: the load average at the start is recorded below.

{table(results)}

{verdict(results)}

Machine:

| | |
|---|---|
{machine_rows}

Reproduce (takes about a minute; generates into a temporary folder and removes it):

```sh
bash scripts/test --fast   # makes .venv from the lock (or scripts/quickstart)
.venv/bin/python bench/bench_plan.py --write-docs
```

To look at the generated specs: `python bench/generate.py OUT_DIR --count 1000`.
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write-docs", action="store_true", help=f"rewrite {SECTION!r}")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--keep", action="store_true", help="keep the generated folders")
    parser.add_argument("--inner", nargs=2, metavar=("DIR", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.inner:
        print(json.dumps(in_process(args.inner[0], int(args.inner[1]), INPROCESS_RUNS)))
        return 0
    load = load_average()
    if load > BUSY_LOAD:
        print(f"warning: load average {load:.2f}; other work may skew the timings", flush=True)
    scratch = Path(tempfile.mkdtemp(prefix="envship-bench-"))
    try:
        results = [measure(n, scratch) for n in args.sizes]
    finally:
        if args.keep:
            print(f"kept {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    info = machine(load)
    print()
    print(table(results))
    print()
    print(verdict(results))
    print("; ".join(f"{k}: {v}" for k, v in info.items()))
    if args.write_docs:
        write_docs(DOCS, SECTION, section(results, info))
        print(f"wrote {DOCS.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
