"""Discovery of a tree that changed in a few places since the last one, from the last layout.

The tree says which paths changed (`IdentifiedTree.changed_since`). A file changed in place
changes nothing discovery decides unless it is a YAML document discovery parsed: that one is
parsed again, and the v2 references it makes are counted again. A path added or removed (or of
another kind) makes its folder's decision stale, and a new folder is a stale one too. Folders
whose claimed or Dockerfile-context state changes pass that on to every folder below them. Only
the stale folders are discovered again (parents first); every other folder keeps what it gave
last time, and environments are read again only when one of their inputs changed. The result is
what a full discovery of the tree would give (the tests check this on random histories); when
the shortcut cannot tell (a claim on the root or above it, a tree it cannot compare), the caller
makes a full discovery.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from controller.core.conda import is_conda_document
from controller.core.errors import SpecError
from controller.core.specs.aml_v2 import is_v2_document, referenced_paths
from controller.core.tree import parent, within

if TYPE_CHECKING:
    from controller.core.discovery import Layout, _Discovery


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


class _Relayout:
    def __init__(self, d: _Discovery, last: Layout, changes: dict[str, bool]) -> None:
        self.d = d
        self.last = last
        self.changes = changes
        assert d.object_id is not None  # noqa: S101 - relayout() checked it
        self.object_id: Callable[[str], str | None] = d.object_id
        self.items_in = dict(last.items_in)
        self.yaml = dict(last.yaml)
        self.yaml_in = dict(last.yaml_in)
        self.linked = set(last.linked)
        self.parsed = dict(last.parsed)
        self.claims_of = dict(last.claims_of)
        self.claimed_files = Counter(last.claimed_files)
        self.claimed_folders = Counter(last.claimed_folders)
        self.stale: set[str] = set()

    # -- which folders the change touches --------------------------------------------------------

    def below_root(self, path: str) -> bool:
        root = self.d.root
        return not root or path == root or path.startswith(root + "/")

    def is_folder(self, path: str) -> bool:
        return path == "" or (path not in self.d.view.entries and self.object_id(path) is not None)

    def visible(self, folder: str) -> bool:
        while folder != self.d.root:
            if not self.d.visible(folder):
                return False
            folder = parent(folder)
        return True

    def touch(self, path: str) -> None:
        """`path` was added or removed, or changed kind: its folder (and new or gone folders
        above it) are stale."""
        folder = parent(path)
        while self.below_root(folder):
            known = folder in self.items_in
            if self.is_folder(folder):
                if known:
                    self.stale.add(folder)
                    return
                if self.visible(folder):
                    self.stale.add(folder)  # a new folder
            elif known:
                self.forget(folder)
            if folder == self.d.root:
                return
            folder = parent(folder)

    def forget(self, folder: str) -> None:
        """A folder that is gone: its documents and what it gave."""
        del self.items_in[folder]
        cache = self.d.cache
        for path in self.yaml_in.pop(folder, ()):
            self.drop(path)
            if cache is not None:
                cache.yaml.pop(path, None)

    # -- documents -------------------------------------------------------------------------------

    def drop(self, path: str) -> None:
        self.yaml.pop(path, None)
        self.parsed.pop(path, None)
        self.linked.discard(path)
        claims = self.claims_of.pop(path, None)
        if claims is not None:
            self.count(claims, -1)

    def count(self, claims: tuple[str | None, str | None], step: int) -> None:
        conda, build = claims
        for counter, key in ((self.claimed_files, conda), (self.claimed_folders, build)):
            if key is None or (counter is self.claimed_files and not key):
                continue
            counter[key] += step
            if counter[key] <= 0:
                del counter[key]

    def reparse(self, paths: list[str]) -> None:
        """Parse `paths` again (blobs seen before come from the cache) and count their claims."""
        d = self.d
        for path in paths:
            self.drop(path)
        d.yaml = {}
        d.view.parsed_yaml = {}
        d.parse(paths)
        entries = d.view.entries
        for path in paths:
            doc = d.yaml[path]
            self.yaml[path] = doc
            if not isinstance(doc, SpecError):
                self.parsed[path] = doc
            if entries[path].kind != "file":
                self.linked.add(path)
            if is_v2_document(doc):
                claims = referenced_paths(doc, path)
                self.claims_of[path] = claims
                self.count(claims, +1)

    def shape(self, path: str) -> tuple[Any, ...]:
        """What `discover_folder` decides from a document, but for its claims (counted apart)."""
        doc: Any = self.yaml.get(path)
        if isinstance(doc, SpecError):
            return ("refused", str(doc))
        if is_v2_document(doc):
            name = doc.get("name")
            return ("v2", name if isinstance(name, str) else None)
        return ("conda",) if is_conda_document(doc) else ("other",)

    # -- the whole of it -------------------------------------------------------------------------

    def run(self) -> bool:
        d, last = self.d, self.last
        if not self.is_folder(d.root):
            return False
        for path, in_place in self.changes.items():
            if not in_place:
                self.touch(path)
        # A document changed in place (or a symlinked one, whose target may have) is parsed
        # again; its folder turns stale only if what discovery decides from it changed. The
        # documents of stale folders are listed and parsed again in any case.
        again = sorted(
            p
            for p in {p for p, in_place in self.changes.items() if in_place and p in self.yaml}
            | {p for p in self.linked if parent(p) in self.items_in}
            if parent(p) not in self.stale
        )
        before = {path: self.shape(path) for path in again}
        fresh: list[str] = []
        for folder in sorted(self.stale):
            for path in self.yaml_in.get(folder, ()):
                self.drop(path)
            listed = d.yaml_files_in(folder) if self.is_folder(folder) else ()
            self.yaml_in[folder] = listed
            fresh.extend(listed)
        self.reparse([*again, *fresh])
        self.stale.update(parent(p) for p in again if self.shape(p) != before[p])

        claims_moved = self.moved(set(last.claimed_files), set(self.claimed_files))
        folders_moved = self.moved(set(last.claimed_folders), set(self.claimed_folders))
        root = d.root
        for folder in folders_moved:
            if not folder or root == folder or root.startswith(folder + "/"):
                return False  # the root's own claimed state: discover everything
            self.stale.update(self.below(folder, include=True))
        self.stale.update(
            parent(p) for p in claims_moved if parent(p) in self.items_in or parent(p) in self.stale
        )
        self.rediscover()

        d.yaml, d.yaml_in, d.view.parsed_yaml = self.yaml, self.yaml_in, self.parsed
        d.items_in = self.items_in
        d.enqueue()
        changed = _with_parents(set(self.changes))
        d.read_queued(lambda inputs: not any(path in changed for path, _ in inputs))
        return True

    @staticmethod
    def moved(before: set[str], after: set[str]) -> set[str]:
        return before ^ after

    def below(self, folder: str, *, include: bool) -> list[str]:
        prefix = folder + "/" if folder else ""
        known = set(self.items_in) | self.stale
        return [
            f for f in known if (f.startswith(prefix) and f != folder) or (include and f == folder)
        ]

    def rediscover(self) -> None:
        """Discover the stale folders again, parents first; a folder whose claimed or
        Dockerfile-context state changes makes every folder below it stale too."""
        d, root = self.d, self.d.root
        skip, claimed = set(self.last.skip), set(self.last.claimed)
        skip.intersection_update(self.items_in)
        claimed.intersection_update(self.items_in)
        claimed_folders = self.claimed_folders
        d.yaml = self.yaml
        heap = sorted(self.stale)
        done: set[str] = set()
        while heap:
            folder = heapq.heappop(heap)
            if folder in done or not self.is_folder(folder):
                continue
            done.add(folder)
            was = (folder in skip, folder in claimed)
            skip.discard(folder)
            claimed.discard(folder)
            if folder != root and parent(folder) in skip:
                skip.add(folder)
                self.items_in[folder] = []
            else:
                if folder == root:
                    inside = within(folder, set(claimed_folders))
                else:
                    inside = parent(folder) in claimed or folder in claimed_folders
                if inside:
                    claimed.add(folder)
                d.discover_into(folder, self.claimed_files, inside, skip)
                self.items_in[folder] = d.items_in[folder]
            if (folder in skip, folder in claimed) != was:
                for below in self.below(folder, include=False):
                    heapq.heappush(heap, below)
                    done.discard(below)
        self.skip, self.claimed = skip, claimed


def relayout(d: _Discovery) -> bool:
    """Discover `d`'s tree from the cache's last layout, when the tree can say what changed
    since; False (nothing done) when a full discovery is needed."""
    cache, object_id = d.cache, d.object_id
    last = cache.last if cache is not None else None
    changed_since = getattr(d.view.tree, "changed_since", None)
    if cache is None or object_id is None or last is None or changed_since is None:
        return False
    changes = changed_since(last.tree_id)
    if changes is None or d.root not in last.items_in:
        return False
    work = _Relayout(d, last, changes)
    if not work.run():
        return False
    tree_id = object_id("")
    if not tree_id:
        cache.last = None
        return True
    from controller.core.discovery import Layout  # noqa: PLC0415

    cache.last = Layout(
        tree_id,
        work.yaml,
        work.yaml_in,
        work.linked,
        work.items_in,
        work.skip,
        work.claimed,
        work.claims_of,
        work.claimed_files,
        work.claimed_folders,
        work.parsed,
    )
    cache.incremental = True
    return True
