"""The cases of tests/cases/bad_inputs/: each folder a small repository with one valid
environment (`good/requirements.txt`) beside bad ones, and a `case.json` that says what must be
planned and what refused (see its README). `materialize` copies a case to a temporary folder and
makes its test-time files there (symlinks, outside files, large and deeply nested files).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from controller.core.discovery import DiscoveryOptions
from controller.core.limits import Limits
from tests.support import paths

CASES = paths.CASES / "bad_inputs"
CASE_FILE = "case.json"


@dataclass(frozen=True)
class Case:
    name: str
    about: str
    planned: list[dict[str, Any]]
    refused: list[dict[str, Any]]
    secrets: tuple[str, ...] = ()
    limits: dict[str, int] = field(default_factory=dict)
    outside: dict[str, str] = field(default_factory=dict)
    symlinks: dict[str, str] = field(default_factory=dict)
    grow: tuple[str, ...] = ()
    generate: dict[str, dict[str, Any]] = field(default_factory=dict)
    deep: dict[str, Any] = field(default_factory=dict)
    isolate: bool = False
    xfail: dict[str, str] = field(default_factory=dict)
    """Mode ("discover" or "cli") -> reason, for cases that show a known bug."""

    def options(self, *, cli: bool) -> DiscoveryOptions:
        # `envship plan` has no flag for limits, so the CLI always runs with the defaults.
        return DiscoveryOptions(limits=Limits() if cli else Limits(**self.limits))


def deep_path(recipe: dict[str, Any]) -> str:
    return "/".join([recipe["segment"]] * recipe["count"])


def load_case(name: str) -> Case:
    raw = json.loads((CASES / name / CASE_FILE).read_text(encoding="utf-8"))
    if "deep" in raw:  # "{deep}" in an expected path: the folder the recipe makes
        for row in (*raw["planned"], *raw["refused"]):
            row["path"] = row["path"].replace("{deep}", deep_path(raw["deep"]))
    xfail = raw.get("xfail", {})
    if isinstance(xfail, str):
        xfail = {"discover": xfail, "cli": xfail}
    return Case(
        name=name,
        about=raw["about"],
        planned=raw["planned"],
        refused=raw["refused"],
        secrets=tuple(raw.get("secrets", ())),
        limits=raw.get("limits", {}),
        outside=raw.get("outside", {}),
        symlinks=raw.get("symlinks", {}),
        grow=tuple(raw.get("grow", ())),
        generate=raw.get("generate", {}),
        deep=raw.get("deep", {}),
        isolate=raw.get("isolate", False),
        xfail=xfail,
    )


CASE_NAMES = sorted(p.name for p in CASES.iterdir() if p.is_dir())


def materialize(case: Case, sandbox: Path, *, cli: bool) -> Path:
    """Copy the case to `sandbox/repo` and make its test-time files; return the repository."""
    repo = sandbox / "repo"
    shutil.copytree(CASES / case.name, repo, ignore=shutil.ignore_patterns(CASE_FILE))
    for relative, text in case.outside.items():
        path = sandbox / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    for relative, target in case.symlinks.items():
        link = repo / relative
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(target.replace("{outside}", str(sandbox / "outside")))
    limit = case.options(cli=cli).limits.max_spec_file_bytes
    for relative in case.grow:
        path = repo / relative
        data = path.read_bytes()
        path.write_bytes(data + b"\n" * (limit + 1 - len(data)))
    for relative, recipe in case.generate.items():
        path = repo / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        times = recipe["times"]
        text = (
            recipe.get("prefix", "")
            + recipe["repeat"] * times
            + recipe.get("suffix_repeat", "") * times
            + recipe.get("suffix", "")
        )
        path.write_text(text, encoding="utf-8")
    if case.deep:
        make_deep(repo, case.deep)
    return repo


def make_deep(repo: Path, recipe: dict[str, Any]) -> None:
    """`recipe["count"]` nested folders called `recipe["segment"]`, made one at a time by
    descriptor (their path is longer than the system lets a path be), and `recipe["files"]` in
    the innermost one."""
    folder = os.open(repo, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(recipe["count"]):
            os.mkdir(recipe["segment"], dir_fd=folder)
            inner = os.open(recipe["segment"], os.O_RDONLY | os.O_DIRECTORY, dir_fd=folder)
            os.close(folder)
            folder = inner
        for name, text in recipe["files"].items():
            handle = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644, dir_fd=folder)
            try:
                os.write(handle, text.encode())
            finally:
                os.close(handle)
    finally:
        os.close(folder)
