"""What to do for each environment, given what the registry already holds. Pure.

- `up-to-date`: the environment's `repository:hash-tag` exists.
- `copy`: the same hash exists (or is being built) under another repository: copy it across
  instead of rebuilding. Identical hashes under several names are built once.
- `build`: the hash is nowhere yet.
- `held`: the same inputs failed to build before (a `FixSpec` failure): not built again until
  they change, unless asked (`retry_held`).
- `refused`: the spec is invalid (fix it); `failed`: it could not be planned now (its
  `Failure` says what happens next).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from controller.core.errors import Failure, RetryLater, SpecError
from controller.core.hashing import content_hash
from controller.core.model import Environment
from controller.core.naming import tag_for

Action = Literal["build", "copy", "up-to-date", "held", "refused", "failed"]
NOT_LOOKED_UP = RetryLater("not looked up (base resolution is off)")
Presence = Mapping[tuple[str, str], str | None]
"""(repository, tag) -> digest in the registry, or None when absent."""


@dataclass(frozen=True, slots=True)
class PlanItem:
    env: Environment
    hash: str | None
    image: str | None
    action: Action
    failure: Failure | None = None
    """Why the environment could not be planned (`failed`), e.g. its base could not be resolved;
    for `refused`, the spec's error."""
    source: str | None = None
    """For `copy`: the repository that holds (or will hold) the image."""
    digest: str | None = None
    """For `up-to-date`: the digest already in the registry."""

    @property
    def error(self) -> str | None:
        """What people are told about the failure, if any."""
        return self.failure.message if self.failure is not None else None

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
    failures: Mapping[str, Failure] | None = None,
    held: frozenset[str] = frozenset(),
) -> list[PlanItem]:
    """Decide per environment. `failures` maps an environment path to why it cannot be planned
    now; `held` holds the hashes whose build failed for the spec's own reasons."""
    present = present or {}
    failures = failures or {}
    items: list[PlanItem] = []
    holder: dict[str, str] = {}
    """hash -> a repository that has it, or will once its build is done."""
    hashed: list[tuple[Environment, str, str]] = []
    for env in envs:
        if env.build is None or env.error is not None or env.repository is None:
            error = env.error or SpecError(env.path, "no build could be read from this spec")
            items.append(PlanItem(env, None, None, "refused", Failure(str(error), error, "read")))
            continue
        if env.build.placeholders:  # nobody looked them up: no hash to plan with
            first = env.build.placeholders[0].describe()
            why = failures.get(env.path)
            if why is None:
                why = Failure(f"{first}: not looked up (base resolution is off)", NOT_LOOKED_UP)
            else:
                why = Failure(f"{first}: {why.message}", why.error, why.step)
            items.append(PlanItem(env, None, None, "failed", why))
            continue
        digest = content_hash(env.build)
        image = image_reference(registry, env.repository, digest)
        if env.path in failures:
            items.append(PlanItem(env, digest, image, "failed", failures[env.path]))
            continue
        if digest in held and not present.get((env.repository, tag_for(digest))):
            items.append(PlanItem(env, digest, image, "held"))
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
