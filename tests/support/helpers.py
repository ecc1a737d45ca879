"""Small helpers shared by the tests: plan an in-memory repository, write files to a folder."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from controller.core.discovery import DiscoveryOptions, discover
from controller.core.plan import PlanItem, plan
from controller.core.tree import Blob, MemoryTree


def plan_files(files: Mapping[str, bytes | str | Blob], **options: object) -> dict[str, PlanItem]:
    """Plan a repository given as {path: content}; items keyed by environment path."""
    tree = MemoryTree({p: (c.encode() if isinstance(c, str) else c) for p, c in files.items()})
    items = plan(discover(tree, DiscoveryOptions(**options)))  # type: ignore[arg-type]
    return {item.env.path: item for item in items}


def hash_of(files: Mapping[str, bytes | str | Blob], path: str, **options: object) -> str:
    item = plan_files(files, **options)[path]
    assert item.error is None, item.error
    assert item.hash is not None
    return item.hash


def write(folder: Path, files: Mapping[str, str]) -> Path:
    """Write `files` ({relative path: text}) under `folder`, making folders; return `folder`."""
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return folder
