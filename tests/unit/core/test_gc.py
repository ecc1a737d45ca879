from __future__ import annotations

from controller.core.gc import TagInfo, garbage

LIVE = "sha256:" + "a" * 64
OLD = "b" * 32
NOW = 1_000_000.0
DAY = 86_400.0


def info(tag: str, digest: str, age: float | None, repository: str = "envship/x") -> TagInfo:
    return TagInfo(repository, tag, digest, None if age is None else NOW - age)


def test_only_old_unreferenced_hash_tags_are_garbage():
    tags = [
        info("a" * 32, "sha256:live", 10 * DAY),  # still at the head
        info(OLD, "sha256:old", 2 * DAY),  # garbage
        info("c" * 32, "sha256:young", 1000),  # within the grace period
        info("d" * 32, "sha256:unknown", None),  # age unknown: kept
        info("e" * 32, "sha256:latest", 5 * DAY),  # `latest` points at it: kept
        info("latest", "sha256:latest", 5 * DAY),
        info("1.0", "sha256:version", 5 * DAY),  # moving tags are never deleted
        info("f" * 32, "sha256:latest", 5 * DAY, repository="envship/y"),  # other repository
    ]
    assert garbage(tags, [LIVE], now=NOW, grace=DAY) == [
        info(OLD, "sha256:old", 2 * DAY),
        info("f" * 32, "sha256:latest", 5 * DAY, repository="envship/y"),
    ]
    assert "c" * 32 in [i.tag for i in garbage(tags, [LIVE], now=NOW, grace=0)]


def test_a_repository_still_in_use_keeps_its_newest_image():
    tags = [
        info("b" * 32, "sha256:older", 9 * DAY),
        info("c" * 32, "sha256:newer", 3 * DAY),
        info("d" * 32, "sha256:gone", 9 * DAY, repository="envship/removed"),
    ]
    # none of x's tags is live (hashes computed another way): its newest stays
    found = garbage(tags, [LIVE], now=NOW, grace=DAY, live_repositories=["envship/x"])
    assert [(i.repository, i.tag) for i in found] == [
        ("envship/removed", "d" * 32),
        ("envship/x", "b" * 32),
    ]


def test_the_build_cache_tag_protects_no_image():
    gone = "envship/removed"  # its environment is gone from the repository
    tags = [
        info(OLD, "sha256:old", 2 * DAY, repository=gone),
        info("buildcache", "sha256:old", 2 * DAY, repository=gone),
        info("latest", "sha256:kept", 2 * DAY, repository=gone),
        info("e" * 32, "sha256:kept", 2 * DAY, repository=gone),
    ]
    assert garbage(tags, [LIVE], now=NOW, grace=DAY) == [
        info(OLD, "sha256:old", 2 * DAY, repository=gone)
    ]
