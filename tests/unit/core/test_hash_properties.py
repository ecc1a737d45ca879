"""The content hash ignores what cannot change the image and follows everything that can.

Property-based: hypothesis generates specs and layout variations; golden values live in
test_golden.py.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.adapters.folder import FolderTree
from controller.core import hashing
from controller.core.discovery import DiscoveryOptions, discover
from controller.core.plan import plan
from controller.core.tree import Blob
from tests.support.helpers import hash_of

names = st.from_regex(r"[a-z][a-z0-9]{0,8}", fullmatch=True)
versions = st.from_regex(r"[0-9]{1,2}(\.[0-9]{1,2}){0,2}", fullmatch=True)
packages = st.lists(st.tuples(names, versions), min_size=1, max_size=8, unique_by=lambda p: p[0])
channels = st.lists(names, min_size=1, max_size=4, unique=True)
env_vars = st.dictionaries(st.from_regex(r"[A-Z][A-Z0-9_]{0,8}", fullmatch=True), names, max_size=4)


def conda_doc(pkgs: list[tuple[str, str]], chans: list[str], pip: list[tuple[str, str]]) -> dict:
    deps: list = [f"{n}={v}" for n, v in pkgs]
    if pip:
        deps.append({"pip": [f"{n}=={v}" for n, v in pip]})
    return {"name": "whatever", "channels": chans, "dependencies": deps}


def v1_files(doc: dict, conda: dict | None, *, indent: int | None = 4, shuffle: int = 0) -> dict:
    def shuffled(value: object, rng: random.Random) -> object:
        if isinstance(value, dict):
            items = list(value.items())
            rng.shuffle(items)
            return {k: shuffled(v, rng) for k, v in items}
        return value

    rng = random.Random(shuffle)
    text = json.dumps(shuffled(doc, rng) if shuffle else doc, indent=indent)
    files = {"e/azureml_environment.json": text}
    if conda is not None:
        files["e/conda_dependencies.yml"] = yaml.safe_dump(conda)
    return files


def v1_doc(name: str, variables: dict[str, str], base: str = "mcr.microsoft.com/x/y:1") -> dict:
    return {
        "name": name,
        "version": "1",
        "environmentVariables": variables,
        "python": {"userManagedDependencies": False, "interpreterPath": "python"},
        "docker": {"baseImage": base, "platform": {"os": "Linux", "architecture": "amd64"}},
    }


@settings(max_examples=60, deadline=None)
@given(
    names,
    names,
    versions,
    env_vars,
    packages,
    channels,
    st.integers(0, 10_000),
    st.sampled_from([None, 0, 2, 4]),
)
def test_name_version_and_json_layout_never_change_the_hash(
    name_a, name_b, version, variables, pkgs, chans, seed, indent
):
    conda = conda_doc(pkgs, chans, [])
    doc_a = v1_doc(name_a, variables)
    doc_b = {**v1_doc(name_b, variables), "version": version, "autoRebuild": "x"}
    a = hash_of(v1_files(doc_a, conda), "e")
    b = hash_of(v1_files(doc_b, conda, indent=indent, shuffle=seed), "e")
    assert a == b


@pytest.mark.slow
@settings(max_examples=60, deadline=None)
@given(packages, channels, packages, st.randoms(use_true_random=False))
def test_dependency_order_and_yaml_layout_never_change_the_hash(pkgs, chans, pip, rnd):
    doc = conda_doc(pkgs, chans, pip)
    shuffled = conda_doc(rnd.sample(pkgs, len(pkgs)), chans, rnd.sample(pip, len(pip)))
    plain = {"c/env.yml": yaml.safe_dump(doc, default_flow_style=False)}
    flow = {"c/env.yml": "# a comment\n" + yaml.safe_dump(shuffled, default_flow_style=True)}
    assert hash_of(plain, "c/env.yml") == hash_of(flow, "c/env.yml")


@settings(max_examples=60, deadline=None)
@given(packages, channels, st.data())
def test_any_pin_change_changes_the_hash(pkgs, chans, data):
    index = data.draw(st.integers(0, len(pkgs) - 1))
    name, version = pkgs[index]
    changed = list(pkgs)
    changed[index] = (name, version + ".1")
    a = hash_of({"c/env.yml": yaml.safe_dump(conda_doc(pkgs, chans, []))}, "c/env.yml")
    b = hash_of({"c/env.yml": yaml.safe_dump(conda_doc(changed, chans, []))}, "c/env.yml")
    assert a != b


@settings(max_examples=40, deadline=None)
@given(packages, st.lists(names, min_size=2, max_size=4, unique=True))
def test_channel_order_changes_the_hash(pkgs, chans):
    a = hash_of({"c/env.yml": yaml.safe_dump(conda_doc(pkgs, chans, []))}, "c/env.yml")
    b = hash_of({"c/env.yml": yaml.safe_dump(conda_doc(pkgs, chans[::-1], []))}, "c/env.yml")
    assert a != b


@settings(max_examples=40, deadline=None)
@given(env_vars, st.from_regex(r"[A-Z][A-Z0-9_]{0,8}", fullmatch=True), names)
def test_environment_variables_change_the_hash(variables, key, value):
    changed = {**variables, key: value + "x"}
    conda = conda_doc([("python", "3.11")], ["conda-forge"], [])
    a = hash_of(v1_files(v1_doc("e", variables), conda), "e")
    b = hash_of(v1_files(v1_doc("e", changed), conda), "e")
    assert a != b


def test_base_image_platform_and_python_mode_change_the_hash():
    conda = conda_doc([("python", "3.11")], ["conda-forge"], [])
    base = hash_of(v1_files(v1_doc("e", {}), conda), "e")
    other_base = hash_of(v1_files(v1_doc("e", {}, base="mcr.microsoft.com/x/y:2"), conda), "e")
    arm = v1_doc("e", {})
    arm["docker"]["platform"]["architecture"] = "arm64"
    user = v1_doc("e", {})
    user["python"]["userManagedDependencies"] = True
    user_other = v1_doc("e", {})
    user_other["python"] = {"userManagedDependencies": True, "interpreterPath": "/opt/py"}
    hashes = {
        base,
        other_base,
        hash_of(v1_files(arm, conda), "e"),
        hash_of(v1_files(user, conda), "e"),
        hash_of(v1_files(user_other, conda), "e"),
    }
    assert len(hashes) == 5


@settings(max_examples=40, deadline=None)
@given(st.binary(max_size=64), st.binary(max_size=64), st.booleans())
def test_context_bytes_and_exec_bits_change_the_hash(content, other, executable):
    def repo(data: bytes, exe: bool) -> dict:
        return {"d/Dockerfile": b"FROM busybox\nCOPY run.sh /\n", "d/run.sh": Blob(data, exe)}

    same = hash_of(repo(content, executable), "d") == hash_of(repo(other, executable), "d")
    assert same == (content == other)
    assert hash_of(repo(content, True), "d") != hash_of(repo(content, False), "d")


def test_dockerfile_bytes_and_v2_metadata():
    def v2(description: str, dockerfile: str, tags: str = "") -> dict:
        return {
            "a.yml": (
                f"name: a\nversion: 3\ndescription: {description}\n{tags}build:\n  path: ctx\n"
            ),
            "ctx/Dockerfile": dockerfile,
        }

    first = hash_of(v2("one", "FROM busybox\n"), "a.yml")
    assert first == hash_of(v2("two", "FROM busybox\n", "tags:\n  team: x\n"), "a.yml")
    assert first != hash_of(v2("one", "FROM busybox\nRUN true\n"), "a.yml")


def test_scheme_version_is_part_of_the_hash(monkeypatch: pytest.MonkeyPatch):
    files = {"d/Dockerfile": "FROM busybox\n"}
    before = hash_of(files, "d")
    monkeypatch.setattr(hashing, "SCHEME", "envship/999")
    assert hash_of(files, "d") != before


def test_mtimes_and_owners_never_change_the_hash(tmp_path: Path):
    folder = tmp_path / "repo" / "d"
    folder.mkdir(parents=True)
    (folder / "Dockerfile").write_text("FROM busybox\nCOPY x /x\n")
    (folder / "x").write_text("data")

    def current() -> str | None:
        return plan(discover(FolderTree(tmp_path / "repo"), DiscoveryOptions()))[0].hash

    first = current()
    os.utime(folder / "x", (1, 1))
    os.utime(folder / "Dockerfile", (2_000_000_000, 2_000_000_000))
    if os.geteuid() == 0:
        os.chown(folder / "x", 12345, 12345)
    assert current() == first
    (folder / "x").chmod(0o755)
    assert current() != first


def test_requirements_layout_is_ignored_but_content_is_not():
    a = {"p/requirements.txt": "numpy==2.1\npandas>=2,<3\n"}
    b = {"p/requirements.txt": "# comment\n\nPandas <3 , >=2  # inline\r\nnumpy == 2.1\n"}
    c = {"p/requirements.txt": "numpy==2.2\npandas>=2,<3\n"}
    assert hash_of(a, "p") == hash_of(b, "p")
    assert hash_of(a, "p") != hash_of(c, "p")
