"""Step 1 of a sync: resolve the environments' bases and placeholders, ask the registry which
hash tags it holds, and decide (the pure `controller.core.plan`)."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from controller.adapters.registry import OciRegistry, RegistryError
from controller.adapters.secrets import SecretError
from controller.core.errors import Failure
from controller.core.hashing import content_hash
from controller.core.model import Environment
from controller.core.naming import tag_for
from controller.core.plan import PlanItem, plan
from controller.pipeline.outcome import failure
from controller.pipeline.resolve import Resolver

CHECK_WORKERS = 16
CHECK = "check"
"""The step a registry check failure names: when every environment fails there, the registry
is down (an outage, not the environments' own failure)."""


def resolved(
    resolver: Resolver, envs: Sequence[Environment]
) -> tuple[list[Environment], dict[str, Failure]]:
    """Placeholders filled and bases pinned (`Resolver.resolve`); what cannot be planned now is
    set aside with its failure (path -> failure)."""
    resolution = resolver.resolve(envs)
    return resolution.envs, resolution.problems


def planned(
    resolver: Resolver,
    registry: OciRegistry,
    host: str,
    envs: Sequence[Environment],
    held: frozenset[str] = frozenset(),
) -> list[PlanItem]:
    """What to do for each environment, given what the registry holds now."""
    envs, failures = resolved(resolver, envs)
    wanted: dict[tuple[str, str], str] = {}
    for env in envs:
        if env.ok and env.build and env.repository and env.path not in failures:
            wanted[(env.repository, tag_for(content_hash(env.build)))] = env.path
    present: dict[tuple[str, str], str | None] = {}

    def check(key: tuple[str, str]) -> None:
        try:
            present[key] = registry.digest(*key)
        except (RegistryError, SecretError) as exc:
            failures[wanted[key]] = failure(exc, CHECK, f"registry check failed: {exc}")

    with ThreadPoolExecutor(CHECK_WORKERS) as workers:
        list(workers.map(check, sorted(wanted)))
    return plan(envs, host, present, failures, held)


__all__ = ["CHECK", "CHECK_WORKERS", "planned", "resolved"]
