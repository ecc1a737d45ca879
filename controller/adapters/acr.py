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
from dataclasses import dataclass, field
from typing import Any

import requests
from azure.containerregistry._exchange_client import ACRExchangeClient
from azure.core.credentials import TokenCredential
from dxf import DXFBase

ACR_SCOPE = "https://containerregistry.azure.net/.default"
DOCKER_USER = "00000000-0000-0000-0000-000000000000"
MARGIN = 300.0
"""Seconds before expiry at which a token is renewed."""


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


@dataclass
class AcrEntra:
    """An `Authenticator` for `OciRegistry` that signs in to ACR with an Entra credential."""

    host: str
    credential: TokenCredential
    ca_file: str | None = None
    exchanges: int = field(default=0, init=False)
    """Refresh-token exchanges made (for tests and metrics)."""
    _refresh: tuple[str, float] | None = field(default=None, init=False, repr=False)
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
            token = self._exchange_client().exchange_aad_token_for_refresh_token(
                service or self.host
            )
            self.exchanges += 1
            self._refresh = (token, token_expiry(token))
            return token

    def access_token(self, service: str, scope: str) -> str:
        key = (service, scope)
        with self._lock:
            cached = self._access.get(key)
            if cached and cached[1] - time.time() > MARGIN:
                return cached[0]
        refresh = self.refresh_token(service)
        token = self._exchange_client().exchange_refresh_token_for_access_token(
            refresh, service=service, scope=scope
        )
        if not token:
            raise PermissionError(f"{self.host} issued no access token for {scope}")
        with self._lock:
            self._access[key] = (token, token_expiry(token))
        return str(token)

    def __call__(self, client: DXFBase, response: requests.Response) -> None:
        challenge = parse_challenge(response.headers.get("WWW-Authenticate", ""))
        service = challenge.get("service", self.host)
        scope = challenge.get("scope", "")
        client.token = self.access_token(service, scope)

    def docker_auth(self) -> dict[str, str] | None:
        return {"username": DOCKER_USER, "password": self.refresh_token()}
