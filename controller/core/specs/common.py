"""Pieces shared by the spec readers: environment variables, platforms, build contexts."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from controller.core.dockerfile import DockerfileFacts, check_dockerfile, read_dockerfile
from controller.core.documents import decode_text, expect_mapping, type_name
from controller.core.errors import SpecError
from controller.core.model import BuildSpec, ContextFile
from controller.core.tree import Entry, TreeView

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
DEFAULT_PLATFORM = "linux/amd64"
"""What discovery reads Dockerfiles for (BuildKit's platform ARGs)."""
DEFAULT_BASE_IMAGE = "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04:20251130.v1"
"""The base image azureml-core gives a new `Environment`; used by the plain pip and conda forms."""


def environment_variables(value: Any, path: str) -> tuple[tuple[str, str], ...]:
    """Sorted (name, value) pairs; values must be single-line scalars."""
    if value is None:
        return ()
    mapping = expect_mapping(value, path, "environmentVariables")
    pairs = []
    for key, raw in mapping.items():
        if not _ENV_NAME.fullmatch(key):
            raise SpecError(path, f"environment variable name {key!r} is not valid")
        if isinstance(raw, dict | list):
            raise SpecError(
                path, f"environment variable {key} must be a scalar, not {type_name(raw)}"
            )
        text = (
            ""
            if raw is None
            else ("true" if raw is True else "false" if raw is False else str(raw))
        )
        if any(ch in text for ch in "\n\r\x00"):
            raise SpecError(path, f"environment variable {key} must be a single line")
        pairs.append((key, text))
    return tuple(sorted(pairs))


def platform_of(os_name: Any, architecture: Any, path: str) -> str:
    """`linux/amd64` style; envship builds Linux images only."""
    system = str(os_name or "linux").strip().lower()
    arch = str(architecture or "amd64").strip().lower()
    if system != "linux":
        raise SpecError(
            path, f"operating system {os_name!r} is not supported; envship builds Linux images"
        )
    if not re.fullmatch(r"[a-z0-9_]+(?:/[a-z0-9_]+)?", arch):
        raise SpecError(path, f"architecture {architecture!r} is not valid")
    return f"{system}/{arch}"


def collect_context(view: TreeView, folder: str, *, origin: str) -> tuple[ContextFile, ...]:
    """Every file below `folder` as build-context bytes, within the context limits.

    Symlinks stay symlinks (as Docker sends them) but must point inside the repository.
    """
    limits = view.limits
    files: list[ContextFile] = []
    budget = limits.max_context_bytes
    entries: list[Entry] = list(view.walk_files(folder))
    if len(entries) > limits.max_context_files:
        raise SpecError(
            origin, f"build context {folder or '.'} has over {limits.max_context_files} files"
        )
    prefix = f"{folder}/" if folder else ""
    for entry in entries:
        relative = entry.path[len(prefix) :]
        if entry.kind == "symlink":
            view.resolve(entry.path, origin=entry.path)  # refuses links that leave the repository
            files.append(ContextFile(relative, b"", False, entry.link_target))
            continue
        if entry.size > budget:
            raise SpecError(
                entry.path,
                f"build context {folder or '.'} is over the limit of "
                f"{limits.max_context_bytes} bytes",
            )
        data = view.read_file(entry.path, origin=origin, max_bytes=budget)
        budget -= len(data)
        files.append(ContextFile(relative, data, entry.executable))
    return tuple(files)


def check_build_dockerfile(
    build: BuildSpec, context_folder: str, documents: Mapping[str, Any] | None = None
) -> None:
    """Refuse a build whose Dockerfile cannot be built as written (no FROM, an ARG without a
    default in FROM, an image that is no valid reference). `documents`: what discovery parsed,
    whose reading of the Dockerfile is used when it has one for this platform."""
    dockerfile = next((f for f in build.context if f.path == build.dockerfile_path), None)
    if dockerfile is None or dockerfile.link_target is not None:
        return
    origin = join_path(context_folder, dockerfile.path)
    facts = (documents or {}).get(origin)
    if not isinstance(facts, DockerfileFacts) or build.platform != DEFAULT_PLATFORM:
        facts = read_dockerfile(decode_text(dockerfile.data, origin), build.platform)
    check_dockerfile(facts, origin)


def join_path(folder: str, path: str) -> str:
    return f"{folder}/{path}" if folder else path
