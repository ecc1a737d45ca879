"""What a sync is asked to do: where images go and how builds are run. One default for each
setting, whichever command (or the controller) asks."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from controller.adapters.forked import usable_cpus
from controller.adapters.packageindex import PackageIndex
from controller.adapters.secrets import CredentialRefs, SecretRef
from controller.core.credentials import url_credential


def default_jobs() -> int:
    """Builds in parallel when nothing says otherwise: half the CPUs this process may use."""
    return max(1, usable_cpus() // 2)


@dataclass(frozen=True, slots=True)
class Target:
    """`host[:port][/prefix]`: where images go."""

    host: str
    prefix: str

    @classmethod
    def parse(cls, reference: str, default_prefix: str) -> Target:
        """`host[:port][/prefix]`; a URL, and anything holding credentials, is refused without
        being repeated."""
        text = reference.strip().rstrip("/")
        host, _, prefix = text.partition("/")
        if "@" in host or url_credential(text) is not None:
            raise ValueError(
                "the registry reference holds user-info or a token; give host[:port][/prefix] "
                "and the credentials as secret references"
            )
        if "://" in text:
            raise ValueError("give the registry as host[:port][/prefix], not a URL")
        if not host:
            raise ValueError(f"registry {reference!r} has no host")
        return cls(host, prefix or default_prefix)


CacheMode = Literal["auto", "registry", "inline", "off"]
CACHE_MODES: tuple[CacheMode, ...] = ("auto", "registry", "inline", "off")


@dataclass(frozen=True)
class SyncOptions:
    jobs: int = field(default_factory=default_jobs)
    dry_run: bool = False
    resolve_bases: bool = True
    moving_tags: tuple[str, ...] = ()
    tag_version: bool = False
    source: str | None = None
    revision: str | None = None
    private_indexes: tuple[str, ...] = ()
    """Package index URLs given to builds that mount the `envship-pip-conf` build secret."""
    index_credentials: Mapping[str, CredentialRefs] = field(default_factory=dict)
    """Index host -> username and password references."""
    package_index: PackageIndex | None = None
    """Where `{{latest-pypi-version}}` is looked up (default: PyPI)."""
    build_secrets: Mapping[str, SecretRef] = field(default_factory=dict)
    """Build secret id -> reference: each build gets the ones its Dockerfile mounts
    (`RUN --mount=type=secret,id=ID`), as BuildKit secrets."""
    build_cache: bool = True
    """Builds import and export their cache through the target registry (`buildcache` tag of
    each repository), where the builder can."""
    held: frozenset[str] = frozenset()
    """Content hashes whose build failed for the spec's own reasons: not built again."""


__all__ = ["CACHE_MODES", "CacheMode", "SyncOptions", "Target", "default_jobs"]
