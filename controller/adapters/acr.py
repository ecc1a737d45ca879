"""Azure Container Registry sign-in with an Entra identity (workload identity in AKS).

The real flow, through azure-containerregistry's exchange client: an Entra token for
`https://containerregistry.azure.net/.default` -> `POST /oauth2/exchange` (an ACR refresh token)
-> `POST /oauth2/token` (an access token for one repository scope). The SDK repeats the whole
exchange on every request; here the refresh token and each scope's access token are kept until
shortly before they expire, so a plan of 1,000 environments costs one exchange, not 1,000.
Docker pushes use the refresh token as the password of the all-zero user, as `az acr login` does.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import requests
from azure.containerregistry._exchange_client import ACRExchangeClient
from azure.core.credentials import TokenCredential
from azure.core.exceptions import AzureError, ClientAuthenticationError, HttpResponseError
from dxf import DXFBase

from controller.adapters.redact import REDACTOR
from controller.adapters.registry import RegistryAuthError, RegistryError

ACR_SCOPE = "https://containerregistry.azure.net/.default"
DOCKER_USER = "00000000-0000-0000-0000-000000000000"
MARGIN = 300.0
"""Seconds before expiry at which a token is renewed."""
REFUSAL_MEMORY = 60.0
"""Seconds a refused sign-in is remembered, so a plan of many repositories asks ACR once."""


def token_expiry(token: str) -> float:
    """The `exp` claim of a JWT (not verified: the registry verifies it); 0 when unreadable."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return float(claims.get("exp", 0))
    except (IndexError, ValueError, TypeError):
        return 0.0


def parse_challenge(header: str) -> dict[str, str]:
    """`Bearer realm="...",service="...",scope="..."` -> its parameters."""
    _, _, params = header.partition(" ")
    found: dict[str, str] = {}
    for part in params.split('",'):
        key, _, value = part.strip().partition("=")
        found[key.strip().lower()] = value.strip().strip('"')
    return found


@contextmanager
def signing_in(host: str, step: str) -> Iterator[None]:
    """Azure SDK errors -> `RegistryAuthError`/`RegistryError`, which a sync reports per
    environment. Messages name the step and status only: the SDK's text may quote responses."""
    try:
        yield
    except (ClientAuthenticationError, HttpResponseError) as exc:
        status = exc.status_code
        if status is None:  # raised by the credential: no Entra token at all
            raise RegistryAuthError(
                f"{host}: no Entra token for ACR ({type(exc).__name__}); "
                "check the workload identity (or `az login`)"
            ) from None
        if status in (401, 403):
            raise RegistryAuthError(
                f"{host} refused the Entra sign-in ({step}: HTTP {status}); check that the "
                "identity may use this registry (e.g. the AcrPush role)"
            ) from None
        raise RegistryError(f"{host}: Entra sign-in failed ({step}: HTTP {status})") from None
    except AzureError as exc:
        raise RegistryError(
            f"{host}: Entra sign-in failed ({step}: {type(exc).__name__})"
        ) from None


@dataclass
class AcrEntra:
    """An `Authenticator` for `OciRegistry` that signs in to ACR with an Entra credential."""

    host: str
    credential: TokenCredential
    ca_file: str | None = None
    _refresh: tuple[str, float] | None = field(default=None, init=False, repr=False)
    _refused: tuple[str, float] | None = field(default=None, init=False, repr=False)
    _access: dict[tuple[str, str], tuple[str, float]] = field(default_factory=dict, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _client: Any = field(default=None, init=False, repr=False)

    def _exchange_client(self) -> ACRExchangeClient:
        if self._client is None:
            options: dict[str, Any] = {"credential_scopes": [ACR_SCOPE]}
            if self.ca_file:
                options["connection_verify"] = self.ca_file
            self._client = ACRExchangeClient(f"https://{self.host}", self.credential, **options)
        client: ACRExchangeClient = self._client
        return client

    def refresh_token(self, service: str | None = None) -> str:
        with self._lock:
            if self._refresh and self._refresh[1] - time.time() > MARGIN:
                return self._refresh[0]
            if self._refused and self._refused[1] > time.monotonic():
                raise RegistryAuthError(self._refused[0])
            try:
                with signing_in(self.host, "refresh token exchange"):
                    token = self._exchange_client().exchange_aad_token_for_refresh_token(
                        service or self.host
                    )
            except RegistryAuthError as exc:
                self._refused = (str(exc), time.monotonic() + REFUSAL_MEMORY)
                raise
            self._refused = None
            REDACTOR.add(token)
            self._refresh = (token, token_expiry(token))
            return token

    def access_token(self, service: str, scope: str) -> str:
        key = (service, scope)
        with self._lock:
            cached = self._access.get(key)
            if cached and cached[1] - time.time() > MARGIN:
                return cached[0]
        refresh = self.refresh_token(service)
        with signing_in(self.host, "access token exchange"):
            token = self._exchange_client().exchange_refresh_token_for_access_token(
                refresh, service=service, scope=scope
            )
        if not token:
            raise RegistryAuthError(f"{self.host} issued no access token for {scope}")
        with self._lock:
            REDACTOR.add(str(token))
            self._access[key] = (token, token_expiry(token))
        return str(token)

    def __call__(self, client: DXFBase, response: requests.Response) -> None:
        challenge = parse_challenge(response.headers.get("WWW-Authenticate", ""))
        service = challenge.get("service", self.host)
        scope = challenge.get("scope", "")
        client.token = self.access_token(service, scope)

    def forget(self) -> None:
        """The registry rejected a token: sign in afresh next time (a role may have changed)."""
        with self._lock:
            self._refresh = None
            self._access.clear()

    def docker_auth(self) -> dict[str, str] | None:
        return {"username": DOCKER_USER, "password": self.refresh_token()}
