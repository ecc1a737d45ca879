"""A git smart-HTTP server on 127.0.0.1 for tests: `git http-backend` (CGI) behind basic auth.

The expected user name and password are held in memory only (never in a file or the CGI's
environment) and can be changed while the server runs, as a rotated secret would be. Every
request is counted and logged (method, path, status, user name; never a credential), and the log
is handed to the canary scan.
"""

from __future__ import annotations

import base64
import hmac
import os
import socket
import subprocess
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from urllib.parse import urlsplit

from tests.support.canaries import record_output


@dataclass
class Request:
    method: str
    path: str
    status: int
    user: str | None
    authorization: bool
    """Whether the request carried an Authorization header."""


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        # A client that hangs up (libgit2 after a refused credential) is not an error here.
        return


@dataclass
class GitHttpServer:
    """Serves the bare repositories under `root` at `http://127.0.0.1:PORT/<name>`."""

    root: Path
    username: str | None = None
    password: str | None = None
    """Basic auth is required when both are set."""
    redirect_to: str | None = None
    """When set, every request is answered with a redirect to this base URL."""
    requests: list[Request] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = field(default=None, init=False, repr=False)
    _thread: threading.Thread | None = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    @property
    def port(self) -> int:
        assert self._server is not None, "the server is not running"
        return self._server.server_address[1]

    def url(self, name: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}/{name}"

    def set_credentials(self, username: str | None, password: str | None) -> None:
        with self._lock:
            self.username, self.password = username, password

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()

    def count(self) -> int:
        with self._lock:
            return len(self.requests)

    def rejected(self) -> int:
        """Requests that offered credentials and were refused."""
        with self._lock:
            return sum(1 for r in self.requests if r.status == 401 and r.authorization)

    def start(self) -> GitHttpServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                # Headers and body are separate writes: without this, Nagle's algorithm and
                # delayed acknowledgements add 40 ms to every response.
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def log_message(self, format: str, *args: object) -> None:
                return

            def do_GET(self) -> None:
                server._handle(self)

            def do_POST(self) -> None:
                server._handle(self)

        self._server = _QuietServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="git-http", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with self._lock:
            record_output(*(f"{r.method} {r.path} {r.status} user={r.user}" for r in self.requests))

    def __enter__(self) -> GitHttpServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _check(self, header: str | None) -> tuple[bool, str | None]:
        """(allowed, user name) for an Authorization header."""
        with self._lock:
            username, password = self.username, self.password
        if username is None or password is None:
            return True, None
        if not header or not header.startswith("Basic "):
            return False, None
        try:
            given_user, _, given_password = (
                base64.b64decode(header[6:], validate=True).decode().partition(":")
            )
        except (ValueError, UnicodeDecodeError):
            return False, None
        same = hmac.compare_digest(given_user.encode(), username.encode()) & hmac.compare_digest(
            given_password.encode(), password.encode()
        )
        return bool(same), given_user

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        body = _read_body(handler)
        header = handler.headers.get("Authorization")
        parts = urlsplit(handler.path)
        if self.redirect_to is not None:
            self._record(handler, 302, None, header)
            _respond(handler, 302, {"Location": self.redirect_to + handler.path}, b"")
            return
        allowed, user = self._check(header)
        if not allowed:
            self._record(handler, 401, user, header)
            _respond(handler, 401, {"WWW-Authenticate": 'Basic realm="git"'}, b"no\n")
            return
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GIT_PROJECT_ROOT": str(self.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "GIT_CONFIG_NOSYSTEM": "1",
            "HOME": str(self.root),
            "REQUEST_METHOD": handler.command,
            "PATH_INFO": parts.path,
            "QUERY_STRING": parts.query,
            "CONTENT_TYPE": handler.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_ADDR": handler.client_address[0],
        }
        if user:
            env["REMOTE_USER"] = user
        if handler.headers.get("Content-Encoding"):
            env["HTTP_CONTENT_ENCODING"] = handler.headers["Content-Encoding"]
        if handler.headers.get("Git-Protocol"):
            env["GIT_PROTOCOL"] = handler.headers["Git-Protocol"]
        result = subprocess.run(
            ["git", "http-backend"], input=body, capture_output=True, env=env, check=False
        )
        head, _, payload = result.stdout.partition(b"\r\n\r\n")
        if not payload and b"\n\n" in head:
            head, _, payload = result.stdout.partition(b"\n\n")
        status = 200
        headers: dict[str, str] = {}
        for line in head.decode("latin-1").splitlines():
            key, _, value = line.partition(":")
            if key.lower() == "status":
                status = int(value.strip().split()[0])
            elif key:
                headers[key.strip()] = value.strip()
        self._record(handler, status, user, header)
        _respond(handler, status, headers, payload)

    def _record(
        self, handler: BaseHTTPRequestHandler, status: int, user: str | None, header: str | None
    ) -> None:
        with self._lock:
            self.requests.append(
                Request(handler.command, handler.path, status, user, header is not None)
            )


def _read_body(handler: BaseHTTPRequestHandler) -> bytes:
    if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
        chunks = []
        while True:
            size = int(handler.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                handler.rfile.readline()
                break
            chunks.append(handler.rfile.read(size))
            handler.rfile.readline()
        return b"".join(chunks)
    length = int(handler.headers.get("Content-Length") or 0)
    return handler.rfile.read(length) if length else b""


def _respond(
    handler: BaseHTTPRequestHandler, status: int, headers: dict[str, str], payload: bytes
) -> None:
    handler.send_response(status)
    for key, value in headers.items():
        if key.lower() not in ("content-length", "transfer-encoding", "connection"):
            handler.send_header(key, value)
    handler.send_header("Content-Length", str(len(payload)))
    handler.end_headers()
    handler.wfile.write(payload)


SSHD = "/usr/sbin/sshd"


class SshServer:
    """OpenSSH's sshd on 127.0.0.1 serving git over SSH to the current user, keys only.

    Its host key and the client's authorized keys live under `folder`; `known_hosts` is the
    line a client needs to trust the host key. Needs `sshd` and `ssh-keygen` (skip otherwise).
    """

    def __init__(self, folder: Path, authorized_keys: list[str]) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.host_key = folder / "host_key"
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.host_key)], check=True
        )
        self.authorized = folder / "authorized_keys"
        self.set_authorized_keys(authorized_keys)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.log = folder / "sshd.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def known_hosts(self) -> str:
        key = " ".join(self.host_key.with_suffix(".pub").read_text().split()[:2])
        return f"[127.0.0.1]:{self.port} {key}\n"

    def set_authorized_keys(self, public_keys: list[str]) -> None:
        self.authorized.write_text("".join(key.strip() + "\n" for key in public_keys))

    def start(self) -> SshServer:
        config = self.folder / "sshd_config"
        config.write_text(
            "\n".join(
                [
                    f"Port {self.port}",
                    "ListenAddress 127.0.0.1",
                    f"HostKey {self.host_key}",
                    f"AuthorizedKeysFile {self.authorized}",
                    f"PidFile {self.folder / 'sshd.pid'}",
                    "StrictModes no",
                    "UsePAM no",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "PubkeyAuthentication yes",
                    "PermitRootLogin prohibit-password",
                    "LogLevel VERBOSE",
                    "",
                ]
            )
        )
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation
        with self.log.open("wb") as log:
            self._process = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT
            )
        for _ in range(100):
            if self._process.poll() is not None:
                break
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            threading.Event().wait(0.05)
        self.stop()
        raise RuntimeError(f"sshd did not start: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None
        if self.log.exists():
            record_output(self.log.read_text(errors="replace"))
