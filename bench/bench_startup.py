"""Benchmark start-up: `envship --version` and a one-environment `envship plan`, each against a
bare interpreter's start (`python -c pass`) on the same machine, in one run.

The three commands run interleaved, round after round (the order turns each round), so a busy
moment of a shared machine falls on all of them alike; each is timed as a subprocess, wall time
from start to exit, and compared as the ratio of its median to the bare interpreter's median:

- bare: `python -c pass` with the interpreter of the `envship` script (the script's shebang
  runs it with no flags, so neither does this);
- version: `envship --version`;
- plan: `envship plan DIR --no-resolve-base`, DIR a temporary copy of `specs/pip-requirements`
  (one environment, the table output). `--no-resolve-base`: without it plan asks the base
  image's registry for its digest; this measures start-up, not the network.

Aims: `--version` within 6 times, `plan` within 10 times the bare interpreter. Every run's exit
status and output are checked. Then, per command, the packages that take longest to import
(`-X importtime`, median of a few runs): where a regression in start-up comes from.

    python bench/bench_startup.py                 # print the table
    python bench/bench_startup.py --write-docs    # also rewrite the section in docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DOCS = REPO / "docs" / "benchmarks.md"
SECTION = "## Start-up"
SPEC = REPO / "specs" / "pip-requirements"
RUNS = 30
IMPORT_RUNS = 5
TOP = 10
AIMS = {"version": 6.0, "plan": 10.0}
BUSY_LOAD = 0.5
"""A 1-minute load average above this at the start means other work skews the numbers."""

sys.path.insert(0, str(HERE))
from report import cpu_model, memory, write_docs  # noqa: E402


def envship_command() -> tuple[list[str], str]:
    """The installed `envship` script next to this interpreter (else on PATH, else
    `python -m controller.cli`), and how it is shown."""
    script = Path(sys.executable).with_name("envship")
    if script.exists():
        return [str(script)], "envship"
    found = shutil.which("envship")
    if found:
        return [found], "envship"
    return [sys.executable, "-m", "controller.cli"], "python -m controller.cli"


def interpreter_of(command: Sequence[str]) -> str:
    """The interpreter a script's `#!` line names (the script's own start runs it)."""
    first = Path(command[0]).read_bytes().split(b"\n", 1)[0]
    if first.startswith(b"#!"):
        words = first[2:].decode().split()
        if len(words) == 1:  # a flag or `env python` would need running as written
            return words[0]
    return sys.executable


@dataclass
class Case:
    label: str
    shown: str
    argv: list[str]
    expect: tuple[str, ...]
    """Texts its output must hold."""
    times: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)


def run_once(case: Case, env: dict[str, str] | None = None) -> tuple[float, float, str]:
    """(wall seconds, user + system CPU seconds, stderr) of one run; its exit status and
    output are checked."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        process = subprocess.Popen(case.argv, stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(process.pid, 0)
        elapsed = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    missing = [text for text in case.expect if text not in stdout]
    if process.returncode != 0 or missing:
        raise AssertionError(
            f"{case.shown}: exit {process.returncode}, output {stdout!r} {stderr[-2000:]!r}"
        )
    return elapsed, usage.ru_utime + usage.ru_stime, stderr


def cached_bytecode(folder: Path) -> dict[str, str]:
    """The environment for every run: byte code written to and read from `folder`
    (`PYTHONPYCACHEPREFIX`, even where `PYTHONDONTWRITEBYTECODE` is set), so each start after
    the first reads compiled modules, as an installed envship does, and nothing is written into
    the checkout."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(folder)
    return env


def measure(cases: list[Case], runs: int, env: dict[str, str]) -> None:
    """`runs` rounds; in each, every case once, the order turned by one each round."""
    for case in cases:  # warm up: page cache, byte code
        run_once(case, env)
    for round_number in range(runs):
        turn = round_number % len(cases)
        for case in cases[turn:] + cases[:turn]:
            elapsed, cpu, _ = run_once(case, env)
            case.times.append(elapsed)
            case.cpu.append(cpu)


@dataclass
class Imports:
    package: str
    via: str
    """The module outside the package that imported it first; `(top)`: the script, or an import
    inside a function (`-X importtime` shows where it ran, not which function)."""
    cumulative: float
    """Seconds of its imports, with what they imported (where another package imported it)."""
    own: float
    """Seconds of its own modules only."""


def parse_importtime(stderr: str) -> list[tuple[int, str, int, int]]:
    """(depth, module, self µs, cumulative µs) of each `-X importtime` line, in its order."""
    rows = []
    for line in stderr.splitlines():
        if not line.startswith("import time:"):
            continue
        parts = line.removeprefix("import time:").split("|")
        if len(parts) != 3 or not parts[0].strip().isdigit():
            continue
        name = parts[2].rstrip()
        depth = (len(name) - len(name.lstrip(" "))) // 2
        rows.append((depth, name.strip(), int(parts[0]), int(parts[1])))
    return rows


def import_costs(stderr: str, skip: set[str]) -> dict[str, tuple[str, float, float]]:
    """Package -> (first importer, cumulative s, own s), top-level packages not in `skip`.

    The lines come children first; walked backwards they come parents first, so each line's
    parent is the nearest earlier line one level up. A package's cumulative time is the sum of
    its entries whose parent is not of the same package."""
    found: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    via: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    for depth, module, own, cumulative in reversed(parse_importtime(stderr)):
        while stack and stack[-1][0] >= depth:
            stack.pop()
        parent = stack[-1][1] if stack else None
        stack.append((depth, module))
        package = module.split(".")[0]
        if package in skip:
            continue
        found[package][1] += own / 1e6
        if parent is None or parent.split(".")[0] != package:
            found[package][0] += cumulative / 1e6
            via.setdefault(package, parent or "(top)")
    return {p: (via[p], c, o) for p, (c, o) in found.items()}


def importtime(case: Case, runs: int, skip: set[str], env: dict[str, str]) -> list[Imports]:
    """The packages `case` imports beyond `skip`, by cumulative import time (median of runs)."""
    env = {**env, "PYTHONPROFILEIMPORTTIME": "1"}
    samples: dict[str, list[tuple[str, float, float]]] = defaultdict(list)
    for _ in range(runs):
        _, _, err = run_once(case, env)
        for package, cost in import_costs(err, skip).items():
            samples[package].append(cost)
    rows = [
        Imports(
            package,
            values[0][0],
            statistics.median(v[1] for v in values),
            statistics.median(v[2] for v in values),
        )
        for package, values in samples.items()
    ]
    return sorted(rows, key=lambda r: -r.cumulative)


def bare_modules(command: list[str], env: dict[str, str]) -> set[str]:
    """The top-level packages a bare interpreter imports at its start."""
    env = {**env, "PYTHONPROFILEIMPORTTIME": "1"}
    completed = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    return {module.split(".")[0] for _, module, _, _ in parse_importtime(completed.stderr)}


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def results_table(cases: list[Case]) -> str:
    bare = cases[0]
    base, base_cpu = statistics.median(bare.times), statistics.median(bare.cpu)
    rows = [
        "| command | wall: median (min) | × bare | aim | CPU: median | × bare |",
        "|---|---:|---:|---|---:|---:|",
    ]
    for case in cases:
        wall, cpu = statistics.median(case.times), statistics.median(case.cpu)
        ratio = wall / base
        aim = AIMS.get(case.label)
        verdict = f"{'met' if ratio <= aim else 'missed'} (≤ {aim:.0f}×)" if aim else "-"
        rows.append(
            f"| `{case.shown}` | {ms(wall)} ({ms(min(case.times))}) | {ratio:.1f}× | {verdict} "
            f"| {ms(cpu)} | {cpu / base_cpu:.1f}× |"
        )
    return "\n".join(rows)


def imports_table(label: str, rows: list[Imports], top: int) -> str:
    lines = [
        f"`{label}`, the {min(top, len(rows))} slowest of {len(rows)} packages:",
        "",
        "| package | imported first by | with what it imports | its own modules |",
        "|---|---|---:|---:|",
    ]
    lines += [
        f"| {r.package} | {r.via} | {r.cumulative * 1000:.1f} ms | {r.own * 1000:.1f} ms |"
        for r in rows[:top]
    ]
    return "\n".join(lines)


def machine(load: float) -> dict[str, str]:
    return {
        "CPUs (`nproc`)": str(len(os.sched_getaffinity(0))),
        "CPU model": cpu_model(),
        "memory": memory(),
        "OS": f"{platform.system()} {platform.release()}",
        "Python": f"{platform.python_implementation()} {platform.python_version()}",
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "load average (1 min) at start": f"{load:.2f}",
    }


def section(
    cases: list[Case], imports: dict[str, list[Imports]], info: dict[str, str], runs: int
) -> str:
    machine_rows = "\n".join(f"| {k} | {v} |" for k, v in info.items())
    breakdown = "\n\n".join(imports_table(c.shown, imports[c.label], TOP) for c in cases[1:])
    return f"""{SECTION}

What it measures: how long a command takes from its start to its exit, against how long the
same interpreter takes to start and exit doing nothing, on the same machine in the same run.
`envship` loads a command's module only when that command runs or shows its help
(`controller/cli/main.py`), and the libraries of registries, builds, git, HTTP, Kubernetes and
the controller's configuration load only in the code that uses them
(`tests/unit/test_startup_imports.py` checks which load).

- **bare**: `python -c pass` with the interpreter the `envship` script runs (its `#!` line,
  with no flags).
- **version**: `envship --version`.
- **plan**: `envship plan DIR --no-resolve-base`, DIR a copy of `specs/pip-requirements` (one
  environment; the table output). `--no-resolve-base` keeps plan offline: without it, plan asks
  the base image's registry for its digest, which would measure the network.

The three run interleaved, {runs} rounds (the order turns each round; one warm-up run each
first), so a busy moment of a shared machine falls on all three alike; wall time of each
process, and its user + system CPU time (less disturbed by other work on a shared machine). The
ratios are of the medians. Byte code is cached, as for an installed envship (pip compiles it at
install, as in the image): every run writes and reads it in a temporary folder
(`PYTHONPYCACHEPREFIX`, with `PYTHONDONTWRITEBYTECODE` unset), so an editable checkout does not
compile envship's modules at every start and nothing is written into it
(`--environment-as-is` measures with the environment's own settings instead).

Aims: `--version` within {AIMS["version"]:.0f}×, a one-environment `plan` within
{AIMS["plan"]:.0f}× the bare interpreter.

{results_table(cases)}

Where the time goes: the packages each command imports beyond those of a bare start, by their
`-X importtime` cumulative time (the package with what it imports, counted where something else
imported it first; median of {IMPORT_RUNS} runs; "controller" is envship itself). "(top)":
imported by the script, by a function at run time (`rich` when the table is printed), or by
`importlib.import_module` (the command group loads a command's module so, and `-X importtime`
does not nest what it loads under the caller). A package that shows up here and is not needed
by the command is a start-up regression.

{breakdown}

Machine:

| | |
|---|---|
{machine_rows}

Reproduce (about half a minute):

```sh
bash scripts/test --fast   # makes .venv from the lock (or scripts/quickstart)
.venv/bin/python bench/bench_startup.py --write-docs
```
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write-docs", action="store_true", help=f"rewrite {SECTION!r}")
    parser.add_argument("--runs", type=int, default=RUNS, help="rounds of the three commands")
    parser.add_argument("--top", type=int, default=TOP, help="packages shown per command")
    parser.add_argument(
        "--environment-as-is",
        action="store_true",
        help="run with this environment's byte code settings (where PYTHONDONTWRITEBYTECODE is "
        "set, an editable checkout compiles envship's modules at every start)",
    )
    args = parser.parse_args(argv)
    load = os.getloadavg()[0]
    if load > BUSY_LOAD:
        print(f"warning: load average {load:.2f}; other work may skew the timings", flush=True)
    envship, shown = envship_command()
    bare_command = [interpreter_of(envship), "-c", "pass"]
    scratch = Path(tempfile.mkdtemp(prefix="envship-bench-startup-"))
    try:
        folder = scratch / "specs"
        shutil.copytree(SPEC, folder / SPEC.name)
        cases = [
            Case("bare", "python -c pass", bare_command, ()),
            Case("version", f"{shown} --version", [*envship, "--version"], ("version",)),
            Case(
                "plan",
                f"{shown} plan DIR --no-resolve-base",
                [*envship, "plan", str(folder), "--no-resolve-base"],
                (SPEC.name, " build "),
            ),
        ]
        env = dict(os.environ) if args.environment_as_is else cached_bytecode(scratch / "pycache")
        measure(cases, args.runs, env)
        skip = bare_modules(bare_command, env)
        imports = {c.label: importtime(c, IMPORT_RUNS, skip, env) for c in cases[1:]}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    info = machine(load)
    print(results_table(cases))
    for case in cases[1:]:
        print()
        print(imports_table(case.shown, imports[case.label], args.top))
    print()
    print("; ".join(f"{k}: {v}" for k, v in info.items()))
    if args.write_docs:
        if args.environment_as_is:
            parser.error(
                "--write-docs measures with byte code cached: leave out --environment-as-is"
            )
        write_docs(DOCS, SECTION, section(cases, imports, info, args.runs))
        print(f"wrote {DOCS.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
