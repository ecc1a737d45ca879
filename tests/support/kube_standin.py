"""A stand-in for the Kubernetes API server, for Leases only, speaking its wire protocol.

`coordination.k8s.io/v1` Leases as kube-apiserver serves them, so that the real `kubernetes`
client runs against it unchanged:

- `GET /apis/coordination.k8s.io/v1/namespaces/{ns}/leases[/{name}]` (a LeaseList or a Lease),
  `POST .../leases` (201), `PUT .../leases/{name}`, `DELETE .../leases/{name}`;
- every write takes the next `metadata.resourceVersion` (one counter for the whole store, like
  etcd's revision); a `PUT` carrying a stale `resourceVersion` is refused with 409 Conflict, a
  `PUT` without one is unconditional (Leases allow it), a `PUT` of a missing Lease is 404 (no
  create on update), a second `POST` of a name is 409 AlreadyExists;
- errors are `Status` objects (`kind: Status`, `status: Failure`, `reason`, `message`,
  `details`, `code`), as clients parse them;
- `Authorization: Bearer <token>` is required (401 Unauthorized without it or with another);
- `acquireTime` and `renewTime` are MicroTime: RFC 3339 with exactly six fraction digits, or the
  request is refused with 400 as kube-apiserver refuses it; they are returned in UTC with `Z`;
- `leaseDurationSeconds` must be positive and `leaseTransitions` not negative (422 Invalid).

Served over HTTPS when given a certificate, plain HTTP otherwise. For failure tests: `stop()`
takes the server down (connections refused, open ones cut) and `start()` brings it back on the
same port; `hang` makes every request wait without an answer; `before` is called with each
authorized request's method, path and JSON body before it is handled (to interleave a concurrent
writer, or to hold racing requests until all have arrived). Every request is recorded (method,
path, status).
"""

from __future__ import annotations

import contextlib
import hmac
import json
import re
import socket
import ssl
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

GROUP = "coordination.k8s.io"
API_VERSION = f"{GROUP}/v1"
PATH = re.compile(
    r"^/apis/coordination\.k8s\.io/v1/namespaces/(?P<ns>[a-z0-9-]+)/leases(?:/(?P<name>[^/]+))?$"
)
MICRO_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}(Z|[+-]\d{2}:\d{2})$")
"""Go's `time.Parse("2006-01-02T15:04:05.000000Z07:00", ...)`, which MicroTime uses."""


@dataclass
class Request:
    method: str
    path: str
    status: int


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str, name: str | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.name = code, reason, message, name

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.name is not None:
            body["details"] = {"name": self.name, "group": GROUP, "kind": "leases"}
        return body


def _micro_time(value: object, where: str) -> str:
    if not isinstance(value, str) or not MICRO_TIME.match(value):
        raise ApiError(
            400,
            "BadRequest",
            f'Lease in version "v1" cannot be handled as a Lease: {where}: parsing time '
            f'{json.dumps(value)} as "2006-01-02T15:04:05.000000Z07:00": cannot parse',
        )
    moment = datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class KubeStandin:
    token: str
    cert_file: str | None = None
    key_file: str | None = None
    ca_file: str | None = None
    """The CA of `cert_file`, for `kubeconfig()`."""
    requests: list[Request] = field(default_factory=list)
    before: Callable[[str, str, dict[str, Any] | None], None] | None = None
    hang: threading.Event = field(default_factory=threading.Event)
    _leases: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    _revision: int = 1000
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None
    _port: int = 0
    _connections: set[socket.socket] = field(default_factory=set)
    _down: threading.Event = field(default_factory=threading.Event)

    # -- life

    @property
    def url(self) -> str:
        scheme = "https" if self.cert_file else "http"
        return f"{scheme}://127.0.0.1:{self._port}"

    def start(self) -> KubeStandin:
        standin = self

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_address = True

            def handle_error(self, request: object, client_address: object) -> None:
                return  # a client that hangs up, or the cut when going down

        self._down.clear()
        server = Server(("127.0.0.1", self._port), _handler(standin))
        if self.cert_file:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(self.cert_file, self.key_file)
            server.socket = context.wrap_socket(server.socket, server_side=True)
        self._port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="kube", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Down: the port refuses connections and open ones are cut (a crash or a partition)."""
        self._down.set()
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(10)

    def kubeconfig(self, path: Path, token: str | None = None) -> Path:
        """A kubeconfig file for this server (the CA file of its certificate, if any)."""
        cluster: dict[str, Any] = {"server": self.url}
        if self.ca_file:
            cluster["certificate-authority"] = self.ca_file
        document = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "standin", "cluster": cluster}],
            "users": [{"name": "envship", "user": {"token": token or self.token}}],
            "contexts": [{"name": "standin", "context": {"cluster": "standin", "user": "envship"}}],
            "current-context": "standin",
        }
        path.write_text(yaml.safe_dump(document), encoding="utf-8")
        return path

    # -- the store, for tests

    def lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        with self._lock:
            lease = self._leases.get((namespace, name))
            return json.loads(json.dumps(lease)) if lease is not None else None

    def write(self, namespace: str, name: str, change: Callable[[dict[str, Any]], None]) -> None:
        """Another client's write: `change` edits a copy of the Lease, a new version is stored."""
        with self._lock:
            lease = json.loads(json.dumps(self._leases[(namespace, name)]))
            change(lease)
            self._revision += 1
            lease["metadata"]["resourceVersion"] = str(self._revision)
            self._leases[(namespace, name)] = lease

    def count(self, method: str | None = None, status: int | None = None) -> int:
        with self._lock:
            return sum(
                1
                for r in self.requests
                if (method is None or r.method == method) and (status is None or r.status == status)
            )

    # -- the API

    def handle(self, method: str, path: str, body: bytes | None) -> tuple[int, dict[str, Any]]:
        match = PATH.match(path)
        if match is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        namespace, name = match["ns"], match["name"]
        if method == "GET" and name is None:
            with self._lock:
                items = [v for (ns, _), v in sorted(self._leases.items()) if ns == namespace]
                return 200, {
                    "kind": "LeaseList",
                    "apiVersion": API_VERSION,
                    "metadata": {"resourceVersion": str(self._revision)},
                    "items": json.loads(json.dumps(items)),
                }
        if method == "GET":
            with self._lock:
                lease = self._leases.get((namespace, name))
                if lease is None:
                    raise _not_found(name)
                return 200, json.loads(json.dumps(lease))
        if method == "DELETE" and name is not None:
            with self._lock:
                if self._leases.pop((namespace, name), None) is None:
                    raise _not_found(name)
                self._revision += 1
                return 200, {"kind": "Status", "apiVersion": "v1", "status": "Success"}
        if method == "POST" and name is None:
            return 201, self._create(namespace, _object(body))
        if method == "PUT" and name is not None:
            return 200, self._replace(namespace, name, _object(body))
        raise ApiError(405, "MethodNotAllowed", f"the server does not allow this method: {method}")

    def _create(self, namespace: str, lease: dict[str, Any]) -> dict[str, Any]:
        meta = lease.get("metadata") or {}
        name = meta.get("name")
        if not isinstance(name, str) or not name:
            raise ApiError(422, "Invalid", "Lease.coordination.k8s.io is invalid: name required")
        if meta.get("namespace") not in (None, "", namespace):
            raise ApiError(
                400,
                "BadRequest",
                "the namespace of the provided object does not match the namespace sent on "
                "the request",
            )
        if meta.get("resourceVersion"):
            raise ApiError(
                500, "InternalError", "resourceVersion should not be set on objects to be created"
            )
        spec = _spec(lease.get("spec"), name)
        with self._lock:
            if (namespace, name) in self._leases:
                raise ApiError(
                    409,
                    "AlreadyExists",
                    f'leases.{GROUP} "{name}" already exists',
                    name,
                )
            created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            return self._store(namespace, name, meta, spec, str(uuid.uuid4()), created)

    def _replace(self, namespace: str, name: str, lease: dict[str, Any]) -> dict[str, Any]:
        meta = lease.get("metadata") or {}
        if meta.get("name") != name:
            raise ApiError(
                400,
                "BadRequest",
                f"the name of the object ({meta.get('name')}) does not match the name on the "
                f"URL ({name})",
            )
        if meta.get("namespace") not in (None, "", namespace):
            raise ApiError(
                400,
                "BadRequest",
                "the namespace of the provided object does not match the namespace sent on "
                "the request",
            )
        spec = _spec(lease.get("spec"), name)
        with self._lock:
            current = self._leases.get((namespace, name))
            if current is None:
                raise _not_found(name)
            version = meta.get("resourceVersion")
            if version and version != current["metadata"]["resourceVersion"]:
                raise ApiError(
                    409,
                    "Conflict",
                    f'Operation cannot be fulfilled on leases.{GROUP} "{name}": the object has '
                    "been modified; please apply your changes to the latest version and try again",
                    name,
                )
            kept = current["metadata"]
            return self._store(namespace, name, meta, spec, kept["uid"], kept["creationTimestamp"])

    def _store(
        self,
        namespace: str,
        name: str,
        meta: dict[str, Any],
        spec: dict[str, Any],
        uid: str,
        created: str,
    ) -> dict[str, Any]:
        """Write a Lease at a new resourceVersion (caller holds the lock); a copy of it."""
        self._revision += 1
        stored = {
            "kind": "Lease",
            "apiVersion": API_VERSION,
            "metadata": {
                **{k: v for k, v in meta.items() if k in ("labels", "annotations")},
                "name": name,
                "namespace": namespace,
                "uid": uid,
                "resourceVersion": str(self._revision),
                "creationTimestamp": created,
            },
            "spec": spec,
        }
        self._leases[(namespace, name)] = stored
        result: dict[str, Any] = json.loads(json.dumps(stored))
        return result


def _not_found(name: str) -> ApiError:
    return ApiError(404, "NotFound", f'leases.{GROUP} "{name}" not found', name)


def _object(body: bytes | None) -> dict[str, Any]:
    try:
        value = json.loads(body or b"")
    except ValueError:
        raise ApiError(400, "BadRequest", "the body of the request is not JSON") from None
    if not isinstance(value, dict):
        raise ApiError(400, "BadRequest", "the body of the request is not an object")
    if value.get("kind") not in (None, "Lease") or value.get("apiVersion") not in (
        None,
        API_VERSION,
    ):
        raise ApiError(400, "BadRequest", "the body is not a coordination.k8s.io/v1 Lease")
    return value


def _spec(spec: object, name: str) -> dict[str, Any]:
    if spec is None:
        return {}
    if not isinstance(spec, dict):
        raise ApiError(400, "BadRequest", "spec must be an object")
    known = {
        "holderIdentity",
        "leaseDurationSeconds",
        "acquireTime",
        "renewTime",
        "leaseTransitions",
        "preferredHolder",
        "strategy",
    }
    out: dict[str, Any] = {k: v for k, v in spec.items() if k in known and v is not None}
    for key in ("acquireTime", "renewTime"):
        if key in out:
            out[key] = _micro_time(out[key], f"spec.{key}")
    duration = out.get("leaseDurationSeconds")
    if duration is not None and (not isinstance(duration, int) or duration <= 0):
        raise ApiError(
            422,
            "Invalid",
            f'Lease.{GROUP} "{name}" is invalid: spec.leaseDurationSeconds: Invalid value: '
            f"{duration}: must be greater than 0",
            name,
        )
    transitions = out.get("leaseTransitions")
    if transitions is not None and (not isinstance(transitions, int) or transitions < 0):
        raise ApiError(
            422,
            "Invalid",
            f'Lease.{GROUP} "{name}" is invalid: spec.leaseTransitions: Invalid value: '
            f"{transitions}: must be greater than or equal to 0",
            name,
        )
    return out


def _parsed(body: bytes | None) -> dict[str, Any] | None:
    try:
        value = json.loads(body) if body else None
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _handler(standin: KubeStandin) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            return

        def setup(self) -> None:
            super().setup()
            with standin._lock:
                standin._connections.add(self.connection)

        def finish(self) -> None:
            with standin._lock:
                standin._connections.discard(self.connection)
            with contextlib.suppress(OSError):
                super().finish()

        def _serve(self) -> None:
            method = self.command
            path = urlsplit(self.path).path
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            while standin.hang.is_set():  # an API server that accepts and never answers
                if standin._down.wait(0.05):
                    self.close_connection = True
                    return
            if standin._down.is_set():
                self.close_connection = True
                return
            authorization = self.headers.get("Authorization", "")
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                token.strip().encode(), standin.token.encode()
            ):
                status, data = 401, ApiError(401, "Unauthorized", "Unauthorized").status()
            else:
                try:
                    if standin.before is not None:
                        standin.before(method, path, _parsed(body))
                    # no Content-Type is JSON (kube-apiserver takes its first media type)
                    kind = self.headers.get("Content-Type", "").split(";")[0].strip()
                    if method in ("POST", "PUT") and kind not in ("", "application/json"):
                        raise ApiError(
                            415,
                            "UnsupportedMediaType",
                            f'the body of the request was in an unknown format "{kind}"',
                        )
                    status, data = standin.handle(method, path, body)
                except ApiError as exc:
                    status, data = exc.code, exc.status()
            with standin._lock:
                standin.requests.append(Request(method, path, status))
            payload = json.dumps(data).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("Cache-Control", "no-cache, private")
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _serve

    return Handler
