"""How environments are named, and how names become registry repositories.

Environment names: explicit where the spec names itself (v1 `name`, v2 `name`, an asset's
`asset.yaml`); otherwise implicit, from the environment's path below the discovery root
(`implicit_name`): the same path always gives the same name, whatever else the repository holds.
Repository: `<prefix>/<name in lowercase>`; it must match the OCI distribution grammar.
Tag: the first 32 hex digits of the content hash (128 bits, like Azure ML's own image names).
"""

from __future__ import annotations

import re

from controller.core.errors import SpecError
from controller.core.requirements import find_url_credentials

_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
_REPOSITORY = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_REFERENCE = re.compile(
    r"(?:(?P<host>[A-Za-z0-9.-]+(?::[0-9]+)?)/)?"
    rf"(?P<repo>{_COMPONENT}(?:/{_COMPONENT})*)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?"
    r"(?:@(?P<digest>[a-z0-9]+:[a-f0-9]{32,}))?"
)
TAG_LENGTH = 32
CACHE_TAG = "buildcache"
"""The tag of each repository that holds its build cache (BuildKit's registry cache, or the last
image built, whose config carries BuildKit's inline cache); never a hash tag, so never
collected."""
MAX_REPOSITORY = 255
ROOT_NAME = "root"
"""The implicit name of an environment that is the discovery root folder itself."""
GENERIC_STEMS = frozenset(
    {
        "conda",
        "conda_dependencies",
        "conda-dependencies",
        "conda_env",
        "conda-env",
        "conda_environment",
        "conda-environment",
        "dependencies",
        "env",
        "environment",
        "requirements",
    }
)
"""Conda file names (without .yml/.yaml) that say nothing of their own: such a file is named
after its folder alone; any other file is named after its folder and its own name."""
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_SEPARATORS = re.compile(r"[._-]{2,}")


def _component(text: str) -> str:
    """`text` as one repository path component: letters, digits and single separators."""
    text = _UNSAFE.sub("-", text)
    text = _SEPARATORS.sub(lambda m: m.group(0) if m.group(0) == "__" else "-", text)
    return text.strip("._-")


def implicit_name(path: str, root: str, *, stem: str | None = None) -> str:
    """The name of an environment that does not name itself: its folder's path below `root`,
    parts joined by `-` (`team-a/train/environment` -> `team-a-train-environment`), followed by
    the spec file's own name when that says something (`conda-yamls/pydata.yml` ->
    `conda-yamls-pydata`). Characters a registry repository cannot hold become `-`."""
    relative = path[len(root) + 1 :] if root and path.startswith(root + "/") else path
    if root and path == root:
        relative = ""
    parts = [_component(part) for part in relative.split("/") if part]
    if stem is not None and stem.lower() not in GENERIC_STEMS:
        parts.append(_component(stem))
    name = "-".join(part for part in parts if part)
    return name or ROOT_NAME


def validate_prefix(prefix: str) -> str:
    prefix = prefix.strip("/")
    if prefix and not _REPOSITORY.fullmatch(prefix):
        raise ValueError(f"prefix {prefix!r} is not a valid registry path")
    return prefix


def repository_for(name: str, prefix: str, origin: str) -> str:
    """The registry repository of an environment, or a SpecError naming the rule broken."""
    repo_name = name.strip().lower()
    full = f"{prefix}/{repo_name}" if prefix else repo_name
    if not repo_name or not _REPOSITORY.fullmatch(full):
        raise SpecError(
            origin,
            f"name {name!r} cannot be a registry repository name: use letters, digits and "
            "single '.', '_' or '-' between them",
        )
    if len(full) > MAX_REPOSITORY:
        raise SpecError(origin, f"name {name!r} makes a repository name over 255 characters")
    return full


def tag_for(content_hash: str) -> str:
    return content_hash.removeprefix("sha256:")[:TAG_LENGTH]


def check_image_reference(
    reference: str, origin: str, what: str = "the base image reference"
) -> str:
    """A base image reference as Docker reads it (host, path, tag, digest); refused if malformed.

    A reference that carries credentials (`user:secret@host/...`, a URL with user-info) is
    refused without echoing it.
    """
    ref = reference.strip()
    if "://" in ref or "@" in ref.split("/", 1)[0] or find_url_credentials(ref):
        raise SpecError(
            origin,
            f"{what} carries credentials or a URL scheme; give a plain reference and "
            "configure the registry's credentials as a secret reference",
        )
    match = _REFERENCE.fullmatch(ref)
    if not ref or match is None:
        raise SpecError(origin, f"base image {reference!r} is not a valid image reference")
    return ref


def split_reference(reference: str) -> tuple[str | None, str, str | None, str | None]:
    """(host, repository, tag, digest) of a valid reference; host is None for Docker Hub names."""
    match = _REFERENCE.fullmatch(reference)
    if match is None:
        raise ValueError(reference)
    host = match.group("host")
    repo = match.group("repo")
    if host is not None and "." not in host and ":" not in host and host != "localhost":
        repo, host = f"{host}/{repo}", None
    return host, repo, match.group("tag"), match.group("digest")
