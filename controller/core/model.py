"""The build description every spec form is read into. Frozen data, no behaviour beyond views."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from controller.core.conda import CondaSpec
from controller.core.dockerfile import from_references
from controller.core.errors import SpecError

Kind = Literal["aml-v1", "aml-v2", "conda", "pip", "dockerfile", "unknown"]
PythonMode = Literal["conda", "user", "none"]


@dataclass(frozen=True, slots=True)
class ContextFile:
    """One file of a build context; `path` is relative to the context root."""

    path: str
    data: bytes
    executable: bool = False
    link_target: str | None = None


@dataclass(frozen=True, slots=True)
class PythonSetup:
    """How Python gets into the image.

    `conda`: Azure ML's managed environment, created from `conda` under /azureml-envs.
    `user`: the image provides Python itself (`interpreter` is where).
    `none`: managed, but the spec names no packages, so the base is used as is.
    """

    mode: PythonMode
    interpreter: str = "python"
    conda: CondaSpec | None = None


@dataclass(frozen=True, slots=True)
class BuildSpec:
    """Everything that decides the image. Either `base_image` or `dockerfile_path` is set."""

    python: PythonSetup
    base_image: str | None = None
    dockerfile_path: str | None = None
    """Path of the base Dockerfile inside `context`."""
    context: tuple[ContextFile, ...] = ()
    environment: tuple[tuple[str, str], ...] = ()
    platform: str = "linux/amd64"
    base_digests: tuple[tuple[str, str], ...] = ()
    """(reference, `sha256:...`) of each base image once resolved: pinned in FROM, hashed."""
    base_registry: str | None = None
    """Registry whose credentials pull the base (from the secret store, never the spec)."""
    base_registry_identity: str | None = None
    """Client id of a managed identity that pulls the base (`registryIdentity`)."""


@dataclass(frozen=True, slots=True)
class Environment:
    """One discovered environment: its build, or the reason it was refused."""

    name: str
    kind: Kind
    path: str
    """The folder, or the YAML file for Azure ML v2, relative to the repository."""
    files: tuple[str, ...] = ()
    """Every repository path its build was read from."""
    version: str | None = None
    build: BuildSpec | None = None
    error: SpecError | None = None
    repository: str | None = field(default=None)
    """Registry repository, under the configured prefix (set by discovery)."""

    @property
    def ok(self) -> bool:
        return self.error is None and self.build is not None


def base_references(build: BuildSpec) -> list[str]:
    """The base images a build starts from (its image, or its Dockerfile's FROM lines)."""
    if build.base_image is not None:
        return [build.base_image]
    dockerfile = next((f for f in build.context if f.path == build.dockerfile_path), None)
    if dockerfile is None:
        return []
    return from_references(dockerfile.data.decode("utf-8", errors="replace"))
