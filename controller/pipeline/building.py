"""Step 2 of a sync: build, push and verify each `build` item, and copy each `copy` item
across repositories once its source is there.

Nothing is tagged with a content hash unless it was built from that hash's rendered build; a
push counts only once the registry holds the pushed digest. Each environment fails alone, and
its `Failure` keeps the error, whose class says what happens next.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

from controller.adapters.builder import (
    CHOOSE_BUILDKIT,
    USE_LOCAL_ENGINE,
    BuildError,
    NeedsBuildKit,
    PushError,
)
from controller.adapters.redact import redact
from controller.adapters.registries import RegistryPool
from controller.adapters.registry import OciRegistry
from controller.core.dockerfile import run_mounts
from controller.core.errors import EnvshipError, RetryLater
from controller.core.model import base_references
from controller.core.naming import CACHE_TAG, split_reference, tag_for
from controller.core.pipconfig import pip_config
from controller.core.plan import PlanItem
from controller.core.render import LABEL_HASH, PIP_CONFIG_SECRET, render
from controller.pipeline.engine import Builder, BuilderFactory
from controller.pipeline.options import SyncOptions
from controller.pipeline.outcome import Reporter, Result, Step, failure


class InternalError(RetryLater):
    """Something envship did not foresee: reported (please report it too) and retried."""


class HashLocks:
    """One build per hash at a time in this process, whatever calls sync; an entry lives only
    while someone holds or waits for it."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, tuple[threading.Lock, int]] = {}

    @contextlib.contextmanager
    def hold(self, content: str) -> Iterator[None]:
        with self._guard:
            lock, users = self._locks.get(content, (threading.Lock(), 0))
            self._locks[content] = (lock, users + 1)
        try:
            with lock:
                yield
        finally:
            with self._guard:
                lock, users = self._locks[content]
                if users == 1:
                    del self._locks[content]
                else:
                    self._locks[content] = (lock, users - 1)

    def __len__(self) -> int:
        with self._guard:
            return len(self._locks)


BUILD_LOCKS = HashLocks()


class Builds:
    """Builds, pushes and copies the items of one plan (`run`)."""

    def __init__(
        self,
        host: str,
        pool: RegistryPool,
        options: SyncOptions,
        reporter: Reporter,
        builder_factory: BuilderFactory,
    ) -> None:
        self.host = host
        self.pool = pool
        self.registry: OciRegistry = pool.get(host)
        self.options = options
        self.reporter = reporter
        self._builder_factory = builder_factory
        self._builder: Builder | None = None
        self._lock = threading.Lock()

    def run(self, items: Sequence[PlanItem], results: dict[int, Result]) -> None:
        """Every `build` and `copy` item done, its result in `results` (by `id(item)`); a copy
        whose source is being built waits for that build."""
        builds = [i for i in items if i.action == "build"]
        copies = [i for i in items if i.action == "copy"]
        waiting = {i.hash: [c for c in copies if c.hash == i.hash] for i in builds}
        ready_copies = [c for c in copies if c.hash not in waiting]

        def build_group(item: PlanItem) -> None:
            result = self.build(item)
            results[id(item)] = result
            for copy in waiting.get(item.hash, []):
                if result.outcome == "built":
                    results[id(copy)] = self.copy(copy)
                else:
                    why = result.failure or failure(InternalError("no build"), "copy")
                    results[id(copy)] = Result(
                        copy,
                        "failed",
                        failure=failure(why.error, "copy", f"not copied: {why.message}"),
                    )

        def copy_one(item: PlanItem) -> None:
            results[id(item)] = self.copy(item)

        with ThreadPoolExecutor(max(1, self.options.jobs)) as workers:
            futures = [workers.submit(build_group, item) for item in builds]
            futures += [workers.submit(copy_one, item) for item in ready_copies]
            for future in futures:
                future.result()

    def close(self) -> None:
        with self._lock:
            if self._builder is not None:
                self._builder.close()
                self._builder = None

    def builder(self) -> Builder:
        with self._lock:
            if self._builder is None:
                self._builder = self._builder_factory()
                self._builder.ping()
            return self._builder

    # -- build, push, verify -----------------------------------------------------------------

    def build(self, item: PlanItem) -> Result:
        """`_build`, and whatever it raises stays with this environment: envship's own errors
        keep their policy, anything unforeseen is an internal error (reported, retried)."""
        started = time.monotonic()
        log: list[str] = []
        try:
            return self._build(item, log, started)
        except EnvshipError as exc:
            self.reporter.line(item.env.status_key, f"failed: {exc}", Step.FAILED)
            return Result(
                item, "failed", failure=failure(exc, "build"), log=log,
                seconds=time.monotonic() - started,
            )  # fmt: skip
        except Exception as exc:
            name = type(exc).__name__
            self.reporter.line(item.env.status_key, f"failed: internal error {name}", Step.FAILED)
            error = InternalError(f"internal error ({name}); please report this")
            return Result(item, "failed", failure=failure(error, "build"), log=log)

    def _build(self, item: PlanItem, log: list[str], started: float) -> Result:
        env, build = item.env, item.env.build
        if build is None or not item.hash or not env.repository:
            raise InternalError("internal: a build without its spec")

        def emit(line: str, step: Step | None = None) -> None:
            log.append(redact(line))
            self.reporter.line(env.status_key, line, step)

        repository = f"{self.host}/{env.repository}"
        tag = tag_for(item.hash)
        local = f"{repository}:{tag}"
        with BUILD_LOCKS.hold(item.hash):
            builder = self.builder()
            existing = None if builder.remote else builder.image_labels(local)
            cache = None
            if existing is not None and existing.get(LABEL_HASH) == item.hash:
                emit(f"reusing the local image {local} (same hash)", Step.REUSE)
            else:
                pins = dict(build.base_digests)
                bases = [(ref, pins.get(ref)) for ref in base_references(build)]
                if not builder.remote:
                    self._pull_bases(builder, bases, emit)
                self._refuse_private_indexes_without_buildkit(builder, item)
                rendered = render(
                    build,
                    item.hash,
                    source=self.options.source,
                    revision=self.options.revision,
                    buildkit=builder.buildkit,
                )
                created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
                emit(f"building {local}", Step.BUILD)
                secrets = self.build_secrets(rendered.dockerfile)
                cached = self.options.build_cache and builder.buildkit
                try:
                    built = builder.build(
                        rendered,
                        tag=local,
                        labels={"org.opencontainers.image.created": created},
                        platform=build.platform,
                        log=emit,
                        secrets=secrets,
                        cache_ref=f"{repository}:{CACHE_TAG}" if cached else None,
                        cache_import=cached and self._has_cache(env.repository),
                        registry_auth=self.registry_auth(bases),
                    )
                except BuildError:
                    if secrets and PIP_CONFIG_SECRET in secrets:
                        self._forget_index_credentials()
                    raise
                cache = built.cache
            emit(f"pushing {local}", Step.PUSH)
            digest = builder.push(repository, tag, self.registry.authenticator.docker_auth(), emit)
            stored = self.registry.digest(env.repository, tag, refresh=True)
            if stored != digest:
                raise PushError(
                    f"the registry holds {stored or 'nothing'} for {local}, not the pushed {digest}"
                )
        emit(f"pushed {digest}", Step.PUSHED)
        if cache == "inline":
            self._keep_as_cache(env.repository, tag, emit)
        return Result(item, "built", digest, log=log, seconds=time.monotonic() - started)

    def _has_cache(self, repository: str) -> bool:
        """Whether the repository has a build cache to import (a first build has none)."""
        try:
            return self.registry.digest(repository, CACHE_TAG, refresh=True) is not None
        except EnvshipError:
            return False

    def _keep_as_cache(
        self, repository: str, tag: str, emit: Callable[[str, Step | None], None]
    ) -> None:
        """The verified image (its config carries BuildKit's inline cache) becomes the
        repository's cache tag, where the next build of any engine imports it from. A cache
        is an optimisation: when this fails, the build still counts."""
        try:
            self.registry.retag(repository, tag, CACHE_TAG)
        except EnvshipError as exc:
            emit(f"build cache not updated ({CACHE_TAG}): {exc}", None)

    def registry_auth(
        self, bases: Iterable[tuple[str, str | None]]
    ) -> dict[str, Mapping[str, str]]:
        """host -> credentials for the registries a build's engine itself may pull from or push
        its cache to: the target, and each base's registry."""
        hosts = {self.host} | {split_reference(ref)[0] or "docker.io" for ref, _ in bases}
        found: dict[str, Mapping[str, str]] = {}
        for host in sorted(hosts):
            auth = self.pool.get(host).authenticator.docker_auth()
            if auth:
                found[host] = auth
        return found

    def _pull_bases(
        self,
        builder: Builder,
        bases: Iterable[tuple[str, str | None]],
        emit: Callable[[str, Step | None], None],
    ) -> None:
        """Pull each base (by digest when resolved) with its registry's credentials, in memory.

        Bases the engine already has are not pulled again; unresolved ones (offline use) are
        used as the engine has them when present.
        """
        for ref, digest in bases:
            host, repository, _tag, _digest = split_reference(ref)
            name = f"{host}/{repository}" if host else repository
            wanted = f"{name}@{digest}" if digest else ref
            if builder.has_image(wanted):
                continue
            emit(f"pulling {wanted}", Step.PULL)
            auth = self.pool.get(host or "docker.io").authenticator.docker_auth()
            builder.pull(wanted, auth, lambda line: emit(line, None))

    def _forget_index_credentials(self) -> None:
        """A build that had the private indexes failed, perhaps because an index refused a
        rotated credential (pip's output is not read to tell): the next build reads them
        from their source again."""
        store = self.pool.secrets
        for refs in self.options.index_credentials.values():
            refs.forget(store)

    def _refuse_private_indexes_without_buildkit(self, builder: Builder, item: PlanItem) -> None:
        """The classic builder has no build secrets, so a managed pip install could not see the
        private indexes: say so, rather than let pip fail to find a package."""
        build = item.env.build
        conda = build.python.conda if build is not None else None
        if self.options.private_indexes and not builder.buildkit and conda and conda.pip:
            engine, remedy = (
                ("ACR Tasks' docker build", f"build it with a local engine ({USE_LOCAL_ENGINE})")
                if builder.remote
                else ("the classic builder", CHOOSE_BUILDKIT)
            )
            raise NeedsBuildKit(
                "private package indexes reach builds only as a BuildKit build secret, and "
                f"{engine} has none; {remedy}"
            )

    def build_secrets(self, dockerfile: str) -> dict[str, str] | None:
        """The build secrets the Dockerfile mounts (`RUN --mount=type=secret,id=ID`), read now:
        configured ones, and `envship-pip-conf` (the private indexes with their credentials)
        when private indexes are configured; the others stay out of this build."""
        wanted = {m.secret_id for m in run_mounts(dockerfile) if m.secret_id}
        refs = {i: ref for i, ref in self.options.build_secrets.items() if i in wanted}
        store = self.pool.secrets
        secrets = {secret_id: store.get(ref) for secret_id, ref in refs.items()}
        if PIP_CONFIG_SECRET in wanted and self.options.private_indexes:
            credentials = {
                host: refs.read(store) for host, refs in self.options.index_credentials.items()
            }
            secrets[PIP_CONFIG_SECRET] = pip_config(self.options.private_indexes, credentials)
        return secrets or None

    # -- copy --------------------------------------------------------------------------------

    def copy(self, item: PlanItem) -> Result:
        env = item.env
        started = time.monotonic()
        try:
            if not item.hash or not item.source or not env.repository:
                raise InternalError("internal: a copy without its source")
            tag = tag_for(item.hash)
            digest = self.registry.copy(item.source, tag, env.repository, tag)
        except EnvshipError as exc:
            return Result(
                item, "failed", failure=failure(exc, "copy"), seconds=time.monotonic() - started
            )
        except Exception as exc:
            error = InternalError(f"internal error ({type(exc).__name__}); please report this")
            return Result(item, "failed", failure=failure(error, "copy"))
        self.reporter.line(env.status_key, f"copied from {item.source}: {digest}", Step.COPY)
        return Result(item, "copied", digest, seconds=time.monotonic() - started)


__all__ = ["BUILD_LOCKS", "Builds", "HashLocks", "InternalError"]
