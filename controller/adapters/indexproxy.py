"""Private package indexes for builds, without their credentials ever entering the build.

The classic builder has no build secrets, and a token in a build argument or a file is
recorded in the image. So envship serves each configured private index through a forwarder on
the loopback address: a build asks `http://127.0.0.1:PORT/<grant>/<host>/<path>`, the forwarder
asks `https://<host>/<path>` with the credentials (read from their secret references, in memory)
and streams the answer back, rewriting the index's links to itself. The build sees only the
loopback URL; its layers, history and the content hash never see the secret.

What the forwarder signs is limited:
- a request must carry a grant: a random token made for one build and revoked when that build
  ends (it is recorded in the image's history, where it is worth nothing);
- only GET and HEAD, only to a configured index host, and only to a path under a configured
  index URL or a path that the index itself linked to in a page the same grant was served
  (files are often hosted beside the index: `/simple/` links to `/files/...`); `.` and `..`
  segments are refused.

Builds that use it (their Dockerfile declares `ARG PIP_EXTRA_INDEX_URL`) run with the host
network, so their RUN steps can reach the loopback address (the engine must share envship's
network namespace: a local engine or a docker-in-docker sidecar); other builds do not.
"""

from __future__ import annotations

import re
import secrets
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING
from urllib.parse import unquote, urljoin, urlsplit

from controller.adapters.redact import redact

if TYPE_CHECKING:
    # The HTTP server and client load when the forwarder starts: a sync without private
    # indexes, and every other command, never loads them.
    import http.server

    import requests

Credentials = Callable[[], tuple[str, str]]
REWRITTEN = ("text/html", "application/vnd.pypi.simple", "application/json")
DEFAULT_PORT = 17493
"""Tried first, so the loopback URL is the same every run."""
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding"}
)
LINKS_PER_GRANT = 200_000
"""Linked paths one grant may collect (a large index's pages, many times over)."""
_LINK = re.compile(r"""(?:href\s*=\s*["']|"url"\s*:\s*")([^"'<>\s]+)""", re.IGNORECASE)


class IndexProxy:
    """A loopback forwarder that signs requests to private package indexes for granted builds."""

    def __init__(
        self,
        credentials: Mapping[str, Credentials],
        *,
        indexes: Iterable[str] = (),
        forget: Mapping[str, Callable[[], None]] | None = None,
        ca_file: str | None = None,
        timeout: float = 60.0,
        port: int = DEFAULT_PORT,
    ) -> None:
        """`indexes`: the configured index URLs; their paths are what may be asked for (a host
        with credentials but no index URL may be asked for any path)."""
        self.port = port
        self.credentials = dict(credentials)
        self.prefixes: dict[str, list[str]] = {}
        for url in indexes:
            parts = urlsplit(url)
            if parts.scheme == "https" and parts.netloc in self.credentials:
                prefix = parts.path if parts.path.endswith("/") else parts.path + "/"
                self.prefixes.setdefault(parts.netloc, []).append(prefix)
        self.forget = dict(forget or {})
        self.ca_file = ca_file
        self.timeout = timeout
        self._grants: dict[str, set[tuple[str, str]]] = {}
        """Grant token -> the (host, path) pairs the index linked to in pages it was served."""
        self._lock = threading.Lock()
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base(self) -> str:
        if self._server is None:
            raise RuntimeError("the index proxy is not running")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def grant(self) -> str:
        """A new token for one build: its requests are served until `revoke`."""
        token = secrets.token_urlsafe(18)
        with self._lock:
            self._grants[token] = set()
        return token

    def revoke(self, token: str) -> None:
        with self._lock:
            self._grants.pop(token, None)

    def route(self, url: str, token: str) -> str:
        """The loopback URL the build holding `token` uses for `url` (unchanged when its host
        is not private)."""
        parts = urlsplit(url)
        if parts.scheme != "https" or parts.netloc not in self.credentials:
            return url
        query = f"?{parts.query}" if parts.query else ""
        return f"{self.base}/{token}/{parts.netloc}{parts.path}{query}"

    def start(self) -> IndexProxy:
        if self._server is not None:
            return self
        import http.server  # noqa: PLC0415 - see the imports above

        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                return  # request lines could carry tokens in query strings; say nothing

            def do_GET(self) -> None:
                proxy._forward(self, "GET")

            def do_HEAD(self) -> None:
                proxy._forward(self, "HEAD")

        try:
            self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        except OSError:  # taken: any free port
            self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="envship-index-proxy", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def _reply(self, handler: http.server.BaseHTTPRequestHandler, status: int, text: str) -> None:
        body = redact(text).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "text/plain; charset=utf-8")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def _allowed(self, token: str, host: str, path: str) -> str | None:
        """Why (token, host, path) may not be forwarded, or None when it may."""
        with self._lock:
            links = self._grants.get(token)
            if links is None:
                return "not a running build's address"
            if host not in self.credentials:
                return f"{host or '(none)'} is not a configured private index"
            segments = unquote(path).split("/")
            if "." in segments or ".." in segments or "\\" in path:
                return "a path with . or .. segments is not forwarded"
            prefixes = self.prefixes.get(host)
            if prefixes is None or any(path.startswith(p) for p in prefixes):
                return None
            if (host, path) in links:
                return None
        return "only the index and the files it links to are forwarded"

    def _collect(self, token: str, host: str, page_url: str, body: bytes) -> None:
        """Remember the same-host paths a served page links to: the grant may ask for them."""
        found: set[tuple[str, str]] = set()
        for match in _LINK.finditer(body.decode("utf-8", errors="replace")):
            target = urlsplit(urljoin(page_url, match.group(1).replace("&amp;", "&")))
            if target.scheme == "https" and target.netloc == host:
                found.add((host, target.path))
        with self._lock:
            links = self._grants.get(token)
            if links is not None and len(links) + len(found) <= LINKS_PER_GRANT:
                links.update(found)

    def _forward(self, handler: http.server.BaseHTTPRequestHandler, method: str) -> None:
        token, _, rest = handler.path.lstrip("/").partition("/")
        quoted_host, _, rest = rest.partition("/")
        host = unquote(quoted_host)  # pip writes `host:port` as `host%3Aport`
        path = "/" + rest.split("?", 1)[0].split("#", 1)[0]
        refused = self._allowed(token, host, path)
        if refused is not None:
            self._reply(handler, 403 if token in self._grants else 404, f"envship: {refused}")
            return
        import requests  # noqa: PLC0415 - see the imports above

        try:
            username, password = self.credentials[host]()
            upstream = requests.request(
                method,
                f"https://{host}/{rest}",
                auth=(username, password),
                headers={"Accept": handler.headers.get("Accept", "*/*")},
                verify=self.ca_file or True,
                timeout=self.timeout,
                stream=True,
                allow_redirects=False,
            )
        except Exception as exc:
            self._reply(
                handler, 502, f"envship: {host} could not be reached ({type(exc).__name__})"
            )
            return
        with upstream:
            if upstream.status_code in (401, 403):
                if host in self.forget:
                    self.forget[host]()
                self._reply(handler, 502, f"envship: {host} refused the configured credentials")
                return
            self._relay(handler, method, token, host, f"https://{host}/{rest}", upstream)

    def _relay(
        self,
        handler: http.server.BaseHTTPRequestHandler,
        method: str,
        token: str,
        host: str,
        page_url: str,
        upstream: requests.Response,
    ) -> None:
        public = f"https://{host}/"
        private = f"{self.base}/{token}/{host}/"
        content_type = upstream.headers.get("Content-Type", "")
        rewrite = content_type.startswith(REWRITTEN) and method != "HEAD"
        body = upstream.content if rewrite else None
        if rewrite and body is not None:
            self._collect(token, host, page_url, body)
            body = body.replace(public.encode(), private.encode())
        handler.send_response(upstream.status_code)
        for name, value in upstream.headers.items():
            if name.lower() in HOP_BY_HOP:
                continue
            if name.lower() == "location":
                self._collect(token, host, page_url, f'href="{value}"'.encode())
                value = value.replace(public, private)
            handler.send_header(name, value)
        if body is not None:
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            handler.wfile.write(body)
            return
        length = upstream.headers.get("Content-Length")
        if method == "HEAD":
            if length is not None:
                handler.send_header("Content-Length", length)
            handler.end_headers()
            return
        if length is not None:
            handler.send_header("Content-Length", length)
            handler.end_headers()
            for chunk in upstream.iter_content(64 * 1024):
                handler.wfile.write(chunk)
            return
        data = upstream.content
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)
