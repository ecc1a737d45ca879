"""What the build step needs of an engine: `Builder`. The classic builder (docker-py,
`controller.adapters.builder.DockerBuilder`) and BuildKit through the docker CLI
(`controller.adapters.buildkit.BuildKitBuilder`) implement it, and so do ACR Tasks runs
(`controller.adapters.acrtasks.AcrTasksBuilder`). Importing this module loads no engine
library."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol

from controller.adapters.builder import Built, Log
from controller.core.render import Rendered


class Builder(Protocol):
    """An engine that builds rendered builds, and pulls and pushes their images.

    Every method raises envship's errors only: `EngineError` (the engine or its tooling failed:
    retry later), `BuildError` (the build failed for the spec's reasons), `PullError`,
    `PushError`, or a `Misconfigured` error for what this engine cannot do at all."""

    buildkit: bool
    """Whether builds run through BuildKit (cache and secret mounts): the renderer emits them
    only then."""

    remote: bool
    """Whether builds run on a service that pulls the bases and pushes the image itself (ACR
    Tasks): envship pulls nothing into it and reuses no local image, and `push` reports what
    the run pushed (which the build step still verifies in the registry)."""

    def ping(self) -> None:
        """Check, once before the first build, that the engine answers and can build."""

    def close(self) -> None:
        """Let go of the engine's connections."""

    def has_image(self, reference: str) -> bool: ...

    def image_labels(self, reference: str) -> dict[str, str] | None:
        """The labels of a local image, None when the engine has no such image."""

    def pull(self, reference: str, auth: Mapping[str, str] | None, log: Log) -> None: ...

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
        """Build from envship's deterministic context; the image is tagged `tag` in the engine.

        `secrets` (id -> value) are build secrets (`RUN --mount=type=secret,id=ID`): never an
        argument, an environment variable, a file or a layer. `cache_ref` is where the build
        exports its cache to, where the engine can (`Built.cache` says how it did), and with
        `cache_import` (the registry has it) imports it from; `registry_auth` (host ->
        credentials) is what the engine's own pulls and cache transfers need."""
        ...

    def push(self, repository: str, tag: str, auth: Mapping[str, str] | None, log: Log) -> str:
        """Push `repository:tag`; the digest the registry reported."""
        ...


BuilderFactory = Callable[[], Builder]

__all__ = ["Builder", "BuilderFactory"]
