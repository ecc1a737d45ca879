"""The two ways a docker CLI builds with BuildKit, for tests that run once with each."""

from __future__ import annotations

import os
from pathlib import Path

from tests.support.envship import Envship
from tests.support.needs import need

CLI_KINDS = ("built-in", "buildx")
"""How the docker CLI builds with BuildKit: the engine's BuildKit through a CLI that has it
built in, or the buildx plugin (as in the controller's image), with its docker driver."""


def use_cli(envship: Envship, kind: str) -> str:
    """Make the envship runs of `envship` build through `kind`: for buildx, its plugin goes into
    their HOME's CLI plugins (ENVSHIP_TEST_BUILDX, fetched by scripts/test). Checked with
    envship's own choice of CLI."""
    from controller.adapters.buildkit import find_cli  # noqa: PLC0415 - BuildKit tests only

    if kind == "buildx":
        plugin = os.environ.get("ENVSHIP_TEST_BUILDX", "")
        need(bool(plugin) and Path(plugin).is_file(), "the docker-buildx plugin is missing")
        plugins = envship.home / ".docker" / "cli-plugins"
        plugins.mkdir(parents=True, exist_ok=True)
        (plugins / "docker-buildx").symlink_to(plugin)
    chosen = find_cli(envship.env())[0]
    wanted = "buildx" if kind == "buildx" else "builtin"
    need(chosen.mode == wanted, f"no docker CLI builds with BuildKit {kind} here ({chosen})")
    return kind
