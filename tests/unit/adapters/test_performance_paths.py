"""The speed-ups must not change results: forked jobs, kept folder descriptors, node counting."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller.adapters import forked
from controller.adapters.folder import OPEN_FOLDERS, FolderTree
from controller.adapters.forked import ForkedJobs
from controller.core.discovery import DiscoveryOptions, discover, run_in_turn
from controller.core.documents import count_nodes
from controller.core.errors import SpecError
from controller.core.plan import plan
from tests.support.bad_inputs import CASES
from tests.support.paths import ROOT

REPOSITORIES = [ROOT / "specs", *sorted(p for p in (CASES).iterdir())]

needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")


def planned(repo: Path, **kwargs: Any) -> list[tuple[Any, ...]]:
    try:
        items = plan(discover(FolderTree(repo), DiscoveryOptions(), **kwargs))
    except Exception as exc:  # some bad inputs still abort discovery: that must match too
        return [("raised", type(exc).__name__, str(exc))]
    return [
        (i.env.name, i.env.kind, i.env.path, i.env.files, i.hash, i.action, i.error, i.env.build)
        for i in items
    ]


@needs_fork
@pytest.mark.parametrize(
    "repo",
    [r for r in REPOSITORIES if r.is_dir() and r.name != "deep-nesting-yaml"],
    ids=lambda p: p.name,
)
def test_forked_discovery_gives_what_one_process_gives(repo: Path) -> None:
    expected = planned(repo)
    assert planned(repo, run_jobs=ForkedJobs(2, min_jobs=0)) == expected
    assert planned(repo, run_jobs=ForkedJobs(3, min_jobs=0)) == expected


@needs_fork
def test_results_come_back_in_job_order() -> None:
    assert ForkedJobs(3, min_jobs=0)(lambda i: i * i, 1000) == run_in_turn(lambda i: i * i, 1000)
    assert ForkedJobs(2, min_jobs=0)(lambda i: i, 0) == []
    assert ForkedJobs(2, min_jobs=0)(lambda i: i, 1) == [0]


@needs_fork
def test_the_lowest_failing_job_raises_as_in_one_process() -> None:
    # Blocks of 64 alternate between processes: job 70 runs in the child, 130 in this one.
    def job(index: int) -> int:
        if index in (70, 130):
            raise ValueError(f"job {index}")
        return index

    with pytest.raises(ValueError, match="job 70"):
        ForkedJobs(2, min_jobs=0)(job, 200)
    with pytest.raises(ValueError, match="job 70"):
        run_in_turn(job, 200)


@needs_fork
def test_a_child_that_dies_has_its_jobs_run_here() -> None:
    parent = os.getpid()

    def job(index: int) -> int:
        if os.getpid() != parent:
            os._exit(3)
        return -index

    assert ForkedJobs(2, min_jobs=0)(job, 300) == [-i for i in range(300)]


def test_spec_errors_survive_pickling() -> None:
    error = SpecError("a/b.yml", "broken", env_name="kept")
    copy = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own data
    assert (type(copy), str(copy), copy.path, copy.problem) == (
        SpecError,
        "a/b.yml: broken",
        "a/b.yml",
        "broken",
    )
    assert copy.env_name == "kept"
    assert forked.usable_cpus() >= 1


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
def test_folder_descriptors_are_bounded_and_closed(tmp_path: Path) -> None:
    for index in range(OPEN_FOLDERS * 3):
        folder = tmp_path / f"f{index}" / "deeper"
        folder.mkdir(parents=True)
        (folder / "x.txt").write_text(f"{index}\n")
    before = open_descriptors()
    with FolderTree(tmp_path) as tree:
        for index in range(OPEN_FOLDERS * 3):
            assert tree.read(f"f{index}/deeper/x.txt", 100) == f"{index}\n".encode()
            assert open_descriptors() <= before + OPEN_FOLDERS
        assert tree.read("f0/deeper/x.txt", 1) == b"0\n"  # max_bytes + 1, as before
    assert open_descriptors() == before
    assert tree.read("f1/deeper/x.txt", 100) == b"1\n"  # reopens after close
    tree.close()
    assert open_descriptors() == before


def test_large_files_are_read_to_the_limit(tmp_path: Path) -> None:
    (tmp_path / "big").write_bytes(b"x" * 300_000)
    tree = FolderTree(tmp_path)
    assert len(tree.read("big", 1_000_000)) == 300_000
    assert len(tree.read("big", 100_000)) == 100_001


def count_nodes_reference(value: Any, budget: int, path: str) -> None:
    """The original walk: every key, value and item popped and counted one by one."""
    remaining = budget
    stack = [value]
    while stack:
        item = stack.pop()
        remaining -= 1
        if remaining < 0:
            raise SpecError(path, f"document expands to more than {budget} nodes")
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


documents = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=3),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=30,
)


@given(documents, st.integers(min_value=0, max_value=60))
def test_count_nodes_refuses_exactly_what_the_original_walk_refused(doc: Any, budget: int) -> None:
    try:
        count_nodes_reference(doc, budget, "p")
        expected = True
    except SpecError:
        expected = False
    try:
        count_nodes(doc, budget, "p")
        actual = True
    except SpecError:
        actual = False
    assert actual == expected
