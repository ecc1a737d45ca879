"""The git source (pygit2): clone once, fetch each time, follow force-pushes, read tree objects.

Upstream repositories are real bare repositories made at test time (tests/support/upstream.py:
pygit2 writes commits with exact modes, including submodule entries; the discovery test commits
with the git CLI), fetched over local transports. Fetches over HTTP and SSH, through real
servers, are in tests/integration/test_git_transports.py.
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import threading
import time
from pathlib import Path

import pygit2
import pytest
from pygit2.enums import ObjectType

from controller.adapters.folder import FolderTree
from controller.adapters.gitsource import (
    GitRefError,
    GitSettings,
    GitSource,
    GitSourceError,
    Revision,
    public_text,
    ref_kind,
    unchanged,
)
from controller.adapters.gittree import GitTree, NotATree, folder_ids
from controller.adapters.secrets import CredentialRefs, SecretRef, SecretStore
from controller.core.discovery import DiscoveryOptions, discover
from controller.core.errors import Policy
from controller.core.plan import plan
from controller.core.tree import Blob, SourceTree
from tests.support.canaries import canary, record_output
from tests.support.needs import need
from tests.support.paths import ROOT
from tests.support.upstream import Content, Submodule, Upstream, source

GIT = shutil.which("git")


@pytest.fixture
def upstream(tmp_path: Path) -> Upstream:
    return Upstream(tmp_path / "upstream.git")


# --- clone and fetch over local transports -------------------------------------------------


@pytest.mark.parametrize("form", ["file-url", "path"])
def test_clones_once_then_fetches(upstream: Upstream, tmp_path: Path, form: str) -> None:
    first = upstream.commit({"a.txt": "one\n"})
    url = upstream.path.as_uri() if form == "file-url" else str(upstream.path)
    cache = tmp_path / "cache" / "specs.git"
    git = source(url, "main", cache)

    revision = git.fetch()
    assert revision == Revision("main", first, upstream.tree_of(first), f"main@sha1:{first}")
    assert git.fetches == 1
    assert git.received_objects > 0
    assert pygit2.Repository(str(cache)).is_bare
    assert not (cache / "a.txt").exists()
    assert [p.name for p in cache.parent.iterdir()] == ["specs.git"]  # no temporary left

    # A restart reuses the clone: nothing new is transferred.
    again = source(url, "main", cache)
    assert again.fetch() == revision
    assert again.received_objects == 0
    assert again.fetches == 1


def test_new_commit_is_seen_and_nothing_changes_without_a_push(
    upstream: Upstream, tmp_path: Path
) -> None:
    upstream.commit({"a.txt": "one\n"})
    git = source(str(upstream.path), "main", tmp_path / "cache")
    first = git.fetch()
    assert not unchanged(None, first)

    second = git.fetch()
    assert second == first
    assert unchanged(first, second)
    assert git.fetches == 2
    assert git.received_objects > 0  # from the first fetch only
    received = git.received_objects

    third = git.fetch()
    assert git.received_objects == received

    new = upstream.commit({"a.txt": "two\n"})
    fourth = git.fetch()
    assert fourth.commit == new
    assert fourth.label == f"main@sha1:{new}"
    assert not unchanged(third, fourth)
    assert git.tree(fourth).read("a.txt", 100) == b"two\n"
    assert git.tree(third).read("a.txt", 100) == b"one\n"  # old trees stay readable


def test_force_push_rewriting_history_is_followed(upstream: Upstream, tmp_path: Path) -> None:
    base = upstream.commit({"a.txt": "base\n"})
    upstream.commit({"a.txt": "mistake\n", "secret.txt": "oops\n"})
    git = source(str(upstream.path), "main", tmp_path / "cache")
    git.fetch()

    rewritten = upstream.commit({"a.txt": "fixed\n"}, parents=[base], message="rewritten")
    revision = git.fetch()
    assert revision.commit == rewritten
    tree = git.tree(revision)
    assert set(tree.entries()) == {"a.txt"}
    assert tree.read("a.txt", 100) == b"fixed\n"

    # Back to an older commit (a reset and force-push) is followed too.
    upstream.repo.references.create("refs/heads/main", pygit2.Oid(hex=base), force=True)
    assert git.fetch().commit == base


def test_branch_tag_and_commit_refs(upstream: Upstream, tmp_path: Path) -> None:
    one = upstream.commit({"a.txt": "1\n"})
    two = upstream.commit({"a.txt": "2\n"})
    dev = upstream.commit({"a.txt": "dev\n"}, branch="dev", parents=[one])
    upstream.tag("v1", one)  # annotated
    upstream.tag("v2", two, annotated=False)
    url = str(upstream.path)

    cases = {
        "main": (two, "main@sha1:"),
        "refs/heads/main": (two, "refs/heads/main@sha1:"),
        "dev": (dev, "dev@sha1:"),
        "refs/heads/dev": (dev, "refs/heads/dev@sha1:"),
        "v1": (one, "v1@sha1:"),
        "refs/tags/v1": (one, "refs/tags/v1@sha1:"),
        "refs/tags/v2": (two, "refs/tags/v2@sha1:"),
        one: (one, "sha1:"),
    }
    for ref, (commit, label) in cases.items():
        revision = source(url, ref, tmp_path / "cache").fetch()  # one cache, several refs
        assert revision.commit == commit, ref
        assert revision.tree == upstream.tree_of(commit)
        assert revision.label == f"{label}{commit}"

    # A moved tag (deleted and made again elsewhere) is followed.
    upstream.tag("v1", dev)
    assert source(url, "v1", tmp_path / "cache").fetch().commit == dev

    # Only the tracked ref is fetched; tags are not followed along with a branch.
    only = source(url, "dev", tmp_path / "only-dev")
    only.fetch()
    refs = set(only.repository.references)
    assert refs == {"refs/remotes/origin/dev"}


def test_a_branch_is_preferred_to_a_tag_of_the_same_name(
    upstream: Upstream, tmp_path: Path
) -> None:
    one = upstream.commit({"a.txt": "1\n"})
    two = upstream.commit({"a.txt": "2\n"}, branch="release")
    upstream.tag("release", one)
    assert source(str(upstream.path), "release", tmp_path / "c").fetch().commit == two
    assert source(str(upstream.path), "refs/tags/release", tmp_path / "c").fetch().commit == one


def test_a_pinned_commit_is_fetched_once(upstream: Upstream, tmp_path: Path) -> None:
    one = upstream.commit({"a.txt": "1\n"})
    upstream.commit({"a.txt": "2\n"})
    git = source(str(upstream.path), one, tmp_path / "cache")
    assert git.fetch().commit == one
    assert git.fetch().commit == one
    assert git.fetches == 1

    # Gone from the remote (history rewritten) but still cached: still served.
    upstream.commit({"a.txt": "3\n"}, parents=[])
    assert source(str(upstream.path), one, tmp_path / "cache").fetch().commit == one


def test_missing_refs_are_errors(upstream: Upstream, tmp_path: Path) -> None:
    upstream.commit({"a.txt": "1\n"})
    upstream.commit({"a.txt": "x\n"}, branch="gone")
    url = str(upstream.path)
    for ref, words in [
        ("nope", "no branch or tag 'nope'"),
        ("refs/heads/nope", "no branch 'nope'"),
        ("refs/tags/nope", "no tag 'nope'"),
        ("0" * 40, "is in no branch or tag"),
    ]:
        with pytest.raises(GitRefError, match=words):
            source(url, ref, tmp_path / "cache").fetch()

    # A deleted branch is noticed, although its old tip is still cached.
    git = source(url, "gone", tmp_path / "cache")
    git.fetch()
    upstream.repo.references.delete("refs/heads/gone")
    with pytest.raises(GitRefError, match="no branch or tag 'gone'"):
        git.fetch()


@pytest.mark.parametrize(
    "ref", ["", "refs/remotes/origin/main", "main:other", "+main", "a b", "heads/*", "x..y", "-x"]
)
def test_invalid_refs_are_refused(ref: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="ref"):
        GitSettings("https://example.org/r.git", ref, tmp_path)


def test_ref_kinds() -> None:
    assert ref_kind("main") == ("name", "main")
    assert ref_kind("refs/heads/a/b") == ("branch", "a/b")
    assert ref_kind("refs/tags/v1.2") == ("tag", "v1.2")
    assert ref_kind("a" * 40) == ("commit", "a" * 40)
    assert ref_kind("A" * 40) == ("name", "A" * 40)


def test_the_cache_survives_stale_locks_and_refuses_foreign_folders(
    upstream: Upstream, tmp_path: Path
) -> None:
    first = upstream.commit({"a.txt": "1\n"})
    cache = tmp_path / "cache"
    source(str(upstream.path), "main", cache).fetch()
    # A process killed in the middle of a fetch leaves lock files behind.
    (cache / "refs" / "remotes" / "origin" / "main.lock").write_text(first)
    (cache / "packed-refs.lock").write_text("")
    (cache / "objects" / "pack" / "pack_git2_a1b2c3").write_bytes(b"PACK")
    half_made = tmp_path / ".fresh.0123.tmp"  # killed while making a cache
    half_made.mkdir()
    second = upstream.commit({"a.txt": "2\n"})
    assert source(str(upstream.path), "main", cache).fetch().commit == second
    assert not list(cache.rglob("*.lock"))
    assert not list(cache.rglob("pack_git2_*"))
    source(str(upstream.path), "main", tmp_path / "fresh").fetch()
    assert not half_made.exists()

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine\n")
    with pytest.raises(GitSourceError, match="not a git repository"):
        source(str(upstream.path), "main", foreign).fetch()
    assert (foreign / "notes.txt").read_text() == "mine\n"

    checkout = tmp_path / "checkout"
    pygit2.init_repository(str(checkout))
    with pytest.raises(GitSourceError, match="not a bare repository"):
        source(str(upstream.path), "main", checkout).fetch()


def test_a_changed_url_is_used(upstream: Upstream, tmp_path: Path) -> None:
    upstream.commit({"a.txt": "1\n"})
    other = Upstream(tmp_path / "other.git")
    moved = other.commit({"b.txt": "2\n"})
    cache = tmp_path / "cache"
    source(str(upstream.path), "main", cache).fetch()
    assert source(str(other.path), "main", cache).fetch().commit == moved


def test_concurrent_fetches_are_serialized(upstream: Upstream, tmp_path: Path) -> None:
    head = upstream.commit({"a.txt": "1\n"})
    git = source(str(upstream.path), "main", tmp_path / "cache")
    results: list[str] = []
    threads = [
        threading.Thread(target=lambda: results.append(git.fetch().commit)) for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [head] * 8
    assert git.fetches == 8


# --- reading trees ---------------------------------------------------------------------------


def test_tree_entries_bytes_modes_and_symlinks(upstream: Upstream, tmp_path: Path) -> None:
    sub = Upstream(tmp_path / "sub.git").commit({"x": "x"})
    big = bytes(range(256)) * 4096
    files: dict[str, Content] = {
        "README.md": "hello\n",
        "env/requirements.txt": "numpy==1.26.4\n",
        "env/run.sh": Blob(b"#!/bin/sh\necho hi\n", executable=True),
        "env/link.txt": Blob(link_target="requirements.txt"),
        "env/up": Blob(link_target="../README.md"),
        "env/deep/a/b/c.bin": big,
        "env/empty": b"",
        "vendor/lib": Submodule(sub),
        "caf\u00e9/na\u00efve.txt": "utf-8 names\n",
    }
    commit = upstream.commit(files)
    git = source(str(upstream.path), "main", tmp_path / "cache")
    tree = git.tree(git.fetch())
    entries = tree.entries()

    assert set(entries) == set(files) - {"vendor/lib"}  # the submodule is skipped
    assert entries["README.md"].kind == "file"
    assert entries["README.md"].size == 6
    assert not entries["README.md"].executable
    assert entries["env/run.sh"].executable
    assert entries["env/deep/a/b/c.bin"].size == len(big)
    assert entries["env/empty"].size == 0
    assert entries["env/link.txt"].kind == "symlink"
    assert entries["env/link.txt"].link_target == "requirements.txt"
    assert entries["env/up"].link_target == "../README.md"

    assert tree.read("env/run.sh", 1000) == b"#!/bin/sh\necho hi\n"
    assert tree.read("caf\u00e9/na\u00efve.txt", 1000) == b"utf-8 names\n"
    assert tree.read("env/deep/a/b/c.bin", 10) == big[:11]  # at most max_bytes + 1
    assert tree.read("env/deep/a/b/c.bin", 2 * len(big)) == big
    assert tree.read("env/empty", 10) == b""
    with pytest.raises(OSError, match="not a regular file"):
        tree.read("env/link.txt", 100)
    with pytest.raises(FileNotFoundError):
        tree.read("env/missing.txt", 100)
    with pytest.raises(FileNotFoundError):
        tree.read("vendor/lib", 100)

    # The same files from a folder on disk give the same entries.
    checkout = tmp_path / "checkout"
    subprocess.run([GIT or "git", "clone", "-q", str(upstream.path), str(checkout)], check=True)
    folder = {p: e for p, e in FolderTree(checkout).entries().items()}
    folder.pop("vendor/lib", None)
    assert folder == dict(entries)
    assert commit == git.fetch().commit


def test_names_git_refuses_are_skipped(tmp_path: Path) -> None:
    """A crafted tree (written past libgit2's checks) cannot name `..`, `.` or `.git`."""
    repo = pygit2.init_repository(str(tmp_path / "crafted.git"), bare=True)
    blob = repo.create_blob(b"x")
    names = sorted([b"..", b".", b".git", b"ok", b"caf\xe9"])
    tree = repo.odb.write(
        ObjectType.TREE, b"".join(b"100644 " + n + b"\0" + blob.raw for n in names)
    )
    entries = GitTree(repo, tree).entries()
    assert set(entries) == {"ok", "caf\udce9"}  # undecodable bytes kept as os.fsdecode does
    assert GitTree(repo, tree).read("caf\udce9", 10) == b"x"


def test_git_tree_is_a_source_tree(upstream: Upstream, tmp_path: Path) -> None:
    upstream.commit({"a": "1"})
    git = source(str(upstream.path), "main", tmp_path / "cache")
    tree: SourceTree = git.tree(git.fetch())
    assert list(tree.entries()) == ["a"]
    with pytest.raises(NotATree, match="not a tree"):
        GitTree(git.repository, git.fetch().commit)


def test_folder_ids_change_only_with_their_content(upstream: Upstream, tmp_path: Path) -> None:
    files: dict[str, Content] = {
        "specs/a/requirements.txt": "numpy\n",
        "specs/b/requirements.txt": "pandas\n",
        "specs/b/more/x.txt": "x\n",
    }
    upstream.commit(files)
    git = source(str(upstream.path), "main", tmp_path / "cache")
    first = git.fetch()
    before = folder_ids(git.tree(first), ["", "specs/a", "specs/b", "specs/b/more", "nope"])
    assert set(before) == {"", "specs/a", "specs/b", "specs/b/more"}
    assert before[""] == first.tree

    upstream.commit({**files, "specs/b/more/x.txt": "changed\n"})
    second = git.fetch()
    after = folder_ids(git.tree(second), before)
    assert after["specs/a"] == before["specs/a"]
    assert after["specs/b"] != before["specs/b"]
    assert after["specs/b/more"] != before["specs/b/more"]
    assert after[""] != before[""]

    # Files have ids too (a spec may reference a file outside its folder).
    ids = folder_ids(git.tree(second), ["specs/a/requirements.txt"])
    assert ids["specs/a/requirements.txt"] == str(
        pygit2.hash(b"numpy\n")  # a blob's id is the hash of its content
    )


def _planned(tree: SourceTree) -> list[tuple[str, str, str, str | None, str | None]]:
    items = plan(discover(tree, DiscoveryOptions(root="specs")))
    return [(item.env.name, item.env.kind, item.env.path, item.hash, item.error) for item in items]


def test_discovery_from_git_matches_the_folder(tmp_path: Path) -> None:
    need(GIT is not None, "the git command is not installed")
    work = tmp_path / "work"
    shutil.copytree(ROOT / "specs", work / "specs", symlinks=True)
    # exec bits and symlinks in a build context are part of the hash
    context = work / "specs" / "dockerfile-only"
    assert context.is_dir()
    script = context / "entry.sh"
    script.write_text('#!/bin/sh\nexec python "$@"\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    (context / "entry-link.sh").symlink_to("entry.sh")
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org"}
    env |= {"GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.org"}
    for command in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-qm", "specs"]):
        subprocess.run(["git", *command], cwd=work, env=env, check=True)

    git = source((work / ".git").as_uri(), "main", tmp_path / "cache")
    from_git = _planned(git.tree(git.fetch()))
    from_folder = _planned(FolderTree(work))
    assert from_git == from_folder
    assert len(from_git) >= 8
    assert sum(1 for row in from_git if row[3] is not None) >= 5
    assert any(row[2] == "specs/dockerfile-only" and row[3] for row in from_git)


@pytest.mark.slow
def test_listing_20000_files_reuses_the_unchanged_folders(tmp_path: Path) -> None:
    """What the git benchmark (bench/bench_git.py) times must hold: listings of unchanged
    folders are reused after a fetch, and what they give equals a fresh listing."""
    upstream = Upstream(tmp_path / "big.git")
    files: dict[str, Content] = {}
    for env in range(200):
        for index in range(100):
            folder = f"team{env % 20}/env{env}" + ("/sub" if index % 2 else "")
            files[f"{folder}/f{index}.txt"] = f"{env} {index}\n" * (index + 1)
    files["team0/env0/run.sh"] = Blob(b"#!/bin/sh\n", executable=True)
    assert len(files) == 20_001
    upstream.commit(files)
    git = source(str(upstream.path), "main", tmp_path / "cache")
    revision = git.fetch()
    entries = git.tree(revision).entries()
    assert git.fetch() == revision  # nothing new

    # One file changed: only its folders are read again (the source keeps the last listing).
    upstream.change({"team3/env3/sub/f1.txt": b"changed\n"})
    changed = git.fetch()
    reused_before = git.listings.reused
    after = git.tree(changed).entries()
    assert git.listings.reused - reused_before > 400
    assert after == GitTree(git.repository, changed.tree).entries()
    assert after["team3/env3/sub/f1.txt"].size == 8
    assert git.tree(changed).read("team3/env3/sub/f1.txt", 100) == b"changed\n"
    assert git.tree(changed).read("team3/env3/f0.txt", 100) == b"3 0\n"
    assert len(entries) == 20_001
    assert entries["team0/env0/run.sh"].executable


def test_unreachable_and_silent_servers_fail_quickly(upstream: Upstream, tmp_path: Path) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    with pytest.raises(GitSourceError) as caught:
        source(f"http://127.0.0.1:{port}/r.git", "main", tmp_path / "c1").fetch()
    record_output(str(caught.value))
    assert caught.value.policy is Policy.RETRY_LATER

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/r.git"
        started = time.perf_counter()
        with pytest.raises(GitSourceError) as caught:
            source(url, "main", tmp_path / "c2", timeout=1.0).fetch()
        seconds = time.perf_counter() - started
    record_output(str(caught.value))
    assert seconds < 10


def test_the_git_cache_is_private_to_its_user(upstream: Upstream, tmp_path: Path) -> None:
    upstream.commit({"envs/a/requirements.txt": "numpy\n"})
    GitSource(GitSettings(str(upstream.path), "main", tmp_path / "cache"), SecretStore()).fetch()
    cache = tmp_path / "cache"
    assert (cache / "config").is_file()  # the bare repository itself
    assert cache.stat().st_mode & 0o077 == 0, oct(cache.stat().st_mode)  # none may enter it


def test_secrets_never_appear_in_settings_errors(tmp_path: Path) -> None:
    token = canary("git")
    with pytest.raises(ValueError, match="holds a user name and password") as caught:
        GitSettings(f"https://user:{token}@example.org/r.git", "main", tmp_path)
    assert token not in str(caught.value)
    refs = CredentialRefs(SecretRef.parse("env:U"), SecretRef.parse("env:P"))
    with pytest.raises(ValueError, match="clear text"):
        GitSettings("http://git.example.org/r.git", "main", tmp_path, credentials=refs)
    GitSettings("http://127.0.0.1:8080/r.git", "main", tmp_path, credentials=refs)
    GitSettings("http://git.example.org/r.git", "main", tmp_path, credentials=refs, plain_http=True)

    settings = GitSettings(f"https://{token}@example.org/r.git", "main", tmp_path)
    assert token not in settings.public_url
    assert token not in settings.fetch_url
    assert public_text(f"fatal: https://x:{token}@h/r and ssh://u@h/p") == (
        "fatal: https://h/r and ssh://h/p"
    )
    assert GitSettings("git@github.com:o/r.git", "main", tmp_path).fetch_url == (
        "git@github.com:o/r.git"
    )
