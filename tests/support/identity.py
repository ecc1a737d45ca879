"""The tests' Entra ID: signs tokens that the stand-ins for ACR and Key Vault trust.

`IssuingCredential` is a `TokenCredential` as azure-identity's credentials are: the real Azure
SDK clients ask it for a token for a scope, and it answers with a JWT for that audience.
"""

from __future__ import annotations

import time

import jwt
from azure.core.credentials import AccessToken
from cryptography.hazmat.primitives.asymmetric import ec

ACR_AUDIENCE = "https://containerregistry.azure.net"


class EntraIssuer:
    """The tests' Entra ID: signs access tokens (ES256 JWTs) that the stand-in trusts."""

    def __init__(self, tenant: str = "00000000-test-tenant") -> None:
        self.tenant = tenant
        self._key = ec.generate_private_key(ec.SECP256R1())
        self.public_key = self._key.public_key()

    def token(self, audience: str = ACR_AUDIENCE, lifetime: float = 3600) -> tuple[str, int]:
        """An access token for `audience` and its expiry (epoch seconds)."""
        now = int(time.time())
        expires = now + int(lifetime)
        claims = {
            "iss": f"https://sts.windows.net/{self.tenant}/",
            "tid": self.tenant,
            "oid": "11111111-2222-3333-4444-555555555555",
            "sub": "envship-workload-identity",
            "aud": audience,
            "iat": now,
            "nbf": now,
            "exp": expires,
        }
        return jwt.encode(claims, self._key, algorithm="ES256"), expires

    def verify(self, token: str, audience: str) -> dict[str, object]:
        """The claims of a token this issuer signed for `audience`; raises otherwise."""
        claims: dict[str, object] = jwt.decode(
            token, self.public_key, algorithms=["ES256"], audience=audience
        )
        return claims


class IssuingCredential:
    """A `TokenCredential` whose tokens come from an `EntraIssuer`; counts the calls."""

    def __init__(self, issuer: EntraIssuer) -> None:
        self.issuer = issuer
        self.calls = 0

    def get_token(self, *scopes: str, **kwargs: object) -> AccessToken:
        self.calls += 1
        audience = scopes[0].removesuffix("/.default") if scopes else ""
        token, expires = self.issuer.token(audience)
        return AccessToken(token, expires)
