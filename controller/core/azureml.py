"""How a built environment maps to an Azure ML environment version. Pure.

Azure ML environment versions are immutable and name their image; one that names envship's
image by digest and carries no conda file is used as it is (Azure ML builds nothing), so a job
saying `environment: azureml:NAME@latest` starts at once.

- **name**: the environment's name, with what Azure ML does not allow in an asset name
  (letters, digits, `-`, `_`, `.`; a letter or digit first; 255 at most) turned into `-`;
- **version**: the spec's version where it has one; otherwise `h` and the first 12 hex digits of
  the content hash, so a re-run with the same content registers nothing new and a change
  registers a new version (a spec that keeps its version while its content changes conflicts:
  Azure ML keeps the old image, and the spec's version must be bumped);
- **image**: `host/repository@sha256:...` (the verified digest, never a moving tag);
- **description** and **tags** from the spec, plus `envship.hash`, `envship.source`,
  `envship.commit` and `envship.python` (where the image's Python is: the managed conda
  environment's, or the one the spec names).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from controller.core.model import BuildSpec
from controller.core.render import conda_env_dir

NAME_LIMIT = 255
_NOT_IN_NAME = re.compile(r"[^A-Za-z0-9_.-]")
TAG_HASH = "envship.hash"
TAG_SOURCE = "envship.source"
TAG_COMMIT = "envship.commit"
TAG_PYTHON = "envship.python"


@dataclass(frozen=True, slots=True)
class AzureMLVersion:
    """What one Azure ML environment version should say."""

    name: str
    version: str
    image: str
    description: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)

    @property
    def reference(self) -> str:
        """How a job names it: `azureml:NAME:VERSION`."""
        return f"azureml:{self.name}:{self.version}"


def asset_name(name: str) -> str:
    """`name` as an Azure ML asset name (see the module's docstring)."""
    cleaned = _NOT_IN_NAME.sub("-", name).lstrip("-_.") or "environment"
    return cleaned[:NAME_LIMIT]


def derived_version(content_hash: str) -> str:
    """The version of an environment whose spec has none: its content, in short."""
    return "h" + content_hash.removeprefix("sha256:")[:12]


def python_path(build: BuildSpec) -> str | None:
    """Where the image's Python is: the managed conda environment's, the spec's interpreter,
    or None when the base image's own is used and the spec does not say."""
    setup = build.python
    if setup.mode == "conda" and setup.conda is not None:
        return f"{conda_env_dir(setup.conda)}/bin/python"
    if setup.mode == "user":
        return setup.interpreter
    return None


def azureml_version(
    *,
    name: str,
    version: str | None,
    content_hash: str,
    image: str,
    digest: str,
    build: BuildSpec | None = None,
    description: str | None = None,
    tags: Mapping[str, str] | None = None,
    source: str | None = None,
    commit: str | None = None,
) -> AzureMLVersion:
    """The version to register for an image verified at `image@digest` (`image` without tag)."""
    if not digest.startswith("sha256:"):
        raise ValueError(f"not a digest: {digest!r}")
    repository = image.split("@", 1)[0]
    last = repository.rsplit("/", 1)[-1]
    if ":" in last:
        repository = repository.rsplit(":", 1)[0]
    found: dict[str, str] = {str(k): str(v) for k, v in (tags or {}).items()}
    found[TAG_HASH] = content_hash
    if source:
        found[TAG_SOURCE] = source
    if commit:
        found[TAG_COMMIT] = commit
    python = python_path(build) if build is not None else None
    if python:
        found[TAG_PYTHON] = python
    return AzureMLVersion(
        name=asset_name(name),
        version=str(version) if version not in (None, "") else derived_version(content_hash),
        image=f"{repository}@{digest}",
        description=description,
        tags=found,
    )


def same_image(registered: str | None, wanted: AzureMLVersion) -> bool:
    """Whether a registered version already names the wanted image (by digest)."""
    return registered is not None and registered.strip() == wanted.image


__all__ = [
    "TAG_COMMIT",
    "TAG_HASH",
    "TAG_PYTHON",
    "TAG_SOURCE",
    "AzureMLVersion",
    "asset_name",
    "azureml_version",
    "derived_version",
    "python_path",
    "same_image",
]
