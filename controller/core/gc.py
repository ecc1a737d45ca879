"""Which registry tags are garbage: a hash tag whose hash no longer appears at the tracked head,
older than the grace period, and whose image no kept tag still points at. Pure.

Only envship's own hash tags (32 hex digits) are ever candidates; moving tags (`latest`, a
version) are never deleted, and they protect the image they point at. The build cache tag
(`buildcache`) protects nothing: when the image it points at goes, the tag goes with it, and the
next build of that repository only finds no cache. An image whose age is
unknown (no `org.opencontainers.image.created` label) is kept.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from controller.core.naming import CACHE_TAG, TAG_LENGTH, tag_for

HASH_TAG = re.compile(rf"[0-9a-f]{{{TAG_LENGTH}}}")


@dataclass(frozen=True, slots=True)
class TagInfo:
    repository: str
    tag: str
    digest: str
    created: float | None
    """Seconds since the epoch, from the image's created label; None when unknown."""


def garbage(
    tags: Iterable[TagInfo],
    live_hashes: Iterable[str],
    *,
    now: float,
    grace: float,
    live_repositories: Iterable[str] = (),
) -> list[TagInfo]:
    """The tags to delete, in repository and tag order.

    A repository whose environment still exists keeps its newest image when none of its tags is
    live (a safety net: hashes computed another way, e.g. without base digests, never empty a
    repository that is still in use).
    """
    live = {tag_for(content) for content in live_hashes}
    tags = list(tags)
    in_use = set(live_repositories)
    newest: dict[str, TagInfo] = {}
    for info in tags:
        if info.repository in in_use and HASH_TAG.fullmatch(info.tag) and info.created is not None:
            current = newest.get(info.repository)
            if current is None or (current.created or 0) < info.created:
                newest[info.repository] = info
    for repository, info in newest.items():
        if not any(t.repository == repository and t.tag in live for t in tags):
            live.add(info.tag)
    kept = {  # (repository, digest) that a moving tag or a live hash tag points at
        (info.repository, info.digest)
        for info in tags
        if (not HASH_TAG.fullmatch(info.tag) and info.tag != CACHE_TAG) or info.tag in live
    }
    found = [
        info
        for info in tags
        if HASH_TAG.fullmatch(info.tag)
        and info.tag not in live
        and (info.repository, info.digest) not in kept
        and info.created is not None
        and now - info.created >= grace
    ]
    return sorted(found, key=lambda info: (info.repository, info.tag))
