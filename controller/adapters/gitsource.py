"""A git repository as the source of specs (pygit2): fetch a ref, read its tree objects.

`GitSource.fetch()` keeps a bare clone in `GitSettings.cache_dir` (made once, reused across
restarts), fetches the tracked ref on every call with a forced refspec (force-pushes and rewritten
history are followed), and returns the `Revision` it resolved to: the commit, its root tree and a
label in Flux's format (`main@sha1:<40 hex>`). A pinned commit already in the cache is never
fetched again (commits do not change). Only the tracked ref is transferred, and a fetch with
nothing new costs one request to the server's ref advertisement (two with basic auth: the
challenge, then the answer).

`GitSource.tree()` reads a revision's tree straight from the object database
(`controller.adapters.gittree`): no working tree, no checkout, so nothing can change under a
reader and no file is written.

Credentials come from secret references, read when needed: HTTPS user and password (or token) are
answered to the server's challenge only, never placed in the URL, and only for the configured
host; an SSH private key is handed to libssh2 from memory. Nothing secret is written to disk. SSH
host keys must be in `~/.ssh/known_hosts` (libgit2 checks it; an unknown host is refused). When
the server rejects a credential, it is forgotten in the store and read again once (it may have
been rotated). Error text never holds a secret or a URL's user-info.

One `GitSource` owns its cache folder: two processes must not share one. Lock files left by a
process killed in the middle of a fetch are removed when the cache is opened.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import shutil
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

import pygit2
from pygit2.enums import CredentialType, FetchPrune

from controller.adapters.gittree import GitTree, Listings, NotATree
from controller.adapters.redact import redact
from controller.adapters.secrets import CredentialRefs, SecretRef, SecretStore
from controller.core.credentials import url_credential
from controller.core.errors import Policy, RetryLater

REMOTE = "origin"
LOCK_NAMES = ("HEAD.lock", "config.lock", "packed-refs.lock", "shallow.lock", "FETCH_HEAD.lock")
_HEX40 = re.compile(r"[0-9a-f]{40}")
_USERINFO = re.compile(r"(?P<scheme>\b[a-z][a-z0-9+.-]*://)[^/@\s]*@", re.IGNORECASE)
_AUTH_WORDS = ("auth", "401", "403", "credential")
"""In a libgit2 error after credentials were given: the server refused them."""


RefKind = Literal["branch", "tag", "name", "commit"]


class GitSourceError(RetryLater):
    """The git source could not be fetched or read (unreachable, refused, broken)."""


class GitAuthError(GitSourceError):
    """The server refused the credentials, also after reading them again."""

    policy = Policy.MISCONFIGURED


class GitRefError(GitSourceError):
    """The tracked branch, tag or commit does not exist at the remote."""

    policy = Policy.MISCONFIGURED


def public_text(text: str) -> str:
    """`text` without the user-info of any URL in it and without any known secret value."""
    return redact(_USERINFO.sub(lambda m: m.group("scheme"), text))


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _host_of(url: str) -> str | None:
    """The host of a URL (`scheme://`, or scp-like `user@host:path`); None for local paths."""
    if "://" in url:
        scheme = url.split("://", 1)[0].lower()
        if scheme == "file":
            return None
        return (urlsplit(url).hostname or "").lower()
    match = re.match(r"^(?:[^@/]+@)?(?P<host>[^:/]+):(?!/)", url)
    if match and not re.match(r"^[A-Za-z]:[\\/]", url):
        return match.group("host").lower()
    return None


@dataclass(frozen=True)
class GitSettings:
    """Where the specs come from. Secrets are references, read through a `SecretStore`."""

    url: str
    """`https://host/path`, `ssh://[user@]host/path`, `user@host:path`, `file://...` or a path."""
    ref: str
    """A branch (`main`, `refs/heads/main`), a tag (`v1`, `refs/tags/v1`) or a 40-hex commit.
    A short name is looked for as a branch first, then as a tag."""
    cache_dir: str | os.PathLike[str]
    """Folder of the bare clone (created on the first fetch, reused after)."""
    credentials: CredentialRefs | None = None
    """HTTPS user name and password or token."""
    ssh_key: SecretRef | None = None
    """An SSH private key (PEM or OpenSSH format)."""
    ssh_user: str = "git"
    """User name for SSH when the URL has none."""
    ssh_passphrase: SecretRef | None = None
    timeout: float | None = 60.0
    """Seconds to connect, and to wait for each read or write (libgit2's server timeouts; they
    are process-wide, so the last source to fetch sets them)."""
    proxy: str | Literal[True] | None = None
    """None: no proxy; True: from git configuration and the environment; or a proxy URL."""
    plain_http: bool = False
    """Allow sending credentials over plain HTTP to a host other than loopback."""

    def __post_init__(self) -> None:
        if not self.url.strip():
            raise ValueError("the git URL is empty")
        held = url_credential(self.url, user_allowed=True)
        if held is not None:
            raise ValueError(
                f"the git URL holds {held}; give it as credentials (a secret reference)"
            )
        if "://" in self.url:
            parts = urlsplit(self.url)
            if (
                parts.scheme.lower() == "http"
                and self.credentials is not None
                and not self.plain_http
                and not _is_loopback(parts.hostname or "")
            ):
                raise ValueError(
                    "credentials would be sent in clear text over http://; use https:// "
                    "(or allow plain HTTP explicitly)"
                )
        ref_kind(self.ref)

    @property
    def public_url(self) -> str:
        """The URL without user-info, for messages and status."""
        return public_text(self.url)

    @property
    def fetch_url(self) -> str:
        """The URL handed to libgit2: an HTTP(S) user name is dropped (the credentials give it)."""
        if "://" in self.url:
            parts = urlsplit(self.url)
            if parts.scheme.lower() in ("http", "https") and "@" in parts.netloc:
                netloc = parts.netloc.rsplit("@", 1)[1]
                return urlunsplit(parts._replace(netloc=netloc))
        return self.url


def ref_kind(ref: str) -> tuple[RefKind, str]:
    """How a configured ref is looked for: (`branch`|`tag`|`name`|`commit`, short name or sha)."""
    text = ref.strip()
    if _HEX40.fullmatch(text):
        return "commit", text
    if text.startswith("refs/heads/"):
        kind: RefKind = "branch"
        name = text.removeprefix("refs/heads/")
    elif text.startswith("refs/tags/"):
        kind, name = "tag", text.removeprefix("refs/tags/")
    elif text.startswith("refs/"):
        raise ValueError(f"ref {ref!r}: only refs/heads/ and refs/tags/ can be tracked")
    else:
        kind, name = "name", text
    if (
        not name
        or any(c in name for c in "*:?[\\^~ ")
        or name.startswith(("+", "-"))
        or not pygit2.reference_is_valid_name(f"refs/heads/{name}")
    ):
        raise ValueError(f"ref {ref!r} is not a valid branch or tag name")
    return kind, name


@dataclass(frozen=True)
class Revision:
    """What a fetch resolved to."""

    ref: str
    """The ref as configured."""
    commit: str
    tree: str
    """Object id of the commit's root tree: equal trees, equal files."""
    label: str
    """`<ref>@sha1:<commit>` (Flux's format), or `sha1:<commit>` for a pinned commit."""


def unchanged(previous: Revision | None, current: Revision) -> bool:
    """True when `current` is the revision seen last: same ref, same commit, nothing to do."""
    return (
        previous is not None
        and previous.commit == current.commit
        and previous.ref == current.ref
        and previous.tree == current.tree
    )


class _AuthRejected(Exception):
    """The server asked for credentials again after being given some (they were refused)."""


class _Callbacks(pygit2.RemoteCallbacks):
    """Answers the server's credential challenge from the secret store, once per attempt."""

    def __init__(self, source: GitSource) -> None:
        super().__init__()
        self.source = source
        self.offered = False

    def credentials(
        self, url: str, username_from_url: str | None, allowed_types: CredentialType
    ) -> pygit2.Username | pygit2.UserPass | pygit2.KeypairFromMemory:
        settings = self.source.settings
        host = _host_of(url)
        expected = _host_of(settings.fetch_url)
        if host != expected:
            raise GitAuthError(
                f"git fetch from {settings.public_url}: the server sent the client to another "
                f"host ({host}); credentials are only sent to {expected}"
            )
        secrets = self.source.secrets
        if allowed_types & CredentialType.USERNAME:
            # SSH asks for the user name first (when the URL has none), then for a key.
            return pygit2.Username(username_from_url or settings.ssh_user)
        if self.offered:
            raise _AuthRejected
        if allowed_types & (CredentialType.SSH_MEMORY | CredentialType.SSH_KEY):
            if settings.ssh_key is None:
                raise GitAuthError(
                    f"git fetch from {settings.public_url}: the server asks for an SSH key, "
                    "none is configured"
                )
            key = secrets.get(settings.ssh_key)
            passphrase = secrets.get(settings.ssh_passphrase) if settings.ssh_passphrase else ""
            self.offered = True
            return pygit2.KeypairFromMemory(
                username_from_url or settings.ssh_user, None, key, passphrase
            )
        if allowed_types & CredentialType.USERPASS_PLAINTEXT:
            if settings.credentials is None:
                raise GitAuthError(
                    f"git fetch from {settings.public_url}: the server asks for credentials, "
                    "none are configured"
                )
            username, password = settings.credentials.read(secrets)
            self.offered = True
            return pygit2.UserPass(username, password)
        raise GitAuthError(
            f"git fetch from {settings.public_url}: the server asks for an authentication "
            "envship does not offer"
        )

    def certificate_check(self, certificate: None, valid: bool, host: bytes) -> bool:
        # TLS: the certificate verified against the trusted CAs. SSH: the host key found in
        # known_hosts. pygit2's default would accept any SSH host key.
        return valid


class GitSource:
    """Fetches `settings.ref` into a bare clone and resolves it to a `Revision`."""

    def __init__(self, settings: GitSettings, secrets: SecretStore) -> None:
        self.settings = settings
        self.secrets = secrets
        self.fetches = 0
        """Fetches that reached the remote (a pinned commit already cached needs none)."""
        self.received_objects = 0
        """Objects the fetches received (a metric: an unchanged remote sends none)."""
        self.listings = Listings()
        """Folder listings of the last tree read, so the next one reads only what changed."""
        self._repository: pygit2.Repository | None = None
        self._lock = threading.Lock()

    @property
    def cache_dir(self) -> Path:
        return Path(self.settings.cache_dir)

    @property
    def repository(self) -> pygit2.Repository:
        """The bare clone (created when first needed)."""
        with self._lock:
            return self._open()

    def tree(self, revision: Revision) -> GitTree:
        """The files of `revision`, read from the object database."""
        try:
            return GitTree(self.repository, revision.tree, self.listings)
        except NotATree as exc:
            raise GitSourceError(str(exc)) from None

    def fetch(self) -> Revision:
        """Fetch the tracked ref (unless a pinned commit is cached) and resolve it.

        Raises `GitRefError` (no such ref), `GitAuthError` (credentials refused twice),
        `GitSourceError` (unreachable, timed out, a broken cache) or the store's `SecretError`.
        """
        with self._lock:
            repository = self._open()
            kind, name = ref_kind(self.settings.ref)
            if kind == "commit":
                return self._pinned_commit(repository, name)
            refspecs = []
            if kind in ("branch", "name"):
                refspecs.append(f"+refs/heads/{name}:refs/remotes/{REMOTE}/{name}")
            if kind in ("tag", "name"):
                refspecs.append(f"+refs/tags/{name}:refs/tags/{name}")
            advertised = self._fetch(repository, refspecs)
            for refspec in refspecs:
                source = refspec[1:].split(":", 1)[0]
                if source in advertised:
                    return self._revision(repository, advertised[source])
            what = {"branch": "branch", "tag": "tag", "name": "branch or tag"}[kind]
            raise GitRefError(
                f"git fetch from {self.settings.public_url}: no {what} {name!r} at the remote"
            )

    def _pinned_commit(self, repository: pygit2.Repository, sha: str) -> Revision:
        oid = pygit2.Oid(hex=sha)
        if oid not in repository:
            # A commit can only be asked for by a ref: fetch every branch and tag, once.
            self._fetch(
                repository,
                [f"+refs/heads/*:refs/remotes/{REMOTE}/*", "+refs/tags/*:refs/tags/*"],
            )
            if oid not in repository:
                raise GitRefError(
                    f"git fetch from {self.settings.public_url}: commit {sha} is in no branch "
                    "or tag of the remote"
                )
        return self._revision(repository, oid)

    def _revision(self, repository: pygit2.Repository, oid: pygit2.Oid) -> Revision:
        try:
            commit = repository[oid].peel(pygit2.Commit)
        except (KeyError, ValueError, pygit2.GitError) as exc:
            raise GitRefError(
                f"git fetch from {self.settings.public_url}: {self.settings.ref!r} is not a "
                f"commit ({public_text(str(exc))})"
            ) from None
        sha = str(commit.id)
        kind, _ = ref_kind(self.settings.ref)
        label = f"sha1:{sha}" if kind == "commit" else f"{self.settings.ref}@sha1:{sha}"
        return Revision(self.settings.ref, sha, str(commit.tree_id), label)

    def _fetch(self, repository: pygit2.Repository, refspecs: list[str]) -> dict[str, pygit2.Oid]:
        """Fetch `refspecs`; the refs the remote advertised (name -> object id)."""
        settings = self.settings
        if settings.timeout is not None:
            milliseconds = max(1, int(settings.timeout * 1000))
            pygit2.settings.server_connect_timeout = milliseconds
            pygit2.settings.server_timeout = milliseconds
        remote = repository.remotes[REMOTE]
        for _attempt in (1, 2):  # once, and once more with the credentials read again
            callbacks = _Callbacks(self)
            try:
                stats = remote.fetch(
                    refspecs, callbacks=callbacks, prune=FetchPrune.NO_PRUNE, proxy=settings.proxy
                )
            except _AuthRejected:
                rejected = True
            except GitSourceError:
                raise
            except pygit2.GitError as exc:
                text = str(exc).lower()
                rejected = callbacks.offered and any(word in text for word in _AUTH_WORDS)
                if not rejected:
                    raise GitSourceError(
                        f"git fetch from {settings.public_url}: {public_text(str(exc))}"
                    ) from None
            else:
                self.fetches += 1
                self.received_objects += stats.received_objects
                heads = remote.list_heads(connect=False)
                return {head.name: head.oid for head in heads if head.name is not None}
            self._forget_credentials()
        raise GitAuthError(
            f"git fetch from {settings.public_url}: the server refused the credentials "
            "(also after reading them again)"
        )

    def _forget_credentials(self) -> None:
        settings = self.settings
        if settings.credentials is not None:
            settings.credentials.forget(self.secrets)
        refs = [ref for ref in (settings.ssh_key, settings.ssh_passphrase) if ref is not None]
        if refs:
            self.secrets.forget(*refs)

    def _open(self) -> pygit2.Repository:
        """The cache's bare repository: opened, or made (atomically) on first use."""
        if self._repository is not None:
            return self._repository
        path = self.cache_dir
        if not path.exists():
            _remove_leftovers_of_create(path)
            self._create(path)
        try:
            repository = pygit2.Repository(os.fspath(path))
        except pygit2.GitError as exc:
            raise GitSourceError(
                f"the git cache {path} is not a git repository ({public_text(str(exc))}); "
                "remove it or choose another folder"
            ) from None
        if not repository.is_bare:
            raise GitSourceError(f"the git cache {path} is not a bare repository")
        _remove_leftovers_of_fetch(Path(repository.path))
        with contextlib.suppress(OSError):  # a cache made before envship kept it private
            os.chmod(path, 0o700)
        url = self.settings.fetch_url
        if REMOTE not in repository.remotes.names():
            repository.remotes.create(REMOTE, url)
        elif repository.remotes[REMOTE].url != url:
            repository.remotes.set_url(REMOTE, url)
        tagopt = f"remote.{REMOTE}.tagopt"
        if tagopt not in repository.config or repository.config[tagopt] != "--no-tags":
            # Tags are fetched only when tracked, never followed along with a branch.
            repository.config[tagopt] = "--no-tags"
        self._repository = repository
        return repository

    def _create(self, path: Path) -> None:
        """Make the bare repository beside `path`, then move it there in one rename."""
        path.parent.mkdir(parents=True, exist_ok=True)
        building = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        try:
            repository = pygit2.init_repository(os.fspath(building), bare=True)
            os.chmod(building, 0o700)  # the cache is the controller's alone
            repository.remotes.create(REMOTE, self.settings.fetch_url)
            repository.config[f"remote.{REMOTE}.tagopt"] = "--no-tags"
            del repository
            building.rename(path)
        except OSError as exc:
            shutil.rmtree(building, ignore_errors=True)
            if path.is_dir():
                return  # made meanwhile by another thread of this process
            raise GitSourceError(
                f"the git cache {path} cannot be created ({exc.strerror or exc})"
            ) from None


def _remove_leftovers_of_create(path: Path) -> None:
    """Half-made caches of a process killed while making one (see `GitSource._create`)."""
    if path.parent.is_dir():
        for leftover in path.parent.glob(f".{path.name}.*.tmp"):
            shutil.rmtree(leftover, ignore_errors=True)


def _remove_leftovers_of_fetch(git_dir: Path) -> None:
    """Lock files and partial packs left by a process killed mid-fetch: a stale lock would
    fail every later fetch. Safe because this process is the cache's only user."""
    for name in LOCK_NAMES:
        (git_dir / name).unlink(missing_ok=True)
    refs = git_dir / "refs"
    if refs.is_dir():
        for lock in refs.rglob("*.lock"):
            lock.unlink(missing_ok=True)
    packs = git_dir / "objects" / "pack"
    if packs.is_dir():
        for partial in packs.glob("pack_git2_*"):
            partial.unlink(missing_ok=True)


__all__ = [
    "GitAuthError",
    "GitRefError",
    "GitSettings",
    "GitSource",
    "GitSourceError",
    "Revision",
    "public_text",
    "ref_kind",
    "unchanged",
]
