"""Read and pin the FROM lines of a Dockerfile (text only; no Dockerfile is executed).

Base images named in FROM lines are resolved to digests at plan time and pinned
(`FROM ref@sha256:...`), so a moved base tag changes the hash of exactly the environments built
on it. Stage names, `scratch` and references built from ARGs (`$VAR`) are left alone.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_FROM = re.compile(
    r"^(?P<lead>\s*FROM\s+(?:--platform=\S+\s+)?)(?P<ref>\S+)(?P<rest>.*)$", re.IGNORECASE
)
_STAGE = re.compile(r"\s+AS\s+(?P<name>\S+)", re.IGNORECASE)


def _logical_lines(text: str) -> list[str]:
    return text.splitlines()


def from_references(text: str) -> list[str]:
    """External images the Dockerfile starts from, in order, without duplicates."""
    stages: set[str] = set()
    found: list[str] = []
    for line in _logical_lines(text):
        match = _FROM.match(line)
        if match is None:
            continue
        ref = match.group("ref")
        stage = _STAGE.match(match.group("rest"))
        if (
            "$" not in ref
            and ref.lower() != "scratch"
            and ref.lower() not in stages
            and ref not in found
        ):
            found.append(ref)
        if stage:
            stages.add(stage.group("name").lower())
    return found


def pin(text: str, digests: Mapping[str, str]) -> str:
    """Rewrite `FROM ref` as `FROM ref@digest` for every ref in `digests`."""
    if not digests:
        return text
    lines = text.split("\n")
    for index, line in enumerate(lines):
        match = _FROM.match(line)
        if match and match.group("ref") in digests:
            ref = match.group("ref")
            pinned = ref.split("@", 1)[0] + "@" + digests[ref]
            lines[index] = match.group("lead") + pinned + match.group("rest")
    return "\n".join(lines)
