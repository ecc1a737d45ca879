"""Step 4 of a sync, when configured: each environment whose image the registry holds at its
verified digest is registered as an Azure ML environment version (`controller.core.azureml`
says how it maps). Nothing is published for an image that was not verified: failed, refused
and held environments are passed over. A version Azure ML has with another image fails that
environment alone ("fix the spec": bump its version); the others carry on."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from controller.adapters.azureml import Published
from controller.core.azureml import AzureMLVersion, asset_name, azureml_version, derived_version
from controller.core.errors import EnvshipError
from controller.core.naming import split_reference
from controller.core.plan import PlanItem
from controller.pipeline.options import SyncOptions
from controller.pipeline.outcome import DONE, Reporter, Result, Step, failure


class Publishing(Protocol):
    """What this step needs of Azure ML (`controller.adapters.azureml.AzureMLPublisher`)."""

    def publish(self, wanted: AzureMLVersion) -> Published: ...

    def asset_id(self, wanted: AzureMLVersion) -> str: ...

    def registered_images(self) -> set[str]: ...


def wanted_version(result: Result, options: SyncOptions) -> AzureMLVersion | None:
    """What `result`'s environment should be registered as; None when it has no verified image."""
    item, env = result.item, result.item.env
    if result.outcome not in DONE or not result.digest or not item.hash or not item.image:
        return None
    host, repository, _tag, _digest = split_reference(item.image)
    return azureml_version(
        name=env.name,
        version=env.version,
        content_hash=item.hash,
        image=f"{host}/{repository}" if host else repository,
        digest=result.digest,
        build=env.build,
        description=env.description,
        tags=dict(env.tags),
        source=options.source,
        commit=options.revision,
    )


def say_would_publish(reporter: Reporter, items: Sequence[PlanItem]) -> None:
    """A dry run's answer: what each environment with an image would be registered as."""
    for item in items:
        if item.action in ("build", "copy", "up-to-date") and item.hash:
            version = item.env.version or derived_version(item.hash)
            reference = f"azureml:{asset_name(item.env.name)}:{version}"
            reporter.line(item.env.status_key, f"would publish as {reference}", Step.PUBLISH)


def publish(
    publisher: Publishing, options: SyncOptions, reporter: Reporter, results: Sequence[Result]
) -> None:
    for result in results:
        wanted = wanted_version(result, options)
        if wanted is None:
            continue
        key = result.item.env.status_key
        try:
            published = publisher.publish(wanted)
        except EnvshipError as exc:
            result.outcome = "failed"
            result.failure = failure(exc, "publish")
            reporter.line(key, f"not published: {exc}", Step.FAILED)
            continue
        result.asset = publisher.asset_id(wanted)
        said = "published as" if published.created else "already published as"
        reporter.line(key, f"{said} {wanted.reference}", Step.PUBLISH)


__all__ = ["Publishing", "publish", "say_would_publish", "wanted_version"]
