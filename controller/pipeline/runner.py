"""Syncs for a long-lived caller (the controller, `envship watch`): registry clients and the
engine kept between syncs, fresh ones on request."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import replace

from controller.adapters.builder import DockerBuilder
from controller.adapters.redact import redact
from controller.adapters.registries import RegistryPool
from controller.core.errors import EnvshipError
from controller.core.gc import TagInfo
from controller.core.model import Environment
from controller.pipeline.engine import Builder, BuilderFactory
from controller.pipeline.options import SyncOptions, Target
from controller.pipeline.outcome import Reporter, Result
from controller.pipeline.publishing import Publishing
from controller.pipeline.sync import Sync

log = logging.getLogger("envship.sync")


class SyncRunner:
    """One `Sync` per call. Registry clients (and what they learnt) are kept between calls;
    `fresh=True` (a full resync) starts from new ones, so nothing cached is trusted."""

    def __init__(
        self,
        target: Target,
        pool_factory: Callable[[], RegistryPool],
        options: SyncOptions,
        builder_factory: BuilderFactory = DockerBuilder,
        publisher: Publishing | None = None,
    ) -> None:
        self.target = target
        self.publisher = publisher
        self.pool_factory = pool_factory
        self.options = options
        self._builder_factory = builder_factory
        self._builder: Builder | None = None
        self._pool: RegistryPool | None = None
        self.registry_requests = 0
        """Requests the last run made to the target registry (a metric)."""

    def _shared_builder(self) -> Builder:
        if self._builder is None:
            self._builder = self._builder_factory()
        return self._builder

    def run(
        self,
        envs: Sequence[Environment],
        *,
        revision: str,
        fresh: bool,
        reporter: Reporter,
        held: frozenset[str] = frozenset(),
    ) -> list[Result]:
        if fresh or self._pool is None:
            if self._pool is not None:
                self._pool.close()
            self._pool = self.pool_factory()
        options = replace(self.options, revision=revision, held=held)
        sync = Sync(
            self.target, self._pool, options, reporter, self._shared_builder, self.publisher
        )
        before = sync.registry.requests_made
        try:
            return sync.run(envs)
        finally:
            self.registry_requests = sync.registry.requests_made - before
            sync.close()

    def collect_garbage(
        self, envs: Sequence[Environment], *, grace: float, dry_run: bool, reporter: Reporter
    ) -> list[TagInfo]:
        """Hash tags no environment at the head has any more (see `controller.core.gc`);
        deleted unless `dry_run`. Uses fresh registry clients: nothing cached is trusted."""
        pool = self.pool_factory()
        sync = Sync(self.target, pool, self.options, reporter, self._shared_builder, self.publisher)
        try:
            found = sync.garbage(envs, grace)
            if not dry_run:
                for error in sync.delete(found):
                    log.warning("gc: %s", error)
            return found
        finally:
            sync.close()
            pool.close()

    def check_engine(self) -> str | None:
        """Why builds cannot run now (the engine, or the tooling the builder needs, is missing
        or unreachable: what to install or start), None when they can."""
        try:
            self._shared_builder().ping()
        except EnvshipError as exc:
            return redact(str(exc))
        except Exception as exc:  # unforeseen: reported, never raised into the controller
            return f"internal error checking the build engine ({type(exc).__name__})"
        return None

    def close(self) -> None:
        """Let go of the registry clients and the engine; builds still going are stopped (an
        ACR Tasks run is cancelled, so that it is not billed for an image nobody verifies)."""
        if self._builder is not None:
            self._builder.close()
            self._builder = None
        if self._pool is not None:
            self._pool.close()
            self._pool = None


__all__ = ["SyncRunner"]
