"""Build and push images with the Docker engine (docker-py, classic builder).

The build context is an in-memory tar with fixed metadata (mtime 0, uid/gid 0, mode 0644 or
0755), so the same rendered build is byte-identical between runs and machines and the engine's
cache hits. Credentials for pulls and pushes are handed to each call and stay in memory: nothing
is written to `~/.docker/config.json` or any other file. A push whose stream reports an error is
a failure even though the API call returned.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from controller.core.dockerfile import run_mounts
from controller.core.errors import FixSpec, Misconfigured, RetryLater
from controller.core.render import Rendered

if TYPE_CHECKING:
    # docker-py (with requests) takes a tenth of a second to import: it loads with the first
    # builder, and tarfile with the first build context, so commands that build nothing never
    # load them.
    import tarfile

    import docker

Log = Callable[[str], None]


class BuildError(FixSpec):
    """The build itself failed (a RUN step, a Dockerfile the engine refuses): the spec must
    change; building the same inputs again would fail the same way."""


class PullError(RetryLater):
    """The engine could not pull a base image (its registry refused or failed): retry later."""


class EngineError(RetryLater):
    """The Docker engine could not be reached or failed: retry later."""


class PushError(RetryLater):
    """The registry refused or broke the push: retry later, or check its credentials."""


class NeedsBuildKit(Misconfigured):
    """The build asks for what only BuildKit does (build secrets, `RUN --mount`), and envship
    is configured with the classic builder: the operator must choose BuildKit."""


CHOOSE_BUILDKIT = "choose BuildKit (builds.builder: buildkit, or --builder buildkit)"
USE_LOCAL_ENGINE = "builds.engine: local, or --engine local"


def refuse_buildkit_features(rendered: Rendered, secrets: Mapping[str, str] | None) -> None:
    """What the classic builder cannot do, said before the engine is asked (it would drop
    build secrets silently, and refuse `RUN --mount` with its own words)."""
    mounts = run_mounts(rendered.dockerfile)
    if mounts:
        kinds = ", ".join(sorted({m.type for m in mounts}))
        raise NeedsBuildKit(
            f"{rendered.dockerfile_path} line {mounts[0].line}: RUN --mount ({kinds}) needs "
            f"BuildKit, which the classic builder is not; {CHOOSE_BUILDKIT}"
        )
    if secrets:
        raise NeedsBuildKit(
            f"the classic builder cannot pass build secrets ({', '.join(sorted(secrets))}) "
            f"to a build; {CHOOSE_BUILDKIT}"
        )


def context_tar(rendered: Rendered) -> bytes:
    """The build context as tar bytes; identical input gives identical bytes."""
    import tarfile  # noqa: PLC0415 - see the imports above

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        folders: set[str] = set()
        for item in rendered.files:
            parts = item.path.split("/")[:-1]
            for depth in range(1, len(parts) + 1):
                folder = "/".join(parts[:depth])
                if folder not in folders:
                    folders.add(folder)
                    archive.addfile(_info(folder, tarfile.DIRTYPE, 0o755))
            if item.link_target is not None:
                info = _info(item.path, tarfile.SYMTYPE, 0o777)
                info.linkname = item.link_target
                archive.addfile(info)
            else:
                info = _info(item.path, tarfile.REGTYPE, 0o755 if item.executable else 0o644)
                info.size = len(item.data)
                archive.addfile(info, io.BytesIO(item.data))
    return buffer.getvalue()


def _info(name: str, kind: bytes, mode: int) -> tarfile.TarInfo:
    import tarfile  # noqa: PLC0415 - see the imports above

    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


@dataclass(frozen=True, slots=True)
class Built:
    image_id: str
    log: str
    cache: Literal["inline", "registry"] | None = None
    """How the build exported its cache: in the image (inline: the image must become the cache
    tag) or to the cache tag itself (registry); None: not at all."""


@contextlib.contextmanager
def _engine_call(during: str, refused: Callable[[str], Exception]) -> Iterator[None]:
    """docker-py's errors as envship's: the engine refused the request (`refused(reason)`: the
    spec's or the registry's fault) or failed itself (`EngineError`: retry later)."""
    import docker.errors  # noqa: PLC0415 - see the imports above
    import requests  # noqa: PLC0415

    try:
        yield
    except docker.errors.APIError as exc:
        raise refused(str(exc.explanation)) from None
    except (docker.errors.DockerException, requests.RequestException) as exc:
        raise EngineError(f"the Docker engine failed {during}: {type(exc).__name__}") from None


def _stream_lines(
    stream: Iterator[Mapping[str, Any]], log: Log, aux: dict[str, Any] | None = None
) -> tuple[list[str], str | None]:
    """Collect a Docker JSON stream; returns (lines, first error). `aux` collects the stream's
    auxiliary data (a push's digest)."""
    lines: list[str] = []
    error: str | None = None
    for item in stream:
        if aux is not None:
            aux.update(item.get("aux") or {})
        text = item.get("stream") or item.get("status") or ""
        if item.get("progress") or item.get("progressDetail"):
            continue  # byte counters: noise in a log kept per environment
        if "error" in item or "errorDetail" in item:
            detail = item.get("errorDetail") or {}
            error = error or str(item.get("error") or detail.get("message") or "unknown error")
            text = f"ERROR: {error}"
        if item.get("id") and text:
            text = f"{item['id']}: {text}"
        if text:
            for line in str(text).rstrip("\n").splitlines():
                lines.append(line)
                log(line)
    return lines, error


class DockerBuilder:
    """Thin, honest wrapper around the engine."""

    buildkit = False
    remote = False

    def __init__(self, client: docker.DockerClient | None = None) -> None:
        import docker  # noqa: PLC0415 - see the imports above
        import docker.errors  # noqa: PLC0415

        try:
            self.client = client or docker.from_env(timeout=600)
            self.api = self.client.api
        except docker.errors.DockerException as exc:
            raise EngineError(f"the Docker engine is not reachable: {exc}") from None

    def close(self) -> None:
        self.client.close()

    def ping(self) -> None:
        import docker.errors  # noqa: PLC0415 - see the imports above
        import requests  # noqa: PLC0415

        try:
            self.api.ping()
        except (docker.errors.DockerException, requests.RequestException) as exc:
            raise EngineError(
                f"the Docker engine is not reachable ({type(exc).__name__})"
            ) from None

    def _inspect(self, reference: str) -> dict[str, Any] | None:
        """The engine's record of a local image, None when it has none."""
        import docker.errors  # noqa: PLC0415 - see the imports above
        import requests  # noqa: PLC0415

        try:
            data: dict[str, Any] = self.api.inspect_image(reference)
        except docker.errors.ImageNotFound:
            return None
        except (docker.errors.DockerException, requests.RequestException) as exc:
            raise EngineError(f"the Docker engine failed: {type(exc).__name__}") from None
        return data

    def has_image(self, reference: str) -> bool:
        return self._inspect(reference) is not None

    def image_labels(self, reference: str) -> dict[str, str] | None:
        data = self._inspect(reference)
        if data is None:
            return None
        labels = (data.get("Config") or {}).get("Labels") or {}
        return {str(k): str(v) for k, v in labels.items()}

    def pull(self, reference: str, auth: Mapping[str, str] | None, log: Log) -> None:
        """Pull `reference` (a `repo@digest` or `repo:tag`) with credentials held in memory."""
        repository, tag = _split(reference)

        def refused(reason: str) -> PullError:
            return PullError(f"base image {reference} could not be pulled: {reason}")

        with _engine_call("while pulling", refused):
            stream = self.api.pull(
                repository,
                tag=tag,
                stream=True,
                decode=True,
                auth_config=dict(auth) if auth else None,
            )
            _lines, error = _stream_lines(stream, log)
        if error:
            raise refused(error)

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
        """Build from the in-memory context; the image is tagged `tag` locally.

        The classic builder imports and exports no registry cache (`cache_ref` is unused) and
        needs no registry credentials: envship pulls the bases before.

        `build_args` must hold no secret (they are recorded in the image's history). The classic
        builder has no build secrets nor `RUN --mount`: a build that needs them is refused
        (`NeedsBuildKit`).
        """
        import docker.errors  # noqa: PLC0415 - see the imports above

        refuse_buildkit_features(rendered, secrets)
        context = io.BytesIO(context_tar(rendered))

        def refused(reason: str) -> BuildError:
            return BuildError(f"build failed: {reason}")

        with _engine_call("during the build", refused):
            stream = self.api.build(
                fileobj=context,
                custom_context=True,
                dockerfile=rendered.dockerfile_path,
                tag=tag,
                labels=dict(labels),
                platform=platform,
                rm=True,
                forcerm=True,
                pull=False,
                decode=True,
                buildargs=dict(build_args or {}),
            )
            lines, error = _stream_lines(stream, log)
        if error:
            raise refused(error)
        try:
            image_id = str(self.api.inspect_image(tag)["Id"])
        except docker.errors.DockerException as exc:
            raise EngineError(f"the built image is missing: {type(exc).__name__}") from None
        return Built(image_id, "\n".join(lines))

    def push(self, repository: str, tag: str, auth: Mapping[str, str] | None, log: Log) -> str:
        """Push `repository:tag`; returns the digest the registry reported."""

        def refused(reason: str) -> PushError:
            return PushError(f"push of {repository}:{tag} failed: {reason}")

        aux: dict[str, Any] = {}
        with _engine_call("during the push", refused):
            stream = self.api.push(
                repository,
                tag=tag,
                stream=True,
                decode=True,
                auth_config=dict(auth) if auth else None,
            )
            _lines, error = _stream_lines(stream, log, aux)
        if error:
            raise refused(error)
        if not aux.get("Digest"):
            raise PushError(f"push of {repository}:{tag} reported no digest")
        return str(aux["Digest"])


def _split(reference: str) -> tuple[str, str | None]:
    if "@" in reference:
        repository, digest = reference.split("@", 1)
        return repository, digest
    last = reference.rsplit("/", 1)[-1]
    if ":" in last:
        repository, tag = reference.rsplit(":", 1)
        return repository, tag
    return reference, "latest"


__all__ = [
    "USE_LOCAL_ENGINE",
    "BuildError",
    "Built",
    "DockerBuilder",
    "EngineError",
    "Log",
    "NeedsBuildKit",
    "PullError",
    "PushError",
    "context_tar",
    "json",
]
