"""A stand-in for Azure Container Registry's front door, in front of a real registry.

ACR signs clients in with its own token service next to the registry API:

- `POST /oauth2/exchange` (form: grant_type=access_token, service, access_token[, tenant]) trades
  an Entra ID token for the audience `https://containerregistry.azure.net` for an ACR refresh
  token;
- `POST /oauth2/token` (form: grant_type=refresh_token, service, scope, refresh_token) trades the
  refresh token for an access token to the repositories the scope names;
- `GET /oauth2/token?service=..&scope=..` with HTTP basic (the all-zero user and the refresh token
  as password) is the same trade in the shape the Docker engine asks for.

Everything else (`/v2/...`) goes, streamed and unchanged, to a real CNCF distribution registry
configured with `auth: token`: its challenges name this server as realm and service, and it
accepts the access tokens issued here because they are signed by the key of the certificate in
its `rootcertbundle` (carried in the tokens' `x5c` header, as distribution 2.8 verifies them).

The server runs on 127.0.0.1 over TLS (the tests' trustme certificate) in a thread of its own
with its own event loop. It counts the requests per endpoint so tests can check caching.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import time
import uuid
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import requests
import trustme
from aiohttp import web
from cryptography.hazmat.primitives import serialization

from tests.support.identity import ACR_AUDIENCE, EntraIssuer
from tests.support.infra import Certs, Registry, free_port
from tests.support.servers import BackgroundServer, relay

DOCKER_USER = "00000000-0000-0000-0000-000000000000"
ISSUER = "envship-acr-standin"


@dataclass
class Counts:
    """Requests the stand-in answered, per endpoint (refused ones included)."""

    exchange: int = 0
    """`POST /oauth2/exchange`: Entra token -> refresh token."""
    token_post: int = 0
    """`POST /oauth2/token`: refresh token -> access token (the SDK's way)."""
    token_get: int = 0
    """`GET /oauth2/token` with basic auth (the Docker engine's way)."""
    registry: int = 0
    """Requests passed on to the registry."""
    refused: int = 0
    """Token requests answered with 401."""

    def copy(self) -> Counts:
        return replace(self)

    def __sub__(self, other: Counts) -> Counts:
        return Counts(
            **{f.name: getattr(self, f.name) - getattr(other, f.name) for f in fields(self)}
        )


class Refused(Exception):
    """A token request the stand-in answers with 401."""


@dataclass
class AcrStandIn:
    folder: Path
    certs: Certs
    entra: EntraIssuer
    refresh_lifetime: float = 3 * 3600
    """Seconds an issued refresh token is valid (ACR: 3 hours)."""
    access_lifetime: float = 3600
    port: int = field(default_factory=free_port)
    counts: Counts = field(default_factory=Counts, init=False)
    token_scopes: list[str] = field(default_factory=list, init=False)
    """The scope of every access token issued through `POST /oauth2/token`, in order."""
    refresh_ids: list[str] = field(default_factory=list, init=False)
    """The `jti` of every refresh token issued, in order."""
    docker_refresh_ids: list[str] = field(default_factory=list, init=False)
    """The `jti` of the refresh token behind every `GET /oauth2/token` answered."""
    admin: tuple[str, str] | None = field(default=None, init=False)
    """ACR's admin user (or a repository-scoped token): username and password accepted by
    `GET /oauth2/token` with basic auth, as the registry's own credentials."""
    registry: Registry | None = field(default=None, init=False)
    _server: BackgroundServer | None = field(default=None, init=False, repr=False)
    _session: aiohttp.ClientSession | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        # The token signer: its certificate is the registry's rootcertbundle and rides in `x5c`.
        signer_ca = trustme.CA(organization_name="envship token signer")
        signer = signer_ca.issue_cert("acr-standin-token-signer")
        self.signer_cert_file = self.folder / "token-signer.pem"
        self.folder.mkdir(parents=True, exist_ok=True)
        signer.cert_chain_pems[0].write_to_path(str(self.signer_cert_file))
        self._signing_key = serialization.load_pem_private_key(
            signer.private_key_pem.bytes(), password=None
        )
        der = _pem_to_der(signer.cert_chain_pems[0].bytes())
        self._x5c = [base64.b64encode(der).decode()]

    # -- addresses ------------------------------------------------------------------------------

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"https://{self.host}"

    # -- tokens ---------------------------------------------------------------------------------

    def _sign(self, claims: dict[str, Any]) -> str:
        return jwt.encode(claims, self._signing_key, algorithm="ES256", headers={"x5c": self._x5c})

    def refresh_token(self, subject: str) -> str:
        now = int(time.time())
        jti = str(uuid.uuid4())
        self.refresh_ids.append(jti)
        return self._sign(
            {
                "iss": ISSUER,
                "sub": subject,
                "aud": self.host,
                "grant_type": "refresh_token",
                "iat": now,
                "nbf": now,
                "exp": int(now + self.refresh_lifetime),
                "jti": jti,
            }
        )

    def check_refresh_token(self, token: str) -> dict[str, Any]:
        """The claims of a refresh token issued here and still valid; else `Refused`."""
        try:
            claims = jwt.decode(
                token,
                self._signing_key.public_key(),
                algorithms=["ES256"],
                audience=self.host,
                issuer=ISSUER,
            )
        except jwt.PyJWTError as exc:
            raise Refused(f"invalid refresh token ({type(exc).__name__})") from None
        if claims.get("grant_type") != "refresh_token":
            raise Refused("not a refresh token")
        return claims

    def access_token(self, subject: str, scopes: list[str]) -> str:
        """A registry token granting every action the scopes ask for."""
        access = []
        for scope in scopes:
            parts = scope.split(":")
            if len(parts) < 3:
                continue
            kind, name, actions = parts[0], ":".join(parts[1:-1]), parts[-1]
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        return self._sign(
            {
                "iss": ISSUER,
                "sub": subject,
                "aud": self.host,
                "iat": now,
                "nbf": now - 5,
                "exp": int(now + self.access_lifetime),
                "jti": str(uuid.uuid4()),
                "access": access,
            }
        )

    def check_entra_token(self, token: str) -> str:
        try:
            claims = jwt.decode(
                token, self.entra.public_key, algorithms=["ES256"], audience=ACR_AUDIENCE
            )
        except jwt.PyJWTError as exc:
            raise Refused(f"the Entra token was rejected ({type(exc).__name__})") from None
        return str(claims.get("oid") or claims.get("sub"))

    # -- the registry behind, for the tests' own checks -----------------------------------------

    def session(self, *scopes: str) -> requests.Session:
        """A session straight to the registry behind, with a token for `scopes`."""
        assert self.registry is not None
        session = requests.Session()
        session.trust_env = False
        session.headers["Authorization"] = "Bearer " + self.access_token("test", list(scopes))
        return session

    def manifest_digest(self, repository: str, reference: str) -> str | None:
        assert self.registry is not None
        accept = (
            "application/vnd.docker.distribution.manifest.v2+json, "
            "application/vnd.oci.image.manifest.v1+json"
        )
        response = self.session(f"repository:{repository}:pull").head(
            f"{self.registry.url}/v2/{repository}/manifests/{reference}",
            headers={"Accept": accept},
            timeout=10,
        )
        if response.status_code == 404:
            return None
        response.raise_for_status()
        return response.headers.get("Docker-Content-Digest")

    # -- HTTP -----------------------------------------------------------------------------------

    async def exchange(self, request: web.Request) -> web.Response:
        self.counts.exchange += 1
        form = await request.post()
        try:
            if form.get("grant_type") != "access_token":
                raise Refused("grant_type must be access_token")
            if form.get("service") != self.host:
                raise Refused(f"unknown service {form.get('service')!r}")
            subject = self.check_entra_token(str(form.get("access_token") or ""))
        except Refused as exc:
            return self.refuse(str(exc))
        return web.json_response({"refresh_token": self.refresh_token(subject)})

    async def token_post(self, request: web.Request) -> web.Response:
        self.counts.token_post += 1
        form = await request.post()
        try:
            if form.get("grant_type") != "refresh_token":
                raise Refused("grant_type must be refresh_token")
            if form.get("service") != self.host:
                raise Refused(f"unknown service {form.get('service')!r}")
            claims = self.check_refresh_token(str(form.get("refresh_token") or ""))
        except Refused as exc:
            return self.refuse(str(exc))
        scope = " ".join(str(s) for s in form.getall("scope", []))
        self.token_scopes.append(scope)
        token = self.access_token(claims["sub"], scope.split())
        return web.json_response({"access_token": token})

    async def token_get(self, request: web.Request) -> web.Response:
        self.counts.token_get += 1
        try:
            username, password = _basic(request.headers.get("Authorization", ""))
            if self.admin is not None and username == self.admin[0]:
                if not hmac.compare_digest(password.encode(), self.admin[1].encode()):
                    raise Refused("invalid username or password")
                claims = {"sub": username, "jti": f"admin:{uuid.uuid4()}"}
            elif username != DOCKER_USER:
                raise Refused("sign in with the all-zero user and a refresh token")
            else:
                claims = self.check_refresh_token(password)
            if request.query.get("service") != self.host:
                raise Refused(f"unknown service {request.query.get('service')!r}")
        except Refused as exc:
            return self.refuse(str(exc))
        self.docker_refresh_ids.append(claims["jti"])
        scopes = [s for scope in request.query.getall("scope", []) for s in scope.split()]
        token = self.access_token(claims["sub"], scopes)
        return web.json_response(
            {
                "token": token,
                "access_token": token,
                "expires_in": int(self.access_lifetime),
                "issued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
        )

    def refuse(self, message: str) -> web.Response:
        self.counts.refused += 1
        return web.json_response(
            {"errors": [{"code": "UNAUTHORIZED", "message": message}]}, status=401
        )

    async def proxy(self, request: web.Request) -> web.StreamResponse:
        """Pass a registry request on, bodies streamed, headers (Location, ...) unchanged."""
        self.counts.registry += 1
        assert self.registry is not None
        assert self._session is not None
        return await relay(self._session, request, self.registry.url)

    # -- life -----------------------------------------------------------------------------------

    def start(self) -> AcrStandIn:
        self.registry = Registry(
            self.folder / "registry",
            token={
                "realm": f"{self.url}/oauth2/token",
                "service": self.host,
                "issuer": ISSUER,
                "rootcertbundle": str(self.signer_cert_file),
            },
        ).start()
        self._server = BackgroundServer(self.certs, self.port, "acr-standin")
        self._server.start(self._app, self._close)
        return self

    async def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/oauth2/exchange", self.exchange)
        app.router.add_post("/oauth2/token", self.token_post)
        app.router.add_get("/oauth2/token", self.token_get)
        app.router.add_route("*", "/{tail:.*}", self.proxy)
        self._session = aiohttp.ClientSession(
            auto_decompress=False,
            skip_auto_headers=("Accept", "Accept-Encoding", "User-Agent", "Content-Type"),
            connector=aiohttp.TCPConnector(limit=0),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
        )
        return app

    async def _close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
        if self.registry is not None:
            self.registry.stop()


def _pem_to_der(pem: bytes) -> bytes:
    body = b"".join(line for line in pem.splitlines() if line and not line.startswith(b"-----"))
    return base64.b64decode(body)


def _basic(header: str) -> tuple[str, str]:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        raise Refused("basic authentication required")
    try:
        username, sep, password = base64.b64decode(value).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise Refused("malformed basic authentication") from None
    if not sep:
        raise Refused("malformed basic authentication")
    return username, password
