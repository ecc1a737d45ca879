"""The template tags of Microsoft's curated environments (Azure/azureml-assets), read as its
release tooling reads them.

Two kinds:
- the asset's own values, filled from `asset.yaml` and `environment.yaml` before the spec is
  read (`{{asset.name}}`, `{{asset.version}}`, `{{image.name}}`, `{{image.context.path}}`,
  `{{image.dockerfile.path}}`, `{{image.publish.hostname}}`); a tag with no value stays as it is
  (`render`);
- values looked up when the image is built, in the context's template files (`find`):
  `IMAGE:{{latest-image-tag}}` (the tag of IMAGE that `latest` points at, or its digest) and
  `IMAGE:{{latest-image-tag:REGEX}}` (the greatest tag, in string order, matching REGEX), and
  `PACKAGE=={{latest-pypi-version}}` (`~=` too; `:pre` admits pre-releases), the newest version
  on the package index.

Looked-up values are inputs of the content hash and are written into the image's labels, so a
new base tag or package release rebuilds exactly the environments that use it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from packaging.version import InvalidVersion, Version

from controller.core.model import BuildSpec, ContextFile, Placeholder

LATEST_IMAGE_TAG = re.compile(r"([^\"'\s]+):\{\{latest-image-tag(?::(.+))?\}\}")
LATEST_PYPI_VERSION = re.compile(
    r"([^\"'\s]+?)(?:(\[.+\]))?([=~]=)\{\{latest-pypi-version(?::(.+))?\}\}"
)
_TAG = re.compile(r"\{\{\s*([^{}]+?)\s*\}\}")
LATEST = "latest"
PRE = "pre"


def render(template: str, data: Mapping[str, Any]) -> str:
    """Fill `{{a.b.c}}` tags with `data["a"]["b"]["c"]`; a tag with no value stays."""

    def one(match: re.Match[str]) -> str:
        value: Any = data
        for segment in match.group(1).split("."):
            value = value.get(segment) if isinstance(value, Mapping) else None
            if value is None:
                return match.group(0)
        return match.group(0) if isinstance(value, Mapping) else str(value)

    return _TAG.sub(one, template)


def find(
    files: Iterable[ContextFile], template_files: Iterable[str], image: str | None = None
) -> tuple[Placeholder, ...]:
    """Every look-up in the template files of a build context, in file and text order, and in
    the base image reference of a build without one (`file` is then '')."""
    wanted = set(template_files)
    found: list[Placeholder] = []
    for match in LATEST_IMAGE_TAG.finditer(image or ""):
        found.append(Placeholder("", match.group(0), "image-tag", match.group(1), match.group(2)))
    for item in sorted(files, key=lambda f: f.path):
        if item.path not in wanted or item.link_target is not None:
            continue
        text = item.data.decode("utf-8", errors="replace")
        for match in LATEST_IMAGE_TAG.finditer(text):
            found.append(
                Placeholder(item.path, match.group(0), "image-tag", match.group(1), match.group(2))
            )
        for match in LATEST_PYPI_VERSION.finditer(text):
            found.append(
                Placeholder(
                    item.path, match.group(0), "pypi-version", match.group(1), match.group(4)
                )
            )
    return tuple(found)


def fill(build: BuildSpec, values: Mapping[Placeholder, str]) -> BuildSpec:
    """The build with every placeholder replaced by its looked-up value (all must be given)."""
    by_file: dict[str, list[Placeholder]] = {}
    for placeholder in build.placeholders:
        by_file.setdefault(placeholder.file, []).append(placeholder)
    context = []
    for item in build.context:
        uses = by_file.get(item.path)
        if not uses:
            context.append(item)
            continue
        text = item.data.decode("utf-8", errors="replace")
        for placeholder in uses:
            text = text.replace(placeholder.text, placeholder.replacement(values[placeholder]))
        context.append(ContextFile(item.path, text.encode(), item.executable))
    base = build.base_image
    for placeholder in by_file.get("", ()):
        base = (base or "").replace(placeholder.text, placeholder.replacement(values[placeholder]))
    filled = tuple(sorted({(p.text, values[p]) for p in build.placeholders}))
    return replace(build, base_image=base, context=tuple(context), placeholders=(), filled=filled)


def tag_candidates(tags: Iterable[str], regex: str | None) -> list[str]:
    """Tags in the order the release tooling tries them: greatest first (string order), those
    matching `regex` when given; `latest` itself is never a candidate."""
    pattern = re.compile(regex) if regex is not None else None
    return sorted(
        (t for t in tags if t != LATEST and (pattern is None or pattern.fullmatch(t))),
        reverse=True,
    )


def newest_version(versions: Iterable[str], *, pre: bool) -> str | None:
    """The greatest version (by PEP 440), pre-releases only when `pre`; None when none is."""
    best: Version | None = None
    for text in versions:
        try:
            version = Version(text)
        except InvalidVersion:
            continue
        if (pre or not version.is_prerelease) and (best is None or version > best):
            best = version
    return str(best) if best is not None else None
