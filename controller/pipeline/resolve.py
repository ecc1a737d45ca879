"""What a spec leaves to build time, resolved before anything is hashed.

Two steps, in this order, for every command that hashes (plan, sync, hash, render, gc):
1. `fill`: the look-ups of curated environments' template files (`{{latest-image-tag}}` from
   the image's tag list, `{{latest-pypi-version}}` from the package index) are made, and the
   filled Dockerfile is checked; one that cannot be filled is refused, naming the placeholder
   and the file.
2. `pin`: every base image (each `FROM`, `COPY --from`, `RUN --mount from=`) is resolved to its
   digest, which is pinned in the build and hashed.

With resolution off (`--no-resolve-base`, `builds.resolveBase: false`), bases are used as
tagged and placeholders cannot be filled: those environments are refused, saying so.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

from controller.adapters.packageindex import PackageIndex, PackageIndexError
from controller.adapters.registries import RegistryPool
from controller.adapters.registry import RegistryError
from controller.adapters.secrets import SecretError
from controller.core.errors import Failure, SpecError
from controller.core.model import BuildSpec, Environment, Placeholder, base_references
from controller.core.naming import split_reference
from controller.core.specs.common import check_build_dockerfile
from controller.core.templates import LATEST, PRE, fill, newest_version, tag_candidates

CHECK_WORKERS = 16
MAX_TAG_CHECKS = 100
"""Tags compared with `latest` for `{{latest-image-tag}}` before its digest is used instead."""
OFF = "base resolution is off (--no-resolve-base)"


class Unfillable(Exception):
    """A placeholder that cannot be filled as written (no matching tag, no such package)."""


class Resolver:
    def __init__(
        self,
        pool: RegistryPool,
        *,
        enabled: bool = True,
        package_index: PackageIndex | None = None,
    ) -> None:
        self.pool = pool
        self.enabled = enabled
        self.package_index = package_index or PackageIndex()

    # -- template look-ups ------------------------------------------------------------------

    def fill(self, envs: Sequence[Environment]) -> tuple[list[Environment], dict[str, Failure]]:
        """Environments with their placeholders filled; those that cannot be filled are
        refused (fix the spec), those whose look-up failed for now are in the returned
        failures (path -> why; retry later)."""
        wanted = {
            p: env.path for env in envs if env.ok and env.build for p in env.build.placeholders
        }
        if not wanted:
            return list(envs), {}
        answers: dict[tuple[str, str, str | None], str | Exception] = {}
        if self.enabled:
            keys = sorted({(p.kind, p.subject, p.option) for p in wanted})
            with ThreadPoolExecutor(CHECK_WORKERS) as workers:
                for key, answer in zip(keys, workers.map(self._look_up, keys), strict=True):
                    answers[key] = answer
        filled: list[Environment] = []
        failures: dict[str, Failure] = {}
        for env in envs:
            if not (env.ok and env.build and env.build.placeholders):
                filled.append(env)
                continue
            try:
                filled.append(replace(env, build=self._filled(env, env.build, answers)))
            except SpecError as exc:
                filled.append(replace(env, error=exc))
            except (RegistryError, SecretError, PackageIndexError) as exc:
                failures[env.path] = Failure(str(exc), exc, "resolve")
                filled.append(env)
        return filled, failures

    def _filled(
        self,
        env: Environment,
        build: BuildSpec,
        answers: dict[tuple[str, str, str | None], str | Exception],
    ) -> BuildSpec:
        values: dict[Placeholder, str] = {}
        for placeholder in build.placeholders:
            where = _template_path(env, placeholder)
            if not self.enabled:
                raise SpecError(
                    where, f"{placeholder.describe(here=True)} cannot be looked up: {OFF}"
                )
            answer = answers[(placeholder.kind, placeholder.subject, placeholder.option)]
            if isinstance(answer, Unfillable):
                raise SpecError(where, f"{placeholder.describe(here=True)}: {answer}")
            if isinstance(answer, Exception):
                raise type(answer)(f"{placeholder.describe()}: {answer}")
            values[placeholder] = answer
        result = fill(build, values)
        if result.dockerfile_path is not None:
            folder = env.path if env.kind != "azureml-asset" else _context_folder(env)
            check_build_dockerfile(result, folder)
        return result

    def _look_up(self, key: tuple[str, str, str | None]) -> str | Exception:
        kind, subject, option = key
        try:
            if kind == "image-tag":
                return self._latest_image_tag(subject, option)
            return self._latest_version(subject, option)
        except (Unfillable, RegistryError, SecretError, PackageIndexError) as exc:
            return exc

    def _latest_image_tag(self, image: str, regex: str | None) -> str:
        """As the curated-environment tooling does: the greatest tag matching `regex`; without
        one, the tag `latest` points at (greatest first), else `@` its digest."""
        try:
            host, repository, _, _ = split_reference(image)
        except ValueError:
            raise Unfillable(f"{image!r} is not an image reference") from None
        registry = self.pool.get(host or "docker.io")
        tags = registry.tags(repository)
        try:
            candidates = tag_candidates(tags, regex)
        except re.error:
            raise Unfillable(
                f"the tag pattern {regex!r} is not a valid regular expression"
            ) from None
        if regex is not None:
            if not candidates:
                raise Unfillable(f"no tag of {image} matches {regex}")
            return candidates[0]
        if LATEST not in tags:
            raise Unfillable(f"{image} has no {LATEST} tag")
        latest = registry.digest(repository, LATEST, refresh=True)
        if latest is None:
            raise Unfillable(f"{image}:{LATEST} does not exist")
        for tag in candidates[:MAX_TAG_CHECKS]:
            if registry.digest(repository, tag, refresh=True) == latest:
                return tag
        return f"@{latest}"

    def _latest_version(self, package: str, flags: str | None) -> str:
        versions = self.package_index.versions(package)
        newest = newest_version(versions, pre=PRE in (flags or ""))
        if newest is None:
            raise Unfillable(f"{self.package_index.url} has no release of {package}")
        return newest

    # -- base digests -----------------------------------------------------------------------

    def pin(self, envs: Sequence[Environment]) -> tuple[list[Environment], dict[str, Failure]]:
        """Every base image pinned to its digest; environments whose base cannot be resolved
        are returned as they are, with why (path -> reason). Off: nothing is pinned."""
        failures: dict[str, Failure] = {}
        if not self.enabled:
            return list(envs), failures
        ready = [env for env in envs if env.ok and env.build and not env.build.placeholders]
        pinnable = {id(env) for env in ready}
        wanted = {ref for env in ready if env.build for ref in base_references(env.build)}
        for env in ready:
            build = env.build
            if build and build.base_registry and build.base_registry_identity:
                self.pool.use_identity(build.base_registry, build.base_registry_identity)
        answers: dict[str, str | Exception] = {}

        def resolve(ref: str) -> None:
            try:
                host, repository, tag, digest = split_reference(ref)
                if digest:
                    answers[ref] = digest
                    return
                # Base tags move, unlike hash tags: always ask (each distinct base once a run).
                registry = self.pool.get(host or "docker.io")
                found = registry.digest(repository, tag or "latest", refresh=True)
                answers[ref] = found or RegistryError(f"base image {ref} does not exist")
            except (RegistryError, SecretError) as exc:
                answers[ref] = exc
            except ValueError as exc:  # checked when the spec was read: unforeseen here
                answers[ref] = SpecError(ref, str(exc))

        with ThreadPoolExecutor(CHECK_WORKERS) as workers:
            list(workers.map(resolve, sorted(wanted)))
        resolved: list[Environment] = []
        for env in envs:
            if id(env) not in pinnable or env.build is None:
                resolved.append(env)
                continue
            pins: list[tuple[str, str]] = []
            for ref in base_references(env.build):
                answer = answers[ref]
                if isinstance(answer, Exception):
                    why = f"base image {ref} could not be resolved: {answer}"
                    failures[env.path] = Failure(why, answer, "resolve")
                    break
                pins.append((ref, answer))
            build = replace(env.build, base_digests=tuple(sorted(pins)))
            resolved.append(replace(env, build=build))
        return resolved, failures

    def resolve(self, envs: Sequence[Environment]) -> Resolution:
        """`fill`, then `pin`."""
        filled, failures = self.fill(envs)
        pinned, unpinned = self.pin(filled)
        return Resolution(pinned, failures, unpinned)


@dataclass(frozen=True, slots=True)
class Resolution:
    envs: list[Environment]
    """Placeholders filled (or refused) and bases pinned, where that could be done."""
    failures: dict[str, Failure]
    """Path -> why a placeholder could not be looked up now (retry later)."""
    unpinned: dict[str, Failure]
    """Path -> why its bases are not pinned: hashed as tagged, which is not what a sync
    that can resolve them hashes."""

    @property
    def problems(self) -> dict[str, Failure]:
        """Everything that keeps an environment from being synced now."""
        return {**self.unpinned, **self.failures}


def _template_path(env: Environment, placeholder: Placeholder) -> str:
    """Where a placeholder is written, as a repository path."""
    if not placeholder.file:
        return next((f for f in env.files if f.endswith("environment.yaml")), env.path)
    folder = _context_folder(env)
    return f"{folder}/{placeholder.file}" if folder else placeholder.file


def _context_folder(env: Environment) -> str:
    """The build context folder of an environment read from a spec elsewhere (an asset)."""
    build = env.build
    if build is None or build.dockerfile_path is None:
        return env.path
    suffix = "/" + build.dockerfile_path
    dockerfile = next((f for f in env.files if f.endswith(suffix)), None)
    return dockerfile[: -len(suffix)] if dockerfile else env.path


__all__ = ["OFF", "Resolution", "Resolver", "Unfillable"]
