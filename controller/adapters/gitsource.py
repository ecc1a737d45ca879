"""A git repository as the source of specs (pygit2): fetch a ref, read its tree objects.

`GitSource.fetch()` keeps a bare clone in `GitSettings.cache_dir` (made once, reused across
restarts), fetches the tracked ref on every call with a forced refspec (force-pushes and rewritten
history are followed), and returns the `Revision` it resolved to: the commit, its root tree and a
label in Flux's format (`main@sha1:<40 hex>`). A pinned commit already in the cache is never
fetched again (commits do not change). Only the tracked ref is transferred, and a fetch with
nothing new costs one request to the server's ref advertisement (two with basic auth: the
challenge, then the answer).

`GitTree` reads a tree object straight from the object database: no working tree, no checkout, so
nothing can change under a reader and no file is written. `folder_ids` gives the object id of
folders (and files) of a tree: equal ids mean equal content, so a controller can skip folders it
has already parsed.

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

import ipaddress
import os
import re
import shutil
import threading
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

import pygit2
from pygit2.enums import CredentialType, FetchPrune, ObjectType

from controller.adapters.redact import redact
from controller.adapters.secrets import CredentialRefs, SecretRef, SecretStore
from controller.core.tree import Entry

REMOTE = "origin"
LOCK_NAMES = ("HEAD.lock", "config.lock", "packed-refs.lock", "shallow.lock", "FETCH_HEAD.lock")
_HEX40 = re.compile(r"[0-9a-f]{40}")
_USERINFO = re.compile(r"(?P<scheme>\b[a-z][a-z0-9+.-]*://)[^/@\s]*@", re.IGNORECASE)
_AUTH_WORDS = ("auth", "401", "403", "credential")
"""In a libgit2 error after credentials were given: the server refused them."""

_MODE_TREE = 0o040000
_MODE_BLOB = 0o100644
_MODE_BLOB_GROUP_WRITABLE = 0o100664
_MODE_EXECUTABLE = 0o100755
_MODE_LINK = 0o120000
_MODE_COMMIT = 0o160000
_SKIPPED_NAMES = frozenset({"", ".", "..", ".git"})

RefKind = Literal["branch", "tag", "name", "commit"]


class GitSourceError(Exception):
    """The git source could not be fetched or read (unreachable, refused, broken)."""

    action = "retry later"


class GitAuthError(GitSourceError):
    """The server refused the credentials, also after reading them again."""

    action = "check the git credentials"


class GitRefError(GitSourceError):
    """The tracked branch, tag or commit does not exist at the remote."""

    action = "check the ref in the configuration"


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
        if "://" in self.url:
            parts = urlsplit(self.url)
            if parts.password is not None:
                raise ValueError(
                    "the git URL holds a password; give it as credentials (a secret reference)"
                )
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
        self.auth_retries = 0
        """Fetches retried after the server refused a credential (then read again)."""
        self.received_objects = 0
        self.received_bytes = 0
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
        return GitTree(self.repository, revision.tree, self.listings)

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
        for attempt in (1, 2):
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
                self.received_bytes += stats.received_bytes
                heads = remote.list_heads(connect=False)
                return {head.name: head.oid for head in heads if head.name is not None}
            self._forget_credentials()
            if attempt == 1:
                self.auth_retries += 1
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


@dataclass(frozen=True, slots=True)
class _Listing:
    """Everything below one folder of a tree: entries and blob ids by full path."""

    entries: dict[str, Entry]
    blobs: dict[str, pygit2.Oid]
    children: tuple[tuple[str, pygit2.Oid], ...]
    """(path prefix, tree id) of the folders directly inside."""
    folders: dict[str, pygit2.Oid]
    """Tree id of every folder below, by path (no trailing slash)."""


_Key = tuple[str, pygit2.Oid]


class Listings:
    """Folder listings of the last tree listed through it, reused by the next listing.

    A folder with the same tree id at the same path has the same entries, so listing a new
    commit reads only the folders that changed (and their parents). Only the folders of the
    latest tree are kept, so memory stays proportional to one tree.
    """

    def __init__(self) -> None:
        self._kept: dict[_Key, _Listing] = {}
        self._lock = threading.Lock()
        self.reused = 0
        """Folders taken from the previous listing instead of read again (a counter)."""

    def get(self) -> dict[_Key, _Listing]:
        with self._lock:
            return self._kept

    def keep(self, kept: dict[_Key, _Listing], reused: int) -> None:
        with self._lock:
            self._kept = kept
            self.reused += reused


class GitTree:
    """A git tree object as a `SourceTree`: entries listed and blobs read from the object store.

    Mode 100755 is executable, 120000 a symlink (its target is the blob), submodules (commit
    entries) are skipped, as are names git itself refuses (`.`, `..`, `.git`, names with `/`).
    Sizes come from object headers, without reading content. The listing is made once, on first
    use; with `listings` (shared by the trees of one source) unchanged folders are not re-read.
    """

    def __init__(
        self,
        repository: pygit2.Repository,
        tree_oid: str | pygit2.Oid,
        listings: Listings | None = None,
    ) -> None:
        self.repository = repository
        oid = tree_oid if isinstance(tree_oid, pygit2.Oid) else pygit2.Oid(hex=tree_oid)
        root = repository.get(oid)
        if root is None or not isinstance(root, pygit2.Tree):
            raise GitSourceError(f"object {oid} is not a tree of the git cache")
        self.root: pygit2.Tree = root
        self.oid = str(oid)
        self.listings = listings
        self._listing: _Listing | None = None

    def entries(self) -> Mapping[str, Entry]:
        return self._list().entries

    def _list(self) -> _Listing:
        if self._listing is None:
            previous = self.listings.get() if self.listings is not None else {}
            kept: dict[_Key, _Listing] = {}
            reused = _list_tree(self.repository, self.root, previous, kept)
            self._listing = kept[("", self.root.id)]
            if self.listings is not None:
                self.listings.keep(kept, reused)
        return self._listing

    def read(self, path: str, max_bytes: int) -> bytes:
        listing = self._list()
        oid = listing.blobs.get(path)
        if oid is None:
            if path in listing.entries:
                raise OSError(f"{path} is not a regular file")
            raise FileNotFoundError(path)
        blob = self.repository[oid]
        data: bytes = blob.read_raw()
        return data if len(data) <= max_bytes + 1 else data[: max_bytes + 1]

    def modified_since(self, previous: str) -> set[str] | None:
        """Paths changed in place since tree `previous` (None: anything else changed)."""
        return _modified_paths(self.repository, previous, self.root)

    def object_id(self, path: str) -> str | None:
        """The object id at `path` ('' is the root): a tree for a folder, a blob for a file."""
        if not path:
            return self.oid
        listing = self._list()  # answers from the listing: a dict look-up, not a tree walk
        found = listing.blobs.get(path) or listing.folders.get(path)
        if found is not None:
            return str(found)
        if path not in listing.entries:  # not a file, folder or link of this tree
            return None
        try:
            entry = self.root[path]
        except KeyError:
            return None
        if entry.type == ObjectType.COMMIT:
            return None
        return str(entry.id)


def _kind_of(mode: int) -> str:
    if mode == _MODE_TREE:
        return "folder"
    if mode == _MODE_COMMIT:
        return "submodule"
    return "link" if mode == _MODE_LINK else "file"


def _modified_paths(repository: pygit2.Repository, old: str, new: pygit2.Tree) -> set[str] | None:
    """`GitTree.modified_since`: the two trees compared by object id, descending only into
    folders whose id differs, so the cost is that of the change (libgit2's own tree diff reads
    far more of a large tree)."""
    try:
        before = repository.get(old)
    except ValueError:
        return None
    if not isinstance(before, pygit2.Tree):
        return None
    paths: set[str] = set()
    stack: list[tuple[str, pygit2.Tree, pygit2.Tree]] = [("", before, new)]
    while stack:
        prefix, old_tree, new_tree = stack.pop()
        if old_tree.id == new_tree.id:
            continue
        olds = {item.raw_name: item for item in old_tree}
        news = {item.raw_name: item for item in new_tree}
        if olds.keys() != news.keys():
            return None  # something added, removed or renamed
        for raw, item in news.items():
            was = olds[raw]
            if was.id == item.id and was.filemode == item.filemode:
                continue
            old_mode, new_mode = int(was.filemode), int(item.filemode)
            path = prefix + (raw or b"").decode("utf-8", "surrogateescape")
            kinds = {_kind_of(old_mode), _kind_of(new_mode)}
            if kinds == {"folder"}:
                stack.append((path + "/", was, item))  # type: ignore[arg-type]
            elif len(kinds) > 1 or "submodule" in kinds:
                return None  # a folder, a submodule or a link became something else
            else:
                paths.add(path)
    return paths


def _list_tree(
    repository: pygit2.Repository,
    root: pygit2.Tree,
    previous: Mapping[_Key, _Listing],
    kept: dict[_Key, _Listing],
) -> int:
    """List `root` into `kept` (a listing per folder), reusing `previous` listings of unchanged
    folders; the number reused. Folders are read parents first and merged children first, with
    explicit stacks (a crafted tree may be deeper than Python's recursion limit)."""
    read_header = repository.odb.read_header
    reused = 0
    to_read: list[tuple[str, pygit2.Tree]] = [("", root)]
    to_merge: list[tuple[_Key, _Listing]] = []
    while to_read:
        prefix, tree = to_read.pop()
        key = (prefix, tree.id)
        found = previous.get(key)
        if found is not None:
            reused += _keep_with_children(key, found, previous, kept)
            continue
        entries: dict[str, Entry] = {}
        blobs: dict[str, pygit2.Oid] = {}
        children: list[_Key] = []
        for item in tree:
            name = (item.raw_name or b"").decode("utf-8", "surrogateescape")
            if name in _SKIPPED_NAMES or "/" in name or "\x00" in name:
                continue
            mode = int(item.filemode)
            path = prefix + name
            if mode == _MODE_TREE:
                children.append((path + "/", item.id))
                to_read.append((path + "/", item))  # type: ignore[arg-type]
            elif mode in (_MODE_BLOB, _MODE_EXECUTABLE, _MODE_BLOB_GROUP_WRITABLE):
                size = read_header(item.id)[1]
                entries[path] = Entry(path, "file", size, mode == _MODE_EXECUTABLE)
                blobs[path] = item.id
            elif mode == _MODE_LINK:
                target = repository[item.id].read_raw().decode("utf-8", "surrogateescape")
                entries[path] = Entry(path, "symlink", len(target), False, target)
            # _MODE_COMMIT (a submodule) and anything unknown: not files of this tree
        folders = {path.removesuffix("/"): oid for path, oid in children}
        to_merge.append((key, _Listing(entries, blobs, tuple(children), folders)))
    # Parents were read before their children: merge in reverse, children first.
    for key, listing in reversed(to_merge):
        for child in listing.children:
            below = kept[child]
            listing.entries.update(below.entries)
            listing.blobs.update(below.blobs)
            listing.folders.update(below.folders)
        kept[key] = listing
    return reused


def _keep_with_children(
    key: _Key,
    listing: _Listing,
    previous: Mapping[_Key, _Listing],
    kept: dict[_Key, _Listing],
) -> int:
    """Carry a reused listing and those of its folders over to `kept`; how many."""
    count = 0
    stack = [(key, listing)]
    while stack:
        key, listing = stack.pop()
        kept[key] = listing
        count += 1
        stack.extend((child, previous[child]) for child in listing.children)
    return count


def folder_ids(tree: GitTree, folders: Iterable[str]) -> dict[str, str]:
    """The object id of each folder (or file) of `tree` that exists: unchanged id, unchanged
    content. Paths are tree paths ('' is the root); missing ones are left out."""
    ids: dict[str, str] = {}
    for folder in folders:
        found = tree.object_id(folder.strip("/"))
        if found is not None:
            ids[folder] = found
    return ids


__all__ = [
    "GitAuthError",
    "GitRefError",
    "GitSettings",
    "GitSource",
    "GitSourceError",
    "GitTree",
    "Listings",
    "Revision",
    "folder_ids",
    "public_text",
    "ref_kind",
    "unchanged",
]
