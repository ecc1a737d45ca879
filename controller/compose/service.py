"""`envship run`'s part of the composition root: the controller, its git source and its
webhook secrets, from the configuration file."""

from __future__ import annotations

from functools import partial
from typing import Any

from controller.adapters.acrtasks import AcrTasksSettings, registry_name
from controller.adapters.azureml import AzureMLSettings
from controller.adapters.gitsource import GitSettings, GitSource
from controller.adapters.redact import redact
from controller.adapters.registries import RegistrySettings
from controller.adapters.secrets import SecretError, SecretRef, SecretStore
from controller.compose import Wiring, runner, secret_store, target_of
from controller.core.discovery import DiscoveryOptions
from controller.core.errors import Misconfigured
from controller.core.naming import validate_prefix
from controller.http.app import WebhookSecrets
from controller.pipeline.options import Target
from controller.service.config import Config
from controller.service.controller import Controller, GcPolicy
from controller.service.metrics import Metrics


def wiring_of(config: Config, source: str | None = None) -> Wiring:
    """The configuration file's settings as a `Wiring`."""
    target = Target.parse(config.registry.url, config.specs.prefix)
    validate_prefix(target.prefix)
    builds = config.builds
    return Wiring(
        target=target,
        registry=registry_settings(config, target),
        secret_ttl=config.secrets.ttl,
        resolve_bases=builds.resolve_base,
        package_index=builds.package_index,
        index_credentials={host: c.refs() for host, c in builds.index_auth.items()},
        private_indexes=tuple(builds.private_indexes),
        jobs=builds.jobs,
        moving_tags=tuple(builds.tags),
        tag_version=builds.tag_version,
        source=source,
        builder=builds.builder,
        docker_cli=builds.docker_cli,
        build_secrets={i: SecretRef.parse(ref) for i, ref in builds.secrets.items()},
        build_cache=builds.cache,
        engine=builds.engine,
        acr=acr_settings(config, target),
        publish=publish_settings(config),
    )


def publish_settings(config: Config) -> AzureMLSettings | None:
    workspace = config.publish.azureml
    if workspace is None:
        return None
    return AzureMLSettings(
        subscription=workspace.subscription or "",
        resource_group=workspace.resource_group or "",
        workspace=workspace.workspace,
        endpoint=workspace.endpoint,
        registry=workspace.registry,
    )


def acr_settings(config: Config, target: Target) -> AcrTasksSettings | None:
    """builds.acr, its registry name from the target's login server when not given."""
    acr = config.builds.acr
    if config.builds.engine != "acr" or acr is None:
        return None
    name = acr.registry or registry_name(target.host)
    if name is None:
        raise Misconfigured(
            f"builds.acr.registry: give the registry's resource name ({target.host} is not "
            "NAME.azurecr.io)"
        )
    return AcrTasksSettings(
        subscription=acr.subscription,
        resource_group=acr.resource_group,
        registry=name,
        endpoint=acr.endpoint,
        timeout=acr.timeout,
    )


def _reader(store: SecretStore, reference: str | None, *, sensitive: bool = True) -> Any:
    if not reference:
        return None
    ref = SecretRef.parse(reference)
    return lambda: store.get(ref, sensitive=sensitive)


def webhook_secrets(config: Config, store: SecretStore) -> WebhookSecrets:
    """Where each webhook secret is read from: the configured references, on every request."""
    hooks = config.webhooks
    ado = hooks.azure_devops
    return WebhookSecrets(
        github=_reader(store, hooks.github),
        gitlab=_reader(store, hooks.gitlab),
        azure_devops_username=_reader(store, ado.username if ado else None, sensitive=False),
        azure_devops_password=_reader(store, ado.password if ado else None),
        generic=_reader(store, hooks.generic),
        reconcile_token=_reader(store, hooks.trigger),
    )


def registry_settings(config: Config, target: Target) -> RegistrySettings:
    registry = config.registry
    return RegistrySettings.for_target(
        target.host,
        ca_file=registry.ca_file,
        plain_http=registry.plain_http,
        base_credentials={host: creds.refs() for host, creds in registry.base_auth.items()},
        target_credentials=registry.credentials.refs() if registry.credentials else None,
        acr_identity=registry.acr_identity,
    )


def from_config(
    config: Config, *, metrics: Metrics | None = None
) -> tuple[Controller, SecretStore]:
    """The controller the configuration describes, and its secret store (nothing is started,
    nothing is read yet). Raises ValueError for settings that cannot be used."""
    git = config.git
    settings = GitSettings(
        url=git.url,
        ref=git.ref,
        cache_dir=git.cache_dir,
        credentials=git.credentials.refs() if git.credentials else None,
        ssh_key=SecretRef.parse(git.ssh_key) if git.ssh_key else None,
        ssh_user=git.ssh_user,
    )
    wiring = wiring_of(config, settings.public_url)
    store = secret_store(wiring)
    source = GitSource(settings, store)
    target = target_of(wiring)
    discovery = DiscoveryOptions(
        root=config.specs.root,
        ignore=tuple(config.specs.ignore),
        prefix=target.prefix,
        default_base_image=config.specs.default_base_image,
    )
    intervals = config.intervals
    controller = Controller(
        source,
        runner(wiring, store),
        discovery,
        metrics=metrics,
        reconcile_interval=intervals.reconcile,
        resync_interval=intervals.resync,
        jitter=intervals.jitter,
        gc=GcPolicy(config.gc.grace_period, config.gc.dry_run) if config.gc.enabled else None,
        secret_check=partial(unreadable_secrets, config, store),
    )
    return controller, store


def secret_references(config: Config) -> list[str]:
    """Every secret reference the configuration names, each once, in the order given."""
    found: list[str] = []

    def pair(credentials: Any) -> None:
        if credentials is not None:
            found.extend((credentials.username, credentials.password))

    pair(config.git.credentials)
    if config.git.ssh_key:
        found.append(config.git.ssh_key)
    pair(config.registry.credentials)
    for credentials in config.registry.base_auth.values():
        pair(credentials)
    for credentials in config.builds.index_auth.values():
        pair(credentials)
    found.extend(config.builds.secrets.values())
    hooks = config.webhooks
    found.extend(r for r in (hooks.github, hooks.gitlab, hooks.generic, hooks.trigger) if r)
    pair(hooks.azure_devops)
    return list(dict.fromkeys(found))


def unreadable_secrets(config: Config, store: SecretStore) -> dict[str, str]:
    """Reference -> why it cannot be read (never a value), for every reference that cannot."""
    problems: dict[str, str] = {}
    for text in secret_references(config):
        try:
            store.get(SecretRef.parse(text))
        except SecretError as exc:
            problems[text] = redact(str(exc))
    return problems


__all__ = [
    "from_config",
    "registry_settings",
    "secret_references",
    "unreadable_secrets",
    "webhook_secrets",
    "wiring_of",
]
