"""A stand-in for the Azure CLI's sign-in, for envship processes: an `az` on PATH that answers
`az account get-access-token --resource R` as the real one does, with a token the tests' Entra
issuer signed for R. azure-identity's AzureCliCredential (chosen with
AZURE_TOKEN_CREDENTIALS=AzureCliCredential, as DefaultAzureCredential allows) runs it."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from tests.support.identity import EntraIssuer

SCRIPT = """#!{python}
import json, sys, time
from pathlib import Path

import jwt

here = Path(__file__).parent
with (here / "calls").open("a") as calls:
    calls.write(" ".join(sys.argv[1:]) + "\\n")
args = sys.argv[1:]
if args[:2] != ["account", "get-access-token"] or "--resource" not in args:
    print("ERROR: unsupported", file=sys.stderr)
    sys.exit(2)
resource = args[args.index("--resource") + 1].rstrip("/")
settings = json.loads((here / "settings.json").read_text())
now = int(time.time())
expires = now + settings["lifetime"]
claims = {{"iss": "https://sts.windows.net/" + settings["tenant"] + "/", "tid": settings["tenant"],
          "oid": "11111111-2222-3333-4444-555555555555", "sub": "envship-laptop-user",
          "aud": resource, "iat": now, "nbf": now, "exp": expires}}
token = jwt.encode(claims, (here / "key.pem").read_text(), algorithm="ES256")
print(json.dumps({{"accessToken": token, "expiresOn": time.strftime("%Y-%m-%d %H:%M:%S.000000",
                  time.localtime(expires)), "expires_on": expires, "tokenType": "Bearer",
                  "subscription": "sub", "tenant": settings["tenant"]}}))
"""


class AzureCli:
    """`az` in `folder`, signing with `issuer`'s key; `env()` is what envship needs to use it."""

    def __init__(self, folder: Path, issuer: EntraIssuer, lifetime: int = 3600) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        key = issuer._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        (folder / "key.pem").write_bytes(key)
        self.configure(issuer.tenant, lifetime)
        script = folder / "az"
        script.write_text(SCRIPT.format(python=sys.executable))
        script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)

    def configure(self, tenant: str, lifetime: int) -> None:
        import json  # noqa: PLC0415

        (self.folder / "settings.json").write_text(
            json.dumps({"tenant": tenant, "lifetime": lifetime})
        )

    def calls(self) -> list[str]:
        path = self.folder / "calls"
        return path.read_text().splitlines() if path.exists() else []

    def env(self, ca_file: str) -> dict[str, str]:
        return {
            "PATH": f"{self.folder}{os.pathsep}{os.environ.get('PATH', '')}",
            "AZURE_TOKEN_CREDENTIALS": "AzureCliCredential",
            "REQUESTS_CA_BUNDLE": ca_file,
        }


__all__ = ["AzureCli"]
