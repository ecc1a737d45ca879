"""Unit tests of the pieces a sync is made of (no engine, no registry)."""

from __future__ import annotations

import tarfile
from io import BytesIO

import pygit2
import pytest

from controller.adapters.acr import parse_challenge, token_expiry
from controller.adapters.builder import context_tar
from controller.adapters.gitinfo import provenance, public_url
from controller.adapters.redact import redact
from controller.adapters.registry import is_loopback
from controller.adapters.secrets import CredentialRefs, SecretError, SecretRef, SecretStore
from controller.core.dockerfile import from_references, pin
from controller.core.explain import differences
from controller.core.hashing import content_hash, hash_input
from controller.core.model import BuildSpec, ContextFile, PythonSetup
from controller.core.plan import plan
from controller.core.render import render
from controller.pipeline.sync import Target
from tests.support.helpers import plan_files

DOCKERFILE = """ARG BASE=ubuntu:22.04
FROM --platform=linux/amd64 python:3.11-slim AS builder
RUN pip wheel -w /w .
FROM ${BASE}
FROM builder AS again
FROM scratch
FROM registry.example.com:5000/team/base:1 as final
COPY --from=builder /w /w
"""


def test_from_references_skips_stages_and_scratch_and_follows_arg_defaults():
    assert from_references(DOCKERFILE) == [
        "python:3.11-slim",
        "ubuntu:22.04",
        "registry.example.com:5000/team/base:1",
    ]


def test_pin_rewrites_only_the_resolved_lines():
    pinned = pin(DOCKERFILE, {"python:3.11-slim": "sha256:" + "a" * 64})
    assert (
        "FROM --platform=linux/amd64 python:3.11-slim@sha256:" + "a" * 64 + " AS builder" in pinned
    )
    assert "FROM registry.example.com:5000/team/base:1 as final" in pinned
    assert pin(DOCKERFILE, {}) == DOCKERFILE


def test_base_digests_enter_the_hash_and_the_rendered_from_line():
    build = BuildSpec(python=PythonSetup("none"), base_image="busybox:1")
    pinned = BuildSpec(
        python=PythonSetup("none"),
        base_image="busybox:1",
        base_digests=(("busybox:1", "sha256:" + "b" * 64),),
    )
    assert content_hash(build) != content_hash(pinned)
    assert hash_input(pinned)["base"] == {"image": "busybox:1", "digest": "sha256:" + "b" * 64}
    # the tag stays for readers; Docker pulls by the digest
    assert "FROM busybox:1@sha256:" + "b" * 64 in render(pinned, content_hash(pinned)).dockerfile


def test_plan_with_a_registry_marks_up_to_date_copy_and_build():
    files = {
        "a/Dockerfile": "FROM busybox\n",
        "b/Dockerfile": "FROM busybox\n",
        "c/Dockerfile": "FROM busybox\nRUN true\n",
        "d/Dockerfile": "FROM busybox\nRUN false\n",
        "e/Dockerfile": "FROM busybox\nRUN false\n",
    }
    offline = plan_files(files)
    tag_ab = offline["a"].tag
    tag_de = offline["d"].tag
    present = {("envship/b", tag_ab): "sha256:" + "1" * 64, ("envship/c", offline["c"].tag): None}
    items = {i.env.path: i for i in plan([i.env for i in offline.values()], "reg:5000", present)}
    assert items["b"].action == "up-to-date"
    assert (items["a"].action, items["a"].source) == ("copy", "envship/b")
    assert items["c"].action == "build"
    assert (items["d"].action, items["e"].action) == ("build", "copy")
    assert items["e"].source == "envship/d"
    assert items["d"].tag == tag_de
    assert items["a"].image == f"reg:5000/envship/a:{tag_ab}"


def test_explain_names_changed_dependencies_files_and_values():
    old = {
        "python": {"conda": {"dependencies": ["numpy=1", "pandas"], "channels": ["a", "b"]}},
        "context": [["Dockerfile", "file", "1"], ["x", "file", "2"]],
        "environment": {"A": "1"},
    }
    new = {
        "python": {"conda": {"dependencies": ["numpy=2", "pandas"], "channels": ["b", "a"]}},
        "context": [["Dockerfile", "file", "9"], ["y", "exec", "3"]],
        "environment": {"A": "2", "B": "3"},
    }
    assert differences(old, new) == [
        "context: file Dockerfile changed",
        "context: file x removed",
        "context: file y added",
        "environment.A: 1 -> 2",
        "environment.B: added 3",
        "python.conda.channels: order changed",
        "python.conda.dependencies: + numpy=2, - numpy=1",
    ]
    assert differences(old, old) == []


def test_context_tar_is_byte_identical_and_keeps_modes_and_links():
    build = BuildSpec(
        python=PythonSetup("user"),
        dockerfile_path="Dockerfile",
        context=(
            ContextFile("Dockerfile", b"FROM busybox\n"),
            ContextFile("bin/run.sh", b"#!/bin/sh\n", executable=True),
            ContextFile("link", b"", link_target="bin/run.sh"),
        ),
    )
    rendered = render(build, content_hash(build))
    first, second = context_tar(rendered), context_tar(rendered)
    assert first == second
    with tarfile.open(fileobj=BytesIO(first)) as archive:
        members = {m.name: m for m in archive.getmembers()}
    assert members["bin/run.sh"].mode == 0o755
    assert members["Dockerfile"].mode == 0o644
    assert members["link"].issym()
    assert members["link"].linkname == "bin/run.sh"
    assert {m.mtime for m in members.values()} == {0}
    assert {m.uid for m in members.values()} == {0}


def test_acr_token_helpers():
    header = (
        'Bearer realm="https://r.azurecr.io/oauth2/token",service="r.azurecr.io",'
        'scope="repository:a/b:pull,push"'
    )
    assert parse_challenge(header) == {
        "realm": "https://r.azurecr.io/oauth2/token",
        "service": "r.azurecr.io",
        "scope": "repository:a/b:pull,push",
    }
    # {"exp": 1700000000} as an unsigned JWT payload
    assert token_expiry("x.eyJleHAiOiAxNzAwMDAwMDAwfQ.y") == 1700000000
    assert token_expiry("not-a-jwt") == 0


def test_secret_references_never_echo_values(monkeypatch: pytest.MonkeyPatch, tmp_path):
    store = SecretStore()
    monkeypatch.setenv("SECRET_X", "value-123")
    assert store.get(SecretRef.parse("env:SECRET_X")) == "value-123"
    (tmp_path / "s").write_text("file-secret\n")
    assert store.get(SecretRef.parse(f"file:{tmp_path / 's'}")) == "file-secret"
    with pytest.raises(SecretError, match="not set"):
        store.get(SecretRef.parse("env:MISSING_SECRET_X"))
    with pytest.raises(SecretError) as literal:
        SecretRef.parse("hunter2-literal-password")
    assert "hunter2-literal-password" not in str(literal.value)
    vault = SecretRef.parse("keyvault://myvault/db-password/0123abcd")
    assert vault.vault_url == "https://myvault.vault.azure.net"
    assert vault.secret_name == ("db-password", "0123abcd")
    assert SecretRef.parse("keyvault://127.0.0.1:8443/x").vault_url == "https://127.0.0.1:8443"
    for bad in ("keyvault://only-vault", "keyvault:/v/n", "vault://v/n", "env:"):
        with pytest.raises(SecretError):
            SecretRef.parse(bad)


def test_cached_values_expire_and_can_be_forgotten(monkeypatch: pytest.MonkeyPatch):
    store = SecretStore(ttl=3600)
    ref = SecretRef.parse("env:ROTATING_X")
    monkeypatch.setenv("ROTATING_X", "first-value")
    assert store.get(ref) == "first-value"
    monkeypatch.setenv("ROTATING_X", "second-value")
    assert store.get(ref) == "first-value"  # cached
    store.forget(ref)
    assert store.get(ref) == "second-value"
    assert SecretStore(ttl=0).get(ref) == "second-value"


def test_every_secret_read_is_redacted(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("REDACT_ME_X", "s3cr3t/v@lue")
    SecretStore().get(SecretRef.parse("env:REDACT_ME_X"))
    text = "login with s3cr3t/v@lue at https://u:s3cr3t%2Fv%40lue@host/"
    assert redact(text) == "login with *** at https://u:***@host/"
    assert redact("abc") == "abc"


def test_target_and_loopback():
    assert Target.parse("127.0.0.1:5000", "envship") == Target("127.0.0.1:5000", "envship")
    assert Target.parse("myacr.azurecr.io/team/ml/", "envship") == Target(
        "myacr.azurecr.io", "team/ml"
    )
    with pytest.raises(ValueError, match="not a URL"):
        Target.parse("https://myacr.azurecr.io", "envship")
    assert is_loopback("127.0.0.1:5000")
    assert is_loopback("localhost:5000")
    assert is_loopback("127.1.2.3")
    assert not is_loopback("myacr.azurecr.io")
    assert not is_loopback("10.0.0.1:5000")


def test_provenance_of_a_checkout_hides_credentials(tmp_path):
    assert provenance(str(tmp_path)).revision is None
    repo = pygit2.init_repository(str(tmp_path / "r"))
    (tmp_path / "r" / "f").write_text("x")
    repo.index.add("f")
    repo.index.write()
    signature = pygit2.Signature("t", "t@example.org")
    commit = repo.create_commit("HEAD", signature, signature, "m", repo.index.write_tree(), [])
    repo.remotes.create("origin", "https://user:tok-123@example.org/team/specs.git")
    found = provenance(str(tmp_path / "r"))
    assert found.revision == str(commit)
    assert found.source == "https://example.org/team/specs.git"
    assert public_url("git@github.com:team/specs.git") == "git@github.com:team/specs.git"


def test_user_names_are_not_masked(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("U_NAME_X", "plainuser")
    monkeypatch.setenv("U_PASS_X", "not-a-word-42")
    refs = CredentialRefs(SecretRef.parse("env:U_NAME_X"), SecretRef.parse("env:U_PASS_X"))
    assert refs.read(SecretStore()) == ("plainuser", "not-a-word-42")
    assert redact("plainuser logs in with not-a-word-42") == "plainuser logs in with ***"
