"""Azure ML environment versions, through azure-ai-ml's `MLClient` (the `azureml` extra).

`publish` registers an `AzureMLVersion` (controller/core/azureml.py) in a workspace, safely:
a version that exists with the same image is left alone; one that exists with another image is
never overwritten (Azure ML versions are immutable: the spec's version must be bumped); only a
version that does not exist is created. Signed in with azure-identity's default credential
(workload identity in AKS, the Azure CLI on a laptop).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from controller.adapters.secrets import default_credential
from controller.core.azureml import AzureMLVersion, same_image
from controller.core.errors import FixSpec, Misconfigured, RetryLater

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

INSTALL = "install envship's azureml extra (pip install 'envship[azureml]')"


class PublishConflict(FixSpec):
    """The spec's version is registered with another image: bump the spec's version."""


class PublishRefused(Misconfigured):
    """Azure ML refused envship's identity, or knows no such workspace: the operator must act."""


class PublishFailed(RetryLater):
    """Azure ML failed or throttled: publish again later."""


@dataclass(frozen=True)
class AzureMLSettings:
    """The workspace (subscription, resource group, name) or the Azure ML registry (`registry`)
    environments are registered in."""

    subscription: str
    resource_group: str
    workspace: str | None
    endpoint: str | None = None
    registry: str | None = None
    """An Azure ML registry's name: shared across workspaces (then `workspace` is None)."""
    """Azure Resource Manager of another cloud (None: Azure's public cloud)."""
    credential_factory: Callable[[], TokenCredential] = field(default=default_credential)


@dataclass(frozen=True, slots=True)
class Published:
    asset_id: str
    created: bool
    """False when the version was there already, with the same image."""


def _status(exc: Exception) -> int | None:
    code = getattr(exc, "status_code", None)
    return int(code) if isinstance(code, int) else None


class AzureMLPublisher:
    """Registers environment versions in one workspace; thread-safe (one client, built once)."""

    def __init__(self, settings: AzureMLSettings) -> None:
        self.settings = settings
        self._client: Any = None
        self._lock = threading.Lock()

    def _ml_client(self) -> Any:
        with self._lock:
            if self._client is None:
                try:
                    from azure.ai.ml import MLClient  # noqa: PLC0415 - 1.7 s, publishing only
                except ImportError:
                    raise PublishRefused(
                        f"publishing to Azure ML needs azure-ai-ml: {INSTALL}"
                    ) from None
                s = self.settings
                kwargs: dict[str, Any] = {"enable_telemetry": False, "retry_total": 2}
                if s.endpoint:
                    base = s.endpoint.rstrip("/") + "/"
                    kwargs["cloud"] = f"envship-{abs(hash(base)):x}"
                    kwargs["cloud_metadata"] = {
                        "azure_portal": base, "resource_manager": base, "active_directory": base,
                        "aml_resource_id": base, "storage_endpoint": "core.windows.net",
                        "registry_discovery_endpoint": base,
                    }  # fmt: skip
                previous = os.environ.get("AZUREML_CURRENT_CLOUD")
                try:
                    if s.registry:
                        self._client = MLClient(
                            s.credential_factory(), registry_name=s.registry, **kwargs
                        )
                    else:
                        self._client = MLClient(
                            s.credential_factory(), s.subscription, s.resource_group,
                            s.workspace, **kwargs,
                        )  # fmt: skip
                finally:  # MLClient sets it for the whole process
                    if previous is None:
                        os.environ.pop("AZUREML_CURRENT_CLOUD", None)
                    else:
                        os.environ["AZUREML_CURRENT_CLOUD"] = previous
            return self._client

    def _error(self, exc: Exception, during: str) -> Exception:
        from azure.core.exceptions import ClientAuthenticationError  # noqa: PLC0415

        s = self.settings
        where = f"registry {s.registry}" if s.registry else f"workspace {s.workspace}"
        code = _status(exc)
        if isinstance(exc, ClientAuthenticationError) or code == 401:
            return PublishRefused(f"Azure ML refused envship's identity {during} in {where}")
        if code == 403:
            return PublishRefused(
                f"envship's identity may not register environments in {where} (403): give it "
                "a role that may write environment versions there (docs/azureml.md)"
            )
        if code == 404:
            return PublishRefused(
                f"Azure ML knows no {where} (404 {during}): check publish.azureml"
            )
        if code == 409:
            return PublishConflict(
                f"Azure ML refused {during} in {where} (409): the version is registered with "
                "another image; versions are immutable: bump the spec's version"
            )
        shown = f"HTTP {code}" if code else type(exc).__name__
        return PublishFailed(
            f"Azure ML failed {during} in {where} ({shown}); publishing again later"
        )

    def registered_image(self, name: str, version: str) -> str | None:
        """The image a registered version names; None when there is no such version."""
        from azure.core.exceptions import AzureError, ResourceNotFoundError  # noqa: PLC0415

        client = self._ml_client()
        try:
            found = client.environments.get(name=name, version=version)
        except ResourceNotFoundError:
            return None
        except AzureError as exc:
            raise self._error(exc, f"reading {name}:{version}") from None
        return str(found.image) if found.image else ""

    def publish(self, wanted: AzureMLVersion) -> Published:
        """Register `wanted` unless it is there; a version there with another image conflicts."""
        from azure.ai.ml.entities import Environment  # noqa: PLC0415 - publishing only
        from azure.core.exceptions import AzureError, ResourceExistsError  # noqa: PLC0415

        asset_id = self.asset_id(wanted)
        registered = self.registered_image(wanted.name, wanted.version)
        if registered is not None:
            if same_image(registered, wanted):
                return Published(asset_id, created=False)
            raise PublishConflict(self._conflict(wanted, registered))
        environment = Environment(
            name=wanted.name,
            version=wanted.version,
            image=wanted.image,
            description=wanted.description,
            tags=dict(wanted.tags),
        )
        try:
            self._ml_client().environments.create_or_update(environment)
        except ResourceExistsError:  # registered meanwhile, by someone else
            raise PublishConflict(self._conflict(wanted, "another image")) from None
        except AzureError as exc:
            raise self._error(exc, f"registering {wanted.name}:{wanted.version}") from None
        return Published(asset_id, created=True)

    def registered_images(self) -> set[str]:
        """Every image a version in the workspace names (what garbage collection must keep)."""
        from azure.core.exceptions import AzureError  # noqa: PLC0415 - publishing only

        client = self._ml_client()
        images: set[str] = set()
        try:
            names = sorted({str(c.name) for c in client.environments.list() if c.name})
            for name in names:
                for version in client.environments.list(name=name):
                    if version.image:
                        images.add(str(version.image).strip())
        except AzureError as exc:
            raise self._error(exc, "listing environment versions") from None
        return images

    def asset_id(self, wanted: AzureMLVersion) -> str:
        s = self.settings
        if s.registry:
            return (
                f"azureml://registries/{s.registry}/environments/{wanted.name}"
                f"/versions/{wanted.version}"
            )
        return (
            f"azureml://subscriptions/{s.subscription}/resourcegroups/{s.resource_group}"
            f"/workspaces/{s.workspace}/environments/{wanted.name}/versions/{wanted.version}"
        )

    @staticmethod
    def _conflict(wanted: AzureMLVersion, registered: str) -> str:
        return (
            f"Azure ML environment {wanted.name} version {wanted.version} is registered with "
            f"{registered}, not {wanted.image}; versions are immutable: bump the spec's version"
        )


__all__ = [
    "AzureMLPublisher",
    "AzureMLSettings",
    "PublishConflict",
    "PublishFailed",
    "PublishRefused",
    "Published",
]
