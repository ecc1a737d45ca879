"""One `OciRegistry` per host, built from settings: credentials, CA, plain HTTP, Entra.

The same pool serves the target registry and the registries base images come from, so a base in
a private registry is resolved and pulled with that registry's own credentials.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from controller.adapters.registry import Anonymous, Authenticator, Basic, OciRegistry
from controller.adapters.secrets import CredentialRefs, SecretStore, default_credential

if TYPE_CHECKING:  # the Azure SDK is slow to import and most runs never sign in with Entra
    from azure.core.credentials import TokenCredential


def identity_credential(client_id: str) -> TokenCredential:
    """A user-assigned managed identity: workload identity in AKS, IMDS on an Azure VM."""
    from azure.identity import DefaultAzureCredential  # noqa: PLC0415 - slow import, rarely needed

    return DefaultAzureCredential(
        managed_identity_client_id=client_id, workload_identity_client_id=client_id
    )


@dataclass
class RegistrySettings:
    ca_file: str | None = None
    """CA bundle for registries with private certificates (all hosts)."""
    plain_http: frozenset[str] = frozenset()
    """Hosts that may be reached over plain HTTP although they are not on loopback."""
    credentials: Mapping[str, CredentialRefs] = field(default_factory=dict)
    """host -> username and password references."""
    entra: frozenset[str] = frozenset()
    """ACR hosts to sign in to with an Entra identity."""
    credential_factory: Callable[[], TokenCredential] = default_credential
    identity_factory: Callable[[str], TokenCredential] = identity_credential
    """The credential of a managed identity named by its client id (a spec's registryIdentity)."""
    timeout: float = 30.0

    @classmethod
    def for_target(
        cls,
        target_host: str | None,
        *,
        ca_file: str | None,
        plain_http: Iterable[str],
        base_credentials: Mapping[str, CredentialRefs],
        target_credentials: CredentialRefs | None,
        acr_identity: bool,
    ) -> RegistrySettings:
        """Settings for syncing to `target_host`: its own credentials (or Entra sign-in) next
        to those of the base image registries (None: no target, only those)."""
        credentials = dict(base_credentials)
        if target_credentials is not None and target_host is not None:
            credentials[target_host] = target_credentials
        return cls(
            ca_file=ca_file,
            plain_http=frozenset(plain_http),
            credentials=credentials,
            entra=frozenset({target_host}) if acr_identity and target_host else frozenset(),
        )


def entra_for(host: str, credential: TokenCredential, ca_file: str | None) -> Authenticator:
    """ACR sign-in with Entra; the Azure SDK is imported only for registries that need it."""
    from controller.adapters.acr import AcrEntra  # noqa: PLC0415 - see TYPE_CHECKING above

    return AcrEntra(host, credential, ca_file=ca_file)


class RegistryPool:
    def __init__(self, settings: RegistrySettings, secrets: SecretStore | None = None) -> None:
        self.settings = settings
        self.secrets = secrets or SecretStore(credential_factory=settings.credential_factory)
        self._registries: dict[str, OciRegistry] = {}
        self._lock = threading.Lock()
        self._credential: TokenCredential | None = None
        self._identities: dict[str, str] = {}

    def use_identity(self, host: str, client_id: str) -> None:
        """A spec pulls its base from `host` with a managed identity (`registryIdentity`).

        Credentials configured for the host win; otherwise the host signs in with Entra as that
        identity.
        """
        settings = self.settings
        with self._lock:
            if host in settings.entra or host in settings.credentials or host in self._identities:
                return
            self._identities[host] = client_id
            self._registries.pop(host, None)

    def authenticator(self, host: str) -> Authenticator:
        settings = self.settings
        if host in self._identities:
            credential = settings.identity_factory(self._identities[host])
            return entra_for(host, credential, settings.ca_file)
        if host in settings.entra:
            if self._credential is None:
                self._credential = settings.credential_factory()
            return entra_for(host, self._credential, settings.ca_file)
        refs = settings.credentials.get(host)
        if refs is not None:
            store = self.secrets
            return Basic(lambda: refs.read(store), lambda: refs.forget(store))
        return Anonymous()

    def get(self, host: str) -> OciRegistry:
        with self._lock:
            registry = self._registries.get(host)
            if registry is None:
                registry = OciRegistry(
                    host,
                    authenticator=self.authenticator(host),
                    ca_file=self.settings.ca_file,
                    plain_http=True if host in self.settings.plain_http else None,
                    timeout=self.settings.timeout,
                )
                self._registries[host] = registry
            return registry

    def close(self) -> None:
        with self._lock:
            for registry in self._registries.values():
                registry.close()
            self._registries.clear()
