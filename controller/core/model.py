"""The build description every spec form is read into. Frozen data, no behaviour beyond views."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from controller.core.conda import CondaSpec
from controller.core.dockerfile import from_references
from controller.core.errors import SpecError

Kind = Literal["azureml-asset", "aml-v1", "aml-v2", "conda", "pip", "dockerfile", "unknown"]
PythonMode = Literal["conda", "user", "none"]
PlaceholderKind = Literal["image-tag", "pypi-version"]


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
class Placeholder:
    """One look-up a template file asks for."""

    file: str
    """The template file, as a path in the build context ('': the base image reference)."""
    text: str
    """What is written there, e.g. `mcr.microsoft.com/x:{{latest-image-tag}}`."""
    kind: PlaceholderKind
    subject: str
    """The image (`host/repository`) or the package name."""
    option: str | None = None
    """The tag regex, or the version flags (`pre`)."""

    def replacement(self, value: str) -> str:
        """The text that takes this placeholder's place, given the looked-up value: a tag
        (`:TAG`) or digest (`@sha256:...`) for an image, a version for a package."""
        if self.kind == "image-tag":
            suffix = value if value.startswith("@") else f":{value}"
            return f"{self.subject}{suffix}"
        head, _, _ = self.text.partition("{{")
        return f"{head}{value}"

    def describe(self, *, here: bool = False) -> str:
        """What it looks up, and where (`here`: the message names the file already)."""
        what = "{{latest-image-tag}}" if self.kind == "image-tag" else "{{latest-pypi-version}}"
        where = "" if here else f" in {self.file or 'the image reference'}"
        return f"{what} for {self.subject}{where}"


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
    placeholders: tuple[Placeholder, ...] = ()
    """Values the context's template files look up when the image is built (an azureml-assets
    environment); the build cannot be hashed until they are filled (`templates.fill`)."""
    filled: tuple[tuple[str, str], ...] = ()
    """(placeholder as written, value looked up) of every filled placeholder: hashed."""


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
    also: tuple[str, ...] = ()
    """Other paths with the same name and the same content: one environment, one image."""
    key: str | None = None
    """What status and metrics know it by when its name alone is not unique (see
    `discovery.names`); None: its name."""
    description: str | None = None
    """The spec's description (v2 YAML), carried to Azure ML when publishing; not hashed."""
    tags: tuple[tuple[str, str], ...] = ()
    """The spec's tags (v2 YAML), carried to Azure ML when publishing; not hashed."""

    @property
    def ok(self) -> bool:
        return self.error is None and self.build is not None

    @property
    def status_key(self) -> str:
        return self.key or self.name

    @property
    def paths(self) -> tuple[str, ...]:
        """Every path this environment is kept at."""
        return (self.path, *self.also)


def base_references(build: BuildSpec) -> list[str]:
    """The base images a build starts from (its image, or its Dockerfile's FROM lines)."""
    if build.base_image is not None:
        return [build.base_image]
    dockerfile = next((f for f in build.context if f.path == build.dockerfile_path), None)
    if dockerfile is None:
        return []
    return from_references(dockerfile.data.decode("utf-8", errors="replace"), build.platform)
