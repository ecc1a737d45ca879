"""A folder on disk as a `SourceTree`, read without ever leaving it.

Symlinks are listed, never followed: the core decides whether a link stays inside the tree.
Files are opened component by component with O_NOFOLLOW below a descriptor of the root, so a
link swapped in after listing cannot redirect a read outside. Special files are skipped, and the
`.git` folder is not listed.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path

from controller.core.tree import Entry, is_executable_mode

SKIPPED_FOLDERS = frozenset({".git"})


class FolderTree:
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise NotADirectoryError(f"{self.root} is not a folder")
        self._entries: dict[str, Entry] | None = None

    def entries(self) -> Mapping[str, Entry]:
        if self._entries is None:
            self._entries = self._scan()
        return self._entries

    def _scan(self) -> dict[str, Entry]:
        found: dict[str, Entry] = {}
        stack: list[tuple[str, str]] = [(os.fspath(self.root), "")]
        while stack:
            directory, prefix = stack.pop()
            try:
                iterator = os.scandir(directory)
            except OSError:
                continue
            with iterator:
                for item in iterator:
                    relative = f"{prefix}{item.name}"
                    try:
                        info = item.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    if stat.S_ISDIR(info.st_mode):
                        if item.name not in SKIPPED_FOLDERS:
                            stack.append((item.path, relative + "/"))
                    elif stat.S_ISLNK(info.st_mode):
                        target = os.readlink(item.path)
                        found[relative] = Entry(relative, "symlink", len(target), False, target)
                    elif stat.S_ISREG(info.st_mode):
                        found[relative] = Entry(
                            relative, "file", info.st_size, is_executable_mode(info.st_mode)
                        )
        return found

    def read(self, path: str, max_bytes: int) -> bytes:
        parts = path.split("/")
        if not path or any(part in ("", ".", "..") for part in parts):
            raise ValueError(f"not a tree path: {path!r}")
        flags = os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))
        try:
            for part in parts[:-1]:
                next_fd = os.open(part, flags | os.O_DIRECTORY, dir_fd=fd)
                os.close(fd)
                fd = next_fd
            file_fd = os.open(parts[-1], flags | getattr(os, "O_NONBLOCK", 0), dir_fd=fd)
        finally:
            os.close(fd)
        with os.fdopen(file_fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                raise OSError(f"{path} is not a regular file")
            return handle.read(max_bytes + 1)
