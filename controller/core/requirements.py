"""Canonical form of pip requirement lines, so that layout never changes the hash.

Comments, blank lines, line continuations and spacing are dropped; requirement names are
normalised (PEP 503) and specifiers put in a stable order; requirements are sorted and
de-duplicated, since pip resolves them as a set. Option lines (`--extra-index-url`, `-e`, ...)
keep their order and come first. A nested requirements file (`-r FILE`) kept in the repository
is read in its place, as pip would read it (relative to the file that names it); a remote one,
constraint files (`-c`) and credentials in URLs are refused.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from functools import lru_cache

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from controller.core.errors import SpecError

_COMMENT = re.compile(r"(^|\s+)#.*$")
MAX_INCLUDE_DEPTH = 10
Include = Callable[[str, str], tuple[str, str]]
"""(file that names it, the path it names) -> (tree path, text) of a nested requirements file;
raises SpecError for one that is missing or leaves the repository."""
_URL_USERINFO = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://([^/@\s]*)@")


def _nested(line: str) -> tuple[str, str] | None:
    """(flag, value) of a `-r`/`-c` line (`-r x`, `-rx`, `--requirement=x`, prefixes of the long
    flags, as pip accepts them); None for any other line."""
    flag, _, rest = line.partition(" ")
    flag, equals, attached = flag.partition("=")
    if not is_nested_file_flag(flag):
        return None
    if equals:
        return flag, (attached + " " + rest).strip()
    if flag.startswith(("-r", "-c")) and not flag.startswith("--") and len(flag) > 2:
        return flag[:2], (flag[2:] + " " + rest).strip()
    return flag, rest.strip()


def expand_includes(
    lines: list[str], path: str, include: Include | None, depth: int = 0
) -> list[str]:
    """`lines` with every `-r FILE` replaced by that file's lines (recursively)."""
    out: list[str] = []
    for line in lines:
        nested = _nested(line) if line.startswith("-") else None
        if nested is None:
            out.append(line)
            continue
        flag, target = nested
        if flag.startswith("-c") or flag.startswith("--c"):
            raise SpecError(
                path, f"constraint files ({flag}) are not supported; list the pins themselves"
            )
        if "://" in target or target.startswith("git+"):
            raise SpecError(path, f"{flag} {target} is remote; keep the requirements file in git")
        if include is None:
            raise SpecError(
                path, f"nested requirement files ({flag}) are not supported here; list them inline"
            )
        if depth >= MAX_INCLUDE_DEPTH:
            raise SpecError(path, f"requirement files nest deeper than {MAX_INCLUDE_DEPTH} levels")
        if not target:
            raise SpecError(path, f"{flag} names no file")
        nested_path, text = include(path, target)
        out.extend(expand_includes(logical_lines(text), nested_path, include, depth + 1))
    return out


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


def canonical_requirements(
    lines: Iterable[str], path: str, include: Include | None = None
) -> list[str]:
    """Options first in their order, then the sorted set of canonical requirements; nested
    files are read through `include` (refused without one)."""
    options: list[str] = []
    requirements: set[str] = set()
    for line in expand_includes(list(lines), path, include):
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


def parse_requirements_file(data: str, path: str, include: Include | None = None) -> list[str]:
    return canonical_requirements(logical_lines(data), path, include)
