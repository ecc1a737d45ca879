"""One sync: the steps in order, each taking and returning a small typed value.

    plan   (resolve bases and placeholders, check the registry, decide: `planning`)
      -> build  (build + push + verify, copy across repositories: `building`)
      -> tag    (moving tags after verified pushes only: `tagging`)
      -> publish (Azure ML environment versions, when configured: `publishing`)

Garbage collection (`collect`) is apart: the controller runs it after a full resync.

Each environment fails alone: a base that cannot be resolved, a failing RUN, a refused push,
a registry or engine that is down, are reported on the environments they touch while the others
complete; each `Result` keeps its `Failure`, whose error's class says what happens next.
"""

from __future__ import annotations

from collections.abc import Sequence

from controller.adapters.builder import DockerBuilder
from controller.adapters.registries import RegistryPool
from controller.adapters.registry import RegistryError
from controller.core.errors import EnvshipError, Failure
from controller.core.gc import TagInfo
from controller.core.model import Environment
from controller.core.plan import PlanItem
from controller.pipeline import collect, planning
from controller.pipeline.building import Builds
from controller.pipeline.engine import BuilderFactory
from controller.pipeline.options import SyncOptions, Target
from controller.pipeline.outcome import Reporter, Result
from controller.pipeline.publishing import Publishing, publish, say_would_publish
from controller.pipeline.resolve import Resolver
from controller.pipeline.tagging import move_tags


class Sync:
    def __init__(
        self,
        target: Target,
        pool: RegistryPool,
        options: SyncOptions,
        reporter: Reporter | None = None,
        builder_factory: BuilderFactory = DockerBuilder,
        publisher: Publishing | None = None,
    ) -> None:
        self.target = target
        self.pool = pool
        self.registry = pool.get(target.host)
        self.options = options
        self.resolver = Resolver(
            pool, enabled=options.resolve_bases, package_index=options.package_index
        )
        self.reporter = reporter or Reporter()
        self.builds = Builds(target.host, pool, options, self.reporter, builder_factory)
        self.publisher = publisher

    def run(self, envs: Sequence[Environment]) -> list[Result]:
        """plan -> build -> tag; a dry run stops after the plan."""
        items = self.plan(envs)
        self._say_plan(items)
        results = {id(item): planned(item) for item in items}
        if self.options.dry_run:
            if self.publisher is not None:
                say_would_publish(self.reporter, items)
            return list(results.values())
        self.builds.run(items, results)
        final = [results[id(item)] for item in items]
        move_tags(self.registry, self.options, self.reporter, final)
        if self.publisher is not None:
            publish(self.publisher, self.options, self.reporter, final)
        return final

    def plan(self, envs: Sequence[Environment]) -> list[PlanItem]:
        return planning.planned(
            self.resolver, self.registry, self.target.host, envs, self.options.held
        )

    def resolve_bases(
        self, envs: Sequence[Environment]
    ) -> tuple[list[Environment], dict[str, Failure]]:
        return planning.resolved(self.resolver, envs)

    def garbage(self, envs: Sequence[Environment], grace: float) -> list[TagInfo]:
        """Hash tags to delete; with publishing, none whose image an Azure ML environment
        version names (a job may still use it), and none at all when those cannot be read."""
        found = collect.find_garbage(self.resolver, self.registry, self.target.prefix, envs, grace)
        if self.publisher is None or not found:
            return found
        try:
            named = self.publisher.registered_images()
        except EnvshipError as exc:
            raise RegistryError(f"Azure ML: {exc}; not collecting garbage") from None
        host = self.target.host
        return [t for t in found if f"{host}/{t.repository}@{t.digest}" not in named]

    def delete(self, found: Sequence[TagInfo]) -> list[str]:
        return collect.delete(self.registry, self.reporter, found)

    def close(self) -> None:
        self.builds.close()

    def _say_plan(self, items: Sequence[PlanItem]) -> None:
        counts = {
            a: sum(1 for i in items if i.action == a) for a in ("build", "copy", "up-to-date")
        }
        held = sum(1 for i in items if i.action == "held")
        self.reporter.note(
            f"plan: {len(items)} environments, {counts['build']} to build, "
            f"{counts['copy']} to copy, {counts['up-to-date']} up to date"
            + (f", {held} held (their last build failed)" if held else "")
        )


def planned(item: PlanItem) -> Result:
    """The result a plan item has before anything is done (a dry run's answer)."""
    if item.action in ("refused", "failed"):
        return Result(item, item.action, failure=item.failure)
    if item.action == "up-to-date":
        return Result(item, "up-to-date", digest=item.digest)
    if item.action == "held":
        return Result(item, "held")
    return Result(item, "build" if item.action == "build" else "copy")


__all__ = ["Reporter", "Result", "Sync", "SyncOptions", "Target", "planned"]
