"""Find the environments in a repository tree.

Every visible folder below the root (hidden and ignored paths skipped) is asked of each spec
form in turn (`controller.core.specs.FORMS`); `layout` says how, `reading` reads what was found,
`names` settles environments that share a name. `envship.yaml` at the top of the tree
(`repoconfig`) can set the root, ignores, the default base image and names.

Each environment that cannot be read is refused alone, naming the file and the problem; the
others carry on. Files that are not environments (jobs, endpoints, CI workflows) are noted,
never refused.

With a `DiscoveryCache` and a tree that names its content (a git tree), discovery is
incremental: documents are parsed again only when their blob changed, environments read again
only when something they read changed, and a tree that changed in a few places is laid out
again only where the change reaches. The result is always what a fresh discovery gives.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

from controller.core.discovery.documents import parse_document
from controller.core.discovery.layout import Layout, Places
from controller.core.discovery.names import settle
from controller.core.discovery.options import (
    DiscoveryOptions,
    IdentifiedTree,
    JobRunner,
    RootError,
    Settings,
    run_in_turn,
)
from controller.core.discovery.reading import (
    Inputs,
    Key,
    Reader,
    read_all,
    with_name,
)
from controller.core.discovery.reading import refused as refused_environment
from controller.core.discovery.repoconfig import FILE as REPOSITORY_FILE
from controller.core.discovery.repoconfig import RepositoryConfigError, read_repository_config
from controller.core.model import Environment
from controller.core.naming import validate_prefix
from controller.core.specs import PLAIN_KINDS
from controller.core.specs.base import Note, ReadSettings
from controller.core.specs.common import DEFAULT_BASE_IMAGE
from controller.core.tree import SourceTree, TreeView, parent

__all__ = [
    "REPOSITORY_FILE",
    "Discovered",
    "DiscoveryCache",
    "DiscoveryOptions",
    "IdentifiedTree",
    "JobRunner",
    "Note",
    "Places",
    "RepositoryConfigError",
    "RootError",
    "discover",
    "parent",
    "run_in_turn",
    "settings_for",
]


class Discovered(list[Environment]):
    """The environments found, sorted by path, refused ones included; `notes` says which files
    were looked at and skipped as not environments (and why)."""

    def __init__(self, envs: list[Environment], notes: list[Note]) -> None:
        super().__init__(envs)
        self.notes = notes


class DiscoveryCache:
    """What the last discovery over an `IdentifiedTree` parsed, read and laid out.

    Only the latest discovery's results are kept, so memory stays proportional to one tree.
    Give one cache to discoveries with the same options; other settings empty it. Not
    thread-safe: one discovery at a time.
    """

    def __init__(self) -> None:
        self.settings: Settings | None = None
        self.docs: dict[str, tuple[str, Any]] = {}
        """Path -> (blob id, document) of the documents last parsed."""
        self.envs: dict[Key, tuple[Environment, Inputs]] = {}
        self.last: Layout | None = None
        self.parsed = 0
        """Documents parsed by the last discovery (the others came from the cache)."""
        self.read = 0
        """Environments read by the last discovery (the others came from the cache)."""
        self.incremental = False
        """The last discovery laid out only what changed since the one before."""

    def bind(self, settings: Settings) -> None:
        if self.settings != settings:
            self.settings = settings
            self.docs = {}
            self.envs = {}
            self.last = None


def settings_for(tree: SourceTree, options: DiscoveryOptions) -> Settings:
    """The options discovery works with: `options` over the tree's `envship.yaml` over the
    defaults. Raises RepositoryConfigError for an `envship.yaml` that is not valid."""
    limit = options.limits.max_spec_file_bytes
    config = read_repository_config(tree, limit) if options.use_repository_file else None
    root = options.root if options.root is not None else (config.root if config else None)
    root = (root or "").strip("/")
    base = options.default_base_image or (config.default_base_image if config else None)
    names = dict(config.names if config else ())
    names.update(options.names)
    return Settings(
        root=root,
        ignore=(*(config.ignore if config else ()), *options.ignore),
        prefix=validate_prefix(options.prefix),
        default_base_image=base or DEFAULT_BASE_IMAGE,
        names=tuple(sorted(names.items())),
        limits=options.limits,
    )


class _Run:
    def __init__(
        self,
        tree: SourceTree,
        settings: Settings,
        run_jobs: JobRunner,
        cache: DiscoveryCache | None,
        places: Places | None,
    ) -> None:
        self.settings = settings
        self.places = places
        self.run_jobs = run_jobs
        self.view = TreeView(tree, settings.limits)
        object_id = getattr(tree, "object_id", None)
        self.cache = cache if object_id is not None else None
        self.object_id: Callable[[str], str | None] | None = object_id if self.cache else None

    def parse(self, paths: list[str]) -> list[Any]:
        """Parse `paths`; with a cache, a file whose blob id is the one parsed last time is not
        parsed again (a symlink is: its blob is the link, not the content)."""
        cache, object_id = self.cache, self.object_id
        if cache is None or object_id is None:
            return self.run_jobs(partial(parse_document, self.view, paths), len(paths))
        entries = self.view.entries
        ids = [object_id(path) if entries[path].kind == "file" else None for path in paths]
        known: list[Any] = []
        for path, blob in zip(paths, ids, strict=True):
            hit = cache.docs.get(path) if blob else None
            known.append(hit[1] if hit is not None and hit[0] == blob else None)
        missing = [path for path, doc in zip(paths, known, strict=True) if doc is None]
        parsed = iter(self.run_jobs(partial(parse_document, self.view, missing), len(missing)))
        docs = [next(parsed) if doc is None else doc for doc in known]
        cache.docs.update(
            (path, (blob, doc)) for path, blob, doc in zip(paths, ids, docs, strict=True) if blob
        )
        cache.parsed += len(missing)
        return docs

    def lay_out(self) -> tuple[Layout, dict[str, bool] | None]:
        """The layout of the tree, and the changes it was updated by (None: laid out afresh)."""
        cache, root = self.cache, self.settings.root
        last = cache.last if cache is not None else None
        changed_since = getattr(self.view.tree, "changed_since", None)
        if cache is not None and last is not None and changed_since is not None:
            changes = changed_since(last.tree_id) if last.tree_id else None
            if changes is not None and root in last.names:
                cache.last = None  # until the update is complete
                last.update(self.view, changes, self.parse, self.places)
                cache.incremental = True
                return last, changes
        layout = Layout(root, self.settings.ignore)
        layout.lay_out(self.view, self.parse, self.places)
        return layout, None

    def run(self) -> Discovered:
        view, settings, cache = self.view, self.settings, self.cache
        root = settings.root
        if root.startswith("..") or not view.is_folder(root) or root in view.entries:
            raise RootError(f"root {root!r} is not a folder of the repository")
        if cache is not None:
            cache.parsed = 0
            cache.incremental = False
        layout, changes = self.lay_out()
        if self.places is not None:
            self.places.record(layout)
        view.documents = layout.docs
        names = settings.name_of
        found = [with_name(f, names) for f in layout.found()]
        refused = [f for f in found if f.error is not None]
        queue = [f for f in found if f.error is None]
        reader = Reader(view, ReadSettings(settings.default_base_image), settings.prefix)
        unchanged = None
        if changes is not None:
            unchanged = partial(_untouched, _with_parents(set(changes)))
        envs, kept, count = read_all(
            reader,
            queue,
            self.run_jobs,
            cache.envs if cache is not None else None,
            self.object_id,
            unchanged,
        )
        envs.extend(refused_environment(f, f.error) for f in refused if f.error is not None)
        notes = layout.notes() + self.name_notes(envs, names)
        if cache is not None:
            cache.envs, cache.read = kept, count
            tree_id = self.object_id("") if self.object_id is not None else None
            layout.tree_id = tree_id
            cache.last = layout if tree_id else None
            cache.docs = {p: v for p, v in cache.docs.items() if p in layout.docs}
        return Discovered(settle(envs), notes)

    @staticmethod
    def name_notes(envs: list[Environment], names: dict[str, str]) -> list[Note]:
        notes = []
        for env in envs:
            if env.path in names and env.kind not in PLAIN_KINDS:
                notes.append(
                    Note(
                        env.path,
                        f"{REPOSITORY_FILE} names it {names[env.path]!r}, but the spec names "
                        f"itself {env.name!r}, which wins",
                    )
                )
        return notes


def _with_parents(paths: set[str]) -> set[str]:
    """`paths` and every folder above them: what a change changes the object id of."""
    found: set[str] = set()
    for path in paths:
        while path not in found:
            found.add(path)
            if not path:
                break
            path = parent(path)
    return found


def _untouched(changed: set[str], inputs: Inputs) -> bool:
    return not any(path in changed for path, _ in inputs)


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
    places: Places | None = None,
) -> Discovered:
    """Every environment below the root, refused ones included, sorted by path.

    `run_jobs` runs the reading and parsing; the result is the same whichever runner is used.
    With a `cache` and a tree that has object ids (`IdentifiedTree`), what did not change since
    the cache's last discovery is reused rather than read and parsed again; the result is the
    same as without it. With `places` (kept across discoveries by the controller), a v2
    document that breaks keeps the name and claims it had when it last parsed. Raises RootError
    or RepositoryConfigError (the operator must act).
    """
    settings = settings_for(tree, options or DiscoveryOptions())
    if cache is not None:
        cache.bind(settings)
    with _cyclic_gc_paused():
        return _Run(tree, settings, run_jobs, cache, places).run()
