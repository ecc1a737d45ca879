"""Webhook verification: is this request from the git host we share a secret with?

Pure functions over the request's headers and raw body. Every comparison with a secret is made
with `hmac.compare_digest` (constant time); token and password comparisons go through SHA-256
first, so not even their length is compared in variable time. Nothing here raises on malformed
input, and no payload is ever parsed: a verified request only *triggers* a reconcile (which
fetches from git itself), and an unverified one does nothing at all. (CVE-2025-59538: Argo CD
parsed an unauthenticated Azure DevOps payload and an empty JSON array crashed it.)

- GitHub: `X-Hub-Signature-256: sha256=<hex>`, HMAC-SHA256 of the raw body; the event name
  (`X-GitHub-Event`) is read only to answer `ping` without a reconcile.
- GitLab: the shared token in `X-Gitlab-Token`.
- Azure DevOps: HTTP Basic authentication on the service hook (there is no signature).
- Generic: `X-Signature: sha256=<hex>`, HMAC-SHA256 of the raw body.

A missing (None or empty) secret rejects every request: an unconfigured provider is closed,
never open. Reasons name the header and the problem, never a value.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass

GITHUB_SIGNATURE = "X-Hub-Signature-256"
GITHUB_EVENT = "X-GitHub-Event"
GITLAB_HEADER = "X-Gitlab-Token"
GENERIC_SIGNATURE = "X-Signature"
AUTHORIZATION = "Authorization"

_SHA256_HEX = re.compile(r"sha256=([0-9a-fA-F]{64})")
_EVENT = re.compile(r"[A-Za-z0-9_.-]{1,64}")


@dataclass(frozen=True, slots=True)
class Verdict:
    accepted: bool
    reason: str


def _accept() -> Verdict:
    return Verdict(True, "verified")


def _reject(reason: str) -> Verdict:
    return Verdict(False, reason)


def header(headers: Mapping[str, str], name: str) -> tuple[str | None, int]:
    """The header's value and how many times it was sent, case-insensitively. Works with plain
    dicts and with multidicts (aiohttp's request headers), where a header may repeat."""
    getall = getattr(headers, "getall", None)
    if getall is not None:
        try:
            values = list(getall(name, []))
        except Exception:  # a foreign mapping with another getall: fall back below
            values = []
        if values:
            return (values[0] if len(values) == 1 else None), len(values)
    wanted = name.lower()
    values = [v for k, v in headers.items() if isinstance(k, str) and k.lower() == wanted]
    return (values[0] if len(values) == 1 else None), len(values)


def _utf8(text: str) -> bytes | None:
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return None


def _same_secret(given: bytes, expected: bytes) -> bool:
    """Constant time, and independent of either length (both are hashed first)."""
    return hmac.compare_digest(hashlib.sha256(given).digest(), hashlib.sha256(expected).digest())


def _single(headers: Mapping[str, str], name: str) -> tuple[str | None, Verdict | None]:
    value, count = header(headers, name)
    if count == 0:
        return None, _reject(f"missing {name}")
    if count > 1:
        return None, _reject(f"{name} sent more than once")
    if not isinstance(value, str) or not value.strip():
        return None, _reject(f"empty {name}")
    return value.strip(), None


def _hmac_sha256(headers: Mapping[str, str], body: bytes, secret: str | None, name: str) -> Verdict:
    key = _utf8(secret) if secret else None
    if not key:
        return _reject("no secret configured")
    value, problem = _single(headers, name)
    if problem is not None or value is None:
        return problem or _reject(f"missing {name}")
    match = _SHA256_HEX.fullmatch(value)
    if match is None:
        return _reject(f"malformed {name}: expected sha256=<64 hex digits>")
    given = bytes.fromhex(match.group(1))
    expected = hmac.new(key, bytes(body), hashlib.sha256).digest()
    if not hmac.compare_digest(given, expected):
        return _reject("signature does not match")
    return _accept()


def verify_github(headers: Mapping[str, str], body: bytes, secret: str | None) -> Verdict:
    """`X-Hub-Signature-256: sha256=<hex>` over the raw body."""
    return _hmac_sha256(headers, body, secret, GITHUB_SIGNATURE)


def verify_generic(headers: Mapping[str, str], body: bytes, secret: str | None) -> Verdict:
    """`X-Signature: sha256=<hex>` over the raw body."""
    return _hmac_sha256(headers, body, secret, GENERIC_SIGNATURE)


def verify_gitlab(headers: Mapping[str, str], secret: str | None) -> Verdict:
    """`X-Gitlab-Token` equal to the shared secret."""
    expected = _utf8(secret) if secret else None
    if not expected:
        return _reject("no secret configured")
    value, problem = _single(headers, GITLAB_HEADER)
    if problem is not None or value is None:
        return problem or _reject(f"missing {GITLAB_HEADER}")
    given = _utf8(value)
    if given is None or not _same_secret(given, expected):
        return _reject("token does not match")
    return _accept()


def verify_azure_devops(
    headers: Mapping[str, str], username: str | None, password: str | None
) -> Verdict:
    """`Authorization: Basic base64(username:password)`; both parts compared in constant time,
    and both always compared (no early exit on a wrong username)."""
    expected_user = _utf8(username) if username else None
    expected_password = _utf8(password) if password else None
    if not expected_user or not expected_password:
        return _reject("no credentials configured")
    value, problem = _single(headers, AUTHORIZATION)
    if problem is not None or value is None:
        return problem or _reject(f"missing {AUTHORIZATION}")
    scheme, _, encoded = value.partition(" ")
    if scheme.lower() != "basic" or not encoded.strip():
        return _reject("expected HTTP Basic authentication")
    try:
        decoded = base64.b64decode(encoded.strip().encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error, ValueError):
        return _reject("malformed Basic credentials")
    given_user, colon, given_password = decoded.partition(b":")
    if not colon:
        return _reject("malformed Basic credentials")
    user_ok = _same_secret(given_user, expected_user)
    password_ok = _same_secret(given_password, expected_password)
    if not (user_ok & password_ok):
        return _reject("credentials do not match")
    return _accept()


def verify_bearer(headers: Mapping[str, str], token: str | None) -> Verdict:
    """`Authorization: Bearer <token>` (the manual trigger)."""
    expected = _utf8(token) if token else None
    if not expected:
        return _reject("no token configured")
    value, problem = _single(headers, AUTHORIZATION)
    if problem is not None or value is None:
        return problem or _reject(f"missing {AUTHORIZATION}")
    scheme, _, given_text = value.partition(" ")
    given = _utf8(given_text.strip())
    if scheme.lower() != "bearer" or not given:
        return _reject("expected a Bearer token")
    if not _same_secret(given, expected):
        return _reject("token does not match")
    return _accept()


def github_event(headers: Mapping[str, str]) -> str | None:
    """The `X-GitHub-Event` name if it is one plain word (only ever used to answer `ping`)."""
    value, count = header(headers, GITHUB_EVENT)
    if count != 1 or not isinstance(value, str):
        return None
    value = value.strip()
    return value if _EVENT.fullmatch(value) else None
