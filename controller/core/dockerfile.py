"""Read a Dockerfile the way BuildKit's parser reads it, far enough to know its images.

Every image a build pulls is named in the text: `FROM`, `COPY --from=IMAGE` and
`RUN --mount=...,from=IMAGE` (stage names and stage numbers are not images). Those images are
resolved to digests at plan time and pinned in the text (`ref@sha256:...`), so a moved tag
changes the hash of exactly the environments that use it.

What the parser follows, as BuildKit does: a byte-order mark; parser directives on the first
lines (`# syntax=`, `# escape=`); line continuations with the escape character, and comment and
blank lines inside them; heredocs (`RUN <<EOF`); global `ARG`s with defaults substituted in `FROM`
and `--from` (`$NAME`, `${NAME}`, `${NAME:-word}`, `${NAME:+word}`). A Dockerfile with no `FROM`,
a `FROM` that uses an `ARG` without a default, or one whose image is no valid reference (or
carries credentials) cannot be built as written and is refused. No Dockerfile is ever executed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from controller.core.errors import SpecError
from controller.core.naming import check_image_reference

_DIRECTIVE = re.compile(r"^#\s*([A-Za-z][A-Za-z0-9_-]*)\s*=\s*(.*?)\s*$")
_HEREDOC = re.compile(r"<<(-?)([\"']?)([A-Za-z_][A-Za-z0-9_]*)\2")
_VARIABLE = re.compile(
    r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)(?::([-+])([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))"
)
_FLAG = re.compile(r"--([a-z-]+)(?:=(\S*))?")

Where = Literal["from", "copy", "mount"]


@dataclass(frozen=True, slots=True)
class Instruction:
    keyword: str
    """Upper case: FROM, RUN, COPY, ..."""
    arguments: str
    """The rest of the logical line, continuations joined."""
    first: int
    last: int
    """Physical lines (0-based) the instruction spans."""


@dataclass(frozen=True, slots=True)
class ImageUse:
    """One place a Dockerfile names an image."""

    reference: str
    """The image, ARGs substituted."""
    token: str
    """The text as written there (`$BASE`, `python:3.11`), which pinning replaces."""
    where: Where
    first: int
    last: int


@dataclass(frozen=True, slots=True)
class DockerfileFacts:
    """What discovery and the readers need of a Dockerfile."""

    has_from: bool
    images: tuple[ImageUse, ...]
    problem: str | None = None
    """Why the Dockerfile cannot be built as written (None when it can)."""


def instructions(text: str) -> list[Instruction]:
    """The logical instructions of a Dockerfile, with the physical lines each spans."""
    lines = text.removeprefix("\ufeff").split("\n")
    escape = "\\"
    index = 0
    # Parser directives: only before any comment, blank line or instruction.
    while index < len(lines):
        match = _DIRECTIVE.match(lines[index].strip())
        if match is None:
            break
        if match.group(1).lower() == "escape" and match.group(2) in ("\\", "`"):
            escape = match.group(2)
        index += 1
    found: list[Instruction] = []
    while index < len(lines):
        line = lines[index].rstrip("\r")
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            index += 1
            continue
        first = index
        parts = []
        while True:
            body = line.rstrip()
            if body.endswith(escape):
                parts.append(body[: -len(escape)])
                index += 1
                # Comment and blank lines inside a continuation are dropped, as BuildKit does.
                while index < len(lines) and (
                    not lines[index].strip() or lines[index].lstrip().startswith("#")
                ):
                    index += 1
                if index >= len(lines):
                    break
                line = lines[index].rstrip("\r")
                continue
            parts.append(body)
            break
        logical = " ".join(part.strip() for part in parts)
        keyword, _, arguments = logical.partition(" ")
        for match in _HEREDOC.finditer(arguments):
            strip_tabs, delimiter = match.group(1) == "-", match.group(3)
            index += 1
            while index < len(lines):
                body = lines[index].rstrip("\r")
                if (body.lstrip("\t") if strip_tabs else body) == delimiter:
                    break
                index += 1
        found.append(Instruction(keyword.upper(), arguments.strip(), first, index))
        index += 1
    return found


class _Unset(Exception):
    def __init__(self, name: str) -> None:
        self.name = name


def _substitute(text: str, args: Mapping[str, str | None]) -> str:
    def one(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(4)
        value = args.get(name)
        operator, word = match.group(2), match.group(3)
        if operator == "-":
            return value if value else word
        if operator == "+":
            return word if value else ""
        if value is None:
            raise _Unset(name)
        return value

    return _VARIABLE.sub(one, text)


def _flags(arguments: str) -> tuple[dict[str, list[str]], list[str]]:
    """`--name=value` flags (repeatable) and the remaining words."""
    flags: dict[str, list[str]] = {}
    words = arguments.split()
    rest = []
    for position, word in enumerate(words):
        match = _FLAG.fullmatch(word)
        if match is None:
            rest = words[position:]
            break
        flags.setdefault(match.group(1), []).append(match.group(2) or "")
    return flags, rest


def _automatic_args(platform: str) -> dict[str, str | None]:
    """BuildKit's predefined platform ARGs; envship builds for the platform it targets."""
    os_name, _, rest = platform.partition("/")
    arch, _, variant = rest.partition("/")
    values: dict[str, str | None] = {}
    for side in ("TARGET", "BUILD"):
        values |= {
            f"{side}PLATFORM": platform,
            f"{side}OS": os_name,
            f"{side}ARCH": arch,
            f"{side}VARIANT": variant,
        }
    return values


def read_dockerfile(text: str, platform: str = "linux/amd64") -> DockerfileFacts:
    """Which images the Dockerfile uses, and whether it can be built as written."""
    global_args = _automatic_args(platform)
    stages: set[str] = set()
    images: list[ImageUse] = []
    problem: str | None = None
    has_from = False

    def image(token: str, where: Where, ins: Instruction) -> None:
        nonlocal problem
        try:
            reference = _substitute(token, global_args)
        except _Unset as unset:
            problem = problem or (
                f"{ins.keyword} on line {ins.first + 1} uses ARG {unset.name}, which has no "
                "default; give it one (ARG NAME=value) before the first FROM"
            )
            return
        lowered = reference.lower()
        if where != "from" and (lowered in stages or reference.isdigit()):
            return  # a stage of this Dockerfile
        if lowered == "scratch" or (where == "from" and lowered in stages):
            return
        images.append(ImageUse(reference, token, where, ins.first, ins.last))

    for ins in instructions(text):
        if ins.keyword == "ARG" and not has_from:
            for declaration in ins.arguments.split():
                name, sep, default = declaration.partition("=")
                value = default.strip("\"'") if sep else global_args.get(name)
                try:
                    global_args[name] = _substitute(value, global_args) if value else value
                except _Unset:
                    global_args[name] = None
        elif ins.keyword == "FROM":
            has_from = True
            _flags_found, words = _flags(ins.arguments)
            if not words:
                problem = problem or f"FROM on line {ins.first + 1} names no image"
                continue
            image(words[0], "from", ins)
            if len(words) >= 3 and words[1].lower() == "as":
                stages.add(words[2].lower())
        elif ins.keyword == "COPY":
            flags, _ = _flags(ins.arguments)
            for value in flags.get("from", ()):
                image(value, "copy", ins)
        elif ins.keyword == "RUN":
            flags, _ = _flags(ins.arguments)
            for mount in flags.get("mount", ()):
                for option in mount.split(","):
                    key, _, value = option.partition("=")
                    if key == "from" and value:
                        image(value, "mount", ins)
    if not has_from:
        problem = "has no FROM instruction: a Dockerfile must start from an image (FROM ...)"
    return DockerfileFacts(has_from, tuple(images), problem)


_WHERE = {"from": "FROM", "copy": "COPY --from", "mount": "RUN --mount from="}


def check_dockerfile(facts: DockerfileFacts, path: str) -> None:
    """Refuse a Dockerfile that cannot be built as written, naming the file and the problem."""
    if facts.problem is not None:
        raise SpecError(path, facts.problem)
    for use in facts.images:
        check_image_reference(use.reference, path, f"{_WHERE[use.where]} on line {use.first + 1}")


def declared_args(text: str) -> frozenset[str]:
    """Every build argument the Dockerfile declares (`ARG NAME[=default]`, in any stage)."""
    return frozenset(
        declaration.partition("=")[0]
        for ins in instructions(text)
        if ins.keyword == "ARG"
        for declaration in ins.arguments.split()
    )


@dataclass(frozen=True, slots=True)
class RunMount:
    """One `RUN --mount=...` of a Dockerfile: its type and, for a secret, its id."""

    type: str
    secret_id: str | None
    line: int
    """The physical line (1-based) of its RUN."""


def run_mounts(text: str) -> tuple[RunMount, ...]:
    """Every `RUN --mount=...`, in order. Such mounts need BuildKit; a secret mount's id is
    its `id=`, else the last part of its `target=` (as BuildKit defaults it)."""
    found: list[RunMount] = []
    for ins in instructions(text):
        if ins.keyword != "RUN":
            continue
        flags, _ = _flags(ins.arguments)
        for mount in flags.get("mount", ()):
            options = dict(option.partition("=")[::2] for option in mount.split(","))
            kind = options.get("type") or "bind"
            secret = None
            if kind == "secret":
                secret = options.get("id") or (options.get("target") or "").rstrip("/")
                secret = secret.rsplit("/", 1)[-1] if "id" not in options else secret
            found.append(RunMount(kind, secret or None, ins.first + 1))
    return tuple(found)


def _literal(text: str) -> str:
    """`text` as a regex replacement that means itself."""
    return text.replace("\\", "\\\\")


def from_references(text: str, platform: str = "linux/amd64") -> list[str]:
    """External images the Dockerfile uses (FROM, COPY --from, RUN --mount from=), in order,
    without duplicates."""
    return list(dict.fromkeys(use.reference for use in read_dockerfile(text, platform).images))


def pin(text: str, digests: Mapping[str, str], platform: str = "linux/amd64") -> str:
    """Write `ref@digest` where the Dockerfile names each image in `digests`."""
    if not digests:
        return text
    lines = text.split("\n")
    for use in read_dockerfile(text, platform).images:
        if use.reference not in digests:
            continue
        pinned = use.reference.split("@", 1)[0] + "@" + digests[use.reference]
        token = re.escape(use.token)
        pattern = re.compile(rf"(^|[\s=]){token}(?=$|[\s,])")
        for number in range(use.first, use.last + 1):
            replaced, count = pattern.subn(rf"\g<1>{_literal(pinned)}", lines[number], count=1)
            if count:
                lines[number] = replaced
                break
    return "\n".join(lines)
