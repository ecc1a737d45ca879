"""What to do for each environment, given what the registry already holds. Pure.

- `up-to-date`: the environment's `repository:hash-tag` exists.
- `copy`: the same hash exists (or is being built) under another repository: copy it across
  instead of rebuilding. Identical hashes under several names are built once.
- `build`: the hash is nowhere yet.
- `refused`: the spec is invalid (fix it); `failed`: it could not be planned (retry later).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from controller.core.hashing import content_hash
from controller.core.model import Environment
from controller.core.naming import tag_for

Action = Literal["build", "copy", "up-to-date", "refused", "failed"]
Presence = Mapping[tuple[str, str], str | None]
"""(repository, tag) -> digest in the registry, or None when absent."""


@dataclass(frozen=True, slots=True)
class PlanItem:
    env: Environment
    hash: str | None
    image: str | None
    action: Action
    problem: str | None = None
    """Why the environment could not be planned (`failed`), e.g. its base could not be resolved."""
    source: str | None = None
    """For `copy`: the repository that holds (or will hold) the image."""
    digest: str | None = None
    """For `up-to-date`: the digest already in the registry."""

    @property
    def error(self) -> str | None:
        if self.env.error is not None:
            return str(self.env.error)
        return self.problem

    @property
    def repository(self) -> str | None:
        return self.env.repository

    @property
    def tag(self) -> str | None:
        return tag_for(self.hash) if self.hash else None


def image_reference(registry: str | None, repository: str, content_hash: str) -> str:
    base = f"{registry.rstrip('/')}/{repository}" if registry else repository
    return f"{base}:{tag_for(content_hash)}"


def plan(
    envs: Iterable[Environment],
    registry: str | None = None,
    present: Presence | None = None,
    failures: Mapping[str, str] | None = None,
) -> list[PlanItem]:
    """Decide per environment. `failures` maps an environment path to why it cannot be planned."""
    present = present or {}
    failures = failures or {}
    items: list[PlanItem] = []
    holder: dict[str, str] = {}
    """hash -> a repository that has it, or will once its build is done."""
    hashed: list[tuple[Environment, str, str]] = []
    for env in envs:
        if env.build is None or env.error is not None or env.repository is None:
            items.append(PlanItem(env, None, None, "refused"))
            continue
        if env.build.placeholders:  # nobody looked them up: no hash to plan with
            why = failures.get(env.path) or "not looked up (base resolution is off)"
            first = env.build.placeholders[0].describe()
            items.append(PlanItem(env, None, None, "failed", f"{first}: {why}"))
            continue
        digest = content_hash(env.build)
        image = image_reference(registry, env.repository, digest)
        if env.path in failures:
            items.append(PlanItem(env, digest, image, "failed", failures[env.path]))
            continue
        hashed.append((env, digest, image))
        if present.get((env.repository, tag_for(digest))):
            holder.setdefault(digest, env.repository)
    for env, digest, image in hashed:
        repository = env.repository or ""
        found = present.get((repository, tag_for(digest)))
        if found:
            items.append(PlanItem(env, digest, image, "up-to-date", digest=found))
        elif digest in holder:
            items.append(PlanItem(env, digest, image, "copy", source=holder[digest]))
        else:
            holder[digest] = repository
            items.append(PlanItem(env, digest, image, "build"))
    return sorted(items, key=lambda item: (item.env.path, item.env.name))
