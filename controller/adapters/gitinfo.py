"""Where a checkout came from, for the OCI `source` and `revision` labels (pygit2)."""

from __future__ import annotations

import re
from dataclasses import dataclass

_USERINFO = re.compile(r"^(?P<scheme>[a-z][a-z0-9+.-]*://)[^/@]*@", re.IGNORECASE)


@dataclass(frozen=True)
class Provenance:
    source: str | None
    revision: str | None


def public_url(url: str) -> str:
    """A remote URL without user-info (tokens are often embedded there)."""
    return _USERINFO.sub(lambda m: m.group("scheme"), url)


def provenance(path: str) -> Provenance:
    """The `origin` URL and HEAD commit of the repository holding `path`, when there is one."""
    import pygit2  # noqa: PLC0415 - slow to import; only sync needs it

    found = pygit2.discover_repository(path)
    if not found:
        return Provenance(None, None)
    try:
        repository = pygit2.Repository(found)
        revision = None if repository.head_is_unborn else str(repository.head.target)
        source = None
        if "origin" in [remote.name for remote in repository.remotes]:
            url = repository.remotes["origin"].url
            source = public_url(url) if url else None
        return Provenance(source, revision)
    except (pygit2.GitError, KeyError, ValueError):
        return Provenance(None, None)
