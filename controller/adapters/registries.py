"""One `OciRegistry` per host, built from settings: credentials, CA, plain HTTP, Entra.

The same pool serves the target registry and the registries base images come from, so a base in
a private registry is resolved and pulled with that registry's own credentials.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from azure.core.credentials import TokenCredential

from controller.adapters.acr import AcrEntra
from controller.adapters.registry import Anonymous, Authenticator, Basic, OciRegistry
from controller.adapters.secrets import CredentialRefs, SecretStore, default_credential


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
    timeout: float = 30.0


class RegistryPool:
    def __init__(self, settings: RegistrySettings, secrets: SecretStore | None = None) -> None:
        self.settings = settings
        self.secrets = secrets or SecretStore(credential_factory=settings.credential_factory)
        self._registries: dict[str, OciRegistry] = {}
        self._lock = threading.Lock()
        self._credential: TokenCredential | None = None

    def authenticator(self, host: str) -> Authenticator:
        settings = self.settings
        if host in settings.entra:
            if self._credential is None:
                self._credential = settings.credential_factory()
            return AcrEntra(host, self._credential, ca_file=settings.ca_file)
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
