"""The discovery cache: what is reused across revisions gives exactly what reading afresh gives.

A content-addressed tree in memory (ids computed the way git computes them, from bytes, modes
and children) stands in for git trees here, so hypothesis can try hundreds of revision sequences
quickly; one test runs the same over real git trees.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import pygit2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.adapters.gittree import GitTree
from controller.core.discovery import DiscoveryCache, DiscoveryOptions, Places, discover
from controller.core.hashing import content_hash
from controller.core.model import Environment
from controller.core.tree import Blob, MemoryTree, SourceTree, parent


class IdentifiedTree(MemoryTree):
    """A MemoryTree with git-like object ids: a blob's from its bytes and mode, a folder's from
    its children's names and ids."""

    def __init__(self, files: Mapping[str, bytes | Blob]) -> None:
        super().__init__(files)
        ids: dict[str, str] = {}
        for path, value in files.items():
            blob = value if isinstance(value, Blob) else Blob(value)
            kind = "link" if blob.link_target is not None else ("exec" if blob.executable else "")
            content = blob.link_target.encode() if blob.link_target is not None else blob.data
            ids[path] = hashlib.sha1(kind.encode() + b"\0" + content).hexdigest()  # noqa: S324
        children: dict[str, set[str]] = {}
        for path in files:
            while path:
                children.setdefault(parent(path), set()).add(path)
                path = parent(path)
        for folder in sorted(children, key=lambda p: -p.count("/") if p else 1):
            listing = "\n".join(f"{child}={ids[child]}" for child in sorted(children[folder]))
            ids[folder] = hashlib.sha1(listing.encode()).hexdigest()  # noqa: S324
        self.ids = ids
        self.blobs = {
            path: value if isinstance(value, Blob) else Blob(value) for path, value in files.items()
        }
        IdentifiedTree.known[ids.get("", "")] = self

    known: ClassVar[dict[str, IdentifiedTree]] = {}
    """Every tree made, by root id: what `modified_since` compares with (git's object store)."""

    def object_id(self, path: str) -> str | None:
        return self.ids.get(path)

    def changed_since(self, previous: str) -> dict[str, bool] | None:
        """As a git tree comparison tells it: every path added, removed or changed, True for
        those changed in place."""
        before = IdentifiedTree.known.get(previous)
        if before is None:
            return None
        changes: dict[str, bool] = {}
        for path in before.blobs.keys() | self.blobs.keys():
            old, new = before.blobs.get(path), self.blobs.get(path)
            if old is None or new is None or (old.link_target is None) != (new.link_target is None):
                changes[path] = False
            elif before.ids[path] != self.ids[path]:
                changes[path] = True
        return changes


def v1(base: str, conda: bool) -> bytes:
    python: dict[str, Any] = {"userManagedDependencies": not conda}
    if not conda:
        python["interpreterPath"] = "python3"
    return json.dumps(
        {"name": "saved", "version": "1", "python": python, "docker": {"baseImage": base}}
    ).encode()


def v2(name: str, extra: str) -> bytes:
    return f"name: {name}\nversion: '1'\n{extra}\n".encode()


CONDA_A = b"name: a\ndependencies:\n  - python=3.11\n  - pip:\n    - requests==2.31.0\n"
CONDA_B = b"name: b\ndependencies:\n  - python=3.10\n"

VARIANTS: dict[str, list[bytes | Blob]] = {
    "specs/saved/azureml_environment.json": [v1("busybox:1", True), v1("busybox:2", False)],
    "specs/saved/conda_dependencies.yml": [CONDA_A, CONDA_B],
    "specs/saved/BaseDockerfile": [b"FROM busybox:1\n"],
    "specs/v2/env.yml": [
        v2("env", "image: busybox:1\nconda_file: ../shared/conda.yml"),
        v2("env", "image: busybox:2\nconda_file: ../shared/conda.yml"),
        v2("env", "image: busybox:1\nconda_file: ../shared/missing.yml"),
    ],
    "specs/v2/built.yml": [
        v2("built", "build:\n  path: ../context"),
        v2("built", "build:\n  path: ../context\n  dockerfile_path: Other"),
        b"name: [unclosed\n",
    ],
    "specs/v2/linked.yml": [Blob(link_target="../shared/env.yml"), v2("linked", "image: x:1")],
    "specs/shared/env.yml": [v2("linked", "image: busybox:3"), v2("linked", "image: busybox:4")],
    "specs/shared/conda.yml": [CONDA_A, CONDA_B, b"dependencies: [unclosed\n"],
    "specs/context/Dockerfile": [b"FROM busybox:1\nCOPY data.txt /\n", b"FROM busybox:2\n"],
    "specs/context/Other": [b"FROM busybox:3\n"],
    "specs/context/data.txt": [b"one\n", b"two\n", Blob(b"three\n", executable=True)],
    "specs/context/outside": [Blob(link_target="../../../etc/passwd")],
    "specs/context/shared": [Blob(link_target="../shared")],
    "specs/pip/requirements.txt": [b"requests==2.31.0\n", b"requests==2.32.0\n"],
    "specs/piplink/requirements.txt": [Blob(link_target="../pip/requirements.txt")],
    "specs/condaplain/environment.yml": [
        Blob(link_target="../shared/conda.yml"),
        CONDA_B,
    ],
    "specs/docker/Dockerfile": [b"FROM busybox:1\n"],
    "specs/docker/link": [Blob(link_target="../shared/conda.yml"), Blob(link_target="loop")],
    "specs/docker/loop": [Blob(link_target="link")],
}
COUNTED = sorted(VARIANTS)
"""The paths the counting tests use (the forms added below change what they count)."""

ASSET = (
    b"name: curated\nversion: auto\ntype: environment\nspec: spec.yaml\n"
    b"extra_config: environment.yaml\n"
)
ASSET_ENVIRONMENT = (
    b"image:\n  name: azureml/curated/x\n  os: linux\n  context:\n    dir: context\n"
)
ASSET_SPEC = (
    b'name: "{{asset.name}}"\nversion: "{{asset.version}}"\n'
    b'build:\n  path: "{{image.context.path}}"\n'
)
JOB = b"$schema: https://azuremlschemas.azureedge.net/latest/commandJob.schema.json\ncommand: x\n"
DEPLOYMENT = (
    b"$schema: https://azuremlschemas.azureedge.net/latest/managedOnlineDeployment.schema.json\n"
    b"name: {{DEPLOYMENT}}\nendpoint_name: [x\n"
)

VARIANTS.update(
    {
        "specs/nb/train.yml": [CONDA_A, CONDA_B],
        "specs/nb/score.yml": [CONDA_B, JOB, b"dependencies: [unclosed\n"],
        "specs/nb/requirements.txt": [b"six==1.16.0\n"],
        "specs/frag/Dockerfile": [b"RUN echo a fragment\n", b"FROM busybox:1\n", b"FROM Bad:Ref\n"],
        "specs/frag/conda.yml": [CONDA_A],
        "specs/frag/sub/requirements.txt": [b"six==1.16.0\n"],
        "specs/asset/asset.yaml": [ASSET, b"type: component\nname: c\n", b"name: [unclosed\n"],
        "specs/asset/environment.yaml": [ASSET_ENVIRONMENT],
        "specs/asset/spec.yaml": [ASSET_SPEC],
        "specs/asset/context/Dockerfile": [
            b"FROM busybox:{{latest-image-tag}}\n",
            b"FROM busybox:1\n",
        ],
        "specs/asset/context/conda.yml": [CONDA_A],
        "specs/deploy/deployment.yml": [DEPLOYMENT, JOB],
        "specs/deploy/req/requirements.txt": [b"-r ../../pip/requirements.txt\n", b"six\n"],
        "envship.yaml": [b"names:\n  specs/pip: named-pip\n", b"ignore: [nb/]\n"],
    }
)
PATHS = sorted(VARIANTS)

Revision = dict[str, int]
"""Which variant each path holds (paths left out are absent)."""

revisions = st.lists(
    st.dictionaries(st.sampled_from(PATHS), st.integers(0, 2), min_size=3), min_size=2, max_size=6
)


def tree_of(revision: Revision) -> IdentifiedTree:
    files: dict[str, bytes | Blob] = {}
    for path, choice in revision.items():
        variants = VARIANTS[path]
        files[path] = variants[choice % len(variants)]
    return IdentifiedTree(files)


def summary(envs: list[Environment]) -> list[tuple[Any, ...]]:
    """Everything a discovery result says, comparable by value (errors by their text)."""
    rows: list[tuple[Any, ...]] = [
        (
            env.name,
            env.kind,
            env.path,
            env.files,
            env.also,
            env.status_key,
            env.version,
            env.repository,
            str(env.error) if env.error else None,
            content_hash(env.build) if env.build else None,
        )
        for env in envs
    ]
    notes = getattr(envs, "notes", [])
    return rows + [("note", note.path, note.text) for note in notes]


OPTIONS = DiscoveryOptions(root="specs")


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(revisions)
def test_cached_discovery_equals_a_fresh_one(sequence: list[Revision]) -> None:
    cache = DiscoveryCache()
    for revision in sequence:
        tree = tree_of(revision)
        fresh = summary(discover(tree, OPTIONS))
        assert summary(discover(tree, OPTIONS, cache=cache)) == fresh, revision


NESTED: dict[str, list[bytes | Blob]] = {
    "specs/a/Dockerfile": [b"FROM busybox:1\n", b"FROM busybox:2\n"],
    "specs/a/azureml_environment.json": [v1("busybox:1", False)],
    "specs/a/conda.yml": [CONDA_A, b"[unclosed\n"],
    "specs/a/b/requirements.txt": [b"six==1.16.0\n"],
    "specs/a/b/c/env.yml": [v2("c", "image: busybox:1"), CONDA_B],
    "specs/a/b/.hidden/env.yml": [v2("hidden", "image: busybox:1")],
    "specs/x/claims.yml": [
        v2("x", "build:\n  path: ../a"),
        v2("x", "build:\n  path: ../a/b"),
        v2("x", "image: busybox:1\nconda_file: ../a/conda.yml"),
    ],
    "specs/x/Dockerfile": [b"FROM busybox:3\n"],
}
NESTED_PATHS = sorted(NESTED)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.dictionaries(st.sampled_from(NESTED_PATHS), st.integers(0, 2)), min_size=2, max_size=8
    )
)
@pytest.mark.slow
def test_folders_turning_into_contexts_claims_and_saved_folders(sequence: list[Revision]) -> None:
    """Dockerfiles, saved folders and claims appearing above other folders, and going."""
    cache = DiscoveryCache()
    for revision in sequence:
        files = {p: NESTED[p][v % len(NESTED[p])] for p, v in revision.items()}
        files["specs/keep/requirements.txt"] = b"six==1.16.0\n"
        tree = IdentifiedTree(files)
        fresh = summary(discover(tree, OPTIONS))
        assert summary(discover(tree, OPTIONS, cache=cache)) == fresh, revision


edits = st.lists(
    st.fixed_dictionaries({path: st.integers(0, 2) for path in PATHS}), min_size=2, max_size=6
)


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(edits)
def test_files_changed_in_place_give_what_a_fresh_discovery_gives(sequence: list[Revision]) -> None:
    """Every path kept, only contents changing: the shortcut that keeps the last layout."""
    cache = DiscoveryCache()
    shortcuts = 0
    for revision in sequence:
        tree = tree_of(revision)
        fresh = summary(discover(tree, OPTIONS))
        assert summary(discover(tree, OPTIONS, cache=cache)) == fresh, revision
        shortcuts += cache.incremental
    assert shortcuts <= len(sequence) - 1


@pytest.mark.slow
@settings(max_examples=200, deadline=None)
@given(revisions)
def test_broken_documents_keep_their_place_the_same_way_incrementally(
    sequence: list[Revision],
) -> None:
    """With what v2 documents gave when they last parsed (`Places`), a cached discovery gives
    what a fresh one with the same memory gives."""
    cache, places, fresh_places = DiscoveryCache(), Places(), Places()
    for revision in sequence:
        tree = tree_of(revision)
        fresh = summary(discover(tree, OPTIONS, places=fresh_places))
        assert summary(discover(tree, OPTIONS, cache=cache, places=places)) == fresh, revision


def test_the_shortcut_rediscovers_only_what_a_change_touches() -> None:
    base: Revision = {path: 0 for path in COUNTED}
    cache = DiscoveryCache()

    def step(files: IdentifiedTree) -> list[tuple[Any, ...]]:
        found = summary(discover(files, OPTIONS, cache=cache))
        assert found == summary(discover(files, OPTIONS))
        return found

    step(tree_of(base))
    assert not cache.incremental
    # a pin: one environment read again, and the one whose file links to it
    step(tree_of({**base, "specs/pip/requirements.txt": 1}))
    assert (cache.incremental, cache.read) == (True, 2)
    # a v2 document whose image changes: pip and piplink again (back to 0), and v2/env.yml
    step(tree_of({**base, "specs/v2/env.yml": 1}))
    assert (cache.incremental, cache.read) == (True, 3)
    # a v2 document that now points at another conda file: the claims move
    step(tree_of({**base, "specs/v2/env.yml": 2}))
    assert cache.incremental
    # a file removed, then added back
    step(tree_of({k: v for k, v in base.items() if k != "specs/context/Other"}))
    assert cache.incremental
    step(tree_of(base))
    assert cache.incremental
    # a folder gone, then a Dockerfile added above folders (they turn into its context)
    step(tree_of({k: v for k, v in base.items() if not k.startswith("specs/pip/")}))
    assert cache.incremental
    with_dockerfile = {p: VARIANTS[p][v % len(VARIANTS[p])] for p, v in base.items()}
    step(IdentifiedTree({**with_dockerfile, "specs/Dockerfile": b"FROM busybox:1\n"}))
    assert cache.incremental
    # a claim on the root's parent folder: the root, and so every folder, decides again
    claim = v2("claims", "build:\n  path: ../..")
    step(IdentifiedTree({**with_dockerfile, "specs/v2/claims.yml": claim}))
    assert cache.incremental


def test_only_what_changed_is_parsed_and_read_again() -> None:
    base: Revision = {path: 0 for path in COUNTED}
    cache = DiscoveryCache()
    first = discover(tree_of(base), OPTIONS, cache=cache)
    assert cache.read == 9
    assert len(first) == 8  # v2/linked.yml and shared/env.yml: one name, one content
    assert cache.parsed == 8  # 6 YAML files and 2 Dockerfiles

    # Symlinked YAML files (v2/linked.yml, condaplain/environment.yml) are parsed every time:
    # the link's blob says nothing about its target's content.
    discover(tree_of(base), OPTIONS, cache=cache)
    assert (cache.read, cache.parsed) == (0, 2)

    # one pip file: its folder and the folder whose requirements.txt links to it
    discover(tree_of({**base, "specs/pip/requirements.txt": 1}), OPTIONS, cache=cache)
    assert (cache.read, cache.parsed) == (2, 2)

    # the shared conda file: the v2 environment naming it, the plain conda folder linking to it
    # and the Dockerfile folder whose context has a link resolving to it
    changed = {**base, "specs/pip/requirements.txt": 1, "specs/shared/conda.yml": 1}
    envs = {env.path: env for env in discover(tree_of(changed), OPTIONS, cache=cache)}
    assert (cache.read, cache.parsed) == (3, 3)
    assert envs["specs/v2/env.yml"].error is None


def test_other_options_empty_the_cache() -> None:
    tree = tree_of({path: 0 for path in COUNTED})
    cache = DiscoveryCache()
    discover(tree, OPTIONS, cache=cache)
    renamed = DiscoveryOptions(root="specs", prefix="other")
    envs = discover(tree, renamed, cache=cache)
    assert cache.read == 9  # every environment read again (two of them are one)
    assert all(e.repository is None or e.repository.startswith("other/") for e in envs)


def test_a_tree_without_object_ids_is_read_in_full() -> None:
    files = {path: VARIANTS[path][0] for path in COUNTED}
    cache = DiscoveryCache()
    tree: SourceTree = MemoryTree(files)
    discover(tree, OPTIONS, cache=cache)
    discover(tree, OPTIONS, cache=cache)
    assert (cache.read, cache.parsed) == (0, 0)  # nothing recorded: nothing counted
    assert cache.envs == {}


def _commit(repository: pygit2.Repository, revision: Revision) -> str:
    """Write `revision` as a git tree (nested trees, modes as git has them)."""

    def build(prefix: str) -> pygit2.Oid:
        builder = repository.TreeBuilder()
        names = sorted(
            {p[len(prefix) :].split("/", 1)[0] for p in revision if p.startswith(prefix)}
        )
        for name in names:
            path = prefix + name
            if path in revision:
                value = VARIANTS[path][revision[path] % len(VARIANTS[path])]
                blob = value if isinstance(value, Blob) else Blob(value)
                if blob.link_target is not None:
                    oid = repository.create_blob(blob.link_target.encode())
                    builder.insert(name, oid, pygit2.GIT_FILEMODE_LINK)
                else:
                    mode = (
                        pygit2.GIT_FILEMODE_BLOB_EXECUTABLE
                        if blob.executable
                        else pygit2.GIT_FILEMODE_BLOB
                    )
                    builder.insert(name, repository.create_blob(blob.data), mode)
            else:
                builder.insert(name, build(path + "/"), pygit2.GIT_FILEMODE_TREE)
        return builder.write()

    return str(build(""))


def test_over_real_git_trees(tmp_path: Path) -> None:
    repository = pygit2.init_repository(str(tmp_path / "repo.git"), bare=True)
    base: Revision = {path: 0 for path in COUNTED}
    steps = [
        base,
        {**base, "specs/shared/conda.yml": 1},
        {**base, "specs/context/data.txt": 2, "specs/v2/linked.yml": 1},
        {k: v for k, v in base.items() if k != "specs/shared/conda.yml"},
        {**base, "specs/docker/link": 1, "specs/shared/env.yml": 1},
        base,
    ]
    cache = DiscoveryCache()
    reads = []
    shortcuts = []
    for revision in steps:
        tree = GitTree(repository, _commit(repository, revision))
        fresh = summary(discover(tree, OPTIONS))
        assert summary(discover(tree, OPTIONS, cache=cache)) == fresh, revision
        reads.append(cache.read)
        shortcuts.append(cache.incremental)
    assert reads[0] > reads[1] > 0
    # every change after the first tree takes the shortcut (none claims the root)
    assert shortcuts == [False, True, True, True, True, True]
    assert reads[-1] < reads[0]
