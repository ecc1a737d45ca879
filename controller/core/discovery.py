"""Find the environments in a repository tree.

Rules, in order, for each folder below the root (hidden and ignored paths skipped):
1. `azureml_environment.json` -> an Azure ML v1 saved environment (its conda file and
   BaseDockerfile belong to it).
2. Every `*.yml`/`*.yaml` that is an Azure ML v2 environment -> one environment each. The conda
   files and build folders they reference belong to them and are not environments themselves.
3. Otherwise, one plain environment per folder: a `Dockerfile` (the folder, with everything below
   it, is the build context), else a conda file (any YAML whose top level is a conda
   specification), else `requirements.txt`.
A YAML file that cannot be parsed and belongs to nothing is listed as refused, since it may be an
environment. Each environment that cannot be read is refused alone; the others carry on.
Names become registry repositories under the prefix; a name used twice refuses every user of it.
"""

from __future__ import annotations

import gc
import posixpath
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, Protocol, TypeVar

import pathspec

from controller.core.conda import is_conda_document
from controller.core.documents import load_yaml
from controller.core.errors import SpecError
from controller.core.limits import Limits
from controller.core.model import Environment, Kind
from controller.core.naming import repository_for, validate_prefix
from controller.core.specs.aml_v1 import DEFINITION, read_aml_v1
from controller.core.specs.aml_v2 import is_v2_document, read_aml_v2, referenced_paths
from controller.core.specs.common import DEFAULT_BASE_IMAGE
from controller.core.specs.plain import (
    DOCKERFILE,
    REQUIREMENTS,
    folder_name,
    read_conda,
    read_dockerfile,
    read_pip,
)
from controller.core.tree import SourceTree, TreeView, join, parent

YAML_SUFFIXES = (".yml", ".yaml")


class RootError(ValueError):
    """The configured root is not a folder of the repository (a configuration error)."""


T = TypeVar("T")


class JobRunner(Protocol):
    """Runs `job(0)`, ..., `job(count - 1)` and returns their results in that order.

    Discovery hands the reading and parsing of files to a runner in two batches (every YAML
    file, then every environment). Jobs only read the tree; a runner may spread them over
    processes (see `controller.adapters.forked`) as long as the result, or the exception of the
    lowest-numbered job that raises, is what running them in turn would give.
    """

    def __call__(self, job: Callable[[int], T], count: int, /) -> list[T]: ...


def run_in_turn(job: Callable[[int], T], count: int, /) -> list[T]:
    """The default `JobRunner`: every job in turn, in this process."""
    return [job(index) for index in range(count)]


@dataclass(frozen=True, slots=True)
class DiscoveryOptions:
    """Where to look and how to name what is found."""

    root: str = ""
    """Folder inside the repository to search (e.g. `specs`); references may leave it."""
    ignore: tuple[str, ...] = ()
    """gitignore-style patterns, relative to the root, of paths that are not searched."""
    prefix: str = "envship"
    """Registry path that every environment's repository is placed under."""
    default_base_image: str = DEFAULT_BASE_IMAGE
    """Base image for the plain pip and conda forms."""
    limits: Limits = field(default_factory=Limits)


def _within(path: str, folders: set[str]) -> bool:
    """True when `path` or one of its parent folders is in `folders`."""
    while True:
        if path in folders:
            return True
        if not path:
            return False
        path = parent(path)


_UNREAD = Environment("", "unknown", "")
"""Holds the place of a queued environment in `_Discovery.found` until it is read."""


class _Discovery:
    def __init__(self, tree: SourceTree, options: DiscoveryOptions, run_jobs: JobRunner) -> None:
        self.options = options
        self.run_jobs = run_jobs
        self.view = TreeView(tree, options.limits)
        self.root = posixpath.normpath(options.root.strip("/")) if options.root.strip("/") else ""
        if self.root.startswith(".."):
            raise RootError(f"root {options.root!r} leaves the repository")
        self.ignore = pathspec.GitIgnoreSpec.from_lines(options.ignore)
        self.yaml: dict[str, Any] = {}
        self.found: list[Environment] = []
        self.queued: list[tuple[int, str, Kind, str, Callable[[], Environment]]] = []
        self._files_in: dict[str, list[str]] = {}

    def visible(self, path: str) -> bool:
        relative = path[len(self.root) + 1 :] if self.root else path
        if not relative:
            return True
        if any(part.startswith(".") for part in relative.split("/")):
            return False
        return not self.ignore.match_file(relative)

    def folders(self) -> Iterator[str]:
        """Visible folders below the root, parents before children, in path order."""
        children = self.view.children()
        stack = [self.root]
        while stack:
            folder = stack.pop()
            yield folder
            subfolders = [p for p in children.get(folder, ()) if p not in self.view.entries]
            stack.extend(sorted((p for p in subfolders if self.visible(p)), reverse=True))

    def files_in(self, folder: str) -> list[str]:
        """Visible files and symlinks directly in `folder` (computed once per folder)."""
        files = self._files_in.get(folder)
        if files is None:
            entries = self.view.entries
            children = self.view.children().get(folder, ())
            files = [p for p in children if p in entries and self.visible(p)]
            self._files_in[folder] = files
        return files

    def parse_yaml(self, folders: list[str]) -> None:
        """Parse every YAML file once; errors are kept to report where they belong."""
        paths: list[str] = []
        for folder in folders:
            names = self.files_in(folder)
            if join(folder, DEFINITION) in names:
                continue
            paths.extend(path for path in names if path.endswith(YAML_SUFFIXES))
        docs = self.run_jobs(partial(self.parse_one, paths), len(paths))
        for path, doc in zip(paths, docs, strict=True):
            self.yaml[path] = doc
            if not isinstance(doc, SpecError):
                self.view.parsed_yaml[path] = doc

    def parse_one(self, paths: list[str], index: int) -> Any:
        """The YAML file `paths[index]` as data, or the SpecError that refuses it."""
        path = paths[index]
        try:
            data = self.view.read_file(path, origin=path)
            return load_yaml(data, path, max_nodes=self.options.limits.max_yaml_nodes)
        except SpecError as exc:
            return exc

    def add(self, name: str, kind: Kind, path: str, read: Callable[[], Environment]) -> None:
        """Queue an environment to read (`read_queued`); it keeps its place in `found`."""
        self.queued.append((len(self.found), name, kind, path, read))
        self.found.append(_UNREAD)

    def read_queued(self) -> None:
        envs = self.run_jobs(self.read_one, len(self.queued))
        for (place, *_), env in zip(self.queued, envs, strict=True):
            self.found[place] = env
        self.queued.clear()

    def read_one(self, index: int) -> Environment:
        """Read queued environment `index`; what cannot be read becomes a refused environment."""
        _, name, kind, path, read = self.queued[index]
        try:
            return read()
        except SpecError as exc:
            return Environment(exc.env_name or name, kind, path, (path,), error=exc)
        except Exception as exc:
            error = SpecError(path, f"could not be read ({type(exc).__name__}); please report this")
            return Environment(name, kind, path, (path,), error=error)

    def run(self) -> list[Environment]:
        if not self.view.is_folder(self.root) or self.root in self.view.entries:
            raise RootError(f"root {self.root!r} is not a folder of the repository")
        folders = list(self.folders())
        self.parse_yaml(folders)
        claimed_files: set[str] = set()
        claimed_folders: set[str] = set()
        for path, doc in self.yaml.items():
            if is_v2_document(doc):
                conda, build = referenced_paths(doc, path)
                if conda:
                    claimed_files.add(conda)
                if build is not None:
                    claimed_folders.add(build)
        skip: set[str] = set()
        for folder in folders:
            if _within(folder, skip):
                continue
            self.discover_folder(folder, claimed_files, claimed_folders, skip)
        self.read_queued()
        return self.finish()

    def discover_folder(
        self, folder: str, claimed_files: set[str], claimed_folders: set[str], skip: set[str]
    ) -> None:
        view = self.view
        files = self.files_in(folder)
        names = {posixpath.basename(p) for p in files}
        if DEFINITION in names:
            self.add(folder_name(folder), "aml-v1", folder, lambda: read_aml_v1(view, folder))
            return
        yaml_files = [p for p in files if p in self.yaml]
        has_v2 = False
        for path in yaml_files:
            doc = self.yaml[path]
            if is_v2_document(doc):
                has_v2 = True
                stem = posixpath.splitext(posixpath.basename(path))[0]
                name = doc.get("name") if isinstance(doc.get("name"), str) else stem
                self.add(name, "aml-v2", path, partial(read_aml_v2, view, path, doc))
            elif isinstance(doc, SpecError) and path not in claimed_files:
                stem = posixpath.splitext(posixpath.basename(path))[0]
                self.found.append(Environment(stem, "unknown", path, (path,), error=doc))
        if has_v2 or _within(folder, claimed_folders):
            return
        name = folder_name(folder)
        if DOCKERFILE in names:
            self.add(name, "dockerfile", folder, lambda: read_dockerfile(view, folder))
            skip.add(folder)
            return
        conda_files = [
            p for p in yaml_files if p not in claimed_files and is_conda_document(self.yaml[p])
        ]
        broken = [
            p for p in yaml_files if p not in claimed_files and isinstance(self.yaml[p], SpecError)
        ]
        base = self.options.default_base_image
        if broken and (conda_files or REQUIREMENTS in names):
            # The broken file may be this folder's conda spec: never build a fallback instead.
            listed = ", ".join(broken)
            error = SpecError(
                broken[0], f"cannot tell this folder's environment: {listed} does not parse"
            )
            self.found.append(Environment(name, "conda", folder, tuple(broken), error=error))
        elif len(conda_files) > 1:
            listed = ", ".join(posixpath.basename(p) for p in conda_files)
            error = SpecError(folder or ".", f"several conda files ({listed}); keep one per folder")
            self.found.append(Environment(name, "conda", folder, tuple(conda_files), error=error))
        elif conda_files:
            path = conda_files[0]
            self.add(name, "conda", folder, lambda: read_conda(folder, path, self.yaml[path], base))
        elif REQUIREMENTS in names:
            self.add(name, "pip", folder, lambda: read_pip(view, folder, base))

    def finish(self) -> list[Environment]:
        named: list[Environment] = []
        prefix = self.options.prefix
        for env in self.found:
            if env.error is None:
                try:
                    env = replace(env, repository=repository_for(env.name, prefix, env.files[0]))
                except SpecError as exc:
                    env = replace(env, error=exc)
            named.append(env)
        by_repository: dict[str, list[Environment]] = {}
        for env in named:
            if env.repository is not None and env.error is None:
                by_repository.setdefault(env.repository, []).append(env)
        result = []
        for env in named:
            users = by_repository.get(env.repository or "", [])
            if env.error is None and len(users) > 1:
                others = ", ".join(u.path or "." for u in users if u is not env)
                env = replace(
                    env,
                    error=SpecError(
                        env.files[0],
                        f"name {env.name!r} is also used by {others}; names must be unique",
                    ),
                )
            result.append(env)
        result.sort(key=lambda e: (e.path, e.name))
        return result


@contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector (reference counting still frees everything).

    Discovery allocates hundreds of thousands of small dicts and lists (parsed documents) that
    all live until it returns; the collector would walk them again and again for nothing, which
    costs about a tenth of the time on a large repository. Left alone if already paused.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def discover(
    tree: SourceTree,
    options: DiscoveryOptions | None = None,
    *,
    run_jobs: JobRunner = run_in_turn,
) -> list[Environment]:
    """Every environment below `options.root`, refused ones included, sorted by path.

    `run_jobs` runs the reading and parsing; the result is the same whichever runner is used.
    """
    options = options or DiscoveryOptions()
    validate_prefix(options.prefix)
    with _cyclic_gc_paused():
        return _Discovery(tree, options, run_jobs).run()


__all__ = ["DiscoveryOptions", "JobRunner", "discover", "parent", "run_in_turn"]
