"""What to do for each environment. Without a registry, everything that is valid is to be built."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from controller.core.hashing import content_hash
from controller.core.model import Environment
from controller.core.naming import tag_for

Action = Literal["build", "refused"]


@dataclass(frozen=True, slots=True)
class PlanItem:
    env: Environment
    hash: str | None
    image: str | None
    action: Action

    @property
    def error(self) -> str | None:
        return str(self.env.error) if self.env.error is not None else None


def image_reference(registry: str | None, repository: str, content_hash: str) -> str:
    base = f"{registry.rstrip('/')}/{repository}" if registry else repository
    return f"{base}:{tag_for(content_hash)}"


def plan(envs: Iterable[Environment], registry: str | None = None) -> list[PlanItem]:
    items = []
    for env in envs:
        if env.build is None or env.error is not None or env.repository is None:
            items.append(PlanItem(env, None, None, "refused"))
            continue
        digest = content_hash(env.build)
        items.append(
            PlanItem(env, digest, image_reference(registry, env.repository, digest), "build")
        )
    return items
