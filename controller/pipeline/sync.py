"""One sync: the only place that puts the steps and their adapters in order.

discover (done by the caller) -> resolve base digests -> check the registry -> plan (pure) ->
build + push + verify, copy across repositories, move tags -> outcomes.

Each environment fails alone: a base that cannot be resolved, a failing RUN, a refused push,
a registry or engine that is down, are reported on the environments they touch while the others
complete. Nothing is tagged with a content hash unless it was built from that hash's rendered
build, and moving tags (`latest`, the spec's version) move only after a verified push.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Literal

from controller.adapters.builder import BuildError, DockerBuilder, EngineError, PushError
from controller.adapters.indexproxy import IndexProxy
from controller.adapters.packageindex import PackageIndex
from controller.adapters.redact import redact
from controller.adapters.registries import RegistryPool
from controller.adapters.registry import RegistryError
from controller.adapters.secrets import CredentialRefs, SecretError
from controller.core.credentials import url_credential
from controller.core.dockerfile import declared_args
from controller.core.errors import SpecError
from controller.core.gc import HASH_TAG, TagInfo, garbage
from controller.core.hashing import content_hash
from controller.core.model import Environment, base_references
from controller.core.naming import split_reference, tag_for
from controller.core.plan import PlanItem, plan
from controller.core.render import LABEL_HASH, render
from controller.pipeline.resolve import Resolver

INDEX_ARGS = frozenset({"PIP_EXTRA_INDEX_URL", "PIP_TRUSTED_HOST"})
"""The build arguments a Dockerfile declares to install from the private indexes."""

Outcome = Literal["built", "copied", "up-to-date", "failed", "refused", "build", "copy"]
"""`build` and `copy` are what a dry run would do; `refused`: the spec cannot be built as
written (fix it); `failed`: it could not be done now (retry later)."""
CHECK_WORKERS = 16
TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
FAILURES = (BuildError, EngineError, PushError, RegistryError, SecretError)


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


@dataclass
class SyncOptions:
    jobs: int = field(default_factory=lambda: max(1, (os.cpu_count() or 2) // 2))
    dry_run: bool = False
    resolve_bases: bool = True
    moving_tags: tuple[str, ...] = ()
    tag_version: bool = False
    source: str | None = None
    revision: str | None = None
    private_indexes: tuple[str, ...] = ()
    """Package index URLs served to builds through the loopback forwarder (`PIP_*` args)."""
    index_credentials: Mapping[str, CredentialRefs] = field(default_factory=dict)
    """Index host -> username and password references."""
    package_index: PackageIndex | None = None
    """Where `{{latest-pypi-version}}` is looked up (default: PyPI)."""


@dataclass
class Result:
    item: PlanItem
    outcome: Outcome
    digest: str | None = None
    error: str | None = None
    log: list[str] = field(default_factory=list)
    seconds: float = 0.0


class Reporter:
    """Where progress goes; the CLI prints it, tests collect it."""

    def __init__(self, emit: Callable[[str], None] | None = None) -> None:
        self._emit = emit or (lambda line: None)
        self._lock = threading.Lock()

    def line(self, env: str, text: str) -> None:
        with self._lock:
            self._emit(redact(f"[{env}] {text}"))

    def note(self, text: str) -> None:
        with self._lock:
            self._emit(redact(text))


_building: dict[str, threading.Lock] = {}
_building_guard = threading.Lock()


def _hash_lock(content: str) -> threading.Lock:
    """One build per hash at a time in this process, whatever calls sync."""
    with _building_guard:
        return _building.setdefault(content, threading.Lock())


class Sync:
    def __init__(
        self,
        target: Target,
        pool: RegistryPool,
        options: SyncOptions,
        reporter: Reporter | None = None,
        builder_factory: Callable[[], DockerBuilder] = DockerBuilder,
    ) -> None:
        self.target = target
        self.pool = pool
        self.registry = pool.get(target.host)
        self.options = options
        self.resolver = Resolver(
            pool, enabled=options.resolve_bases, package_index=options.package_index
        )
        self.reporter = reporter or Reporter()
        self._builder_factory = builder_factory
        self._builder: DockerBuilder | None = None
        self._builder_lock = threading.Lock()
        self._proxy: IndexProxy | None = None

    # -- planning ---------------------------------------------------------------------------

    def resolve_bases(
        self, envs: Sequence[Environment]
    ) -> tuple[list[Environment], dict[str, str]]:
        """Placeholders filled and bases pinned (`Resolver.resolve`); what cannot be planned
        now is set aside with why (path -> reason)."""
        resolution = self.resolver.resolve(envs)
        return resolution.envs, resolution.problems

    def plan(self, envs: Sequence[Environment]) -> list[PlanItem]:
        envs, failures = self.resolve_bases(envs)
        wanted: dict[tuple[str, str], str] = {}
        for env in envs:
            if env.ok and env.build and env.repository and env.path not in failures:
                wanted[(env.repository, tag_for(content_hash(env.build)))] = env.path
        present: dict[tuple[str, str], str | None] = {}

        def check(key: tuple[str, str]) -> None:
            try:
                present[key] = self.registry.digest(*key)
            except (RegistryError, SecretError) as exc:
                failures[wanted[key]] = f"registry check failed: {exc}"

        with ThreadPoolExecutor(CHECK_WORKERS) as workers:
            list(workers.map(check, sorted(wanted)))
        return plan(envs, self.target.host, present, failures)

    # -- doing ------------------------------------------------------------------------------

    def index_grant(self, dockerfile: str) -> tuple[dict[str, str], Callable[[], None]]:
        """Build arguments that point pip at the private indexes through the forwarder, for a
        build whose Dockerfile declares them, and what ends the grant when the build is over.

        They hold loopback URLs and a token good for this build only; the credentials stay in
        this process. A build that declares none gets no arguments (and no host network)."""
        wanted = INDEX_ARGS & declared_args(dockerfile)
        if not self.options.private_indexes or not wanted:
            return {}, lambda: None
        with self._builder_lock:
            if self._proxy is None:
                store = self.pool.secrets
                refs = self.options.index_credentials
                self._proxy = IndexProxy(
                    {host: partial(r.read, store) for host, r in refs.items()},
                    indexes=self.options.private_indexes,
                    forget={host: partial(r.forget, store) for host, r in refs.items()},
                    ca_file=self.pool.settings.ca_file,
                ).start()
            proxy = self._proxy
        token = proxy.grant()
        routed = [proxy.route(url, token) for url in self.options.private_indexes]
        args = {"PIP_EXTRA_INDEX_URL": " ".join(routed), "PIP_TRUSTED_HOST": "127.0.0.1"}
        return {k: v for k, v in args.items() if k in wanted}, partial(proxy.revoke, token)

    def close(self) -> None:
        if self._proxy is not None:
            self._proxy.stop()
            self._proxy = None

    def builder(self) -> DockerBuilder:
        with self._builder_lock:
            if self._builder is None:
                self._builder = self._builder_factory()
                self._builder.ping()
            return self._builder

    def run(self, envs: Sequence[Environment]) -> list[Result]:
        items = self.plan(envs)
        counts = {
            a: sum(1 for i in items if i.action == a) for a in ("build", "copy", "up-to-date")
        }
        self.reporter.note(
            f"plan: {len(items)} environments, {counts['build']} to build, "
            f"{counts['copy']} to copy, {counts['up-to-date']} up to date"
        )
        if self.options.dry_run:
            return [self._planned(item) for item in items]
        results = {id(item): self._planned(item) for item in items}
        builds = [i for i in items if i.action == "build"]
        copies = [i for i in items if i.action == "copy"]
        waiting = {i.hash: [c for c in copies if c.hash == i.hash] for i in builds}
        ready_copies = [c for c in copies if c.hash not in waiting]

        def build_group(item: PlanItem) -> None:
            result = self._build(item)
            results[id(item)] = result
            for copy in waiting.get(item.hash, []):
                results[id(copy)] = (
                    self._copy(copy)
                    if result.outcome == "built"
                    else Result(copy, "failed", error=f"not copied: {result.error}")
                )

        with ThreadPoolExecutor(max(1, self.options.jobs)) as workers:
            futures = [workers.submit(build_group, item) for item in builds]
            futures += [workers.submit(self._store, results, c) for c in ready_copies]
            for future in futures:
                future.result()
        final = [results[id(item)] for item in items]
        self._move_tags(final)
        return final

    def _store(self, results: dict[int, Result], item: PlanItem) -> None:
        results[id(item)] = self._copy(item)

    def _planned(self, item: PlanItem) -> Result:
        if item.action in ("refused", "failed"):
            return Result(item, item.action, error=item.error)
        if item.action == "up-to-date":
            return Result(item, "up-to-date", digest=item.digest)
        return Result(item, "build" if item.action == "build" else "copy")

    def _build(self, item: PlanItem) -> Result:
        """`_build_one`, and whatever it raises stays with this environment: a spec problem
        found this late refuses it, anything unforeseen fails it (reported, retried)."""
        try:
            return self._build_one(item)
        except SpecError as exc:
            return Result(item, "refused", error=redact(str(exc)))
        except Exception as exc:
            self.reporter.line(item.env.status_key, f"failed: internal error {type(exc).__name__}")
            return Result(
                item, "failed", error=f"internal error ({type(exc).__name__}); please report this"
            )

    def _build_one(self, item: PlanItem) -> Result:
        env, build = item.env, item.env.build
        if build is None or not item.hash or not env.repository:
            return Result(item, "failed", error="internal: a build without its spec")
        log: list[str] = []
        started = time.monotonic()

        def emit(line: str) -> None:
            log.append(redact(line))
            self.reporter.line(env.status_key, line)

        repository = f"{self.target.host}/{env.repository}"
        tag = tag_for(item.hash)
        try:
            with _hash_lock(item.hash):
                builder = self.builder()
                local = f"{repository}:{tag}"
                existing = builder.image_labels(local)
                if existing is not None and existing.get(LABEL_HASH) == item.hash:
                    emit(f"reusing the local image {local} (same hash)")
                else:
                    pins = dict(build.base_digests)
                    self._pull_bases(
                        builder, [(ref, pins.get(ref)) for ref in base_references(build)], emit
                    )
                    rendered = render(
                        build, item.hash, source=self.options.source, revision=self.options.revision
                    )
                    created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
                    emit(f"building {local}")
                    build_args, end_grant = self.index_grant(rendered.dockerfile)
                    try:
                        builder.build(
                            rendered,
                            tag=local,
                            labels={"org.opencontainers.image.created": created},
                            platform=build.platform,
                            log=emit,
                            build_args=build_args,
                            host_network=bool(build_args),
                        )
                    finally:
                        end_grant()
                emit(f"pushing {local}")
                digest = builder.push(
                    repository, tag, self.registry.authenticator.docker_auth(), emit
                )
                stored = self.registry.digest(env.repository, tag, refresh=True)
                if stored != digest:
                    raise PushError(
                        f"the registry holds {stored or 'nothing'} for {local}, "
                        f"not the pushed {digest}"
                    )
        except FAILURES as exc:
            emit(f"failed: {exc}")
            return Result(
                item, "failed", error=redact(str(exc)), log=log, seconds=time.monotonic() - started
            )
        emit(f"pushed {digest}")
        return Result(item, "built", digest, log=log, seconds=time.monotonic() - started)

    def _pull_bases(
        self,
        builder: DockerBuilder,
        bases: Iterable[tuple[str, str | None]],
        emit: Callable[[str], None],
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
            emit(f"pulling {wanted}")
            auth = self.pool.get(host or "docker.io").authenticator.docker_auth()
            builder.pull(wanted, auth, emit)

    def _copy(self, item: PlanItem) -> Result:
        try:
            return self._copy_one(item)
        except Exception as exc:
            return Result(
                item, "failed", error=f"internal error ({type(exc).__name__}); please report this"
            )

    def _copy_one(self, item: PlanItem) -> Result:
        env = item.env
        if not item.hash or not item.source or not env.repository:
            return Result(item, "failed", error="internal: a copy without its source")
        tag = tag_for(item.hash)
        started = time.monotonic()
        try:
            digest = self.registry.copy(item.source, tag, env.repository, tag)
        except FAILURES as exc:
            return Result(
                item, "failed", error=redact(str(exc)), seconds=time.monotonic() - started
            )
        self.reporter.line(env.status_key, f"copied from {item.source}: {digest}")
        return Result(item, "copied", digest, seconds=time.monotonic() - started)

    def _move_tags(self, results: list[Result]) -> None:
        """Point moving tags at images that are known good; never at a failed build."""
        for result in results:
            try:
                self._move_tags_of(result)
            except Exception as exc:
                result.outcome = "failed"
                result.error = f"internal error moving tags ({type(exc).__name__}); please report"

    def _move_tags_of(self, result: Result) -> None:
        env = result.item.env
        if result.outcome not in ("built", "copied", "up-to-date") or not env.repository:
            return
        tags = list(self.options.moving_tags)
        if self.options.tag_version and env.version:
            tags.append(env.version)
        for tag in tags:
            if not TAG.fullmatch(tag):
                self.reporter.line(env.status_key, f"not tagged {tag!r}: not a valid tag")
                continue
            try:
                current = self.registry.digest(env.repository, tag, refresh=True)
                if current == result.digest:
                    continue
                info = self.registry.image(env.repository, tag_for(result.item.hash or ""))
                if info is None:
                    raise RegistryError(f"{env.repository} lost its image before tagging")
                self.registry.put_manifest(env.repository, tag, info)
                self.reporter.line(env.status_key, f"tagged {tag}")
            except FAILURES as exc:
                result.outcome = "failed"
                result.error = redact(f"image pushed, but moving tag {tag!r} failed: {exc}")

    # -- garbage collection -----------------------------------------------------------------

    def garbage(self, envs: Sequence[Environment], grace: float) -> list[TagInfo]:
        """Hash tags under the target prefix whose hash no live environment has, older than
        `grace` seconds and not protected by a moving tag."""
        resolved, failures = self.resolve_bases(envs)
        if failures:
            path, why = next(iter(failures.items()))
            # Its hash, and so which of its images are live, is unknown: collect nothing.
            raise RegistryError(f"{path}: {why}; not collecting garbage")
        live = [content_hash(env.build) for env in resolved if env.ok and env.build]
        in_use = [env.repository for env in resolved if env.repository]
        tags: list[TagInfo] = []
        for repository in self.registry.repositories(self.target.prefix):
            for tag in self.registry.tags(repository):
                digest = self.registry.digest(repository, tag, refresh=True)
                if digest is None:
                    continue
                created = None
                if HASH_TAG.fullmatch(tag):
                    labels = self.registry.labels(repository, tag) or {}
                    created = parse_created(labels.get("org.opencontainers.image.created"))
                tags.append(TagInfo(repository, tag, digest, created))
        return garbage(tags, live, now=time.time(), grace=grace, live_repositories=in_use)

    def delete(self, found: Sequence[TagInfo]) -> list[str]:
        """Delete what `garbage` found; returns the errors (each leaves that tag alone)."""
        errors = []
        for info in found:
            try:
                self.registry.delete(info.repository, info.digest)
                self.reporter.line(info.repository, f"deleted {info.tag} ({info.digest})")
            except FAILURES as exc:
                errors.append(redact(f"{info.repository}:{info.tag}: {exc}"))
        return errors


def parse_created(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None
