"""Any OCI registry (distribution, ACR, Harbor, GHCR, ...) through python-dxf.

One `OciRegistry` per registry host. It answers the questions a plan asks (does
`repo:tag` exist, and with which digest?) with one manifest HEAD, remembered for the life of
the process, and does the registry-side work of a sync: copy an image across repositories by
mounting its blobs, point a moving tag at a digest, read an image's labels.

Authentication is pluggable (`Authenticator`): anonymous, username/password (HTTP basic, or the
bearer-token flow when the registry answers with a token challenge), or an ACR Entra identity
(see `controller.adapters.acr`). Secrets stay in memory; error messages never include them.

Transport: HTTPS, verified against `ca_file` when given. A registry on the loopback network may
speak plain HTTP, as Docker allows; any other host needs `plain_http=True` explicitly.
"""

from __future__ import annotations

import ipaddress
import json
import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, cast

if TYPE_CHECKING:
    # requests and dxf take a tenth of a second to import: they load when a registry is first
    # asked (inside the methods), so a command that asks none never loads them.
    import requests
    from dxf import DXF, DXFBase

from controller.core.errors import Policy, RetryLater

MANIFEST_TYPES = (
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
)
ACCEPT = {"Accept": ", ".join(MANIFEST_TYPES)}
DOCKER_HUB = "registry-1.docker.io"
POOL_SIZE = 32
"""Connections kept per registry: more than the 16 concurrent checks of a plan."""


class RegistryError(RetryLater):
    """The registry could not be reached or answered badly: retry later."""


class RegistryAuthError(RegistryError):
    """The registry refused the credentials (or their absence): check the configuration."""

    policy = Policy.MISCONFIGURED


class Authenticator(Protocol):
    """Answers a 401 from the registry by giving the DXF client a token or basic credentials."""

    def __call__(self, client: DXFBase, response: requests.Response) -> None: ...

    def docker_auth(self) -> dict[str, str] | None:
        """Credentials in the shape the Docker engine takes for pull and push."""
        ...


class Anonymous:
    def __call__(self, client: DXFBase, response: requests.Response) -> None:
        client.authenticate(response=response)

    def docker_auth(self) -> dict[str, str] | None:
        return None


@dataclass
class Basic:
    """Username and password, fetched when needed so a rotated secret is picked up."""

    credentials: Callable[[], tuple[str, str]]
    forget: Callable[[], None] = lambda: None
    """Called when the registry rejected the credentials: read them afresh next time."""

    def __call__(self, client: DXFBase, response: requests.Response) -> None:
        username, password = self.credentials()
        client.authenticate(username, password, response=response)

    def docker_auth(self) -> dict[str, str] | None:
        username, password = self.credentials()
        return {"username": username, "password": password}


def is_loopback(host: str) -> bool:
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    name = name.strip("[]")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def environ_ca_bundle() -> str | None:
    """The CA bundle requests would take from the environment (it is told not to look)."""
    return os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or None


def api_host(host: str) -> str:
    """Where a registry's API lives (Docker Hub's names are aliases)."""
    return DOCKER_HUB if host in ("docker.io", "index.docker.io") else host


def describe(exc: BaseException) -> str:
    """A short reason without URLs' query strings or headers (they may carry tokens)."""
    import requests  # noqa: PLC0415 - see the imports above

    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        return f"HTTP {exc.response.status_code}"
    if isinstance(exc, requests.exceptions.SSLError):
        return "TLS verification failed (is the CA file right?)"
    if isinstance(exc, requests.ConnectionError):
        return "connection failed"
    if isinstance(exc, requests.Timeout):
        return "timed out"
    return type(exc).__name__


@dataclass
class ImageInfo:
    digest: str
    media_type: str
    manifest: bytes


def _manifest(client: DXF, method: str, reference: str) -> requests.Response | None:
    """The registry's answer to `method` on manifest `reference`; None when it has none."""
    import requests  # noqa: PLC0415 - see the imports above

    try:
        response: requests.Response = client._request(
            method, "manifests/" + reference, headers=ACCEPT
        )
    except requests.HTTPError as exc:
        if exc.response is not None and exc.response.status_code == 404:
            return None
        raise
    return response


@dataclass
class OciRegistry:
    """One registry host; thread-safe; existence answers are cached per process."""

    host: str
    authenticator: Authenticator = field(default_factory=Anonymous)
    ca_file: str | None = None
    plain_http: bool | None = None
    """None: HTTPS, or plain HTTP for a loopback host that does not speak TLS."""
    timeout: float = 30.0
    _base: DXFBase | None = field(default=None, init=False, repr=False)
    _clients: dict[str, DXF] = field(default_factory=dict, init=False, repr=False)
    _locks: dict[str, threading.Lock] = field(default_factory=dict, init=False, repr=False)
    _guard: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _exists: dict[tuple[str, str], str | None] = field(default_factory=dict, init=False)
    _scheme_checked: bool = field(default=False, init=False, repr=False)
    requests_made: int = field(default=0, init=False)

    # -- plumbing ---------------------------------------------------------------------------

    def _insecure(self) -> bool:
        with self._guard:
            return self._insecure_locked()

    def _insecure_locked(self) -> bool:
        if not self._scheme_checked:
            if self.plain_http is None:
                self.plain_http = is_loopback(self.host) and not self._speaks_tls()
            self._scheme_checked = True
        return bool(self.plain_http)

    def _speaks_tls(self) -> bool:
        """Whether a loopback registry answers a TLS handshake (nothing is sent over it)."""
        import socket  # noqa: PLC0415 - only for a loopback registry
        import ssl  # noqa: PLC0415

        name, _, port = api_host(self.host).rpartition(":")
        if not name:
            name, port = port, "443"
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # a probe only; requests verify as configured
        try:
            with (
                socket.create_connection(
                    (name.strip("[]"), int(port)), timeout=self.timeout
                ) as raw,
                context.wrap_socket(raw),
            ):
                return True
        except ssl.SSLError:
            return False
        except (OSError, ValueError):
            return True  # unreachable: let the real request report it

    def _base_client(self, insecure: bool) -> DXFBase:
        """One HTTP session (a connection pool) for every repository of this registry.

        Called with `_guard` held.
        """
        if self._base is None:
            import requests  # noqa: PLC0415 - see the imports above
            from dxf import DXFBase  # noqa: PLC0415
            from requests.adapters import HTTPAdapter  # noqa: PLC0415

            base = DXFBase(
                api_host(self.host),
                auth=self.authenticator,
                insecure=insecure,
                tlsverify=self.ca_file or environ_ca_bundle() or True,
                timeout=self.timeout,
            )
            base.__enter__()
            session = base._sessions[0]
            if isinstance(session, requests.Session):
                # Proxies are read from the environment once, not on every request (that scan,
                # with ~/.netrc, cost about a quarter of each check); the CA bundle is chosen
                # below, `ca_file` or the environment's, as requests would.
                session.trust_env = False
                session.proxies = requests.utils.get_environ_proxies(
                    f"https://{api_host(self.host)}/"
                )
                adapter = HTTPAdapter(pool_connections=4, pool_maxsize=POOL_SIZE)
                session.mount("https://", adapter)
                session.mount("http://", adapter)
            self._base = base
        return self._base

    def _client(self, repository: str) -> tuple[DXF, threading.Lock]:
        insecure = self._insecure()
        with self._guard:
            client = self._clients.get(repository)
            if client is None:
                from dxf import DXF  # noqa: PLC0415 - see the imports above

                # per repository: its own token scope, the registry's shared session
                client = DXF.from_base(self._base_client(insecure), repository)
                self._clients[repository] = client
                self._locks[repository] = threading.Lock()
            return client, self._locks[repository]

    def _call(self, repository: str, what: str, action: Callable[[DXF], Any]) -> Any:
        try:
            return self._call_once(repository, what, action)
        except RegistryAuthError:
            # Credentials may have been rotated: read them afresh and try once more.
            forget = getattr(self.authenticator, "forget", None)
            if forget is None:
                raise
            forget()
            with self._guard:
                self._clients.pop(repository, None)
            return self._call_once(repository, what, action)

    def _call_once(self, repository: str, what: str, action: Callable[[DXF], Any]) -> Any:
        import requests  # noqa: PLC0415 - see the imports above
        from dxf.exceptions import DXFError, DXFUnauthorizedError  # noqa: PLC0415

        client, lock = self._client(repository)
        with self._guard:
            self.requests_made += 1
        with lock:
            try:
                return action(client)
            except DXFUnauthorizedError:
                raise RegistryAuthError(
                    f"{self.host} refused access to {repository} ({what}); check its credentials"
                ) from None
            except requests.HTTPError as exc:
                status = exc.response.status_code if exc.response is not None else 0
                if status in (401, 403):
                    raise RegistryAuthError(
                        f"{self.host} refused {what} on {repository} (HTTP {status})"
                    ) from None
                raise RegistryError(
                    f"{self.host}: {what} on {repository} failed: {describe(exc)}"
                ) from None
            except (requests.RequestException, DXFError, OSError) as exc:
                raise RegistryError(
                    f"{self.host}: {what} on {repository} failed: {describe(exc)}"
                ) from None

    # -- questions --------------------------------------------------------------------------

    def digest(self, repository: str, reference: str, *, refresh: bool = False) -> str | None:
        """Digest of `repository:reference`, or None when it does not exist. One HEAD."""
        key = (repository, reference)
        if not refresh:
            with self._guard:
                if key in self._exists:
                    return self._exists[key]

        def head(client: DXF) -> str | None:
            response = _manifest(client, "head", reference)
            if response is None:
                return None
            return str(response.headers.get("Docker-Content-Digest") or "") or None

        found: str | None = self._call(repository, "manifest check", head)
        self.remember(repository, reference, found)
        return found

    def remember(self, repository: str, reference: str, digest: str | None) -> None:
        with self._guard:
            self._exists[(repository, reference)] = digest

    def image(self, repository: str, reference: str) -> ImageInfo | None:
        def get(client: DXF) -> ImageInfo | None:
            response = _manifest(client, "get", reference)
            if response is None:
                return None
            media_type = response.headers.get("Content-Type", "").split(";")[0]
            digest = response.headers.get("Docker-Content-Digest", "")
            return ImageInfo(digest, media_type, response.content)

        result: ImageInfo | None = self._call(repository, "manifest read", get)
        return result

    def labels(self, repository: str, reference: str) -> dict[str, str] | None:
        """The labels of an image (from its config blob), or None when it does not exist."""
        info = self.image(repository, reference)
        if info is None:
            return None
        manifest = json.loads(info.manifest)
        config = manifest.get("config", {}).get("digest")
        if not config:
            return {}

        def read(client: DXF) -> bytes:
            chunks = client.pull_blob(config)
            return b"".join(cast(Iterable[bytes], chunks))

        blob: bytes = self._call(repository, "config read", read)
        labels = json.loads(blob).get("config", {}).get("Labels") or {}
        return {str(k): str(v) for k, v in labels.items()}

    def tags(self, repository: str) -> list[str]:
        import requests  # noqa: PLC0415 - see the imports above

        def list_tags(client: DXF) -> list[str]:
            try:
                return list(client.list_aliases())
            except requests.HTTPError as exc:
                if exc.response is not None and exc.response.status_code == 404:
                    return []
                raise

        result: list[str] = self._call(repository, "tag list", list_tags)
        return result

    def repositories(self, prefix: str) -> list[str]:
        """Repositories under `prefix/` (the registry's catalog, page by page)."""
        import requests  # noqa: PLC0415 - see the imports above
        from dxf.exceptions import DXFError  # noqa: PLC0415

        with self._guard:
            base = self._base_client(self._insecure_locked())
        with self._guard:
            self.requests_made += 1
        try:
            names = list(base.list_repos(batch_size=1000, iterate=True))
        except (requests.RequestException, DXFError, OSError) as exc:
            raise RegistryError(f"{self.host}: catalog read failed: {describe(exc)}") from None
        start = f"{prefix}/" if prefix else ""
        return sorted(name for name in names if name.startswith(start))

    # -- changes ----------------------------------------------------------------------------

    def delete(self, repository: str, digest: str) -> None:
        """Delete a manifest (and so every tag on it) by digest."""

        def remove(client: DXF) -> None:
            client._request("delete", "manifests/" + digest)

        self._call(repository, "manifest delete", remove)
        with self._guard:
            for key in [k for k, v in self._exists.items() if k[0] == repository and v == digest]:
                self._exists[key] = None

    def put_manifest(self, repository: str, tag: str, info: ImageInfo) -> str:
        def put(client: DXF) -> str:
            response = client._request(
                "put",
                "manifests/" + tag,
                data=info.manifest,
                headers={"Content-Type": info.media_type},
            )
            return str(response.headers.get("Docker-Content-Digest") or info.digest)

        digest: str = self._call(repository, "manifest write", put)
        self.remember(repository, tag, digest)
        return digest

    def retag(self, repository: str, reference: str, tag: str) -> str:
        """Point `tag` at the image `reference` names, in the same repository; its digest."""
        info = self.image(repository, reference)
        if info is None:
            raise RegistryError(f"{repository} lost its image {reference} before tagging")
        return self.put_manifest(repository, tag, info)

    def copy(self, source: str, reference: str, target: str, tag: str) -> str:
        """Copy an image to another repository by mounting its blobs: nothing is downloaded."""
        info = self.image(source, reference)
        if info is None:
            raise RegistryError(f"{self.host}: {source}:{reference} disappeared before the copy")
        manifest = json.loads(info.manifest)
        if "manifests" in manifest:
            raise RegistryError(f"{self.host}: copying an image index is not supported")
        blobs: Iterable[str] = [manifest["config"]["digest"]] + [
            layer["digest"] for layer in manifest.get("layers", [])
        ]

        def mount(client: DXF) -> None:
            from dxf.exceptions import DXFMountFailed  # noqa: PLC0415 - see the imports above

            for blob in blobs:
                try:
                    client.mount_blob(source, blob)
                except DXFMountFailed:
                    raise RegistryError(
                        f"{self.host}: could not mount {blob[:19]} from {source} into {target}"
                    ) from None

        self._call(target, "blob mount", mount)
        digest = self.put_manifest(target, tag, info)
        if digest != info.digest:
            raise RegistryError(f"{self.host}: copy of {source}:{reference} changed its digest")
        return digest

    def close(self) -> None:
        with self._guard:
            self._clients.clear()
            if self._base is not None:
                self._base.__exit__()
                self._base = None
