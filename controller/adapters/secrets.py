"""Secret references: where a credential comes from, never the credential itself.

- `keyvault://VAULT/NAME[/VERSION]`: Azure Key Vault, through azure-keyvault-secrets and
  `DefaultAzureCredential` (workload identity in AKS, the Azure CLI on a laptop). `VAULT` is a
  vault name (`https://VAULT.vault.azure.net`) or a host (`vault.example.org:8443`).
- `file:PATH`: a file, as mounted by the Secrets Store CSI driver or from a Kubernetes Secret
  (surrounding whitespace stripped).
- `env:NAME`: an environment variable.

`SecretStore` reads a reference when it is needed and keeps the value for `ttl` seconds, so a
rotated secret is picked up without a restart; a consumer whose credentials were rejected calls
`forget`, and the next read goes back to the source. Every value read is registered with the
redactor (`controller.adapters.redact`), so it cannot reach logs, status, metrics or error text.
Errors name the reference and the reason (not found, forbidden, vault unreachable), never the
value. A literal secret is never accepted where a reference is expected.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from controller.adapters.redact import REDACTOR
from controller.core.errors import Misconfigured

if TYPE_CHECKING:  # the Azure SDK is slow to import; only Key Vault references need it
    from azure.core.credentials import TokenCredential

KEY_VAULT_DOMAINS = (
    ".vault.azure.net",
    ".vault.azure.cn",
    ".vault.usgovcloudapi.net",
    ".vault.microsoftazure.de",
    ".managedhsm.azure.net",
)


class SecretError(Misconfigured):
    """A secret could not be read: check the reference or its source (its value is never shown)."""


@dataclass(frozen=True)
class SecretRef:
    scheme: str
    target: str

    @classmethod
    def parse(cls, text: str) -> SecretRef:
        scheme, sep, target = text.partition(":")
        if scheme == "keyvault" and target.startswith("//"):
            target = target[2:]
            parts = target.split("/")
            if len(parts) in (2, 3) and all(parts):
                return cls("keyvault", target)
        elif sep and scheme in ("env", "file") and target:
            return cls(scheme, target)
        # The text may be a pasted secret: say what is expected, never what was given.
        raise SecretError(
            "a secret reference must be keyvault://VAULT/NAME[/VERSION], file:PATH or env:NAME "
            "(a literal secret is never accepted)"
        )

    def __str__(self) -> str:
        if self.scheme == "keyvault":
            return f"keyvault://{self.target}"
        return f"{self.scheme}:{self.target}"

    @property
    def vault_url(self) -> str:
        vault = self.target.split("/", 1)[0]
        host = vault if ("." in vault or ":" in vault) else f"{vault}.vault.azure.net"
        return f"https://{host}"

    @property
    def secret_name(self) -> tuple[str, str | None]:
        parts = self.target.split("/")
        return parts[1], (parts[2] if len(parts) == 3 else None)


def default_credential() -> TokenCredential:
    """DefaultAzureCredential: workload identity in AKS, the Azure CLI on a laptop."""
    from azure.identity import DefaultAzureCredential  # noqa: PLC0415 - slow import, rarely needed

    return DefaultAzureCredential()


@dataclass
class SecretStore:
    """Reads secret references, caches values for `ttl` seconds, forgets them on request."""

    ttl: float = 300.0
    credential_factory: Callable[[], TokenCredential] = default_credential
    ca_file: str | None = None
    """CA bundle for a Key Vault–protocol server with a private certificate."""
    _cache: dict[SecretRef, tuple[str, float]] = field(default_factory=dict, init=False)
    _clients: dict[str, Any] = field(default_factory=dict, init=False, repr=False)
    _credential: TokenCredential | None = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def get(self, ref: SecretRef, *, sensitive: bool = True) -> str:
        """The value of `ref`; a sensitive value (not a user name) is registered for redaction."""
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(ref)
            if cached and now - cached[1] < self.ttl:
                return cached[0]
        value = self._read(ref)
        if sensitive:
            REDACTOR.add(value)
        with self._lock:
            self._cache[ref] = (value, now)
        return value

    def forget(self, *refs: SecretRef) -> None:
        """The value was rejected somewhere: read it from its source next time."""
        with self._lock:
            for ref in refs:
                self._cache.pop(ref, None)

    def _read(self, ref: SecretRef) -> str:
        if ref.scheme == "env":
            value = os.environ.get(ref.target)
            if value is None:
                raise SecretError(f"{ref}: the environment variable is not set")
            return value
        if ref.scheme == "file":
            try:
                return Path(ref.target).read_text(encoding="utf-8").strip()
            except FileNotFoundError:
                raise SecretError(f"{ref}: the file does not exist") from None
            except OSError as exc:
                raise SecretError(f"{ref}: the file cannot be read ({exc.strerror})") from None
        return self._read_key_vault(ref)

    def _key_vault(self, vault_url: str) -> Any:
        from azure.keyvault.secrets import SecretClient  # noqa: PLC0415 - only when used

        with self._lock:
            client = self._clients.get(vault_url)
            if client is None:
                if self._credential is None:
                    self._credential = self.credential_factory()
                host = vault_url.removeprefix("https://").split(":")[0]
                options: dict[str, Any] = {
                    # Azure's own vaults must answer a challenge for their own domain; a vault
                    # server elsewhere (a private Key Vault-protocol endpoint) cannot.
                    "verify_challenge_resource": host.endswith(KEY_VAULT_DOMAINS),
                }
                if self.ca_file:
                    options["connection_verify"] = self.ca_file
                client = SecretClient(vault_url, self._credential, **options)
                self._clients[vault_url] = client
            return client

    def _read_key_vault(self, ref: SecretRef) -> str:
        from azure.core.exceptions import (  # noqa: PLC0415
            ClientAuthenticationError,
            HttpResponseError,
            ResourceNotFoundError,
            ServiceRequestError,
        )

        name, version = ref.secret_name
        try:
            secret = self._key_vault(ref.vault_url).get_secret(name, version)
        except ResourceNotFoundError:
            raise SecretError(f"{ref}: not found in the vault") from None
        except ClientAuthenticationError:
            raise SecretError(
                f"{ref}: the vault refused envship's identity (authentication failed)"
            ) from None
        except HttpResponseError as exc:
            if exc.status_code == 403:
                raise SecretError(
                    f"{ref}: forbidden; grant envship's identity 'Key Vault Secrets User'"
                ) from None
            raise SecretError(f"{ref}: the vault answered HTTP {exc.status_code}") from None
        except ServiceRequestError:
            raise SecretError(f"{ref}: the vault is unreachable") from None
        except Exception as exc:
            raise SecretError(f"{ref}: could not be read ({type(exc).__name__})") from None
        if secret.value is None:
            raise SecretError(f"{ref}: the secret has no value")
        return str(secret.value)


@dataclass(frozen=True)
class CredentialRefs:
    """A username and password kept as references, read through a store."""

    username: SecretRef
    password: SecretRef

    def read(self, store: SecretStore) -> tuple[str, str]:
        # A user name is not a secret: masking it would hide ordinary words in every log line.
        return store.get(self.username, sensitive=False), store.get(self.password)

    def forget(self, store: SecretStore) -> None:
        store.forget(self.username, self.password)
