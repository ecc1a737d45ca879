"""Benchmark the git source: clone, listing and fetch of a repository of 20,001 files.

A bare repository of 200 environment folders (20 teams) with 100 files each, half of them in a
sub-folder, is committed with pygit2; then, through envship's `GitSource`:

- clone: the first fetch into an empty cache;
- listing: every entry of the tree (`GitTree.entries`), best and worst of 3 on fresh trees;
- fetch with nothing new: median of 20;
- listing after one file changed: the source reuses the listings of every unchanged folder.

Aims (the controller lists the tree on every change): a full listing under 0.5 s at best and
1 s at worst on 2 cores; the listing after one change far below a full one (a ratio).

    python bench/bench_git.py                 # print the table
    python bench/bench_git.py --write-docs    # also rewrite the section in docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pygit2
from pygit2.enums import FileMode

from controller.adapters.gitsource import GitSettings, GitSource
from controller.adapters.gittree import GitTree
from controller.adapters.secrets import SecretStore

HERE = Path(__file__).resolve().parent
DOCS = HERE.parent / "docs" / "benchmarks.md"
SECTION = "## Git source: listing 20,000 files"
BEST_AIM, WORST_AIM = 0.5, 1.0

sys.path.insert(0, str(HERE))
from report import cpu_model, memory, write_docs  # noqa: E402


def commit(repo: pygit2.Repository, files: dict[str, bytes], parents: list[pygit2.Oid]) -> None:
    nested: dict[str, object] = {}
    for path, data in files.items():
        *folders, name = path.split("/")
        level = nested
        for folder in folders:
            level = level.setdefault(folder, {})  # type: ignore[assignment]
        level[name] = data

    def build(level: dict[str, object]) -> pygit2.Oid:
        builder = repo.TreeBuilder()
        for name, content in level.items():
            if isinstance(content, dict):
                builder.insert(name, build(content), FileMode.TREE)
            else:
                assert isinstance(content, bytes)
                builder.insert(name, repo.create_blob(content), FileMode.BLOB)
        return builder.write()

    who = pygit2.Signature("bench", "bench@example.org", 1_700_000_000, 0)
    repo.create_commit("refs/heads/main", who, who, "bench", build(nested), parents)


def measure(workdir: Path) -> dict[str, float]:
    upstream = pygit2.init_repository(str(workdir / "big.git"), bare=True, initial_head="main")
    files: dict[str, bytes] = {}
    for env in range(200):
        for index in range(100):
            folder = f"team{env % 20}/env{env}" + ("/sub" if index % 2 else "")
            files[f"{folder}/f{index}.txt"] = f"{env} {index}\n".encode() * (index + 1)
    commit(upstream, files, [])
    git = GitSource(GitSettings(str(workdir / "big.git"), "main", workdir / "cache"), SecretStore())

    started = time.perf_counter()
    revision = git.fetch()
    clone = time.perf_counter() - started
    listings = []
    for _ in range(3):
        started = time.perf_counter()
        entries = GitTree(git.repository, revision.tree).entries()
        listings.append(time.perf_counter() - started)
    assert len(entries) == len(files)
    fetches = []
    for _ in range(20):
        started = time.perf_counter()
        assert git.fetch() == revision
        fetches.append(time.perf_counter() - started)

    git.tree(revision).entries()
    files["team3/env3/sub/f1.txt"] = b"changed\n"
    commit(upstream, files, [upstream.head.target])
    changed = git.fetch()
    started = time.perf_counter()
    after = git.tree(changed).entries()
    incremental = time.perf_counter() - started
    assert after["team3/env3/sub/f1.txt"].size == 8
    return {
        "clone": clone,
        "best": min(listings),
        "worst": max(listings),
        "fetch": statistics.median(fetches),
        "incremental": incremental,
    }


def report(figures: dict[str, float]) -> str:
    ms = {key: value * 1000 for key, value in figures.items()}
    best_met = "met" if figures["best"] < BEST_AIM else "missed"
    worst_met = "met" if figures["worst"] < WORST_AIM else "missed"
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    ratio = figures["best"] / figures["incremental"]
    return f"""{SECTION}

What it measures (`bench/bench_git.py`): envship's git source on a bare repository of 20,001
files in 200 environment folders: the first fetch (a clone into an empty cache), a full listing
of the tree (what discovery reads), a fetch with nothing new, and the listing after one file
changed, which reuses the listings of every unchanged folder.

| measurement | result | aim |
|---|---:|---|
| clone | {ms["clone"]:.0f} ms | |
| full listing, best of 3 | {ms["best"]:.0f} ms | under {BEST_AIM * 1000:.0f} ms: {best_met} |
| full listing, worst of 3 | {ms["worst"]:.0f} ms | under {WORST_AIM * 1000:.0f} ms: {worst_met} |
| fetch, nothing new (median of 20) | {ms["fetch"]:.2f} ms | |
| listing after one file changed | {ms["incremental"]:.1f} ms | {ratio:.0f}x a full listing |

Machine: {os.cpu_count()} CPUs, {cpu_model()}, {memory()}, {platform.system()}
{platform.release()}, CPython {platform.python_version()}, pygit2 {pygit2.__version__}
(libgit2 {pygit2.LIBGIT2_VERSION}); {now}; load average (1 min) at start {os.getloadavg()[0]:.2f}.

Reproduce: `.venv/bin/python bench/bench_git.py --write-docs` (`.venv` from the lock, as
`scripts/test` makes it).
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="envship-bench-git-") as workdir:
        text = report(measure(Path(workdir)))
    print(text)
    if args.write_docs:
        write_docs(DOCS, SECTION, text)


if __name__ == "__main__":
    main()
