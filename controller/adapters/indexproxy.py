"""Private package indexes for builds, without their credentials ever entering the build.

The classic builder has no build secrets, and a token in a build argument or a file is
recorded in the image. So envship serves each configured private index through a forwarder on
the loopback address: a build asks `http://127.0.0.1:PORT/<host>/<path>`, the forwarder asks
`https://<host>/<path>` with the credentials (read from their secret references, in memory)
and streams the answer back, rewriting the index's absolute links to itself. The build sees only
the loopback URL; its layers, history and the content hash never see the secret.

Builds that use it run with the host network, so their RUN steps can reach the loopback address
(the engine must share envship's network namespace: a local engine or a docker-in-docker sidecar).
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Callable, Mapping
from urllib.parse import unquote, urlsplit

import requests

from controller.adapters.redact import redact

Credentials = Callable[[], tuple[str, str]]
REWRITTEN = ("text/html", "application/vnd.pypi.simple", "application/json")
DEFAULT_PORT = 17493
"""Tried first, so the loopback URL (and with it the build cache key) is the same every run."""
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding"}
)


class IndexProxy:
    """A loopback forwarder that signs requests to private package indexes."""

    def __init__(
        self,
        credentials: Mapping[str, Credentials],
        *,
        forget: Mapping[str, Callable[[], None]] | None = None,
        ca_file: str | None = None,
        timeout: float = 60.0,
        port: int = DEFAULT_PORT,
    ) -> None:
        self.port = port
        self.credentials = dict(credentials)
        self.forget = dict(forget or {})
        self.ca_file = ca_file
        self.timeout = timeout
        self.requests_served = 0
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base(self) -> str:
        if self._server is None:
            raise RuntimeError("the index proxy is not running")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def route(self, url: str) -> str:
        """The loopback URL a build uses for `url` (unchanged when its host is not private)."""
        parts = urlsplit(url)
        if parts.scheme != "https" or parts.netloc not in self.credentials:
            return url
        query = f"?{parts.query}" if parts.query else ""
        return f"{self.base}/{parts.netloc}{parts.path}{query}"

    def start(self) -> IndexProxy:
        if self._server is not None:
            return self
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
        except OSError:  # taken: any free port (only the build cache suffers)
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

    def _forward(self, handler: http.server.BaseHTTPRequestHandler, method: str) -> None:
        self.requests_served += 1
        quoted_host, _, rest = handler.path.lstrip("/").partition("/")
        host = unquote(quoted_host)  # pip writes `host:port` as `host%3Aport`
        credentials = self.credentials.get(host)
        if credentials is None:
            self._reply(
                handler, 404, f"envship: {host or '(none)'} is not a configured private index"
            )
            return
        try:
            username, password = credentials()
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
            self._relay(handler, method, host, upstream)

    def _relay(
        self,
        handler: http.server.BaseHTTPRequestHandler,
        method: str,
        host: str,
        upstream: requests.Response,
    ) -> None:
        public = f"https://{host}/"
        private = f"{self.base}/{host}/"
        content_type = upstream.headers.get("Content-Type", "")
        rewrite = content_type.startswith(REWRITTEN) and method != "HEAD"
        body = upstream.content if rewrite else None
        if rewrite and body is not None:
            body = body.replace(public.encode(), private.encode())
        handler.send_response(upstream.status_code)
        for name, value in upstream.headers.items():
            if name.lower() in HOP_BY_HOP:
                continue
            if name.lower() == "location":
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
