"""A stand-in for ACR Tasks: Azure Resource Manager's run APIs of one registry, and the blob
storage its build sources and run logs live in, over HTTPS on 127.0.0.1.

It speaks the wire protocol the real Azure SDK clients speak (azure-mgmt-containerregistrytasks
and azure-storage-blob), so envship's own code runs unchanged against it:

- `POST .../registries/{name}/listBuildSourceUploadUrl` -> `{uploadUrl, relativePath}`: a blob
  SAS URL (`PUT`, `x-ms-blob-type: BlockBlob`) for a gzipped tar;
- `POST .../registries/{name}/scheduleRun` (a `DockerBuildRequest`) -> the queued `Run`;
- `GET .../runs/{id}`, `GET .../runs` (`$top`), `POST .../runs/{id}/listLogSasUrl`,
  `POST .../runs/{id}/cancel`;
- the run log, an append blob read with `HEAD` (size, `x-ms-meta-Complete` when done) and
  ranged `GET`s (`x-ms-range`), as `az acr build` reads it.

Each run is performed for real: the uploaded context is built by the local Docker engine
(classic builder, as ACR Tasks' docker build), with the run's custom registry credentials for
its bases, and pushed to the real local registry standing for the ACR, whose digest the run
reports. The run's output streams into its log as it comes, in ACR Tasks' words.

Management calls need an Entra token for `https://management.azure.com` from the tests' issuer;
blobs need a valid, unexpired SAS signature. Faults to inject: throttled schedules (429),
fewer agents than runs (runs wait `Queued`), lost logs, short-lived SAS URLs, slow starts.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import hmac
import io
import itertools
import json
import secrets
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import formatdate
from typing import Any
from urllib.parse import urlencode

import docker
import docker.errors
from aiohttp import web

from tests.support.identity import EntraIssuer
from tests.support.infra import Certs, Registry, free_port
from tests.support.servers import BackgroundServer

ARM_AUDIENCE = "https://management.azure.com"
ACCOUNT = "acrtaskstandin"
TERMINAL = {"Succeeded", "Failed", "Canceled", "Error", "Timeout"}


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y/%m/%d %H:%M:%S")


@dataclass
class Blob:
    data: bytearray = field(default_factory=bytearray)
    metadata: dict[str, str] = field(default_factory=dict)
    kind: str = "BlockBlob"
    modified: float = field(default_factory=time.time)

    @property
    def etag(self) -> str:
        return f'"0x{hashlib.sha256(bytes(self.data)).hexdigest()[:16].upper()}"'


@dataclass
class Run:
    run_id: str
    request: dict[str, Any]
    status: str = "Queued"
    created: str = field(default_factory=_now)
    started: str | None = None
    finished: str | None = None
    error: str | None = None
    outputs: list[dict[str, str]] = field(default_factory=list)
    cancelled: threading.Event = field(default_factory=threading.Event)
    log_requests: int = 0
    scheduled_at: float = field(default_factory=time.monotonic)
    ended_at: float | None = None

    def body(self, resource: str) -> dict[str, Any]:
        props: dict[str, Any] = {
            "runId": self.run_id,
            "status": self.status,
            "runType": "QuickBuild",
            "createTime": self.created,
            "lastUpdatedTime": _now(),
            "platform": self.request.get("platform"),
            "outputImages": self.outputs,
            "provisioningState": "Succeeded",
            "isArchiveEnabled": False,
        }
        if self.started:
            props["startTime"] = self.started
        if self.finished:
            props["finishTime"] = self.finished
        if self.error:
            props["runErrorMessage"] = self.error
        return {
            "id": f"{resource}/runs/{self.run_id}",
            "name": self.run_id,
            "type": "Microsoft.ContainerRegistry/registries/runs",
            "properties": props,
        }


@dataclass
class AcrTasksStandIn:
    """One registry's ACR Tasks: `registry` is the real registry its runs push to."""

    certs: Certs
    entra: EntraIssuer
    registry: Registry
    docker_url: str
    """The Docker engine runs build on (its API URL)."""
    subscription: str = "00000000-0000-0000-0000-00000000sub1"
    resource_group: str = "envship-rg"
    name: str = "envshipacr"
    agents: int = 10
    """Runs at once; the others wait Queued, as runs "waiting for an agent"."""
    port: int = field(default_factory=free_port)
    sas_lifetime: float = 3600.0
    throttle: int = 0
    """The next this many scheduleRun requests are answered 429."""
    lose_logs: bool = False
    """Runs write no log blob (ACR lost it)."""
    start_delay: float = 0.0
    """Seconds a run waits on its agent before it starts building."""
    requests: Counter[str] = field(default_factory=Counter)
    schedule_bodies: list[bytes] = field(default_factory=list)
    runs: dict[str, Run] = field(default_factory=dict)
    running: int = 0
    peak: int = 0
    """The most runs that were building at once."""
    _blobs: dict[str, Blob] = field(default_factory=dict)
    _key: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _agents: threading.Semaphore | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)
    _server: BackgroundServer | None = field(default=None, init=False, repr=False)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def endpoint(self) -> str:
        return f"https://{self.host}"

    @property
    def resource(self) -> str:
        return (
            f"/subscriptions/{self.subscription}/resourceGroups/{self.resource_group}"
            f"/providers/Microsoft.ContainerRegistry/registries/{self.name}"
        )

    # -- SAS -----------------------------------------------------------------------------

    def _sign(self, path: str, expiry: str, permissions: str) -> str:
        message = f"{path}\n{expiry}\n{permissions}".encode()
        return base64.b64encode(hmac.new(self._key, message, hashlib.sha256).digest()).decode()

    def sas_url(self, container: str, blob: str, permissions: str) -> str:
        path = f"/{ACCOUNT}/{container}/{blob}"
        expiry = (datetime.now(UTC) + timedelta(seconds=self.sas_lifetime)).strftime(
            "%Y-%m-%dT%H:%M:%SZ"
        )
        signature = self._sign(path, expiry, permissions)
        query = urlencode(
            {"sv": "2023-11-03", "sr": "b", "sp": permissions, "se": expiry, "sig": signature}
        )
        return f"{self.endpoint}{path}?{query}"

    def _sas_problem(self, request: web.Request, needs: str) -> str | None:
        query = request.rel_url.query
        expiry, signature, permissions = (
            query.get("se", ""),
            query.get("sig", ""),
            query.get("sp", ""),
        )
        if not signature or not hmac.compare_digest(
            signature, self._sign(request.path, expiry, permissions)
        ):
            return "Signature did not match."
        if needs not in permissions:
            return "This request is not authorized to perform this operation using this permission."
        try:
            ends = datetime.strptime(expiry, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        except ValueError:
            return "Signed expiry time is not valid."
        if ends < datetime.now(UTC):
            return f"Signed expiry time [{expiry}] must be after the current time."
        return None

    # -- blobs ---------------------------------------------------------------------------

    @staticmethod
    def _storage_error(status: int, code: str, message: str) -> web.Response:
        body = (
            '<?xml version="1.0" encoding="utf-8"?>'
            f"<Error><Code>{code}</Code><Message>{message}</Message></Error>"
        )
        return web.Response(
            status=status,
            body=body.encode(),
            content_type="application/xml",
            headers={"x-ms-error-code": code, "x-ms-request-id": secrets.token_hex(8)},
        )

    @staticmethod
    def _blob_headers(blob: Blob) -> dict[str, str]:
        headers = {
            "ETag": blob.etag,
            "Last-Modified": formatdate(blob.modified, usegmt=True),
            "x-ms-blob-type": blob.kind,
            "x-ms-version": "2023-11-03",
            "x-ms-request-id": secrets.token_hex(8),
            "Accept-Ranges": "bytes",
        }
        for key, value in blob.metadata.items():
            headers[f"x-ms-meta-{key}"] = value
        return headers

    async def blob(self, request: web.Request) -> web.StreamResponse:
        key = f"{request.match_info['container']}/{request.match_info['blob']}"
        needs = "w" if request.method == "PUT" else "r"
        problem = self._sas_problem(request, needs)
        if problem is not None:
            self.requests["blob refused"] += 1
            return self._storage_error(403, "AuthenticationFailed", problem)
        if request.method == "PUT":
            self.requests["blob put"] += 1
            if request.headers.get("x-ms-blob-type") != "BlockBlob":
                return self._storage_error(400, "InvalidHeaderValue", "x-ms-blob-type")
            blob = Blob(bytearray(await request.read()))
            with self._lock:
                self._blobs[key] = blob
            return web.Response(status=201, headers=self._blob_headers(blob))
        with self._lock:
            found = self._blobs.get(key)
            blob = (
                Blob(bytearray(found.data), dict(found.metadata), found.kind, found.modified)
                if found
                else None
            )
        if blob is None:
            self.requests["blob missing"] += 1
            return self._storage_error(404, "BlobNotFound", "The specified blob does not exist.")
        headers = self._blob_headers(blob)
        size = len(blob.data)
        if request.method == "HEAD":
            self.requests["blob head"] += 1
            headers["Content-Length"] = str(size)
            return web.Response(status=200, headers=headers)
        self.requests["blob get"] += 1
        wanted = request.headers.get("x-ms-range") or request.headers.get("Range")
        if not wanted:
            return web.Response(status=200, body=bytes(blob.data), headers=headers)
        first_text, _, last_text = wanted.removeprefix("bytes=").partition("-")
        first = int(first_text)
        last = min(int(last_text) if last_text else size - 1, size - 1)
        if first >= size:
            return self._storage_error(416, "InvalidRange", "The range specified is invalid.")
        headers["Content-Range"] = f"bytes {first}-{last}/{size}"
        return web.Response(status=206, body=bytes(blob.data[first : last + 1]), headers=headers)

    def _append(self, key: str, text: str) -> None:
        if self.lose_logs:
            return
        with self._lock:
            blob = self._blobs.setdefault(key, Blob(kind="AppendBlob"))
            blob.data += text.encode()
            blob.modified = time.time()

    def _complete(self, key: str, outcome: str) -> None:
        if self.lose_logs:
            return
        with self._lock:
            blob = self._blobs.setdefault(key, Blob(kind="AppendBlob"))
            blob.metadata["Complete"] = outcome

    # -- management ----------------------------------------------------------------------

    def _authorized(self, request: web.Request) -> web.Response | None:
        header = request.headers.get("Authorization", "")
        try:
            self.entra.verify(header.removeprefix("Bearer "), ARM_AUDIENCE)
        except Exception:
            self.requests["arm refused"] += 1
            return web.json_response(
                {"error": {"code": "InvalidAuthenticationToken",
                           "message": "The access token is invalid or has expired."}},
                status=401,
            )  # fmt: skip
        if request.match_info.get("sub") != self.subscription or (
            request.match_info.get("rg", "").lower() != self.resource_group.lower()
            or request.match_info.get("name") != self.name
        ):
            self.requests["arm unknown"] += 1
            return web.json_response(
                {"error": {"code": "ResourceNotFound",
                           "message": "The Resource was not found."}},
                status=404,
            )  # fmt: skip
        return None

    async def upload_url(self, request: web.Request) -> web.Response:
        if (refused := self._authorized(request)) is not None:
            return refused
        self.requests["upload url"] += 1
        blob = f"{secrets.token_hex(16)}.tar.gz"
        return web.json_response(
            {"uploadUrl": self.sas_url("source", blob, "cw"), "relativePath": f"source/{blob}"}
        )

    async def schedule(self, request: web.Request) -> web.Response:
        if (refused := self._authorized(request)) is not None:
            return refused
        body = await request.read()
        self.schedule_bodies.append(body)
        if self.throttle > 0:
            self.throttle -= 1
            self.requests["throttled"] += 1
            return web.json_response(
                {"error": {"code": "TooManyRequests",
                           "message": "Too many requests; try again later."}},
                status=429,
                headers={"Retry-After": "1"},
            )  # fmt: skip
        payload = json.loads(body)
        if payload.get("type") != "DockerBuildRequest":
            return web.json_response(
                {"error": {"code": "InvalidRequest", "message": "unsupported run request"}},
                status=400,
            )
        self.requests["scheduled"] += 1
        run = Run(f"cb{next(self._ids)}", payload)
        with self._lock:
            self.runs[run.run_id] = run
        thread = threading.Thread(target=self._perform, args=(run,), daemon=True)
        self._threads.append(thread)
        thread.start()
        return web.json_response(run.body(self.resource))

    @staticmethod
    def _no_run() -> web.Response:
        return web.json_response(
            {"error": {"code": "ResourceNotFound", "message": "run not found"}}, status=404
        )

    async def get_run(self, request: web.Request) -> web.Response:
        if (refused := self._authorized(request)) is not None:
            return refused
        self.requests["get run"] += 1
        run = self.runs.get(request.match_info["run"])
        if run is None:
            return self._no_run()
        return web.json_response(run.body(self.resource))

    async def list_runs(self, request: web.Request) -> web.Response:
        if (refused := self._authorized(request)) is not None:
            return refused
        self.requests["list runs"] += 1
        top = int(request.rel_url.query.get("$top", "100"))
        runs = sorted(self.runs.values(), key=lambda r: r.created, reverse=True)[:top]
        return web.json_response({"value": [r.body(self.resource) for r in runs]})

    async def log_url(self, request: web.Request) -> web.Response:
        if (refused := self._authorized(request)) is not None:
            return refused
        run = self.runs.get(request.match_info["run"])
        if run is None:
            return self._no_run()
        self.requests["log url"] += 1
        run.log_requests += 1
        link = self.sas_url("logs", f"{run.run_id}.log", "r")
        return web.json_response({"logLink": link, "logArtifactLink": None})

    async def cancel(self, request: web.Request) -> web.Response:
        if (refused := self._authorized(request)) is not None:
            return refused
        run = self.runs.get(request.match_info["run"])
        if run is None:
            return self._no_run()
        self.requests["cancel"] += 1
        run.cancelled.set()
        return web.Response(status=200)

    # -- performing a run ----------------------------------------------------------------

    def _perform(self, run: Run) -> None:
        assert self._agents is not None
        log = f"logs/{run.run_id}.log"
        with self._agents:
            if run.cancelled.is_set():
                self._end(run, log, "Canceled", None)
                return
            run.status, run.started = "Running", _now()
            with self._lock:
                self.running += 1
                self.peak = max(self.peak, self.running)
            began = time.monotonic()
            timeout = float(run.request.get("timeout") or 3600)
            if self.start_delay:
                run.cancelled.wait(self.start_delay)
            self._append(log, f"{_stamp()} Downloading source code...\n")
            outcome: dict[str, Any] = {}
            worker = threading.Thread(target=self._build, args=(run, log, outcome), daemon=True)
            worker.start()
            while worker.is_alive():
                worker.join(0.1)
                if run.cancelled.is_set():
                    self._end(run, log, "Canceled", "run was canceled")
                    return
                if time.monotonic() - began > timeout:
                    outcome["abandoned"] = True
                    self._end(run, log, "Timeout", f"run timed out after {timeout:.0f}s")
                    return
            elapsed = time.monotonic() - began
            if "error" in outcome:
                self._append(log, f"Run ID: {run.run_id} failed after {elapsed:.0f}s. "
                                  f"Error: {outcome['error']}\n")  # fmt: skip
                self._end(run, log, "Failed", str(outcome["error"]))
                return
            run.outputs = outcome["outputs"]
            self._append(log, f"Run ID: {run.run_id} was successful after {elapsed:.0f}s\n")
            self._end(run, log, "Succeeded", None)

    def _end(self, run: Run, log: str, status: str, error: str | None) -> None:
        if run.started is not None:
            with self._lock:
                self.running -= 1
        run.status, run.error, run.finished = status, error, _now()
        run.ended_at = time.monotonic()
        self._complete(log, "successful" if status == "Succeeded" else "failed")

    def _build(self, run: Run, log: str, outcome: dict[str, Any]) -> None:
        request = run.request
        try:
            source = str(request["sourceLocation"])
            with self._lock:
                uploaded = self._blobs.get(source)
            if uploaded is None:
                raise RuntimeError(f"source {source} not found")
            context = bytes(uploaded.data)
            gzip.decompress(context)  # the upload is a gzipped tar, as az acr build sends
            self._append(log, f"{_stamp()} Finished downloading source code\n")
            api = docker.APIClient(base_url=self.docker_url, timeout=600)
            own = self.registry.auth()
            credentials = (request.get("credentials") or {}).get("customRegistries") or {}
            for host, creds in credentials.items():
                api.login(
                    username=creds["userName"]["value"],
                    password=creds["password"]["value"],
                    registry=host,
                    reauth=True,
                )
                self._append(log, f"{_stamp()} Successfully logged into {host}\n")
            if own:
                api.login(registry=self.registry.host, reauth=True, **own)
            self._append(log, f"{_stamp()} Successfully logged into {self.registry.host}\n")
            images = [f"{self.registry.host}/{name}" for name in request["imageNames"]]
            platform = request.get("platform") or {}
            self._append(
                log,
                f"{_stamp()} Executing step ID: build. Timeout(sec): "
                f"{request.get('timeout')}, Working directory: '', Network: ''\n",
            )
            stream = api.build(
                fileobj=io.BytesIO(context),
                custom_context=True,
                encoding="gzip",
                dockerfile=request.get("dockerFilePath") or "Dockerfile",
                tag=images[0],
                platform=f"{str(platform.get('os', 'linux')).lower()}/"
                f"{platform.get('architecture', 'amd64')}",
                buildargs={a["name"]: a["value"] for a in request.get("arguments") or []},
                pull=True,
                rm=True,
                forcerm=True,
                decode=True,
            )
            for item in stream:
                if "error" in item:
                    self._append(log, f"{item['error'].rstrip()}\n")
                    raise RuntimeError("failed during run, err: exit status 1")
                text = item.get("stream") or ""
                if text:
                    self._append(log, text if text.endswith("\n") else text + "\n")
            if outcome.get("abandoned") or run.cancelled.is_set():
                return
            self._append(log, f"{_stamp()} Successfully executed container: build\n")
            outputs = []
            for image in images:
                repository, tag = image.split("/", 1)[1].rsplit(":", 1)
                if image != images[0]:
                    api.tag(images[0], image)
                self._append(log, f"{_stamp()} Pushing image: {image}, attempt 1\n")
                digest = None
                for item in api.push(image.rsplit(":", 1)[0], tag=tag, stream=True, decode=True,
                                     auth_config=own):  # fmt: skip
                    if "error" in item:
                        raise RuntimeError(f"push failed: {item['error']}")
                    digest = (item.get("aux") or {}).get("Digest", digest)
                self._append(log, f"{_stamp()} Successfully pushed image: {image}\n")
                outputs.append(
                    {"registry": f"{self.name}.azurecr.io", "repository": repository,
                     "tag": tag, "digest": str(digest)}
                )  # fmt: skip
            outcome["outputs"] = outputs
        except (RuntimeError, docker.errors.DockerException, KeyError) as exc:
            outcome["error"] = str(exc)

    # -- lifecycle -----------------------------------------------------------------------

    async def _app(self) -> web.Application:
        app = web.Application(client_max_size=256 * 1024 * 1024)
        base = (
            "/subscriptions/{sub}/resourceGroups/{rg}/providers/"
            "Microsoft.ContainerRegistry/registries/{name}"
        )
        app.router.add_post(base + "/listBuildSourceUploadUrl", self.upload_url)
        app.router.add_post(base + "/scheduleRun", self.schedule)
        app.router.add_get(base + "/runs", self.list_runs)
        app.router.add_get(base + "/runs/{run}", self.get_run)
        app.router.add_post(base + "/runs/{run}/listLogSasUrl", self.log_url)
        app.router.add_post(base + "/runs/{run}/cancel", self.cancel)
        for method in ("PUT", "GET", "HEAD"):
            app.router.add_route(method, f"/{ACCOUNT}/{{container}}/{{blob:.+}}", self.blob)
        return app

    def start(self) -> AcrTasksStandIn:
        self._agents = threading.Semaphore(self.agents)
        self._server = BackgroundServer(self.certs, self.port, "acrtasks-standin")
        self._server.start(self._app)
        return self

    def wait_idle(self, timeout: float = 120) -> None:
        """Until every run has ended (a killed client leaves its runs going)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(run.status in TERMINAL for run in self.runs.values()):
                return
            time.sleep(0.1)
        raise AssertionError("ACR Tasks stand-in: runs still going")

    def stop(self) -> None:
        for run in self.runs.values():
            run.cancelled.set()
        if self._server is not None:
            self._server.stop()
            self._server = None


__all__ = ["ARM_AUDIENCE", "AcrTasksStandIn"]
