"""`envship.yaml` at the top of the repository: what the repository says about itself.

    root: specs                  # the folder to search (default: everything)
    ignore:                      # gitignore-style patterns, relative to the root
      - "**/tests/**"
    defaultBaseImage: mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04:20251130.v1
    names:                       # names for environments that do not name themselves,
      team-a/train/environment: team-a-train      # by the path `envship plan` shows
      team-a/conda-yamls/score.yml: team-a-score

The CLI and the controller both read it; their own options win over it (`ignore` and `names`
add to it). A file that is not valid is a configuration error naming the key: discovery stops,
because what it would find depends on it.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from typing import Any

from controller.core.documents import load_yaml
from controller.core.errors import FixSpec, SpecError
from controller.core.naming import check_image_reference, repository_for
from controller.core.tree import SourceTree

FILE = "envship.yaml"
KEYS = ("root", "ignore", "defaultBaseImage", "names")


class RepositoryConfigError(FixSpec, ValueError):
    """`envship.yaml` is not valid: the repository's owner must fix it (nothing is discovered)."""


@dataclass(frozen=True, slots=True)
class RepositoryConfig:
    root: str | None = None
    ignore: tuple[str, ...] = ()
    default_base_image: str | None = None
    names: tuple[tuple[str, str], ...] = ()


def _fail(key: str, problem: str) -> RepositoryConfigError:
    return RepositoryConfigError(f"{FILE}: {key}: {problem}")


def _text(value: Any, key: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _fail(key, "must be a non-empty string")
    return value.strip()


def _path(value: Any, key: str) -> str:
    text = _text(value, key)
    normal = posixpath.normpath(text)
    if text.startswith("/") or normal == ".." or normal.startswith("../"):
        raise _fail(key, f"{text!r} must be a path inside the repository")
    return "" if normal == "." else normal


def parse_repository_config(data: bytes) -> RepositoryConfig:
    try:
        doc = load_yaml(data, FILE, max_nodes=10_000)
    except SpecError as exc:
        raise RepositoryConfigError(str(exc)) from None
    if doc is None:
        return RepositoryConfig()
    if not isinstance(doc, dict):
        raise RepositoryConfigError(f"{FILE}: must be a mapping of {', '.join(KEYS)}")
    unknown = sorted(str(key) for key in doc if key not in KEYS)
    if unknown:
        raise _fail(unknown[0], f"unknown key (known: {', '.join(KEYS)})")
    root = _path(doc["root"], "root") if doc.get("root") is not None else None
    ignore = doc.get("ignore") or []
    if not isinstance(ignore, list):
        raise _fail("ignore", "must be a list of patterns")
    patterns = tuple(_text(item, f"ignore[{index}]") for index, item in enumerate(ignore))
    base = None
    if doc.get("defaultBaseImage") is not None:
        base = _text(doc["defaultBaseImage"], "defaultBaseImage")
        try:
            check_image_reference(base, FILE)
        except SpecError as exc:
            raise _fail("defaultBaseImage", exc.problem) from None
    names = doc.get("names") or {}
    if not isinstance(names, dict):
        raise _fail("names", "must map repository paths to names")
    pairs = []
    for raw_path, name in names.items():
        key = f"names.{raw_path}"
        path = _path(raw_path, key)
        text = _text(name, key)
        try:
            repository_for(text, "", FILE)
        except SpecError as exc:
            raise _fail(key, exc.problem) from None
        pairs.append((path, text))
    return RepositoryConfig(root, patterns, base, tuple(sorted(pairs)))


def read_repository_config(tree: SourceTree, limit: int) -> RepositoryConfig:
    """The tree's `envship.yaml`, or an empty one when it has none."""
    entry = tree.entries().get(FILE)
    if entry is None:
        return RepositoryConfig()
    if entry.kind != "file":
        raise RepositoryConfigError(f"{FILE}: must be a regular file, not a symlink")
    if entry.size > limit:
        raise RepositoryConfigError(f"{FILE}: over the limit of {limit} bytes")
    return parse_repository_config(tree.read(FILE, limit))
