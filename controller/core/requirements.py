"""Canonical form of pip requirement lines, so that layout never changes the hash.

Comments, blank lines, line continuations and spacing are dropped; requirement names are
normalised (PEP 503) and specifiers put in a stable order; requirements are sorted and
de-duplicated, since pip resolves them as a set. Option lines (`--extra-index-url`, `-e`, ...)
keep their order and come first. Nested files (`-r`, `-c`) and credentials in URLs are refused.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from controller.core.errors import SpecError

_COMMENT = re.compile(r"(^|\s+)#.*$")
_URL_USERINFO = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://([^/@\s]*)@")


def is_nested_file_flag(flag: str) -> bool:
    """`-r x`, `-rx`, `--requirement`, `--constr=x`...: pip accepts attached values and prefixes."""
    if flag.startswith(("-r", "-c")) and not flag.startswith("--"):
        return True
    return len(flag) > 3 and any(
        long.startswith(flag) for long in ("--requirement", "--constraint")
    )


def find_url_credentials(text: str) -> bool:
    """True when a URL in `text` carries a password or token in its user-info part."""
    if "://" not in text:  # every match of the pattern holds it; most lines have no URL
        return False
    for match in _URL_USERINFO.finditer(text):
        userinfo = match.group(1)
        # `user:password@` or a bare token (`https://TOKEN@host`) are credentials; `git@` is not.
        if ":" in userinfo or (userinfo and userinfo != "git"):
            return True
    return False


def logical_lines(text: str) -> list[str]:
    """pip's reading of a requirements file: continuations joined, comments stripped."""
    joined: list[str] = []
    pending = ""
    for raw in text.splitlines():
        if raw.endswith("\\"):
            pending += raw[:-1]
            continue
        joined.append(pending + raw)
        pending = ""
    if pending:
        joined.append(pending)
    lines = []
    for line in joined:
        cleaned = _COMMENT.sub("", line).strip()
        if cleaned:
            lines.append(cleaned)
    return lines


@lru_cache(maxsize=16384)
def canonical_requirement(line: str) -> str:
    """`Foo_Bar [b,a] >=1,<2` -> `foo-bar[a,b]<2,>=1`; unreadable lines stay as written.

    Cached: a pure function of the line, and the same pins recur across a repository's
    environments, while parsing one with `packaging` costs about 12 microseconds.
    """
    try:
        req = Requirement(line)
    except InvalidRequirement:
        return " ".join(line.split())
    text: str = canonicalize_name(req.name)
    if req.extras:
        text += "[" + ",".join(sorted(canonicalize_name(e) for e in req.extras)) + "]"
    if req.url:
        text += f" @ {req.url}"
        if req.marker:
            text += " "
    else:
        text += str(req.specifier)
    if req.marker:
        text += f"; {req.marker}"
    return text


def canonical_requirements(lines: Iterable[str], path: str) -> list[str]:
    """Options first in their order, then the sorted set of canonical requirements."""
    options: list[str] = []
    requirements: set[str] = set()
    for line in lines:
        if find_url_credentials(line):
            raise SpecError(
                path,
                "a pip line has credentials in its URL; keep secrets out of git and configure "
                "the index credentials as a secret reference",
            )
        if line.startswith("-"):
            flag = line.split(None, 1)[0].split("=", 1)[0]
            if is_nested_file_flag(flag):
                raise SpecError(
                    path, f"nested requirement files ({flag}) are not supported; list them inline"
                )
            options.append(" ".join(line.split()))
        else:
            requirements.add(canonical_requirement(line))
    return options + sorted(requirements)


def parse_requirements_file(data: str, path: str) -> list[str]:
    return canonical_requirements(logical_lines(data), path)
