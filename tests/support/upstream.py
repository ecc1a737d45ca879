"""Bare git repositories the tests commit to directly (as if pushed), the git source that
fetches them, and SSH keys for them.

pygit2 writes each commit with exact modes, including symlinks, executables and submodule
entries, at a fixed clock, so the same files always make the same commit.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from pathlib import Path

import pygit2
from pygit2.enums import FileMode, ObjectType

from controller.adapters.gitsource import GitSettings, GitSource
from controller.adapters.secrets import SecretStore
from controller.core.tree import Blob


class Submodule:
    """A gitlink entry (mode 160000) in a committed tree."""

    def __init__(self, commit: str) -> None:
        self.commit = commit


Content = bytes | str | Blob | Submodule


class Upstream:
    """A bare repository that tests commit to directly (as if pushed)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.repo = pygit2.init_repository(str(path), bare=True, initial_head="main")
        self._clock = 1_700_000_000

    def _tree(self, files: Mapping[str, Content]) -> pygit2.Oid:
        nested: dict[str, object] = {}
        for path, content in files.items():
            *folders, name = path.split("/")
            level = nested
            for folder in folders:
                level = level.setdefault(folder, {})  # type: ignore[assignment]
            level[name] = content
        return self._build(nested)

    def _build(self, level: Mapping[str, object]) -> pygit2.Oid:
        builder = self.repo.TreeBuilder()
        for name, content in level.items():
            if isinstance(content, dict):
                builder.insert(name, self._build(content), FileMode.TREE)
            elif isinstance(content, Submodule):
                builder.insert(name, pygit2.Oid(hex=content.commit), FileMode.COMMIT)
            elif isinstance(content, Blob):
                if content.link_target is not None:
                    oid = self.repo.create_blob(content.link_target.encode())
                    builder.insert(name, oid, FileMode.LINK)
                else:
                    mode = FileMode.BLOB_EXECUTABLE if content.executable else FileMode.BLOB
                    builder.insert(name, self.repo.create_blob(content.data), mode)
            else:
                data = content.encode() if isinstance(content, str) else content
                assert isinstance(data, bytes)
                builder.insert(name, self.repo.create_blob(data), FileMode.BLOB)
        return builder.write()

    def commit(
        self,
        files: Mapping[str, Content],
        branch: str = "main",
        parents: list[str] | None = None,
        message: str = "change",
    ) -> str:
        """Commit `files` as the whole tree on `branch` (after its tip, unless `parents`)."""
        ref = f"refs/heads/{branch}"
        if parents is None:
            parents = [str(self.repo.references[ref].target)] if ref in self.repo.references else []
        self._clock += 60
        signature = pygit2.Signature("Test", "test@example.org", self._clock, 0)
        oid = self.repo.create_commit(
            None,
            signature,
            signature,
            message,
            self._tree(files),
            [pygit2.Oid(hex=p) for p in parents],
        )
        self.repo.references.create(ref, oid, force=True)
        return str(oid)

    def change(self, files: Mapping[str, bytes], branch: str = "main") -> str:
        """Commit the tip's tree with `files` replaced or added (quick on a large tree)."""
        ref = f"refs/heads/{branch}"
        parent = self.repo.references[ref].peel(pygit2.Commit)
        index = pygit2.Index()
        index.read_tree(parent.tree)
        for path, data in files.items():
            index.add(pygit2.IndexEntry(path, self.repo.create_blob(data), FileMode.BLOB))
        self._clock += 60
        signature = pygit2.Signature("Test", "test@example.org", self._clock, 0)
        tree = index.write_tree(self.repo)
        oid = self.repo.create_commit(ref, signature, signature, "change", tree, [parent.id])
        return str(oid)

    def tag(self, name: str, commit: str, *, annotated: bool = True) -> None:
        ref = f"refs/tags/{name}"
        if ref in self.repo.references:
            self.repo.references.delete(ref)
        if annotated:
            signature = pygit2.Signature("Test", "test@example.org", self._clock, 0)
            self.repo.create_tag(name, pygit2.Oid(hex=commit), ObjectType.COMMIT, signature, name)
        else:
            self.repo.references.create(ref, pygit2.Oid(hex=commit))

    def tree_of(self, commit: str) -> str:
        return str(self.repo[pygit2.Oid(hex=commit)].peel(pygit2.Commit).tree_id)


def source(
    url: str, ref: str, cache: Path, store: SecretStore | None = None, **settings: object
) -> GitSource:
    return GitSource(GitSettings(url, ref, cache, **settings), store or SecretStore())  # type: ignore[arg-type]


class SshKeys:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def make(self, name: str, passphrase: str = "") -> tuple[Path, str]:
        """(private key file, public key line)."""
        path = self.folder / name
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-C", name, "-f", str(path)],
            check=True,
        )
        return path, path.with_suffix(".pub").read_text()
