"""A stand-in for Azure Key Vault's secrets API, so the real azure-keyvault-secrets client runs.

- `GET /secrets/{name}/?api-version=...` (the latest version) and `/secrets/{name}/{version}`;
- a request without a token gets `401` with the challenge the SDK expects
  (`Bearer authorization="https://login.microsoftonline.com/<tenant>", resource="https://vault.azure.net"`);
  the SDK then asks its credential for `https://vault.azure.net/.default` and retries;
- a token not signed by the tests' Entra issuer for that audience: `401`
  (the SDK raises `ClientAuthenticationError`); a secret the identity may not read: `403`;
  a missing secret or version: `404` with `SecretNotFound`.
Secrets have versions; `rotate` adds one, as `az keyvault secret set` does.
"""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.support.identity import EntraIssuer
from tests.support.infra import Certs, free_port
from tests.support.servers import BackgroundServer

AUDIENCE = "https://vault.azure.net"


def error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


@dataclass
class KeyVaultStandIn:
    certs: Certs
    entra: EntraIssuer
    port: int = field(default_factory=free_port)
    forbidden: set[str] = field(default_factory=set)
    """Secret names the identity may not read (403)."""
    requests: Counter[str] = field(default_factory=Counter)
    _versions: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    _server: BackgroundServer | None = field(default=None, init=False, repr=False)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def ref(self, name: str, version: str | None = None) -> str:
        return f"keyvault://{self.host}/{name}" + (f"/{version}" if version else "")

    def rotate(self, name: str, value: str) -> str:
        version = uuid.uuid4().hex
        self._versions.setdefault(name, []).append((version, value))
        return version

    async def get_secret(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        version = request.match_info.get("version") or ""
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            self.requests["challenge"] += 1
            return web.json_response(
                {
                    "error": {
                        "code": "Unauthorized",
                        "message": "AKV10000: Request is missing a Bearer",
                    }
                },
                status=401,
                headers={
                    "WWW-Authenticate": f'Bearer authorization="https://login.microsoftonline.com/'
                    f'{self.entra.tenant}", resource="{AUDIENCE}"'
                },
            )
        try:
            self.entra.verify(header.removeprefix("Bearer "), AUDIENCE)
        except Exception:
            self.requests["rejected"] += 1
            return error(401, "Unauthorized", "AKV10032: Invalid issuer or signature.")
        if name in self.forbidden:
            self.requests["forbidden"] += 1
            return error(
                403, "Forbidden", f"The user does not have secrets get permission on {name}"
            )
        versions = self._versions.get(name, [])
        found = [v for v in versions if v[0] == version] if version else versions[-1:]
        if not found:
            self.requests["missing"] += 1
            return error(404, "SecretNotFound", f"A secret with (name/id) {name} was not found")
        self.requests["read"] += 1
        found_version, value = found[0]
        body: dict[str, Any] = {
            "value": value,
            "id": f"https://{self.host}/secrets/{name}/{found_version}",
            "attributes": {"enabled": True, "created": 1700000000, "updated": 1700000000,
                           "recoveryLevel": "Recoverable+Purgeable"},
            "tags": {},
        }  # fmt: skip
        return web.json_response(body)

    async def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/secrets/{name}", self.get_secret)
        app.router.add_get("/secrets/{name}/", self.get_secret)
        app.router.add_get("/secrets/{name}/{version}", self.get_secret)
        return app

    def start(self) -> KeyVaultStandIn:
        self._server = BackgroundServer(self.certs, self.port, "keyvault-standin")
        self._server.start(self._app)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
