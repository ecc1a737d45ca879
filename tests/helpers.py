"""Small helpers shared by the unit tests: plan an in-memory repository."""

from __future__ import annotations

from collections.abc import Mapping

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
