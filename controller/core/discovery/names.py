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
    result: dict[int, Environment] = {}
    by_repository: dict[str, list[Environment]] = {}
    for env in envs:
        result[id(env)] = env
        if env.ok and env.repository is not None:
            by_repository.setdefault(env.repository, []).append(env)
    for members in by_repository.values():
        if len(members) == 1:
            continue
        by_version: dict[str | None, list[Environment]] = {}
        for env in members:
            by_version.setdefault(env.version, []).append(env)
        for version, same in by_version.items():
            if len(same) == 1:
                continue
            same.sort(key=lambda e: e.path)
            hashes = {content_hash(env.build) for env in same if env.build is not None}
            if len(hashes) == 1:
                first = same[0]
                result[id(first)] = replace(first, also=tuple(e.path for e in same[1:]))
                for env in same[1:]:
                    del result[id(env)]
            else:
                paths = [e.path for e in same]
                for env in same:
                    origin = env.files[0] if env.files else env.path
                    message = conflict(same[0].name, version, paths, origin)
                    result[id(env)] = replace(env, error=SpecError(origin, message))
        survivors = [v for v, same in by_version.items() if any(result.get(id(e)) for e in same)]
        if len(survivors) > 1:
            for env in members:
                current = result.get(id(env))
                if current is not None and current.version is not None:
                    result[id(env)] = replace(current, key=f"{current.name}:{current.version}")
    return unique_keys(sorted(result.values(), key=lambda e: (e.path, e.name)))


def unique_keys(envs: list[Environment]) -> list[Environment]:
    """Environments that can be built keep their key; a refused one whose key is taken, or any
    two left with one key, are told apart by their paths."""
    taken: dict[str, int] = {}
    for env in envs:
        if env.ok:
            taken[env.status_key] = taken.get(env.status_key, 0) + 1
    out = []
    seen: set[str] = set()
    for env in envs:
        key = env.status_key
        clash = key in seen or (not env.ok and key in taken) or taken.get(key, 0) > 1
        if clash:
            env = replace(env, key=f"{env.name}@{env.path or '.'}")
        seen.add(env.status_key)
        out.append(env)
    return out
