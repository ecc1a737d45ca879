"""Golden values: the hash and the rendered build of the example specs may not drift.

A change here means every user's images are rebuilt. If that is intended, bump
`controller.core.hashing.SCHEME`, then regenerate with `ENVSHIP_UPDATE_GOLDEN=1 pytest
tests/unit/test_golden.py` and say why in the commit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from controller.adapters.folder import FolderTree
from controller.core.discovery import DiscoveryOptions, discover
from controller.core.hashing import content_hash
from controller.core.plan import plan
from controller.core.render import render
from tests.support.paths import CASES, ROOT

GOLDEN = CASES / "golden"
UPDATE = os.environ.get("ENVSHIP_UPDATE_GOLDEN") == "1"


def check(path: Path, actual: str) -> None:
    if UPDATE:
        path.write_text(actual)
    assert path.exists(), f"{path.name} is missing; run with ENVSHIP_UPDATE_GOLDEN=1"
    assert actual == path.read_text()


def test_example_hashes_are_pinned():
    items = plan(discover(FolderTree(ROOT / "specs"), DiscoveryOptions()))
    actual = {item.env.path: item.hash for item in items}
    assert all(actual.values()), actual
    check(GOLDEN / "specs-hashes.json", json.dumps(actual, indent=2, sort_keys=True) + "\n")


@pytest.mark.parametrize(
    "env_path",
    ["pytorch-sdk", "custom-dockerfile", "env-vars", "v2/build-context.yml", "pip-requirements"],
)
def test_rendered_dockerfiles_are_pinned(env_path: str):
    envs = {e.path: e for e in discover(FolderTree(ROOT / "specs"), DiscoveryOptions())}
    build = envs[env_path].build
    assert build is not None
    rendered = render(build, content_hash(build), source="https://example.org/repo", revision="abc")
    name = env_path.replace("/", "_") + ".Dockerfile"
    check(GOLDEN / name, rendered.dockerfile)


@pytest.mark.slow
def test_hashes_do_not_depend_on_the_interpreter_run():
    """Same output under different hash seeds, i.e. no dict/set ordering leaks into the hash."""
    outputs = set()
    for seed in ("0", "1", "12345"):
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "controller.cli",
                "plan",
                str(ROOT / "specs"),
                "-o",
                "json",
            ],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
            check=True,
        )
        outputs.add(result.stdout)
    assert len(outputs) == 1
