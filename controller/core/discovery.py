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
from collections import Counter
from collections.abc import Callable, Collection, Iterator
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
from controller.core.tree import SourceTree, TreeView, join, parent, within

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


Inputs = tuple[tuple[str, str | None], ...]
"""(path, object id) of everything one environment's reading depended on."""


class DiscoveryCache:
    """What the last discovery over an `IdentifiedTree` parsed and read, for the next one.

    A YAML file is parsed again only when its blob id at that path changed; an environment is
    read (and its files loaded) again only when the object id of something its reader looked at
    changed (`TreeView.note`). Only the latest discovery's results are kept, so memory stays
    proportional to one tree. Give one cache to discoveries with the same options; other options
    empty it. Not thread-safe: one discovery at a time.
    """

    def __init__(self) -> None:
        self.options: DiscoveryOptions | None = None
        self.yaml: dict[str, tuple[str, Any]] = {}
        """Path -> (blob id, document or SpecError) of the YAML files last parsed."""
        self.envs: dict[tuple[str, str, str], tuple[Environment, Inputs]] = {}
        self.parsed = 0
        """YAML files parsed by the last discovery (the others came from the cache)."""
        self.read = 0
        """Environments read by the last discovery (the others came from the cache)."""
        self.last: Layout | None = None
        self.incremental = False
        """The last discovery took the shortcut for changes that leave the layout as it was."""

    def bind(self, options: DiscoveryOptions) -> None:
        if self.options != options:
            self.options = options
            self.yaml = {}
            self.envs = {}
            self.last = None


Queued = tuple[str, Kind, str, tuple[str, ...]]
"""An environment to read: name, kind, path and what its reader needs besides the tree."""


@dataclass(slots=True)
class Layout:
    """What the last discovery found, folder by folder: what `relayout` reuses for a tree that
    changed in a few places."""

    tree_id: str
    yaml: dict[str, Any]
    """Every YAML document discovery parsed, by path."""
    yaml_in: dict[str, tuple[str, ...]]
    """The YAML files parsed in each folder (none in a v1 folder)."""
    linked: set[str]
    """YAML files that are symlinks: their blob says nothing of the content they lead to."""
    items_in: dict[str, list[Environment | Queued]]
    """Every visible folder below the root: the environments it gave, refused or to read."""
    skip: set[str]
    """Folders inside a Dockerfile context (and the context folders themselves)."""
    claimed: set[str]
    """Folders at or below a v2 `build.path`."""
    claims_of: dict[str, tuple[str | None, str | None]]
    """(conda file, build folder) of each v2 document."""
    claimed_files: Counter[str]
    claimed_folders: Counter[str]
    parsed: dict[str, Any]
    """The documents that parsed (`TreeView.parsed_yaml`)."""


def _same_ids(object_id: Callable[[str], str | None], inputs: Inputs) -> bool:
    return all(object_id(path) == oid for path, oid in inputs)


_UNREAD = Environment("", "unknown", "")
"""Holds the place of a queued environment in `_Discovery.found` until it is read."""


class _Discovery:
    def __init__(
        self,
        tree: SourceTree,
        options: DiscoveryOptions,
        run_jobs: JobRunner,
        cache: DiscoveryCache | None = None,
    ) -> None:
        self.options = options
        self.run_jobs = run_jobs
        self.view = TreeView(tree, options.limits)
        object_id = getattr(tree, "object_id", None)
        self.object_id: Callable[[str], str | None] | None = object_id if cache else None
        self.cache = cache if object_id is not None else None
        self.root = posixpath.normpath(options.root.strip("/")) if options.root.strip("/") else ""
        if self.root.startswith(".."):
            raise RootError(f"root {options.root!r} leaves the repository")
        self.ignore = pathspec.GitIgnoreSpec.from_lines(options.ignore)
        self.ignoring = bool(self.ignore.patterns)
        self.yaml: dict[str, Any] = {}
        self.found: list[Environment] = []
        self.queued: list[tuple[int, str, Kind, str, tuple[str, ...]]] = []
        self.items_in: dict[str, list[Environment | Queued]] = {}
        self._items: list[Environment | Queued] = []
        """Where `add` and `refuse` record what the folder being discovered gives."""
        self.yaml_in: dict[str, tuple[str, ...]] = {}
        self._files_in: dict[str, list[str]] = {}

    def visible(self, path: str) -> bool:
        """Not hidden, not ignored. Only asked of the children of visible folders, so only the
        last name needs checking for a leading dot."""
        relative = path[len(self.root) + 1 :] if self.root else path
        if not relative:
            return True
        if relative.rpartition("/")[2].startswith("."):
            return False
        return not (self.ignoring and self.ignore.match_file(relative))

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
            found = self.yaml_files_in(folder)
            self.yaml_in[folder] = found
            paths.extend(found)
        self.parse(paths)

    def yaml_files_in(self, folder: str) -> tuple[str, ...]:
        """The YAML files discovery parses in `folder` (none in a v1 saved folder)."""
        names = self.files_in(folder)
        if join(folder, DEFINITION) in names:
            return ()
        return tuple(path for path in names if path.endswith(YAML_SUFFIXES))

    def parse(self, paths: list[str]) -> None:
        """Parse `paths` into `self.yaml`; with a cache, a file whose blob id is the one parsed
        last time is not parsed again (a symlink is: its blob is the link, not the content)."""
        cache, object_id = self.cache, self.object_id
        if cache is None or object_id is None:
            docs = self.run_jobs(partial(self.parse_one, paths), len(paths))
        else:
            entries = self.view.entries
            ids = [object_id(path) if entries[path].kind == "file" else None for path in paths]
            known: list[Any] = []
            for path, blob in zip(paths, ids, strict=True):
                hit = cache.yaml.get(path) if blob else None
                known.append(hit[1] if hit is not None and hit[0] == blob else None)
            missing = [path for path, doc in zip(paths, known, strict=True) if doc is None]
            parsed = iter(self.run_jobs(partial(self.parse_one, missing), len(missing)))
            docs = [next(parsed) if doc is None else doc for doc in known]
            cache.yaml.update(
                (path, (blob, doc))
                for path, blob, doc in zip(paths, ids, docs, strict=True)
                if blob
            )
            cache.parsed += len(missing)
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

    def add(self, name: str, kind: Kind, path: str, recipe: tuple[str, ...] = ()) -> None:
        """An environment to read, given by the folder being discovered."""
        self._items.append((name, kind, path, recipe))

    def queue(self, name: str, kind: Kind, path: str, recipe: tuple[str, ...]) -> None:
        self.queued.append((len(self.found), name, kind, path, recipe))
        self.found.append(_UNREAD)

    def refuse(self, env: Environment) -> None:
        """An environment refused by discovery itself (it is not read)."""
        self._items.append(env)

    def reset(self) -> None:
        """Back to nothing discovered (after a shortcut that did not apply)."""
        self.yaml, self.yaml_in, self.items_in = {}, {}, {}
        self.view.parsed_yaml = {}
        self.found, self.queued = [], []

    def enqueue(self) -> None:
        """Every folder's environments into `found`, those to read queued (`read_queued`)."""
        for items in self.items_in.values():
            for item in items:
                if isinstance(item, Environment):
                    self.found.append(item)
                else:
                    self.queue(*item)

    def discover_into(
        self, folder: str, claimed_files: Collection[str], claimed: bool, skip: set[str]
    ) -> None:
        """`discover_folder`, with what it gives recorded as the folder's items."""
        self._items = self.items_in[folder] = []
        self.discover_folder(folder, claimed_files, claimed, skip)

    def reader(self, kind: Kind, path: str, recipe: tuple[str, ...]) -> Environment:
        """Read the environment `add` queued, from this discovery's tree and documents."""
        view, base = self.view, self.options.default_base_image
        if kind == "aml-v1":
            return read_aml_v1(view, path)
        if kind == "aml-v2":
            return read_aml_v2(view, path, self.yaml[path])
        if kind == "dockerfile":
            return read_dockerfile(view, path)
        if kind == "conda":
            return read_conda(path, recipe[0], self.yaml[recipe[0]], base)
        return read_pip(view, path, base)

    def read_queued(self, unchanged: Callable[[Inputs], bool] | None = None) -> None:
        """Read what is queued; with a cache, reuse each environment whose inputs are
        `unchanged` (by default: every input path still has the object id it had)."""
        cache, object_id = self.cache, self.object_id
        if cache is None or object_id is None:
            envs = self.run_jobs(self.read_one, len(self.queued))
            for (place, *_), env in zip(self.queued, envs, strict=True):
                self.found[place] = env
            self.queued.clear()
            return
        if unchanged is None:
            unchanged = partial(_same_ids, object_id)
        kept: dict[tuple[str, str, str], tuple[Environment, Inputs]] = {}
        todo = []
        for place, name, kind, path, recipe in self.queued:
            key = (kind, name, path)
            found = cache.envs.get(key)
            if found is not None and unchanged(found[1]):
                self.found[place] = found[0]
                kept[key] = found
            else:
                todo.append((place, name, kind, path, recipe))
        self.queued = todo
        for (place, name, kind, path, _), (fresh, inputs) in zip(
            todo, self.run_jobs(self.read_recorded, len(todo)), strict=True
        ):
            env = self.named(fresh)
            self.found[place] = env
            if inputs is not None:
                kept[(kind, name, path)] = (env, tuple((p, object_id(p)) for p in inputs))
        cache.envs = kept
        cache.read = len(todo)
        self.queued.clear()

    def read_recorded(self, index: int) -> tuple[Environment, list[str] | None]:
        """`read_one`, with the paths its result depended on (None: do not reuse it)."""
        view = self.view
        view.recording = set()
        try:
            env, expected = self._read(index)
            _, _, _, path, _ = self.queued[index]
            for read in {path, *env.files}:
                view.depend_on(read)
            return env, sorted(view.recording) if expected else None
        finally:
            view.recording = None

    def read_one(self, index: int) -> Environment:
        """Read queued environment `index`; what cannot be read becomes a refused environment."""
        return self._read(index)[0]

    def _read(self, index: int) -> tuple[Environment, bool]:
        """The environment, and False when reading it failed in a way nobody foresaw."""
        _, name, kind, path, recipe = self.queued[index]
        try:
            return self.reader(kind, path, recipe), True
        except SpecError as exc:
            return Environment(exc.env_name or name, kind, path, (path,), error=exc), True
        except Exception as exc:
            error = SpecError(path, f"could not be read ({type(exc).__name__}); please report this")
            return Environment(name, kind, path, (path,), error=error), False

    def run(self) -> list[Environment]:
        if self.cache is not None:
            self.cache.parsed = 0
            from controller.core.relayout import relayout  # noqa: PLC0415 - it imports this

            if relayout(self):
                return self.finish()
            self.reset()
        if not self.view.is_folder(self.root) or self.root in self.view.entries:
            raise RootError(f"root {self.root!r} is not a folder of the repository")
        folders = list(self.folders())
        self.parse_yaml(folders)
        claims_of = {
            path: referenced_paths(doc, path)
            for path, doc in self.yaml.items()
            if is_v2_document(doc)
        }
        claimed_files = Counter(conda for conda, _ in claims_of.values() if conda)
        claimed_folders = Counter(build for _, build in claims_of.values() if build is not None)
        # Folders come parents first, so "inside a claimed folder" and "inside a Dockerfile
        # context" are known from the parent, without walking up to the root every time.
        skip: set[str] = set()
        claimed: set[str] = set()
        for folder in folders:
            if folder == self.root:
                if within(folder, set(claimed_folders)):
                    claimed.add(folder)
            else:
                up = parent(folder)
                if up in skip:
                    skip.add(folder)
                    self.items_in[folder] = []
                    continue
                if up in claimed or folder in claimed_folders:
                    claimed.add(folder)
            self.discover_into(folder, claimed_files, folder in claimed, skip)
        self.enqueue()
        self.read_queued()
        if self.cache is not None and self.object_id is not None:
            tree_id = self.object_id("")
            entries = self.view.entries
            self.cache.yaml = {p: v for p, v in self.cache.yaml.items() if p in self.yaml}
            self.cache.incremental = False
            self.cache.last = (
                Layout(
                    tree_id,
                    self.yaml,
                    self.yaml_in,
                    {path for path in self.yaml if entries[path].kind != "file"},
                    self.items_in,
                    skip,
                    claimed,
                    claims_of,
                    claimed_files,
                    claimed_folders,
                    self.view.parsed_yaml,
                )
                if tree_id
                else None
            )
        return self.finish()

    def discover_folder(
        self, folder: str, claimed_files: Collection[str], claimed: bool, skip: set[str]
    ) -> None:
        files = self.files_in(folder)
        names = {posixpath.basename(p) for p in files}
        if DEFINITION in names:
            self.add(folder_name(folder), "aml-v1", folder)
            return
        yaml_files = [p for p in files if p in self.yaml]
        has_v2 = False
        for path in yaml_files:
            doc = self.yaml[path]
            if is_v2_document(doc):
                has_v2 = True
                stem = posixpath.splitext(posixpath.basename(path))[0]
                name = doc.get("name") if isinstance(doc.get("name"), str) else stem
                self.add(name, "aml-v2", path)
            elif isinstance(doc, SpecError) and path not in claimed_files:
                stem = posixpath.splitext(posixpath.basename(path))[0]
                self.refuse(Environment(stem, "unknown", path, (path,), error=doc))
        if has_v2 or claimed:
            return
        name = folder_name(folder)
        if DOCKERFILE in names:
            self.add(name, "dockerfile", folder)
            skip.add(folder)
            return
        conda_files = [
            p for p in yaml_files if p not in claimed_files and is_conda_document(self.yaml[p])
        ]
        broken = [
            p for p in yaml_files if p not in claimed_files and isinstance(self.yaml[p], SpecError)
        ]
        if broken and (conda_files or REQUIREMENTS in names):
            # The broken file may be this folder's conda spec: never build a fallback instead.
            listed = ", ".join(broken)
            error = SpecError(
                broken[0], f"cannot tell this folder's environment: {listed} does not parse"
            )
            self.refuse(Environment(name, "conda", folder, tuple(broken), error=error))
        elif len(conda_files) > 1:
            listed = ", ".join(posixpath.basename(p) for p in conda_files)
            error = SpecError(folder or ".", f"several conda files ({listed}); keep one per folder")
            self.refuse(Environment(name, "conda", folder, tuple(conda_files), error=error))
        elif conda_files:
            self.add(name, "conda", folder, (conda_files[0],))
        elif REQUIREMENTS in names:
            self.add(name, "pip", folder)

    def named(self, env: Environment) -> Environment:
        """`env` with its registry repository (or refused for a name that cannot be one)."""
        if env.error is not None or env.repository is not None:
            return env
        try:
            repository = repository_for(env.name, self.options.prefix, env.files[0])
        except SpecError as exc:
            return replace(env, error=exc)
        return replace(env, repository=repository)

    def finish(self) -> list[Environment]:
        named = [self.named(env) for env in self.found]
        by_repository: dict[str, list[Environment]] = {}
        for env in named:
            if env.repository is not None and env.error is None:
                by_repository.setdefault(env.repository, []).append(env)
        result = []
        for env in named:
            users = by_repository.get(env.repository or "", [])
            if env.error is None and len(users) > 1:
                others = ", ".join(sorted(u.path or "." for u in users if u is not env))
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
    cache: DiscoveryCache | None = None,
) -> list[Environment]:
    """Every environment below `options.root`, refused ones included, sorted by path.

    `run_jobs` runs the reading and parsing; the result is the same whichever runner is used.
    With a `cache` and a tree that has object ids (`IdentifiedTree`), what did not change since
    the cache's last discovery is reused rather than read and parsed again; the result is the
    same as without it.
    """
    options = options or DiscoveryOptions()
    validate_prefix(options.prefix)
    if cache is not None:
        cache.bind(options)
    with _cyclic_gc_paused():
        return _Discovery(tree, options, run_jobs, cache).run()


__all__ = [
    "DiscoveryCache",
    "DiscoveryOptions",
    "IdentifiedTree",
    "JobRunner",
    "discover",
    "parent",
    "run_in_turn",
]
