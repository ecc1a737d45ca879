"""The real filesystem adapter (`FolderTree`) lists symlinks without following them, never
reads through one, and skips what is not a regular file.

Each test builds a repository in a temporary folder next to an `outside/` folder whose files hold
a canary; the audit hook proves the adapter never lists or opens anything there.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controller.adapters.folder import FolderTree
from controller.core.discovery import discover
from controller.core.limits import Limits
from controller.core.tree import TreeView

CANARY = "outside-canary-b61f0a"
_EVENTS: list[tuple[str, str]] | None = None


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if _EVENTS is not None and event in ("open", "os.scandir", "os.listdir") and args:
        target = args[0]
        if isinstance(target, str | bytes | os.PathLike):
            _EVENTS.append((event, os.fsdecode(target)))


sys.addaudithook(_audit)


@pytest.fixture
def events() -> Iterator[list[tuple[str, str]]]:
    global _EVENTS  # noqa: PLW0603 - an audit hook cannot be removed, so it reads a module global
    _EVENTS = []
    try:
        yield _EVENTS
    finally:
        _EVENTS = None


@pytest.fixture
def sandbox(tmp_path: Path) -> tuple[Path, Path]:
    """(repository, outside folder); the repository has one valid environment, good/."""
    repo = tmp_path / "repo"
    (repo / "good").mkdir(parents=True)
    (repo / "good" / "requirements.txt").write_text("numpy==1.26.4\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "requirements.txt").write_text(f"{CANARY}==1.0\n")
    (outside / "azureml_environment.json").write_text(
        json.dumps({"name": CANARY, "docker": {"baseImage": "python:3.11"}})
    )
    (outside / "nested").mkdir()
    (outside / "nested" / "Dockerfile").write_text(f"FROM python:3.11\nLABEL c={CANARY}\n")
    return repo, outside


def touched_outside(events: list[tuple[str, str]], outside: Path) -> list[tuple[str, str]]:
    real_outside = str(outside.resolve())
    return [
        (event, path)
        for event, path in events
        if os.path.isabs(path) and os.path.realpath(path).startswith(real_outside)
    ]


def test_symlinked_directory_is_listed_as_a_link_and_not_followed(
    sandbox: tuple[Path, Path], events: list[tuple[str, str]]
) -> None:
    repo, outside = sandbox
    (repo / "linked").symlink_to(outside, target_is_directory=True)
    (repo / "relative").symlink_to("../outside", target_is_directory=True)

    entries = FolderTree(repo).entries()

    assert entries["linked"].kind == "symlink"
    assert entries["linked"].link_target == str(outside)
    assert entries["relative"].kind == "symlink"
    assert entries["relative"].link_target == "../outside"
    assert not [p for p in entries if p.startswith(("linked/", "relative/"))]
    assert sorted(entries) == ["good/requirements.txt", "linked", "relative"]
    assert touched_outside(events, outside) == []


def test_discovery_ignores_a_symlinked_directory(
    sandbox: tuple[Path, Path], events: list[tuple[str, str]]
) -> None:
    repo, outside = sandbox
    (repo / "linked").symlink_to(outside, target_is_directory=True)
    envs = discover(FolderTree(repo))
    assert [(e.path, e.ok) for e in envs] == [("good", True)]
    assert CANARY not in repr(envs)
    assert touched_outside(events, outside) == []


def test_symlinked_file_is_listed_with_its_target_and_never_opened(
    sandbox: tuple[Path, Path], events: list[tuple[str, str]]
) -> None:
    repo, outside = sandbox
    (repo / "v1").mkdir()
    (repo / "v1" / "azureml_environment.json").symlink_to(outside / "azureml_environment.json")
    tree = FolderTree(repo)
    entry = tree.entries()["v1/azureml_environment.json"]
    assert entry.kind == "symlink"
    assert entry.link_target == str(outside / "azureml_environment.json")
    with pytest.raises(OSError, match="Too many levels of symbolic links"):
        tree.read("v1/azureml_environment.json", 1024)

    envs = {e.path: e for e in discover(tree)}
    assert str(envs["v1"].error) == (
        "v1/azureml_environment.json: symlink points outside the repository "
        f"({outside / 'azureml_environment.json'})"
    )
    assert envs["good"].ok
    assert CANARY not in repr(envs)
    assert touched_outside(events, outside) == []


def test_reading_through_a_symlinked_folder_is_refused(sandbox: tuple[Path, Path]) -> None:
    repo, outside = sandbox
    (repo / "linked").symlink_to(outside, target_is_directory=True)
    tree = FolderTree(repo)
    with pytest.raises(OSError, match=r"Not a directory|Too many levels of symbolic links"):
        tree.read("linked/requirements.txt", 1024)
    view = TreeView(tree, Limits())
    with pytest.raises(Exception, match="symlink points outside the repository"):
        view.read_file("linked/requirements.txt", origin="x.yml")


@pytest.mark.parametrize("path", ["", "../outside/requirements.txt", "a/./b", "/etc/passwd"])
def test_read_refuses_paths_that_are_not_tree_paths(sandbox: tuple[Path, Path], path: str) -> None:
    repo, _ = sandbox
    with pytest.raises((ValueError, OSError)):
        FolderTree(repo).read(path, 1024)


def test_link_swapped_in_after_listing_is_not_followed(
    sandbox: tuple[Path, Path], events: list[tuple[str, str]]
) -> None:
    """A file replaced by a symlink between listing and reading is not read through."""
    repo, outside = sandbox
    (repo / "swap").mkdir()
    target = repo / "swap" / "requirements.txt"
    target.write_text("pandas\n")
    tree = FolderTree(repo)
    assert tree.entries()["swap/requirements.txt"].kind == "file"
    target.unlink()
    target.symlink_to(outside / "requirements.txt")
    events.clear()  # only what discovery does counts

    envs = {e.path: e for e in discover(tree)}

    assert envs["swap"].error is not None
    assert str(envs["swap"].error).startswith("swap/requirements.txt: could not be read")
    assert "please report this" not in str(envs["swap"].error)
    assert envs["good"].ok
    assert CANARY not in repr(envs)
    assert touched_outside(events, outside) == []


def test_folder_swapped_for_a_link_after_listing_is_not_followed(
    sandbox: tuple[Path, Path], events: list[tuple[str, str]]
) -> None:
    repo, outside = sandbox
    (repo / "swap").mkdir()
    (repo / "swap" / "requirements.txt").write_text("pandas\n")
    tree = FolderTree(repo)
    tree.entries()
    (repo / "swap" / "requirements.txt").unlink()
    (repo / "swap").rmdir()
    (repo / "swap").symlink_to(outside, target_is_directory=True)
    events.clear()  # only what discovery does counts

    envs = {e.path: e for e in discover(tree)}

    assert str(envs["swap"].error).startswith("swap/requirements.txt: could not be read")
    assert CANARY not in repr(envs)
    assert touched_outside(events, outside) == []


def test_fifo_is_skipped_without_blocking(sandbox: tuple[Path, Path]) -> None:
    """Opening a FIFO for reading blocks until a writer comes; the adapter never opens one."""
    repo, _ = sandbox
    (repo / "pipe").mkdir()
    os.mkfifo(repo / "pipe" / "requirements.txt")
    os.mkfifo(repo / "pipe" / "environment.yml")
    previous = signal.signal(signal.SIGALRM, signal.default_int_handler)
    signal.alarm(10)
    try:
        tree = FolderTree(repo)
        assert sorted(tree.entries()) == ["good/requirements.txt"]
        envs = discover(tree)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert [(e.path, e.ok) for e in envs] == [("good", True)]


def test_fifo_swapped_in_after_listing_is_refused_without_blocking(
    sandbox: tuple[Path, Path],
) -> None:
    repo, _ = sandbox
    (repo / "pipe").mkdir()
    (repo / "pipe" / "requirements.txt").write_text("pandas\n")
    tree = FolderTree(repo)
    tree.entries()
    (repo / "pipe" / "requirements.txt").unlink()
    os.mkfifo(repo / "pipe" / "requirements.txt")
    previous = signal.signal(signal.SIGALRM, signal.default_int_handler)
    signal.alarm(10)
    try:
        envs = {e.path: e for e in discover(tree)}
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert str(envs["pipe"].error).startswith("pipe/requirements.txt: could not be read")
    assert envs["good"].ok


def test_git_folder_is_not_listed(sandbox: tuple[Path, Path]) -> None:
    repo, _ = sandbox
    (repo / ".git" / "objects").mkdir(parents=True)
    (repo / ".git" / "config").write_text("[core]\n")
    (repo / ".git" / "objects" / "requirements.txt").write_text("numpy\n")
    assert sorted(FolderTree(repo).entries()) == ["good/requirements.txt"]
