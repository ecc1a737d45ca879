"""The pip configuration file that names the private package indexes, credentials included.

It reaches a build only as a BuildKit secret (`envship-pip-conf`, mounted where the rendered
conda step or the user's Dockerfile says): never a build argument, an environment variable, a
layer or a file on disk, so a private index works with a remote engine too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from urllib.parse import quote, urlsplit, urlunsplit


def with_credentials(url: str, credentials: tuple[str, str] | None) -> str:
    """`url` with `user:password@` in front of its host (each percent-encoded)."""
    if credentials is None:
        return url
    parts = urlsplit(url)
    user, password = (quote(value, safe="") for value in credentials)
    return urlunsplit(parts._replace(netloc=f"{user}:{password}@{parts.netloc}"))


def pip_config(indexes: Sequence[str], credentials: Mapping[str, tuple[str, str]]) -> str:
    """A pip configuration (pip reads it as `PIP_CONFIG_FILE`, loaded last) adding every index
    as an extra index, each with its host's credentials; plain-HTTP hosts are trusted."""
    urls = [with_credentials(url, credentials.get(urlsplit(url).netloc)) for url in indexes]
    plain = sorted({urlsplit(url).netloc for url in indexes if urlsplit(url).scheme == "http"})
    lines = ["[global]", "extra-index-url ="]
    lines += [f"    {url}" for url in urls]
    if plain:
        lines += ["trusted-host =", *(f"    {host}" for host in plain)]
    return "\n".join(lines) + "\n"


__all__ = ["pip_config", "with_credentials"]
