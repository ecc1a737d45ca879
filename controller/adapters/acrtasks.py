"""Builds on ACR Tasks: the engine Azure ML builds its own environment images with.

Each build is what `az acr build` does, through the Azure SDK: envship's deterministic context
(gzipped tar) is uploaded to the registry's build-source upload URL (a blob SAS URL), a
`DockerBuildRequest` run is scheduled that builds and pushes the image envship names, and the
run's log (an append blob) is read by byte range into envship's progress lines until the run
ends. The digest the run reports is what `push` returns; the build step then checks that the
registry holds it before anything is tagged. Runs in flight are cancelled by `close`.

No Docker engine is involved, and so nothing privileged: the controller needs only an Entra
identity allowed to schedule runs on the registry. ACR Tasks' docker build is not BuildKit
(Azure/acr#721): the renderer emits no cache or secret mounts for it, and a build that needs
them (a Dockerfile's `RUN --mount`, build secrets, private indexes) is refused with what to do.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from controller.adapters.builder import (
    USE_LOCAL_ENGINE,
    BuildError,
    Built,
    EngineError,
    Log,
    NeedsBuildKit,
    PushError,
    context_tar,
)
from controller.adapters.secrets import default_credential
from controller.core.dockerfile import run_mounts
from controller.core.errors import Misconfigured, RetryLater
from controller.core.naming import split_reference
from controller.core.render import Rendered

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.mgmt.containerregistrytasks import ContainerRegistryTasksMgmtClient
    from azure.mgmt.containerregistrytasks.models import Run, RunProperties

ARM = "https://management.azure.com"
RETRIES = 3
"""The SDK's own retries of a request; throttled schedules are then backed off by envship,
which says so in the environment's progress (the SDK would wait silently)."""
TERMINAL = {"Succeeded", "Failed", "Canceled", "Error", "Timeout"}


class AcrTasksError(EngineError):
    """ACR Tasks failed or could not be reached (a 5xx, a lost connection, throttling that did
    not pass): retry later."""


class AcrTasksRefused(Misconfigured):
    """ACR Tasks refused envship's identity or does not know the registry: the operator must
    give the identity its role, or correct builds.acr."""


class RunTimedOut(Misconfigured):
    """A run took longer than builds.acr.timeout and ACR Tasks stopped it: raise the timeout
    (the operator's decision: runs are billed by the second)."""


@dataclass(frozen=True)
class AcrTasksSettings:
    """Where runs are scheduled: an Azure Container Registry (by resource), and how."""

    subscription: str
    resource_group: str
    registry: str
    """The registry's resource name (`NAME` of NAME.azurecr.io)."""
    endpoint: str = ARM
    """Azure Resource Manager (another cloud's, e.g. https://management.usgovcloudapi.net)."""
    timeout: int = 3600
    """Seconds a run may take before ACR Tasks stops it (ACR's own limit is 28,800)."""
    poll_seconds: float = 2.0
    """How often a run's status and log are read."""
    schedule_attempts: int = 8
    """Times a throttled schedule (429) is tried, with backoff, before the build is retried
    later as a whole."""
    credential_factory: Callable[[], TokenCredential] = field(default=default_credential)
    """The Entra identity runs are scheduled with (workload identity in AKS, the Azure CLI on a
    laptop). TLS is verified with the system's trust (REQUESTS_CA_BUNDLE, as for any Azure SDK
    client)."""


AZURECR = (".azurecr.io", ".azurecr.cn", ".azurecr.us")


def registry_name(host: str | None) -> str | None:
    """NAME of a NAME.azurecr.io login server; None for any other host."""
    host = (host or "").lower().split(":")[0]
    for suffix in AZURECR:
        if host.endswith(suffix) and len(host) > len(suffix):
            return host.removesuffix(suffix)
    return None


def _status(exc: Exception) -> int | None:
    response = getattr(exc, "response", None)
    code = getattr(exc, "status_code", None) or getattr(response, "status_code", None)
    return int(code) if isinstance(code, int) else None


def service_error(exc: Exception, during: str, registry: str) -> Exception:
    """An Azure SDK error as envship's, without repeating the service's text (it may hold a SAS
    URL): refused (401/403/404: the operator must act) or failed (retry later)."""
    from azure.core.exceptions import ClientAuthenticationError  # noqa: PLC0415 - acr only

    code = _status(exc)
    if isinstance(exc, ClientAuthenticationError) or code == 401:
        return AcrTasksRefused(
            f"ACR Tasks refused envship's identity {during} on registry {registry}: check the "
            "identity's sign-in and give it a role that may schedule runs (docs/deploy.md)"
        )
    if code == 403:
        return AcrTasksRefused(
            f"envship's identity may not do this {during} on registry {registry} (403): give "
            "it a role that may schedule runs (docs/deploy.md)"
        )
    if code == 404:
        return AcrTasksRefused(
            f"ACR Tasks does not know registry {registry} (404 {during}): check builds.acr "
            "(subscription, resource group, registry name)"
        )
    shown = f"HTTP {code}" if code else type(exc).__name__
    return AcrTasksError(f"ACR Tasks failed {during} ({shown})")


@contextlib.contextmanager
def _service_call(during: str, registry: str) -> Iterator[None]:
    from azure.core.exceptions import AzureError  # noqa: PLC0415 - acr builds only

    try:
        yield
    except AzureError as exc:
        raise service_error(exc, during, registry) from None


def _properties(run: Run) -> RunProperties:
    if run.properties is None:
        raise AcrTasksError("ACR Tasks answered with a run without its properties")
    return run.properties


def _run_status(run: Run) -> str:
    """The run's status as ACR names it (`Succeeded`): the SDK's enum is a str whose str() is
    its Python name."""
    status = _properties(run).status
    return str(getattr(status, "value", status) or "")


def _platform(platform: str) -> dict[str, str]:
    """`os/arch[/variant]` as ACR Tasks names it (`Linux`, `amd64`)."""
    parts = (platform or "linux/amd64").split("/")
    os_name = {"linux": "Linux", "windows": "Windows"}.get(parts[0].lower(), parts[0])
    found = {"os": os_name, "architecture": parts[1] if len(parts) > 1 else "amd64"}
    if len(parts) > 2:
        found["variant"] = parts[2]
    return found


def _with_labels(rendered: Rendered, labels: Mapping[str, str]) -> Rendered:
    """The rendered build with `labels` as a last LABEL instruction: a Docker build request
    has no labels of its own. The context stays envship's otherwise."""
    if not labels:
        return rendered
    pairs = " ".join(f"{json.dumps(k)}={json.dumps(v)}" for k, v in sorted(labels.items()))
    dockerfile = rendered.dockerfile.rstrip("\n") + f"\nLABEL {pairs}\n"
    files = tuple(
        replace(f, data=dockerfile.encode()) if f.path == rendered.dockerfile_path else f
        for f in rendered.files
    )
    return replace(rendered, dockerfile=dockerfile, files=files)


def refuse_buildkit_features(rendered: Rendered, secrets: Mapping[str, str] | None) -> None:
    """ACR Tasks' docker build has no BuildKit: say so before a run is paid for."""
    mounts = run_mounts(rendered.dockerfile)
    if mounts:
        raise NeedsBuildKit(
            f"{rendered.dockerfile_path} line {mounts[0].line}: RUN --mount needs BuildKit, "
            "which ACR Tasks' docker build is not; build it with a local engine "
            f"({USE_LOCAL_ENGINE})"
        )
    if secrets:
        raise NeedsBuildKit(
            f"ACR Tasks runs cannot be given build secrets ({', '.join(sorted(secrets))}); "
            f"build it with a local engine ({USE_LOCAL_ENGINE})"
        )


class LogReader:
    """A run's log, an append blob read by byte range from where the last read stopped.

    ACR Tasks marks the blob `Complete` in its metadata when the run has written it all. A SAS
    URL that expired is asked for again; a log that cannot be read at all is reported once and
    the run's outcome still comes from the run itself."""

    def __init__(self, link: Callable[[], str], log: Log) -> None:
        self._link = link
        self._log = log
        self._url: str | None = None
        self._offset = 0
        self._partial = b""
        self.complete = False
        self.lost = False
        self.lines: list[str] = []

    def _blob(self) -> Any:
        from azure.storage.blob import BlobClient  # noqa: PLC0415 - acr builds only

        if self._url is None:
            self._url = self._link()
        return BlobClient.from_blob_url(self._url)

    def read(self) -> None:
        """Emit what was appended since the last read (whole lines)."""
        from azure.core.exceptions import (  # noqa: PLC0415 - acr builds only
            AzureError,
            ResourceNotFoundError,
        )

        if self.complete or self.lost:
            return
        try:
            blob = self._blob()
            properties = blob.get_blob_properties()
            size = int(properties.size or 0)
            if size > self._offset:
                data = blob.download_blob(offset=self._offset, length=size - self._offset).readall()
                self._offset += len(data)
                self._emit(data)
            metadata = {k.lower(): v for k, v in (properties.metadata or {}).items()}
            if "complete" in metadata:
                self.complete = True
                self._emit(b"", final=True)
        except ResourceNotFoundError:
            pass  # not written yet, or lost: the run's end decides (`give_up`)
        except AzureError as exc:
            if _status(exc) == 403:  # the SAS expired: ask for another
                self._url = None

    def give_up(self) -> None:
        """The run ended and its log never became complete: say so, once."""
        if not self.complete and not self.lost:
            self._emit(b"", final=True)
            self.lost = True
            self._log("the run's log could not be read to its end (ACR Tasks lost it)")

    def _emit(self, data: bytes, *, final: bool = False) -> None:
        text = self._partial + data
        lines = text.split(b"\n")
        self._partial = b"" if final else lines.pop()
        for raw in lines:
            line = raw.decode("utf-8", "replace").rstrip("\r")
            if line or not final:
                self.lines.append(line)
                self._log(line)


class AcrTasksBuilder:
    """Builds with ACR Tasks runs: scheduled, followed, verified, cancelled on close."""

    buildkit = False
    remote = True

    def __init__(self, settings: AcrTasksSettings) -> None:
        self.settings = settings
        self._client: ContainerRegistryTasksMgmtClient | None = None
        self._lock = threading.Lock()
        self._active: set[str] = set()
        self._pushed: dict[str, str] = {}
        self._closed = threading.Event()

    @property
    def client(self) -> ContainerRegistryTasksMgmtClient:
        from azure.mgmt.containerregistrytasks import (  # noqa: PLC0415 - acr builds only
            ContainerRegistryTasksMgmtClient,
        )

        with self._lock:
            if self._client is None:
                self._client = ContainerRegistryTasksMgmtClient(
                    self.settings.credential_factory(),
                    self.settings.subscription,
                    base_url=self.settings.endpoint,
                    retry_total=RETRIES,
                )
            return self._client

    def _call(self, during: str) -> contextlib.AbstractContextManager[None]:
        return _service_call(during, self.settings.registry)

    def ping(self) -> None:
        s = self.settings
        with self._call("listing runs"):
            next(iter(self.client.runs.list(s.resource_group, s.registry, top=1)), None)

    def close(self) -> None:
        """Cancel the runs still going (a shutdown), then let go of the connections. The
        builder serves again afterwards (the controller keeps one across reconciles)."""
        s = self.settings
        self._closed.set()
        with self._lock:
            active = sorted(self._active)
        for run_id in active:
            with contextlib.suppress(Exception):
                self.client.runs.cancel(s.resource_group, s.registry, run_id)
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    # A run pulls its bases itself: envship pulls nothing into it.
    def has_image(self, reference: str) -> bool:
        return False

    def image_labels(self, reference: str) -> dict[str, str] | None:
        return None

    def pull(self, reference: str, auth: Mapping[str, str] | None, log: Log) -> None:
        return None

    def build(
        self,
        rendered: Rendered,
        *,
        tag: str,
        labels: Mapping[str, str],
        platform: str,
        log: Log,
        build_args: Mapping[str, str] | None = None,
        secrets: Mapping[str, str] | None = None,
        cache_ref: str | None = None,
        cache_import: bool = True,
        registry_auth: Mapping[str, Mapping[str, str]] | None = None,
    ) -> Built:
        """One run that builds `tag` (host/repository:tag) and pushes it to the registry.

        Credentials for other registries a base comes from enter the run as secret custom
        registry credentials; the run signs in to its own registry by itself. No registry
        cache: ACR Tasks keeps no layers between runs (Azure/acr#204)."""
        refuse_buildkit_features(rendered, secrets)
        with self._lock:
            if not self._active:  # a close() before has cancelled all it had to: serve again
                self._closed.clear()
        host, repository, image_tag, _digest = split_reference(tag)
        if image_tag is None:
            raise PushError(f"no tag to build: {tag}")
        image = f"{repository}:{image_tag}"
        source = self._upload(_with_labels(rendered, labels))
        request = self._request(rendered, image, source, platform, build_args, registry_auth, host)
        run_id = self._schedule(request, log)
        with self._lock:
            self._active.add(run_id)
        try:
            run, reader = self._follow(run_id, log)
        finally:
            with self._lock:
                self._active.discard(run_id)
        status = _run_status(run)
        if status == "Succeeded":
            digest = self._digest_of(run, repository, image_tag)
            if digest is None:
                raise PushError(f"run {run_id} succeeded but reported no pushed image for {image}")
            self._pushed[tag] = digest
            return Built(digest, "\n".join(reader.lines))
        raise self._failure(run_id, status, run, reader)

    def push(self, repository: str, tag: str, auth: Mapping[str, str] | None, log: Log) -> str:
        """The digest the run pushed for `repository:tag` (the run itself pushes)."""
        digest = self._pushed.pop(f"{repository}:{tag}", None)
        if digest is None:
            raise PushError(f"no ACR Tasks run pushed {repository}:{tag}")
        log(f"pushed by ACR Tasks: {digest}")
        return digest

    # -- the steps of one run --------------------------------------------------------------

    def _upload(self, rendered: Rendered) -> str:
        """The context, gzipped, at the registry's build-source upload URL; its relative path."""
        from azure.storage.blob import BlobClient  # noqa: PLC0415 - acr builds only

        s = self.settings
        with self._call("asking for a build-source upload URL"):
            upload = self.client.registries.get_build_source_upload_url(
                s.resource_group, s.registry
            )
        if not upload.upload_url or not upload.relative_path:
            raise AcrTasksError("ACR Tasks gave no build-source upload URL")
        archive = gzip.compress(context_tar(rendered), mtime=0)
        with self._call("uploading the build context"):
            blob = BlobClient.from_blob_url(upload.upload_url)
            blob.upload_blob(archive, blob_type="BlockBlob", overwrite=True)
        return str(upload.relative_path)

    def _request(
        self,
        rendered: Rendered,
        image: str,
        source: str,
        platform: str,
        build_args: Mapping[str, str] | None,
        registry_auth: Mapping[str, Mapping[str, str]] | None,
        own_host: str | None,
    ) -> Any:
        from azure.mgmt.containerregistrytasks import models  # noqa: PLC0415 - acr builds only

        custom = {
            host: models.CustomRegistryCredentials(
                user_name=models.SecretObject(value=auth["username"], type="Opaque"),
                password=models.SecretObject(value=auth["password"], type="Opaque"),
            )
            for host, auth in sorted((registry_auth or {}).items())
            if host != own_host and auth.get("username") and auth.get("password")
        }
        return models.DockerBuildRequest(
            image_names=[image],
            is_push_enabled=True,
            no_cache=False,
            docker_file_path=rendered.dockerfile_path,
            arguments=[
                models.Argument(name=k, value=v, is_secret=False)
                for k, v in sorted((build_args or {}).items())
            ],
            timeout=self.settings.timeout,
            platform=models.PlatformProperties(**_platform(platform)),
            source_location=source,
            is_archive_enabled=False,
            credentials=models.Credentials(
                source_registry=models.SourceRegistryCredentials(login_mode="Default"),
                custom_registries=custom or None,
            ),
        )

    def _schedule(self, request: Any, log: Log) -> str:
        """Schedule the run; throttling (429, beyond the SDK's own retries) is waited out with
        backoff, then left to the next reconcile."""
        from azure.core.exceptions import AzureError  # noqa: PLC0415 - acr builds only

        s = self.settings
        delay = s.poll_seconds
        for attempt in range(1, s.schedule_attempts + 1):
            try:
                run = self.client.registries.schedule_run(s.resource_group, s.registry, request)
            except AzureError as exc:
                if _status(exc) != 429:
                    raise service_error(exc, "scheduling a run", s.registry) from None
                if attempt == s.schedule_attempts:
                    raise AcrTasksError(
                        f"ACR Tasks throttled new runs {attempt} times in a row; retrying later"
                    ) from None
                log(f"ACR Tasks is throttling new runs; trying again in {delay:.1f} s")
                if self._closed.wait(delay * (0.5 + random.random())):  # noqa: S311 - jitter
                    raise AcrTasksError("envship stopped while waiting to schedule") from None
                delay = min(delay * 2, 60.0)
                continue
            run_id = str(_properties(run).run_id or run.name or "")
            if not run_id:
                raise AcrTasksError("ACR Tasks scheduled a run without an id")
            log(f"ACR Tasks run {run_id} scheduled on registry {s.registry}")
            return run_id
        raise AcrTasksError("ACR Tasks did not schedule the run")  # schedule_attempts < 1

    def _log_link(self, run_id: str) -> str:
        s = self.settings
        with self._call("asking for the run's log"):
            result = self.client.runs.get_log_sas_url(s.resource_group, s.registry, run_id)
        link = result.log_link
        if not link:
            raise AcrTasksError(f"ACR Tasks gave no log for run {run_id}")
        return str(link)

    def _follow(self, run_id: str, log: Log) -> tuple[Run, LogReader]:
        """Poll the run and stream its log until the run has ended and its log is complete
        (or, a few polls after the end, given up as lost)."""
        s = self.settings
        reader = LogReader(lambda: self._log_link(run_id), log)
        said_queued = False
        ended_polls = 0
        failures = 0
        # ACR stops a run at its timeout; a run that has not ended well after that (its queue
        # wait included) is one envship stops watching, so that no build waits forever.
        deadline = time.monotonic() + 2 * s.timeout + 3600
        while True:
            if time.monotonic() > deadline:
                raise AcrTasksError(f"ACR Tasks run {run_id} did not end; retrying later")
            try:
                with self._call("reading the run"):
                    run = self.client.runs.get(s.resource_group, s.registry, run_id)
                failures = 0
            except AcrTasksError:
                failures += 1  # a blip: the run goes on without envship watching
                if failures >= 5:
                    raise
                run = None
            if run is not None:
                status = _run_status(run)
                if status == "Queued" and not said_queued:
                    log(f"run {run_id} is waiting for an agent")
                    said_queued = True
                if status != "Queued":
                    with contextlib.suppress(RetryLater):
                        reader.read()
                if status in TERMINAL:
                    if reader.complete:
                        return run, reader
                    ended_polls += 1
                    if ended_polls >= 3:
                        reader.give_up()
                        return run, reader
            if self._closed.wait(s.poll_seconds):
                raise AcrTasksError(f"envship stopped while run {run_id} was going (cancelled)")

    @staticmethod
    def _digest_of(run: Run, repository: str, tag: str) -> str | None:
        for output in _properties(run).output_images or []:
            if output.repository == repository and output.tag == tag and output.digest:
                return str(output.digest)
        return None

    @staticmethod
    def _failure(run_id: str, status: str, run: Run, reader: LogReader) -> Exception:
        error = _properties(run).run_error_message
        last = [line for line in reader.lines if line.strip()][-5:]
        detail = f": {error}" if error else ""
        tail = ("; the log ends: " + " | ".join(last)) if last else ""
        if status == "Failed":
            return BuildError(f"ACR Tasks run {run_id} failed{detail}{tail}")
        if status == "Timeout":
            return RunTimedOut(
                f"ACR Tasks run {run_id} took longer than its timeout and was stopped; "
                "raise builds.acr.timeout (--acr-timeout) if the build needs longer"
            )
        return AcrTasksError(f"ACR Tasks run {run_id} ended {status}{detail}; retrying later")


__all__ = [
    "AcrTasksBuilder",
    "AcrTasksError",
    "AcrTasksRefused",
    "AcrTasksSettings",
    "LogReader",
    "RunTimedOut",
    "registry_name",
]
