"""One name, one environment: what discovery does when several specs share a name.

Names become registry repositories (`<prefix>/<name in lowercase>`), so names that differ only
in case are the same name. For every name used more than once:

- identical content (the same content hash) under one name and version is one environment:
  one image, every path listed (`Environment.also`);
- different versions of one name are versions of one Azure ML environment: each is planned, all
  into the one repository (their hashes tell the images apart);
- one name and version with different content cannot be told apart: exactly those are refused,
  with a short message (how many, the first few paths).

Refused environments never take a name from one that can be built. Every environment gets a
status key that is unique: its name, `name:version` when versions share a name, or
`name@path` when nothing else tells two apart.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from controller.core.errors import SpecError
from controller.core.hashing import content_hash
from controller.core.model import Environment

SHOWN_PATHS = 3


MESSAGE_LIMIT = 299


def conflict(name: str, version: str | None, paths: list[str], origin: str = "") -> str:
    """The refusal for one name and version with different content: how many, the first few
    paths that fit, what to do; with `origin: ` before it, under 300 characters."""
    what = f"name {name[:60]!r}" + (f" version {version[:20]!r}" if version else "")
    head = f"{what} is used by {len(paths)} environments with different content"
    tail = "; name them apart (envship.yaml names) or make them the same"
    budget = MESSAGE_LIMIT - len(origin) - 2 - len(head) - len(tail) - len(" (, and 999 more)")
    shown: list[str] = []
    for path in paths[:SHOWN_PATHS]:
        if len(", ".join([*shown, path])) > budget:
            break
        shown.append(path)
    more = f" and {len(paths) - len(shown)} more" if len(paths) > len(shown) else ""
    listed = f" ({', '.join(shown)}{more})" if shown else ""
    text = head + listed + tail
    return text if len(origin) + 2 + len(text) <= MESSAGE_LIMIT else head


def settle(envs: Iterable[Environment]) -> list[Environment]:
    """The environments with same-name rules applied, sorted by path, each with a unique key."""
    envs = list(envs)
    by_repository: dict[str, list[int]] = {}
    for place, env in enumerate(envs):
        if env.error is None and env.build is not None and env.repository is not None:
            by_repository.setdefault(env.repository, []).append(place)
    gone: set[int] = set()
    for places in by_repository.values():
        if len(places) > 1:
            _settle_name(envs, places, gone)
    kept = [env for place, env in enumerate(envs) if place not in gone] if gone else envs
    return unique_keys(sorted(kept, key=lambda e: (e.path, e.name)))


def _settle_name(envs: list[Environment], places: list[int], gone: set[int]) -> None:
    """One name used several times: merge, refuse or tell versions apart, in `envs`."""
    by_version: dict[str | None, list[int]] = {}
    for place in places:
        by_version.setdefault(envs[place].version, []).append(place)
    for version, same in by_version.items():
        if len(same) == 1:
            continue
        same.sort(key=lambda place: envs[place].path)
        hashes = {content_hash(b) for p in same if (b := envs[p].build) is not None}
        if len(hashes) == 1:
            first = envs[same[0]]
            envs[same[0]] = replace(first, also=tuple(envs[p].path for p in same[1:]))
            gone.update(same[1:])
            continue
        paths = [envs[p].path for p in same]
        name = envs[same[0]].name
        for place in same:
            env = envs[place]
            origin = env.files[0] if env.files else env.path
            message = conflict(name, version, paths, origin)
            envs[place] = replace(env, error=SpecError(origin, message))
    survivors = [v for v, same in by_version.items() if any(envs[p].error is None for p in same)]
    if len(survivors) > 1:
        for place in places:
            env = envs[place]
            if place not in gone and env.error is None and env.version is not None:
                envs[place] = replace(env, key=f"{env.name}:{env.version}")


def unique_keys(envs: list[Environment]) -> list[Environment]:
    """Environments that can be built keep their key; a refused one whose key is taken, or any
    two left with one key, are told apart by their paths."""
    keys = [env.key or env.name for env in envs]
    good: dict[str, int] = {}
    for env, key in zip(envs, keys, strict=True):
        if env.error is None and env.build is not None:
            good[key] = good.get(key, 0) + 1
    seen: set[str] = set()
    out = []
    for env, key in zip(envs, keys, strict=True):
        ok = env.error is None and env.build is not None
        if key in seen or good.get(key, 0) > (1 if ok else 0):
            env = replace(env, key=f"{env.name}@{env.path or '.'}")
            key = env.key or key
        seen.add(key)
        out.append(env)
    return out
