"""The git source over the network: HTTP through `git http-backend` behind a basic-auth server
on 127.0.0.1, and SSH through OpenSSH's sshd on loopback (tests/support/gitserver.py). Every
password and passphrase is a canary, so the session-end scan catches any leak into output,
errors or files (the clone cache is under the scanned temporary folder).
"""

from __future__ import annotations

import getpass
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pygit2
import pytest

from controller.adapters.gitsource import GitAuthError, GitSourceError
from controller.adapters.secrets import CredentialRefs, SecretRef, SecretStore
from controller.core.errors import Policy
from tests.support.canaries import canary, record_output, secret_file
from tests.support.gitserver import SSHD, GitHttpServer, SshServer
from tests.support.needs import need
from tests.support.upstream import SshKeys, Upstream, source


@dataclass
class CountingStore(SecretStore):
    """A secret store that counts the values it reads from their sources (not its cache)."""

    reads: int = field(default=0, init=False)

    def _read(self, ref: SecretRef) -> str:
        self.reads += 1
        return super()._read(ref)


GIT = shutil.which("git")


@pytest.fixture
def upstream(tmp_path: Path) -> Upstream:
    return Upstream(tmp_path / "upstream.git")


# --- HTTP with basic auth (git http-backend) -------------------------------------------------


@pytest.fixture
def served(upstream: Upstream) -> Iterator[tuple[Upstream, GitHttpServer]]:
    need(GIT is not None, "the git command (git http-backend) is not installed")
    with GitHttpServer(upstream.path.parent) as server:
        yield upstream, server


def _credentials(tmp_path: Path, password: str) -> tuple[CredentialRefs, Path]:
    secret_dir = tmp_path / "secrets"
    secret_dir.mkdir(exist_ok=True)
    user = secret_dir / "user"
    user.write_text("envship\n")
    password_file = secret_file(secret_dir / "password", password)
    refs = CredentialRefs(SecretRef.parse(f"file:{user}"), SecretRef.parse(f"file:{password_file}"))
    return refs, password_file


def _no_secret_in(folder: Path, *values: str) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for value in values:
                assert value.encode() not in data, path


def test_http_anonymous_fetch_and_round_trips(
    served: tuple[Upstream, GitHttpServer], tmp_path: Path
) -> None:
    upstream, server = served
    head = upstream.commit({"a.txt": "1\n"})
    git = source(server.url("upstream.git"), "main", tmp_path / "cache")
    assert git.fetch().commit == head
    assert [r.method for r in server.requests] == ["GET", "POST"]

    server.reset()
    started = time.perf_counter()
    assert git.fetch().commit == head
    seconds = time.perf_counter() - started
    record_output(f"http fetch with nothing new: {seconds * 1000:.1f} ms, {server.count()} request")
    assert [r.method for r in server.requests] == ["GET"]  # the ref advertisement only

    new = upstream.commit({"a.txt": "2\n"})
    server.reset()
    assert git.fetch().commit == new
    assert [r.method for r in server.requests] == ["GET", "POST"]


def test_http_basic_auth(served: tuple[Upstream, GitHttpServer], tmp_path: Path) -> None:
    upstream, server = served
    head = upstream.commit({"a.txt": "1\n"})
    password = canary("git")
    server.set_credentials("envship", password)
    refs, _ = _credentials(tmp_path, password)
    store = CountingStore()
    url = server.url("upstream.git").replace("http://", "http://someone@")
    git = source(url, "main", tmp_path / "cache", store, credentials=refs)

    assert git.fetch().commit == head
    assert server.rejected() == 0
    assert {r.user for r in server.requests if r.status == 200} == {"envship"}
    server.reset()
    started = time.perf_counter()
    assert git.fetch().commit == head
    seconds = time.perf_counter() - started
    statuses = [r.status for r in server.requests]
    record_output(f"http+auth fetch with nothing new: {seconds * 1000:.1f} ms, {statuses}")
    assert statuses == [401, 200]  # challenge, then the advertisement
    assert store.reads == 2  # user and password, read once (cached by the store)
    _no_secret_in(tmp_path / "cache", password)
    config = (tmp_path / "cache" / "config").read_text()
    assert "someone" not in config  # user-info never reaches the repository's configuration


def test_http_wrong_credentials_are_refused_without_echo(
    served: tuple[Upstream, GitHttpServer], tmp_path: Path
) -> None:
    upstream, server = served
    upstream.commit({"a.txt": "1\n"})
    server.set_credentials("envship", canary("git"))
    wrong = canary("git")
    refs, _ = _credentials(tmp_path, wrong)
    store = CountingStore()
    git = source(server.url("upstream.git"), "main", tmp_path / "cache", store, credentials=refs)
    with pytest.raises(GitAuthError) as caught:
        git.fetch()
    text = f"{caught.value} {caught.value!r} {caught.value.__cause__} {caught.value.__context__}"
    record_output(text)
    assert wrong not in text
    assert "refused the credentials" in str(caught.value)
    assert caught.value.policy is Policy.MISCONFIGURED  # the operator must act
    assert server.rejected() == 2  # tried, forgotten, read again, tried once more
    assert store.reads == 4
    assert git.fetches == 0


def test_http_rotated_credential_is_picked_up(
    served: tuple[Upstream, GitHttpServer], tmp_path: Path
) -> None:
    upstream, server = served
    head = upstream.commit({"a.txt": "1\n"})
    old = canary("git")
    server.set_credentials("envship", old)
    refs, password_file = _credentials(tmp_path, old)
    store = CountingStore(ttl=3600)
    git = source(server.url("upstream.git"), "main", tmp_path / "cache", store, credentials=refs)
    assert git.fetch().commit == head

    new = canary("git")
    server.set_credentials("envship", new)
    secret_file(password_file, new)  # the secret source is updated (e.g. Key Vault rotation)
    server.reset()
    assert git.fetch().commit == head  # the cached old value is refused, forgotten, re-read
    assert server.rejected() == 1
    server.reset()
    assert git.fetch().commit == head
    assert server.rejected() == 0


def test_http_without_configured_credentials(
    served: tuple[Upstream, GitHttpServer], tmp_path: Path
) -> None:
    upstream, server = served
    upstream.commit({"a.txt": "1\n"})
    server.set_credentials("envship", canary("git"))
    with pytest.raises(GitAuthError, match="none are configured"):
        source(server.url("upstream.git"), "main", tmp_path / "cache").fetch()


def test_credentials_are_not_sent_to_another_host(
    served: tuple[Upstream, GitHttpServer], tmp_path: Path
) -> None:
    upstream, target = served
    upstream.commit({"a.txt": "1\n"})
    password = canary("git")
    target.set_credentials("envship", password)
    refs, _ = _credentials(tmp_path, password)
    with GitHttpServer(upstream.path.parent) as redirector:
        redirector.redirect_to = f"http://localhost:{target.port}"
        git = source(redirector.url("upstream.git"), "main", tmp_path / "cache", credentials=refs)
        with pytest.raises(GitAuthError, match="another host") as caught:
            git.fetch()
        record_output(str(caught.value))
    assert target.requests
    assert not any(r.authorization for r in target.requests)


# --- SSH (OpenSSH's sshd on loopback, when installed) --------------------------------------


@pytest.fixture
def ssh(upstream: Upstream, tmp_path: Path) -> Iterator[tuple[SshServer, SshKeys, Path]]:
    """(server, key maker, known_hosts file); libgit2 reads known_hosts from its home folder."""
    need(
        Path(SSHD).exists() and bool(shutil.which("ssh-keygen")),
        "sshd (openssh-server) is not installed",
    )
    need(bool(pygit2.features & pygit2.enums.Feature.SSH), "pygit2 was built without SSH")
    keys = SshKeys(tmp_path / "keys")
    server = SshServer(tmp_path / "sshd", [])
    try:
        server.start()
    except RuntimeError as exc:
        record_output(str(exc))
        need(False, f"sshd cannot run here: {str(exc)[:200]}")
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    known_hosts = home / ".ssh" / "known_hosts"
    known_hosts.write_text(server.known_hosts)
    previous = pygit2.settings.homedir
    pygit2.settings.homedir = str(home)
    try:
        yield server, keys, known_hosts
    finally:
        pygit2.settings.homedir = previous
        server.stop()


def _ssh_url(server: SshServer, upstream: Upstream, user: bool = True) -> str:
    who = f"{getpass.getuser()}@" if user else ""
    return f"ssh://{who}127.0.0.1:{server.port}{upstream.path}"


def test_ssh_key_from_memory(
    ssh: tuple[SshServer, SshKeys, Path], upstream: Upstream, tmp_path: Path
) -> None:
    server, keys, _ = ssh
    head = upstream.commit({"a.txt": "1\n"})
    passphrase = canary("git")
    key, public = keys.make("deploy", passphrase)
    server.set_authorized_keys([public])
    store = CountingStore()
    git = source(
        _ssh_url(server, upstream, user=False),
        "main",
        tmp_path / "cache",
        store,
        ssh_key=SecretRef.parse(f"file:{key}"),
        ssh_passphrase=SecretRef.parse(f"file:{secret_file(tmp_path / 'passphrase', passphrase)}"),
        ssh_user=getpass.getuser(),
    )
    assert git.fetch().commit == head
    new = upstream.commit({"a.txt": "2\n"})
    assert git.fetch().commit == new
    assert git.fetches == 2
    assert store.reads == 2  # the key and its passphrase, each read once (the server took them)


def test_ssh_unknown_host_key_is_refused(
    ssh: tuple[SshServer, SshKeys, Path], upstream: Upstream, tmp_path: Path
) -> None:
    server, keys, known_hosts = ssh
    upstream.commit({"a.txt": "1\n"})
    key, public = keys.make("deploy")
    server.set_authorized_keys([public])
    other = SshKeys(tmp_path / "other-host").make("host")[1]
    for trusted in ("", f"[127.0.0.1]:{server.port} {' '.join(other.split()[:2])}\n"):
        known_hosts.write_text(trusted)
        git = source(
            _ssh_url(server, upstream),
            "main",
            tmp_path / "cache",
            ssh_key=SecretRef.parse(f"file:{key}"),
        )
        with pytest.raises(GitSourceError) as caught:
            git.fetch()
        record_output(str(caught.value))
        assert not isinstance(caught.value, GitAuthError)
        assert "Accepted publickey" not in server.log.read_text()


def test_ssh_rejected_key_and_rotation(
    ssh: tuple[SshServer, SshKeys, Path], upstream: Upstream, tmp_path: Path
) -> None:
    server, keys, _ = ssh
    head = upstream.commit({"a.txt": "1\n"})
    old, old_public = keys.make("old")
    new, new_public = keys.make("new")
    server.set_authorized_keys([old_public])
    current = tmp_path / "current-key"
    shutil.copyfile(old, current)
    store = CountingStore(ttl=3600)
    git = source(
        _ssh_url(server, upstream),
        "main",
        tmp_path / "cache",
        store,
        ssh_key=SecretRef.parse(f"file:{current}"),
    )
    assert git.fetch().commit == head

    # Rotation: the server trusts only the new key, the secret source holds it; the cached old
    # key is refused, forgotten, and the new one read.
    server.set_authorized_keys([new_public])
    shutil.copyfile(new, current)
    assert store.reads == 1
    assert git.fetch().commit == head
    assert store.reads == 2  # refused once, forgotten, read again

    # A key the server does not know: refused after one retry.
    server.set_authorized_keys([old_public])
    with pytest.raises(GitAuthError) as caught:
        git.fetch()
    assert store.reads == 3  # read again once, refused again: no loop
    record_output(str(caught.value))
