"""A folder on disk as a `SourceTree`, read without ever leaving it.

Symlinks are listed, never followed: the core decides whether a link stays inside the tree.
Files are opened component by component with O_NOFOLLOW below a descriptor of the root, so a
link swapped in after listing cannot redirect a read outside. Special files are skipped, and the
`.git` folder is not listed. Descriptors of the folders read from last are kept (a few dozen, in
least-recently-used order) so reading the files of one environment does not reopen every parent
folder; they are closed by `close()`, on leaving a `with` block, or when the tree is collected.
"""

from __future__ import annotations

import os
import stat
import threading
import weakref
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

from controller.core.tree import Entry, is_executable_mode

SKIPPED_FOLDERS = frozenset({".git"})
OPEN_FOLDERS = 32
"""Folder descriptors kept open between reads (at least 2: a folder and its parent)."""
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_FOLLOW_NONE = os.O_RDONLY | os.O_NOFOLLOW | _CLOEXEC


def _close_all(descriptors: OrderedDict[str, int]) -> None:
    while descriptors:
        os.close(descriptors.popitem()[1])


class FolderTree:
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise NotADirectoryError(f"{self.root} is not a folder")
        self._entries: dict[str, Entry] | None = None
        self._folders: OrderedDict[str, int] = OrderedDict()
        self._lock = threading.Lock()
        weakref.finalize(self, _close_all, self._folders)

    def close(self) -> None:
        """Close the folder descriptors kept for reading (reading again reopens them)."""
        with self._lock:
            _close_all(self._folders)

    def __enter__(self) -> FolderTree:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def entries(self) -> Mapping[str, Entry]:
        if self._entries is None:
            self._entries = self._scan()
        return self._entries

    def _scan(self) -> dict[str, Entry]:
        """Every file and symlink below the root. Folders are opened one component at a time
        from the root (as `read` does), so no path is ever too long for the kernel and no link
        is followed."""
        found: dict[str, Entry] = {}
        stack = [""]
        while stack:
            folder = stack.pop()
            prefix = f"{folder}/" if folder else ""
            try:
                with self._lock:
                    fd = os.dup(self._folder(folder))
            except OSError:
                continue
            try:
                with os.scandir(fd) as iterator:
                    items = list(iterator)
                for item in items:
                    relative = f"{prefix}{item.name}"
                    try:
                        info = item.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    if stat.S_ISDIR(info.st_mode):
                        if item.name not in SKIPPED_FOLDERS:
                            stack.append(relative)
                    elif stat.S_ISLNK(info.st_mode):
                        try:
                            target = os.readlink(item.name, dir_fd=fd)
                        except OSError:
                            continue
                        found[relative] = Entry(relative, "symlink", len(target), False, target)
                    elif stat.S_ISREG(info.st_mode):
                        found[relative] = Entry(
                            relative, "file", info.st_size, is_executable_mode(info.st_mode)
                        )
            except OSError:
                continue
            finally:
                os.close(fd)
        return found

    def _folder(self, folder: str) -> int:
        """A descriptor of `folder` (a tree path, '' for the root); the caller holds the lock.

        Opened from the nearest kept ancestor down, one component at a time with O_NOFOLLOW,
        as if from the root: a kept descriptor is one that was opened that way.
        """
        folders = self._folders
        missing: list[str] = []
        current = folder
        fd = folders.get(current)
        while fd is None and current:
            current, _, name = current.rpartition("/")
            missing.append(name)
            fd = folders.get(current)
        if fd is None:
            fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | _CLOEXEC)
            self._keep("", fd)
        else:
            folders.move_to_end(current)
        for name in reversed(missing):
            current = f"{current}/{name}" if current else name
            fd = os.open(name, _FOLLOW_NONE | os.O_DIRECTORY, dir_fd=fd)
            self._keep(current, fd)
        return fd

    def _keep(self, folder: str, fd: int) -> None:
        """Remember a folder descriptor; the least recently used one past the limit is closed.

        The descriptor just kept and its parent (used a moment before) are the newest two,
        so neither is the one closed.
        """
        self._folders[folder] = fd
        if len(self._folders) > OPEN_FOLDERS:
            os.close(self._folders.popitem(last=False)[1])

    def read(self, path: str, max_bytes: int) -> bytes:
        parts = path.split("/")
        if not path or any(part in ("", ".", "..") for part in parts):
            raise ValueError(f"not a tree path: {path!r}")
        folder, _, name = path.rpartition("/")
        with self._lock:
            folder_fd = self._folder(folder)
            file_fd = os.open(name, _FOLLOW_NONE | getattr(os, "O_NONBLOCK", 0), dir_fd=folder_fd)
        try:
            info = os.fstat(file_fd)
            if not stat.S_ISREG(info.st_mode):
                raise OSError(f"{path} is not a regular file")
            return _read_at_most(file_fd, max_bytes + 1, info.st_size)
        finally:
            os.close(file_fd)


def _read_at_most(fd: int, limit: int, size_hint: int) -> bytes:
    """Up to `limit` bytes, until end of file.

    The first read asks for the size `fstat` gave (+1 to see the end), not `limit`: a
    read of `limit` bytes would allocate a buffer that large for every small spec file.
    A file that grew since `fstat` is still read on, up to `limit`.
    """
    chunks: list[bytes] = []
    remaining = limit
    want = min(size_hint + 1, remaining)
    while remaining > 0:
        chunk = os.read(fd, want)
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
        want = min(max(want, 64 * 1024), remaining)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
