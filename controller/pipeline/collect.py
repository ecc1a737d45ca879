"""Garbage collection, apart from syncing: hash tags whose hash no live environment has."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime

from controller.adapters.redact import redact
from controller.adapters.registry import OciRegistry, RegistryError
from controller.core.errors import EnvshipError
from controller.core.gc import HASH_TAG, TagInfo, garbage
from controller.core.hashing import content_hash
from controller.core.model import Environment
from controller.pipeline.outcome import Reporter, Step
from controller.pipeline.planning import resolved
from controller.pipeline.resolve import Resolver


def find_garbage(
    resolver: Resolver,
    registry: OciRegistry,
    prefix: str,
    envs: Sequence[Environment],
    grace: float,
) -> list[TagInfo]:
    """Hash tags under `prefix` whose hash no live environment has, older than `grace` seconds
    and not protected by a moving tag. Collects nothing when a hash is not known."""
    live_envs, failures = resolved(resolver, envs)
    if failures:
        path, why = next(iter(failures.items()))
        # Its hash, and so which of its images are live, is unknown: collect nothing.
        raise RegistryError(f"{path}: {why}; not collecting garbage")
    live = [content_hash(env.build) for env in live_envs if env.ok and env.build]
    in_use = [env.repository for env in live_envs if env.repository]
    tags: list[TagInfo] = []
    for repository in registry.repositories(prefix):
        for tag in registry.tags(repository):
            digest = registry.digest(repository, tag, refresh=True)
            if digest is None:
                continue
            created = None
            if HASH_TAG.fullmatch(tag):
                labels = registry.labels(repository, tag) or {}
                created = parse_created(labels.get("org.opencontainers.image.created"))
            tags.append(TagInfo(repository, tag, digest, created))
    return garbage(tags, live, now=time.time(), grace=grace, live_repositories=in_use)


def delete(registry: OciRegistry, reporter: Reporter, found: Sequence[TagInfo]) -> list[str]:
    """Delete what `find_garbage` found; returns the errors (each leaves that tag alone)."""
    errors = []
    for info in found:
        try:
            registry.delete(info.repository, info.digest)
            reporter.line(info.repository, f"deleted {info.tag} ({info.digest})", Step.DELETE)
        except EnvshipError as exc:
            errors.append(redact(f"{info.repository}:{info.tag}: {exc}"))
    return errors


def parse_created(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None


__all__ = ["delete", "find_garbage", "parse_created"]
