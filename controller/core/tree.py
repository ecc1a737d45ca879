"""A read-only view of a repository's files, and safe path resolution inside it.

Adapters (a folder on disk, a git tree object) implement `SourceTree`; `MemoryTree` is the
in-memory form used by tests and benchmarks. Paths are POSIX, relative to the repository root,
without `.` or `..` parts. Resolution never leaves the tree: `..` that climbs out of it, absolute
paths and symlinks whose target is outside it are refused.
"""

from __future__ import annotations

import contextlib
import posixpath
import stat
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from controller.core.errors import SpecError
from controller.core.limits import Limits

EntryKind = Literal["file", "symlink"]


@dataclass(frozen=True, slots=True)
class Entry:
    """One file or symlink in a tree (directories are implied by paths)."""

    path: str
    kind: EntryKind
    size: int
    executable: bool = False
    link_target: str | None = None


class SourceTree(Protocol):
    """What the core needs from a repository: the list of entries and the bytes of a file."""

    def entries(self) -> Mapping[str, Entry]:
        """Every file and symlink, keyed by path."""
        ...

    def read(self, path: str, max_bytes: int) -> bytes:
        """The bytes of a regular file; at most `max_bytes` + 1 bytes are read."""
        ...


@dataclass(frozen=True, slots=True)
class Blob:
    """Content of one entry of a `MemoryTree`."""

    data: bytes = b""
    executable: bool = False
    link_target: str | None = None


@dataclass(slots=True)
class MemoryTree:
    """A `SourceTree` held in memory: `{path: bytes | Blob}`."""

    files: Mapping[str, bytes | Blob]
    _entries: dict[str, Entry] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        entries: dict[str, Entry] = {}
        for path, value in self.files.items():
            blob = value if isinstance(value, Blob) else Blob(value)
            if blob.link_target is not None:
                entries[path] = Entry(
                    path, "symlink", len(blob.link_target), False, blob.link_target
                )
            else:
                entries[path] = Entry(path, "file", len(blob.data), blob.executable)
        self._entries = entries

    def entries(self) -> Mapping[str, Entry]:
        return self._entries

    def read(self, path: str, max_bytes: int) -> bytes:
        value = self.files[path]
        data = value.data if isinstance(value, Blob) else value
        return data[: max_bytes + 1]


def is_executable_mode(mode: int) -> bool:
    """Git and Docker keep only the owner's exec bit; so does the hash."""
    return bool(mode & stat.S_IXUSR)


def parent(path: str) -> str:
    """The folder of a path; the root is ''. (Paths are normalized: no `//`, no trailing `/`.)"""
    return path.rpartition("/")[0]


def within(path: str, folders: set[str]) -> bool:
    """True when `path` or one of its parent folders is in `folders`."""
    while True:
        if path in folders:
            return True
        if not path:
            return False
        path = parent(path)


def encloses(folder: str, inner: str) -> bool:
    """True when `folder` is a strict ancestor of the folder `inner` (the root encloses all
    but itself)."""
    return folder != inner and (not folder or inner.startswith(folder + "/"))


def join(folder: str, name: str) -> str:
    return f"{folder}/{name}" if folder else name


def normalize_reference(base_folder: str, reference: str, *, origin: str) -> str:
    """Turn a path written in a spec (relative to `base_folder`) into a tree path.

    Refuses absolute paths and paths that climb out of the repository. `origin` is the spec
    file that wrote the reference, for the error message.
    """
    if not reference or not reference.strip():
        raise SpecError(origin, "an empty path is given")
    if "\x00" in reference:
        raise SpecError(origin, "a path contains a NUL byte")
    if reference.startswith("/") or (len(reference) > 1 and reference[1] == ":"):
        raise SpecError(origin, f"path {reference!r} is absolute; write it relative to the spec")
    joined = posixpath.normpath(posixpath.join(base_folder or ".", reference))
    if joined == ".":
        return ""
    if joined == ".." or joined.startswith("../"):
        raise SpecError(origin, f"path {reference!r} leaves the repository")
    return joined


class TreeView:
    """Resolves paths in a `SourceTree`: symlinks followed inside it, folders listed quickly."""

    def __init__(self, tree: SourceTree, limits: Limits) -> None:
        self.tree = tree
        self.limits = limits
        self._entries = tree.entries()
        self._children: dict[str, list[str]] | None = None
        self._object_id: Callable[[str], str | None] | None = getattr(tree, "object_id", None)
        self.documents: Mapping[str, Any] = {}
        """What discovery parsed, by tree path (YAML data, or what stands for a file that is no
        YAML or did not parse): see `parsed_yaml`."""
        self.recording: set[str] | None = None
        """When a set: every path whose object id an answer depended on is added to it (see
        `note`), so a reader's result can be reused while those ids stay the same."""

    @property
    def entries(self) -> Mapping[str, Entry]:
        return self._entries

    def children(self) -> dict[str, list[str]]:
        """Folder -> sorted entry paths directly inside it (built once)."""
        if self._children is None:
            index: dict[str, list[str]] = {}
            folders: set[str] = set()
            for path in self._entries:
                child = path
                folder = parent(child)
                index.setdefault(folder, []).append(child)
                while folder and folder not in folders:
                    folders.add(folder)
                    child, folder = folder, parent(folder)
                    index.setdefault(folder, []).append(child)
            for paths in index.values():
                paths.sort()
            self._children = index
        return self._children

    def note(self, path: str) -> None:
        """Record that an answer depended on what is at `path`.

        A path that exists is recorded as itself: the same object id at the same path means the
        same bytes (or, for a folder, the same everything below it) and that every parent is a
        folder. A missing path is recorded as its deepest existing folder, whose id changes when
        anything appears below it.
        """
        if self.recording is None:
            return
        if path not in self._entries:
            while path and not self._is_folder(path):
                path = parent(path)
        self.recording.add(path)

    def _is_folder(self, path: str) -> bool:
        # A tree with object ids answers without the index of every folder (`children`).
        if self._object_id is not None and self._children is None:
            return path not in self._entries and self._object_id(path) is not None
        return path in self.children()

    def depend_on(self, path: str) -> None:
        """Record what reading `path` depends on (its symlinks and where they lead)."""
        if self.recording is not None:
            with contextlib.suppress(SpecError):
                self.resolve(path, origin=path)

    def has_entry(self, path: str) -> bool:
        """True when `path` is a file or symlink (not followed)."""
        self.note(path)
        return path in self._entries

    def is_folder(self, path: str) -> bool:
        self.note(path)
        return path == "" or self._is_folder(path)

    def resolve(self, path: str, *, origin: str) -> str:
        """Follow symlinks (in the path's own name and its parents) without leaving the tree."""
        hops = 0
        parts = path.split("/") if path else []
        resolved = ""
        index = 0
        while index < len(parts):
            candidate = join(resolved, parts[index])
            entry = self._entries.get(candidate)
            if entry is not None and entry.kind == "symlink":
                self.note(candidate)
                hops += 1
                if hops > self.limits.max_symlink_hops:
                    raise SpecError(origin, f"too many symlinks while resolving {path!r}")
                target = entry.link_target or ""
                if target.startswith("/"):
                    raise SpecError(candidate, f"symlink points outside the repository ({target})")
                try:
                    new_base = normalize_reference(parent(candidate), target, origin=candidate)
                except SpecError as exc:
                    raise SpecError(
                        candidate, f"symlink points outside the repository ({target})"
                    ) from exc
                parts = ([*new_base.split("/")] if new_base else []) + parts[index + 1 :]
                resolved = ""
                index = 0
                continue
            resolved = candidate
            index += 1
        self.note(resolved)
        return resolved

    def read_file(self, path: str, *, origin: str, max_bytes: int | None = None) -> bytes:
        """Read a regular file by tree path (symlinks resolved), refusing missing and huge files."""
        limit = self.limits.max_spec_file_bytes if max_bytes is None else max_bytes
        real = self.resolve(path, origin=origin)
        entry = self._entries.get(real)
        if entry is None:
            if self.is_folder(real):
                raise SpecError(origin, f"{path!r} is a folder, a file is expected")
            raise SpecError(origin, f"{path!r} does not exist")
        if entry.size > limit:
            raise SpecError(path, f"file is {entry.size} bytes, over the limit of {limit}")
        try:
            data = self.tree.read(real, limit)
        except OSError as exc:
            raise SpecError(
                path, f"could not be read ({exc.strerror or type(exc).__name__})"
            ) from None
        if len(data) > limit:
            raise SpecError(path, f"file is over the limit of {limit} bytes")
        return data

    def parsed_yaml(self, path: str) -> Any:
        """The YAML data discovery already parsed at `path`, so a reader that needs it again (a
        v2 `conda_file`) does not read and parse it twice; None when there is none."""
        doc = self.documents.get(path)
        return doc if isinstance(doc, dict | list | str | int | float | bool) else None

    def include(self, origin: str, reference: str) -> tuple[str, str]:
        """(tree path, text) of a file that the file `origin` names by a relative path (a
        nested requirements file): read like any spec file, never outside the repository."""
        path = normalize_reference(parent(origin), reference, origin=origin)
        data = self.read_file(path, origin=origin)
        try:
            return path, data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise SpecError(path, f"not UTF-8 text (byte {exc.start})") from None

    def exists(self, path: str) -> bool:
        try:
            real = self.resolve(path, origin=path)
        except SpecError:
            return False
        return real in self._entries or self.is_folder(real)

    def walk_files(self, folder: str) -> Iterator[Entry]:
        """Every entry below `folder` (not following symlinks), in path order."""
        self.note(folder)
        children = self.children()
        stack = [folder]
        found: list[Entry] = []
        while stack:
            current = stack.pop()
            for path in children.get(current, ()):
                entry = self._entries.get(path)
                if entry is None:
                    stack.append(path)
                else:
                    found.append(entry)
        found.sort(key=lambda e: e.path)
        yield from found
