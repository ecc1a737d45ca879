"""The composition root: the one place that turns settings (the flags of `sync`, `plan` and
`watch`, or the configuration file of `envship run`) into working parts: secret store, registry
clients, package index, sync options, syncs and the runner; `controller.compose.service` adds
the controller and its HTTP surface for `envship run`. Nothing is started or read here."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import partial
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlsplit

from controller.adapters.packageindex import PYPI, PackageIndex
from controller.adapters.registries import RegistryPool, RegistrySettings
from controller.adapters.secrets import CredentialRefs, SecretRef, SecretStore
from controller.pipeline.options import CacheMode, SyncOptions, Target, default_jobs
from controller.pipeline.resolve import Resolver

if TYPE_CHECKING:  # a plan without a registry needs none of the build and push machinery
    from controller.adapters.acrtasks import AcrTasksSettings
    from controller.adapters.azureml import AzureMLSettings
    from controller.pipeline.engine import BuilderFactory
    from controller.pipeline.outcome import Reporter
    from controller.pipeline.publishing import Publishing
    from controller.pipeline.runner import SyncRunner
    from controller.pipeline.sync import Sync


@dataclass(frozen=True)
class Wiring:
    """How a sync reaches the outside, however it was configured (flags or file)."""

    target: Target | None
    registry: RegistrySettings
    secret_ttl: float = 300.0
    resolve_bases: bool = True
    package_index: str = PYPI
    """Where `{{latest-pypi-version}}` is looked up."""
    index_credentials: Mapping[str, CredentialRefs] = field(default_factory=dict)
    private_indexes: tuple[str, ...] = ()
    jobs: int | None = None
    """Builds in parallel; None: `Wiring.default_jobs()` (ACR_RUNS for ACR Tasks)."""
    moving_tags: tuple[str, ...] = ()
    tag_version: bool = False
    source: str | None = None
    """The git source shown in image labels."""
    builder: Literal["classic", "buildkit"] = "buildkit"
    """BuildKit through the docker CLI, or the classic builder (docker-py)."""
    docker_cli: str | None = None
    """The docker CLI BuildKit builds run with; None: chosen from PATH."""
    build_secrets: Mapping[str, SecretRef] = field(default_factory=dict)
    """Build secret id -> reference (BuildKit secrets)."""
    build_cache: CacheMode = "auto"
    """Cache import and export through the target registry (BuildKit)."""
    engine: Literal["local", "acr"] = "local"
    """Where builds run: a Docker engine beside envship, or ACR Tasks runs."""
    acr: AcrTasksSettings | None = None
    """The registry whose ACR Tasks runs build (engine acr)."""
    publish: AzureMLSettings | None = None
    """The Azure ML workspace each verified image is registered in as an environment version."""

    def default_jobs(self) -> int:
        return ACR_RUNS if self.engine == "acr" else default_jobs()


ACR_RUNS = 10
"""ACR Tasks runs at once when nothing says otherwise: each runs on an agent of its own."""


def builder_factory(wiring: Wiring) -> BuilderFactory:
    """What makes the engine builds run on, as the settings say."""
    if wiring.engine == "acr":
        from controller.adapters.acrtasks import AcrTasksBuilder  # noqa: PLC0415 - acr only

        if wiring.acr is None:
            raise ValueError("the acr engine needs its registry (builds.acr)")
        settings = replace(wiring.acr, credential_factory=wiring.registry.credential_factory)
        return partial(AcrTasksBuilder, settings)
    if wiring.builder == "buildkit":
        from controller.adapters.buildkit import BuildKitBuilder  # noqa: PLC0415 - builds only

        return partial(BuildKitBuilder, wiring.docker_cli, cache=wiring.build_cache)
    from controller.adapters.builder import DockerBuilder  # noqa: PLC0415 - builds only

    return DockerBuilder


def publisher(wiring: Wiring) -> Publishing | None:
    """What registers verified images in Azure ML, when configured."""
    if wiring.publish is None:
        return None
    from controller.adapters.azureml import AzureMLPublisher  # noqa: PLC0415 - publishing only

    settings = replace(wiring.publish, credential_factory=wiring.registry.credential_factory)
    return AzureMLPublisher(settings)


def secret_store(wiring: Wiring) -> SecretStore:
    settings = wiring.registry
    return SecretStore(wiring.secret_ttl, settings.credential_factory, settings.ca_file)


def package_index(wiring: Wiring, store: SecretStore) -> PackageIndex:
    """The package index, with its host's index credentials when there are any."""
    refs = wiring.index_credentials.get(urlsplit(wiring.package_index).netloc)
    credentials = partial(refs.read, store) if refs is not None else None
    return PackageIndex(
        wiring.package_index, credentials=credentials, ca_file=wiring.registry.ca_file
    )


def sync_options(
    wiring: Wiring, store: SecretStore, *, dry_run: bool = False, revision: str | None = None
) -> SyncOptions:
    return SyncOptions(
        jobs=wiring.jobs or wiring.default_jobs(),
        dry_run=dry_run,
        revision=revision,
        resolve_bases=wiring.resolve_bases,
        moving_tags=wiring.moving_tags,
        tag_version=wiring.tag_version,
        source=wiring.source,
        private_indexes=wiring.private_indexes,
        index_credentials=wiring.index_credentials,
        package_index=package_index(wiring, store),
        build_secrets=wiring.build_secrets,
        build_cache=wiring.build_cache != "off",
    )


def target_of(wiring: Wiring) -> Target:
    if wiring.target is None:
        raise ValueError("a sync needs a target registry")
    return wiring.target


def sync(
    wiring: Wiring,
    reporter: Reporter | None = None,
    *,
    dry_run: bool = False,
    revision: str | None = None,
) -> Sync:
    """One sync against the target (`envship sync`, `plan --registry`)."""
    from controller.pipeline.sync import Sync  # noqa: PLC0415 - only commands that sync

    store = secret_store(wiring)
    options = sync_options(wiring, store, dry_run=dry_run, revision=revision)
    pool = RegistryPool(wiring.registry, store)
    return Sync(
        target_of(wiring), pool, options, reporter, builder_factory(wiring), publisher(wiring)
    )


def resolver(wiring: Wiring) -> Resolver:
    """What `plan`, `hash` and `render` resolve with when no target is given."""
    store = secret_store(wiring)
    return Resolver(
        RegistryPool(wiring.registry, store),
        enabled=wiring.resolve_bases,
        package_index=package_index(wiring, store),
    )


def runner(wiring: Wiring, store: SecretStore | None = None) -> SyncRunner:
    """Syncs for a long-lived caller (`envship watch`, the controller)."""
    from controller.pipeline.runner import SyncRunner  # noqa: PLC0415 - only watch and run

    store = store or secret_store(wiring)
    settings = wiring.registry
    options = sync_options(wiring, store)
    return SyncRunner(
        target_of(wiring),
        lambda: RegistryPool(settings, store),
        options,
        builder_factory(wiring),
        publisher(wiring),
    )


__all__ = [
    "Wiring",
    "builder_factory",
    "package_index",
    "publisher",
    "resolver",
    "runner",
    "secret_store",
    "sync",
    "sync_options",
]
