"""A git tree object as a `SourceTree` (pygit2): entries listed and blobs read straight from the
object database, with no working tree, no checkout and nothing written.

Listing a new commit reads only the folders whose tree id changed (`Listings` keeps the folder
listings of the last tree); `modified_since` tells which files changed in place since another
tree, comparing object ids down the changed folders only; `folder_ids` gives the object ids of
folders and files: equal ids mean equal content, so a controller can skip what it has already
parsed.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import pygit2
from pygit2.enums import ObjectType

from controller.core.tree import Entry


class NotATree(ValueError):
    """The object id given is not a tree of the repository."""


_MODE_TREE = 0o040000
_MODE_BLOB = 0o100644
_MODE_BLOB_GROUP_WRITABLE = 0o100664
_MODE_EXECUTABLE = 0o100755
_MODE_LINK = 0o120000
_MODE_COMMIT = 0o160000
_SKIPPED_NAMES = frozenset({"", ".", "..", ".git"})


@dataclass(frozen=True, slots=True)
class _Listing:
    """Everything below one folder of a tree: entries and blob ids by full path."""

    entries: dict[str, Entry]
    blobs: dict[str, pygit2.Oid]
    children: tuple[tuple[str, pygit2.Oid], ...]
    """(path prefix, tree id) of the folders directly inside."""
    folders: dict[str, pygit2.Oid]
    """Tree id of every folder below, by path (no trailing slash)."""


_Key = tuple[str, pygit2.Oid]


class Listings:
    """Folder listings of the last tree listed through it, reused by the next listing.

    A folder with the same tree id at the same path has the same entries, so listing a new
    commit reads only the folders that changed (and their parents). Only the folders of the
    latest tree are kept, so memory stays proportional to one tree.
    """

    def __init__(self) -> None:
        self._kept: dict[_Key, _Listing] = {}
        self._lock = threading.Lock()
        self.reused = 0
        """Folders taken from the previous listing instead of read again (a counter)."""

    def get(self) -> dict[_Key, _Listing]:
        with self._lock:
            return self._kept

    def keep(self, kept: dict[_Key, _Listing], reused: int) -> None:
        with self._lock:
            self._kept = kept
            self.reused += reused


class GitTree:
    """A git tree object as a `SourceTree`: entries listed and blobs read from the object store.

    Mode 100755 is executable, 120000 a symlink (its target is the blob), submodules (commit
    entries) are skipped, as are names git itself refuses (`.`, `..`, `.git`, names with `/`).
    Sizes come from object headers, without reading content. The listing is made once, on first
    use; with `listings` (shared by the trees of one source) unchanged folders are not re-read.
    """

    def __init__(
        self,
        repository: pygit2.Repository,
        tree_oid: str | pygit2.Oid,
        listings: Listings | None = None,
    ) -> None:
        self.repository = repository
        oid = tree_oid if isinstance(tree_oid, pygit2.Oid) else pygit2.Oid(hex=tree_oid)
        root = repository.get(oid)
        if root is None or not isinstance(root, pygit2.Tree):
            raise NotATree(f"object {oid} is not a tree of the git cache")
        self.root: pygit2.Tree = root
        self.oid = str(oid)
        self.listings = listings
        self._listing: _Listing | None = None

    def entries(self) -> Mapping[str, Entry]:
        return self._list().entries

    def _list(self) -> _Listing:
        if self._listing is None:
            previous = self.listings.get() if self.listings is not None else {}
            kept: dict[_Key, _Listing] = {}
            reused = _list_tree(self.repository, self.root, previous, kept)
            self._listing = kept[("", self.root.id)]
            if self.listings is not None:
                self.listings.keep(kept, reused)
        return self._listing

    def read(self, path: str, max_bytes: int) -> bytes:
        listing = self._list()
        oid = listing.blobs.get(path)
        if oid is None:
            if path in listing.entries:
                raise OSError(f"{path} is not a regular file")
            raise FileNotFoundError(path)
        blob = self.repository[oid]
        data: bytes = blob.read_raw()
        return data if len(data) <= max_bytes + 1 else data[: max_bytes + 1]

    def changed_since(self, previous: str) -> dict[str, bool] | None:
        """Paths changed since tree `previous`, True for those changed in place."""
        return _changed_paths(self.repository, previous, self.root)

    def object_id(self, path: str) -> str | None:
        """The object id at `path` ('' is the root): a tree for a folder, a blob for a file."""
        if not path:
            return self.oid
        listing = self._list()  # answers from the listing: a dict look-up, not a tree walk
        found = listing.blobs.get(path) or listing.folders.get(path)
        if found is not None:
            return str(found)
        if path not in listing.entries:  # not a file, folder or link of this tree
            return None
        try:
            entry = self.root[path]
        except KeyError:
            return None
        if entry.type == ObjectType.COMMIT:
            return None
        return str(entry.id)


def _kind_of(mode: int) -> str:
    if mode == _MODE_TREE:
        return "folder"
    if mode == _MODE_COMMIT:
        return "submodule"
    return "link" if mode == _MODE_LINK else "file"


def _changed_paths(
    repository: pygit2.Repository, old: str, new: pygit2.Tree
) -> dict[str, bool] | None:
    """`GitTree.changed_since`: the two trees compared by object id, descending only into
    folders whose id differs, so the cost is that of the change (libgit2's own tree diff reads
    far more of a large tree)."""
    try:
        before = repository.get(old)
    except ValueError:
        return None
    if not isinstance(before, pygit2.Tree):
        return None
    changes: dict[str, bool] = {}
    stack: list[tuple[str, pygit2.Tree, pygit2.Tree]] = [("", before, new)]
    while stack:
        prefix, old_tree, new_tree = stack.pop()
        if old_tree.id == new_tree.id:
            continue
        olds = {item.raw_name: item for item in old_tree}
        news = {item.raw_name: item for item in new_tree}
        for raw in olds.keys() | news.keys():
            was, item = olds.get(raw), news.get(raw)
            path = prefix + (raw or b"").decode("utf-8", "surrogateescape")
            if was is not None and item is not None:
                if was.id == item.id and was.filemode == item.filemode:
                    continue
                kinds = (_kind_of(int(was.filemode)), _kind_of(int(item.filemode)))
                if kinds == ("folder", "folder"):
                    stack.append((path + "/", was, item))  # type: ignore[arg-type]
                    continue
                if kinds[0] == kinds[1]:
                    changes[path] = True
                    continue
            for side in (was, item):
                if side is not None:
                    _all_paths(side, path, changes)
    return changes


def _all_paths(item: pygit2.Object, path: str, changes: dict[str, bool]) -> None:
    """`path` and, for a folder, every path below it, as changed not in place."""
    changes[path] = False
    if _kind_of(int(item.filemode)) != "folder":
        return
    stack: list[tuple[str, pygit2.Tree]] = [(path + "/", item)]  # type: ignore[list-item]
    while stack:
        prefix, tree = stack.pop()
        for child in tree:
            child_path = prefix + (child.raw_name or b"").decode("utf-8", "surrogateescape")
            changes[child_path] = False
            if _kind_of(int(child.filemode)) == "folder":
                stack.append((child_path + "/", child))  # type: ignore[arg-type]


def _list_tree(
    repository: pygit2.Repository,
    root: pygit2.Tree,
    previous: Mapping[_Key, _Listing],
    kept: dict[_Key, _Listing],
) -> int:
    """List `root` into `kept` (a listing per folder), reusing `previous` listings of unchanged
    folders; the number reused. Folders are read parents first and merged children first, with
    explicit stacks (a crafted tree may be deeper than Python's recursion limit)."""
    read_header = repository.odb.read_header
    reused = 0
    to_read: list[tuple[str, pygit2.Tree]] = [("", root)]
    to_merge: list[tuple[_Key, _Listing]] = []
    while to_read:
        prefix, tree = to_read.pop()
        key = (prefix, tree.id)
        found = previous.get(key)
        if found is not None:
            reused += _keep_with_children(key, found, previous, kept)
            continue
        entries: dict[str, Entry] = {}
        blobs: dict[str, pygit2.Oid] = {}
        children: list[_Key] = []
        for item in tree:
            name = (item.raw_name or b"").decode("utf-8", "surrogateescape")
            if name in _SKIPPED_NAMES or "/" in name or "\x00" in name:
                continue
            mode = int(item.filemode)
            path = prefix + name
            if mode == _MODE_TREE:
                children.append((path + "/", item.id))
                to_read.append((path + "/", item))  # type: ignore[arg-type]
            elif mode in (_MODE_BLOB, _MODE_EXECUTABLE, _MODE_BLOB_GROUP_WRITABLE):
                size = read_header(item.id)[1]
                entries[path] = Entry(path, "file", size, mode == _MODE_EXECUTABLE)
                blobs[path] = item.id
            elif mode == _MODE_LINK:
                target = repository[item.id].read_raw().decode("utf-8", "surrogateescape")
                entries[path] = Entry(path, "symlink", len(target), False, target)
            # _MODE_COMMIT (a submodule) and anything unknown: not files of this tree
        folders = {path.removesuffix("/"): oid for path, oid in children}
        to_merge.append((key, _Listing(entries, blobs, tuple(children), folders)))
    # Parents were read before their children: merge in reverse, children first.
    for key, listing in reversed(to_merge):
        for child in listing.children:
            below = kept[child]
            listing.entries.update(below.entries)
            listing.blobs.update(below.blobs)
            listing.folders.update(below.folders)
        kept[key] = listing
    return reused


def _keep_with_children(
    key: _Key,
    listing: _Listing,
    previous: Mapping[_Key, _Listing],
    kept: dict[_Key, _Listing],
) -> int:
    """Carry a reused listing and those of its folders over to `kept`; how many."""
    count = 0
    stack = [(key, listing)]
    while stack:
        key, listing = stack.pop()
        kept[key] = listing
        count += 1
        stack.extend((child, previous[child]) for child in listing.children)
    return count


def folder_ids(tree: GitTree, folders: Iterable[str]) -> dict[str, str]:
    """The object id of each folder (or file) of `tree` that exists: unchanged id, unchanged
    content. Paths are tree paths ('' is the root); missing ones are left out."""
    ids: dict[str, str] = {}
    for folder in folders:
        found = tree.object_id(folder.strip("/"))
        if found is not None:
            ids[folder] = found
    return ids


__all__ = ["GitTree", "Listings", "NotATree", "folder_ids"]
