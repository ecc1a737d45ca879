"""Benchmark "BuildKit": what BuildKit's cache mounts and the registry cache save, side by side
with the classic builder, through `envship sync` against a real engine and registry.

Starts a CNCF distribution registry (Debian's `docker-registry`) on loopback and a PEP 503
package index on the engine's bridge gateway (where build containers reach the host) serving
real wheels downloaded once from PyPI (`pip download`, kept in ~/.cache/envship-bench/wheels):
the scientific stack and a web stack, 25 or more packages. Then:

1. **One pin changed, managed pip environment**: a v2 environment (`image` + `conda_file` whose
   `pip:` list names every package, pinned) on a base with a conda stand-in (no conda
   distribution is installable here: tests/support/conda_shim.py; its `pip install` is the real
   one). Each builder first builds it once (BuildKit fills its pip cache mount), then `ROUNDS`
   rebuilds, each with another version of one package, classic and BuildKit alternating; each
   rebuild is a fresh hash, timed as a whole `envship sync` (render, build, push, verify). Run
   twice: the index at loopback speed, and throttled to `--throttle` MB/s, as a hosted feed
   across a network is.
2. **A fresh engine and the registry cache**: a Dockerfile environment whose first `RUN` installs
   the same packages and whose last step changes; built once, then every image of it and the
   engine's whole build cache are removed (what a new dind pod has) and the changed environment
   is synced again, with the build cache (`--build-cache auto`: inline cache, imported from the
   repository's `buildcache` tag) and without (`--build-cache off`). `ROUNDS` each, alternating.
3. **The first sync of `--count` small environments** (a Dockerfile `FROM` busybox and one
   distinct `RUN echo`, as in bench_sync.py), once with each builder, at envship's default jobs.

Every run is checked (the expected action for every environment, an image in the registry), so
an error cannot pass for a fast run. It removes the engine's build cache (part 2) and the images
it made.

    python bench/bench_buildkit.py                 # print the tables
    python bench/bench_buildkit.py --write-docs    # also rewrite its section of docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import hashlib
import html
import http.server
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DOCS = REPO / "docs" / "benchmarks.md"
SECTION = "## BuildKit: cache mounts and the registry cache"
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))
from bench_sync import BASE, envship_command, generate, push_base  # noqa: E402
from localregistry import LocalRegistry  # noqa: E402
from report import cpu_model, memory, write_docs  # noqa: E402

from tests.support.conda_shim import conda_base  # noqa: E402
from tests.support.python_base import python_image  # noqa: E402

WHEELS = Path.home() / ".cache" / "envship-bench" / "wheels"
PINNED = (
    "numpy==1.26.4", "pandas==2.2.2", "scipy==1.13.1", "python-dateutil==2.9.0.post0",
    "pytz==2024.1", "tzdata==2024.1", "six==1.16.0", "requests==2.32.3", "urllib3==2.2.2",
    "idna==3.7", "certifi==2024.7.4", "charset-normalizer==3.3.2", "pyyaml==6.0.1",
    "click==8.1.7", "jinja2==3.1.4", "markupsafe==2.1.5", "itsdangerous==2.2.0",
    "werkzeug==3.0.3", "flask==3.0.3", "blinker==1.8.2", "attrs==23.2.0", "packaging==24.1",
    "tabulate==0.9.0", "typing-extensions==4.12.2", "joblib==1.4.2", "threadpoolctl==3.5.0",
)  # fmt: skip
MOVING = "tqdm"
VERSIONS = (
    "4.65.0", "4.65.1", "4.65.2", "4.66.0", "4.66.1", "4.66.2", "4.66.3", "4.66.4", "4.66.5",
    "4.66.6", "4.67.0", "4.67.1",
)  # fmt: skip
"""The package whose pin changes: a version per rebuild, so each is a new hash (warm-up and
`--rounds` rebuilds at each index speed: 2 x (1 + rounds) versions)."""
ROUNDS = 3
MB = 1024 * 1024
WIDTH = 96
"""Prose in the docs is wrapped at this width."""


# -- the package index -------------------------------------------------------------------------


def download_wheels() -> list[Path]:
    """Every wheel the environments need, for the Python of the test base (CPython 3.11)."""
    WHEELS.mkdir(parents=True, exist_ok=True)
    wanted = [*PINNED, *(f"{MOVING}=={v}" for v in VERSIONS)]
    missing = [w for w in wanted if not any(WHEELS.glob(f"{wheel_prefix(w)}-*.whl"))]
    if missing:
        print(f"downloading {len(missing)} wheels and their dependencies from PyPI...", flush=True)
        for requirement in missing:
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                 "--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp",
                 "--platform", "manylinux2014_x86_64", "--platform", "manylinux_2_17_x86_64",
                 "-d", str(WHEELS), requirement],
                check=True,
            )  # fmt: skip
    return sorted(WHEELS.glob("*.whl"))


def wheel_prefix(requirement: str) -> str:
    """`python-dateutil==2.9.0.post0` -> `python_dateutil-2.9.0.post0` (how its wheel is named)."""
    name, version = requirement.split("==", 1)
    return f"{name.replace('-', '_').lower()}-{version}"


def project(wheel: Path) -> str:
    return wheel.name.split("-", 1)[0].replace("_", "-").lower()


class Index:
    """PEP 503 pages and files from a folder of wheels; files sent at `rate` bytes/s at most
    (None: as fast as the machine goes)."""

    def __init__(self, wheels: list[Path], address: str) -> None:
        self.wheels = wheels
        self.rate: float | None = None
        self.sent = 0
        self.files = 0
        index = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                index.answer(self)

        self.server = http.server.ThreadingHTTPServer((address, 0), Handler)
        self.url = f"http://{address}:{self.server.server_port}/simple/"
        self.host = f"{address}:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def answer(self, request: http.server.BaseHTTPRequestHandler) -> None:
        parts = [p for p in request.path.split("?")[0].split("/") if p]
        if parts[:1] == ["simple"] and len(parts) == 2:
            files = [w for w in self.wheels if project(w) == parts[1].lower()]
            links = "".join(
                f'<a href="/files/{html.escape(w.name)}#sha256={sha256(w)}">{w.name}</a>'
                for w in files
            )
            body = f"<html><body>{links}</body></html>".encode()
            self.send(request, 200 if files else 404, body, "text/html")
        elif parts[:1] == ["files"] and len(parts) == 2:
            match = [w for w in self.wheels if w.name == parts[1]]
            if not match:
                self.send(request, 404, b"", "text/plain")
                return
            self.files += 1
            self.send(request, 200, match[0].read_bytes(), "application/octet-stream")
        else:
            self.send(request, 404, b"", "text/plain")

    def send(
        self, request: http.server.BaseHTTPRequestHandler, status: int, body: bytes, kind: str
    ) -> None:
        request.send_response(status)
        request.send_header("Content-Type", kind)
        request.send_header("Content-Length", str(len(body)))
        if kind == "application/octet-stream":
            request.send_header("Cache-Control", "max-age=31536000, immutable")
        request.end_headers()
        chunk = 256 * 1024
        for start in range(0, len(body), chunk):
            began = time.perf_counter()
            request.wfile.write(body[start : start + chunk])
            self.sent += min(chunk, len(body) - start)
            if self.rate:
                time.sleep(max(0.0, chunk / self.rate - (time.perf_counter() - began)))

    def stop(self) -> None:
        self.server.shutdown()


_SHA: dict[Path, str] = {}


def sha256(path: Path) -> str:
    if path not in _SHA:
        _SHA[path] = hashlib.sha256(path.read_bytes()).hexdigest()
    return _SHA[path]


# -- envship -----------------------------------------------------------------------------------


def envship(*args: str) -> tuple[float, list[dict[str, Any]], str]:
    """One `envship` run: wall seconds, its JSON items, its progress output."""
    start = time.perf_counter()
    done = subprocess.run(
        [*envship_command(), *args, "--output", "json"],
        capture_output=True, text=True, check=False, cwd=REPO,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    try:
        items = json.loads(done.stdout)
    except ValueError:
        raise AssertionError(f"envship {args[0]}: no JSON: {done.stderr[-3000:]}") from None
    return seconds, items, done.stderr


def sync(folder: Path, registry: str, expected: dict[str, str], *extra: str) -> float:
    seconds, items, output = envship("sync", str(folder), "--registry", registry, *extra)
    actions = {item["name"]: item["action"] for item in items}
    if actions != expected:
        failed = [i.get("error") for i in items if i["action"] == "failed"][:3]
        raise AssertionError(f"sync {folder.name}: {actions} (errors: {failed}) {output[-3000:]}")
    return seconds


def write(folder: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return folder


def conda_env(base: str, name: str, version: str) -> dict[str, str]:
    pins = "".join(f"    - {p}\n" for p in (*PINNED, f"{MOVING}=={version}"))
    return {
        f"{name}/environment.yml": f"name: {name}\nimage: {base}\nconda_file: conda.yml\n",
        f"{name}/conda.yml": (
            f"channels:\n  - conda-forge\ndependencies:\n  - python=3.11\n  - pip\n  - pip:\n{pins}"
        ),
    }


def dockerfile_env(base: str, index: str, name: str, marker: str, step: int) -> dict[str, str]:
    """`marker` makes the install step its own: no other run's cache can answer for it."""
    pins = " ".join(PINNED)
    return {
        f"{name}/Dockerfile": (
            f"FROM {base}\n"
            f"RUN echo {marker} > /envship-marker && python3 -m venv /opt/venv "
            f"&& /opt/venv/bin/pip install --no-cache-dir "
            f"--index-url {index} --trusted-host {index.split('/')[2]} {pins}\n"
            f"RUN echo {step} > /envship-step\n"
        )
    }


def forget(client: Any, registry: str, repository: str) -> None:
    """What a new engine has of `repository`: nothing; and no build cache at all."""
    for image in client.images.list():
        for tag in image.tags:
            if tag.startswith(f"{registry}/{repository}:"):
                with contextlib.suppress(Exception):
                    client.images.remove(tag, force=True)
    client.api.prune_builds(all=True)


# -- the measurements ------------------------------------------------------------------------


@dataclass
class Results:
    packages: int
    megabytes: float
    throttle: float
    pin: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    """index speed -> builder -> rebuild seconds."""
    fresh: dict[str, list[float]] = field(default_factory=dict)
    """build cache mode -> seconds."""
    first: dict[str, float] = field(default_factory=dict)
    """builder -> seconds for the first sync of `count`."""
    count: int = 0
    rounds: int = ROUNDS
    loads: list[float] = field(default_factory=list)


def pin_change(r: Results, scratch: Path, base: str, registry: str, index: Index) -> None:
    builders = ("classic", "buildkit")
    versions = iter(VERSIONS)  # every build a version of its own: no cache answers for it
    for speed, rate in (("loopback", None), (f"{r.throttle:g} MB/s", r.throttle * MB)):
        index.rate = rate
        times: dict[str, list[float]] = {b: [] for b in builders}
        warm = next(versions)
        for builder in builders:  # the first build of each: BuildKit fills its cache mount
            folder = write(scratch / f"pin-{speed}-{builder}-0", conda_env(base, "env", warm))
            sync(
                folder, f"{registry}/{builder}w{len(r.pin)}", {"env": "built"}, "--builder", builder
            )
        for round_ in range(r.rounds):
            version = next(versions)
            order = builders if round_ % 2 == 0 else builders[::-1]
            for builder in order:
                folder = write(
                    scratch / f"pin-{speed}-{builder}-{round_ + 1}", conda_env(base, "env", version)
                )
                r.loads.append(os.getloadavg()[0])
                seconds = sync(
                    folder, f"{registry}/{builder}p{len(r.pin)}r{round_}", {"env": "built"},
                    "--builder", builder,
                )  # fmt: skip
                times[builder].append(seconds)
                print(f"pin change ({speed}), {builder}: {seconds:.1f} s", flush=True)
        r.pin[speed] = times
    index.rate = None


def fresh_engine(
    r: Results, client: Any, scratch: Path, base: str, registry: str, index: Index
) -> None:
    modes = ("auto", "off")
    times: dict[str, list[float]] = {m: [] for m in modes}
    for round_ in range(r.rounds):
        order = modes if round_ % 2 == 0 else modes[::-1]
        for mode in order:
            repository = f"fresh{mode}{round_}"
            name = "app"
            folder = write(
                scratch / f"fresh-{mode}-{round_}",
                dockerfile_env(base, index.url, name, repository, 0),
            )
            sync(folder, f"{registry}/{repository}", {name: "built"}, "--build-cache", mode)
            forget(client, registry, f"{repository}/{name}")
            write(folder, dockerfile_env(base, index.url, name, repository, 1))
            r.loads.append(os.getloadavg()[0])
            seconds = sync(
                folder, f"{registry}/{repository}", {name: "built"}, "--build-cache", mode
            )
            times[mode].append(seconds)
            print(f"fresh engine, --build-cache {mode}: {seconds:.1f} s", flush=True)
    r.fresh = times


def first_sync(r: Results, scratch: Path, base: str, registry: str) -> None:
    for builder in ("classic", "buildkit"):
        folder = scratch / f"many-{builder}"
        names = generate(folder, r.count, builder, base)
        r.loads.append(os.getloadavg()[0])
        seconds = sync(
            folder, f"{registry}/many{builder}", dict.fromkeys(names, "built"), "--builder", builder
        )
        r.first[builder] = seconds
        print(f"first sync of {r.count}, {builder}: {seconds:.1f} s", flush=True)


def remove_images(client: Any, registry: str) -> int:
    removed = 0
    for image in client.images.list():
        for tag in image.tags:
            if tag.startswith(registry + "/"):
                with contextlib.suppress(Exception):
                    client.images.remove(tag, force=True)
                    removed += 1
    return removed


def measure(scratch: Path, count: int, throttle: float, parts: set[str], rounds: int) -> Results:
    import docker  # noqa: PLC0415 - only when measuring

    wheels = download_wheels()
    client = docker.from_env(timeout=900)
    gateway = client.networks.get("bridge").attrs["IPAM"]["Config"][0].get("Gateway", "172.17.0.1")
    index = Index(wheels, gateway)
    registry = LocalRegistry(scratch / "registry").start()
    r = Results(
        len({project(w) for w in wheels}),
        sum(w.stat().st_size for w in wheels) / MB,
        throttle,
        count=count,
    )
    try:
        python = python_image(client, scratch / "python-base")
        shim = conda_base(
            client, python, f"{registry.host}/base/conda-pip:1",
            env={"PIP_INDEX_URL": index.url, "PIP_TRUSTED_HOST": index.host},
        )  # fmt: skip
        client.images.push(shim)
        client.api.tag(python, f"{registry.host}/base/python", "3.11")
        client.images.push(f"{registry.host}/base/python:3.11")
        print(f"registry {registry.host}, index {index.url}: {r.packages} packages, "
              f"{r.megabytes:.0f} MB", flush=True)  # fmt: skip
        if "pin" in parts:
            pin_change(r, scratch, shim, registry.host, index)
        if "fresh" in parts:
            fresh_engine(
                r, client, scratch, f"{registry.host}/base/python:3.11", registry.host, index
            )
        if "first" in parts:
            push_base(client, registry.host)
            first_sync(r, scratch, f"{registry.host}/{BASE}", registry.host)
        return r
    finally:
        index.stop()
        registry.stop()
        print(f"removed {remove_images(client, registry.host)} image tags", flush=True)
        client.close()


# -- reporting ---------------------------------------------------------------------------------


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def spread(values: list[float]) -> str:
    if not values:
        return "not run"
    return f"{median(values):.1f} s ({min(values):.1f}-{max(values):.1f})"


def versions() -> dict[str, str]:
    def first_line(argv: list[str]) -> str:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30)
            return (done.stdout.strip().splitlines() or ["?"])[0]
        return "?"

    cli = (
        "from controller.adapters.buildkit import find_cli; import os; "
        "c = find_cli(dict(os.environ))[0]; "
        "print(c.version, '(buildx)' if c.mode == 'buildx' else '(BuildKit built in)')"
    )
    return {
        "engine": first_line(["docker", "version", "--format", "{{.Server.Version}}"]),
        "cli": first_line([sys.executable, "-c", cli]),
    }


def section(r: Results, info: dict[str, str]) -> str:
    lines = [
        SECTION,
        "",
        wrap(
            f"Measured {info['date']} on {info['machine']}; Docker engine {info['engine']}, "
            f"docker CLI {info['cli']}; 1-minute load {info['load']}. Reproduce: "
            "`python bench/bench_buildkit.py` (its docstring says exactly what runs)."
        ),
        "",
    ]
    if r.pin:
        lines += [
            wrap(
                f"**One pin changed** in a managed pip environment of {r.packages} packages "
                f"({r.megabytes:.0f} MB of wheels from a local index), `envship sync` of the "
                f"rebuild, median of {r.rounds} (range):"
            ),
            "",
            "| index | classic builder | BuildKit, cache mounts | ratio |",
            "|---|---|---|---|",
        ]
        ratios = []
        for speed, times in r.pin.items():
            ratio = median(times["classic"]) / median(times["buildkit"])
            ratios.append(ratio)
            lines.append(
                f"| {speed} | {spread(times['classic'])} | {spread(times['buildkit'])} "
                f"| {ratio:.2f}x |"
            )
        lines += [
            "",
            wrap(
                "The cache mounts save what is downloaded again: with the wheels in pip's cache "
                "mount a rebuild fetches only the changed one. What stays is installing every "
                "package into the new environment (unpacking numpy, scipy and pandas is most "
                "of it), which a rebuild with any builder does, so the gain is "
                f"{min(ratios):.2f}x to {max(ratios):.2f}x here, short of the 5x aimed at; it "
                "grows with the time downloads take (a slower feed, larger packages). Conda's "
                "package cache is mounted the same way and would also save conda's downloads "
                "and extraction, usually the larger part of an Azure ML build; the conda "
                "stand-in this benchmark has to use installs no conda packages, so that part "
                "is not measured."
            ),
        ]
        lines.append("")
    if r.fresh:
        ratio = median(r.fresh["off"]) / median(r.fresh["auto"])
        lines += [
            wrap(
                "**A fresh engine** (every image of the environment and the whole build cache "
                "removed) syncing a Dockerfile environment whose last step changed, its first "
                f"step installing the same packages; median of {r.rounds}:"
            ),
            "",
            "| build cache | seconds | ratio |",
            "|---|---|---|",
            f"| `--build-cache off` | {spread(r.fresh['off'])} | 1.00x |",
            f"| `--build-cache auto` (inline, from `buildcache`) | {spread(r.fresh['auto'])} "
            f"| {ratio:.2f}x |",
            "",
            wrap(
                "Without the cache a new engine installs every package again; with it, it "
                "pulls the install step's layer from the registry and runs only the changed "
                "step."
            ),
            "",
        ]
    if r.first:
        lines += [
            wrap(
                f"**The first sync of {r.count:,} small environments** (busybox and one `RUN`), "
                f"envship's default jobs ({max(1, (os.cpu_count() or 2) // 2)} here), once each:"
            ),
            "",
            "| builder | seconds | per environment |",
            "|---|---|---|",
        ]
        for builder, seconds in r.first.items():
            lines.append(f"| {builder} | {seconds:.0f} s | {seconds / r.count:.2f} s |")
        if {"classic", "buildkit"} <= set(r.first):
            lines += [
                "",
                wrap(
                    f"BuildKit is {r.first['classic'] / r.first['buildkit']:.2f}x the classic "
                    "builder on builds this small, where the engine's fixed cost per build is "
                    "all there is (a docker CLI process per build included)."
                ),
            ]
        lines.append("")
    return "\n".join(lines) + "\n"


def wrap(text: str) -> str:
    return textwrap.fill(text, WIDTH, break_on_hyphens=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write-docs", action="store_true", help=f"rewrite {SECTION!r}")
    parser.add_argument("--count", type=int, default=1000, help="environments of part 3")
    parser.add_argument("--throttle", type=float, default=10.0, help="MB/s of the slow index")
    parser.add_argument(
        "--parts", default="pin,fresh,first", help="which parts to run (pin, fresh, first)"
    )
    parser.add_argument(
        "--rounds", type=int, default=ROUNDS, choices=range(1, 6), help="timed runs of parts 1, 2"
    )
    parser.add_argument("--save", metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args(argv)
    parts = set(args.parts.split(","))
    with tempfile.TemporaryDirectory(prefix="envship-bench-buildkit-") as folder:
        results = measure(Path(folder), args.count, args.throttle, parts, args.rounds)
    info = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{cpu_model()}, {os.cpu_count()} CPUs, {memory()}, {platform.system()}",
        "load": f"{min(results.loads):.1f}-{max(results.loads):.1f}" if results.loads else "?",
        **versions(),
    }
    text = section(results, info)
    print(text)
    if args.save:
        Path(args.save).write_text(json.dumps(results.__dict__, indent=2), encoding="utf-8")
    if args.write_docs:
        write_docs(DOCS, SECTION, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
