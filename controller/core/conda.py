"""Canonical form of a conda environment file.

What conda installs depends on the channels (in order: that is channel priority), the set of
package specs, the pip requirements and the environment variables; not on `name`, `prefix`,
comments or the order of dependencies. Null items (a bare `-`, found in real files) are dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from controller.core.documents import expect_mapping, type_name
from controller.core.errors import SpecError
from controller.core.requirements import (
    Include,
    canonical_requirements,
    find_url_credentials,
    logical_lines,
)

ALLOWED_KEYS = frozenset({"name", "channels", "dependencies", "prefix", "variables"})
"""The keys azureml-core accepts in a conda specification."""

DEFAULT_PYTHON = "python=3.10.18"
"""What `Environment.from_conda_specification` appends when a file names no Python."""


@dataclass(frozen=True, slots=True)
class CondaSpec:
    channels: tuple[str, ...]
    dependencies: tuple[str, ...]
    pip: tuple[str, ...]
    variables: tuple[tuple[str, str], ...]

    def canonical(self) -> dict[str, Any]:
        return {
            "channels": list(self.channels),
            "dependencies": list(self.dependencies),
            "pip": list(self.pip),
            "variables": dict(self.variables),
        }

    def has_python(self) -> bool:
        return any(package_name(dep) == "python" for dep in self.dependencies)

    def with_dependency(self, spec: str) -> CondaSpec:
        return CondaSpec(
            self.channels, tuple(sorted({*self.dependencies, spec})), self.pip, self.variables
        )


def package_name(spec: str) -> str:
    """`conda-forge::numpy>=1.2` -> `numpy`."""
    name = spec.rsplit("::", maxsplit=1)[-1]
    for stop in "=<>!~ [":
        name = name.split(stop, 1)[0]
    return name.strip().lower()


def is_conda_document(value: Any) -> bool:
    """A YAML document that is a conda environment file rather than an Azure ML spec."""
    return (
        isinstance(value, dict)
        and "dependencies" in value
        and all(isinstance(k, str) for k in value)
        and set(value) <= ALLOWED_KEYS
    )


def _string_list(value: Any, path: str, what: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise SpecError(path, f"{what} must be a list, not {type_name(value)}")
    items = []
    for item in value:
        if item is None:
            continue
        if isinstance(item, bool) or not isinstance(item, str | int | float):
            raise SpecError(path, f"{what} has an item that is {type_name(item)}, not a string")
        text = " ".join(str(item).split())
        if text:
            items.append(text)
    return items


def _pip(items: list[str], path: str, include: Include | None) -> list[str]:
    """conda hands the pip list to `pip install -r` from a file beside the conda file, so it is
    read like a requirements file there (a `-r FILE` is relative to the conda file)."""
    if any(find_url_credentials(item) for item in items):
        raise SpecError(path, "a pip line has credentials in its URL; keep secrets out of git")
    return canonical_requirements(logical_lines("\n".join(items)), path, include)


def parse_conda(value: Any, path: str, include: Include | None = None) -> CondaSpec:
    """Read a parsed conda file (or an inline `condaDependencies` mapping); nested pip
    requirement files are read through `include`."""
    doc = expect_mapping(value, path, "the conda file")
    unknown = sorted(set(doc) - ALLOWED_KEYS)
    if unknown:
        raise SpecError(
            path,
            f"unknown conda file keys {', '.join(unknown)}; allowed are "
            + ", ".join(sorted(ALLOWED_KEYS)),
        )
    channels: list[str] = []
    for channel in _string_list(doc.get("channels"), path, "channels"):
        if find_url_credentials(channel):
            raise SpecError(path, "a channel URL carries credentials; keep secrets out of git")
        if channel not in channels:
            channels.append(channel)
    raw_deps = doc.get("dependencies")
    if raw_deps is None:
        raw_deps = []
    if not isinstance(raw_deps, list):
        raise SpecError(path, f"dependencies must be a list, not {type_name(raw_deps)}")
    packages: set[str] = set()
    pip_lines: list[str] = []
    for item in raw_deps:
        if item is None:
            continue
        if isinstance(item, dict):
            keys = set(item)
            if keys != {"pip"}:
                raise SpecError(
                    path,
                    f"a dependency mapping may only hold 'pip', found {sorted(map(str, keys))}",
                )
            pip_lines.extend(_string_list(item["pip"], path, "the pip list"))
            continue
        if isinstance(item, bool) or not isinstance(item, str):
            raise SpecError(path, f"a dependency is {type_name(item)}, expected a package spec")
        spec = " ".join(item.split())
        if spec:
            if find_url_credentials(spec):
                raise SpecError(
                    path, "a dependency URL carries credentials; keep secrets out of git"
                )
            packages.add(spec)
    variables_raw = doc.get("variables")
    variables: dict[str, str] = {}
    if variables_raw is not None:
        for key, val in expect_mapping(variables_raw, path, "variables").items():
            if isinstance(val, dict | list):
                raise SpecError(path, f"variable {key} must be a scalar")
            variables[key] = "" if val is None else str(val)
    return CondaSpec(
        channels=tuple(channels),
        dependencies=tuple(sorted(packages)),
        pip=tuple(_pip(pip_lines, path, include)),
        variables=tuple(sorted(variables.items())),
    )
