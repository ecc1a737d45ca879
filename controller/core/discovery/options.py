"""Where discovery looks, how it runs its jobs, and what it needs of a tree to be incremental."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from controller.core.errors import Misconfigured
from controller.core.limits import Limits
from controller.core.tree import SourceTree

T = TypeVar("T")


class RootError(Misconfigured, ValueError):
    """The configured root is not a folder of the repository (the operator must act)."""


class JobRunner(Protocol):
    """Runs `job(0)`, ..., `job(count - 1)` and returns their results in that order.

    Discovery hands the reading and parsing of files to a runner in two batches (every
    document, then every environment). Jobs only read the tree; a runner may spread them over
    processes (see `controller.adapters.forked`) as long as the result, or the exception of the
    lowest-numbered job that raises, is what running them in turn would give.
    """

    def __call__(self, job: Callable[[int], T], count: int, /) -> list[T]: ...


def run_in_turn(job: Callable[[int], T], count: int, /) -> list[T]:
    """The default `JobRunner`: every job in turn, in this process."""
    return [job(index) for index in range(count)]


@dataclass(frozen=True, slots=True)
class DiscoveryOptions:
    """Where to look and how to name what is found.

    `root`, `ignore` and `default_base_image` left as None take the repository's own
    `envship.yaml` (see `repoconfig`), then the defaults; a value given here wins.
    """

    root: str | None = None
    """Folder inside the repository to search (e.g. `specs`); references may leave it."""
    ignore: tuple[str, ...] = ()
    """gitignore-style patterns, relative to the root, of paths that are not searched (added
    to the repository file's)."""
    prefix: str = "envship"
    """Registry path that every environment's repository is placed under."""
    default_base_image: str | None = None
    """Base image for the plain pip and conda forms."""
    names: Mapping[str, str] = field(default_factory=dict)
    """Names by repository path for environments that do not name themselves (added to the
    repository file's; these win)."""
    limits: Limits = field(default_factory=Limits)
    use_repository_file: bool = True
    """Read `envship.yaml` at the top of the tree."""


@dataclass(frozen=True, slots=True)
class Settings:
    """The options discovery works with: given options over the repository file over defaults."""

    root: str
    ignore: tuple[str, ...]
    prefix: str
    default_base_image: str
    names: tuple[tuple[str, str], ...]
    limits: Limits

    @property
    def name_of(self) -> dict[str, str]:
        return dict(self.names)


class IdentifiedTree(SourceTree, Protocol):
    """A tree that names its content: equal object ids at a path mean equal content there (and,
    for a folder, below it). A git tree is one."""

    def object_id(self, path: str) -> str | None:
        """The id of the file, symlink or folder at `path` ('' is the root); None if missing."""
        ...

    def changed_since(self, previous: str) -> dict[str, bool] | None:
        """Every file and symlink path added, removed or changed since the tree of id
        `previous` (all of those below a folder added or removed), each True when it changed
        in place (there before and now, of the same kind); None when it cannot tell. Optional."""
        ...
