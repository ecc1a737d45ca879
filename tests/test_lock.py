"""The lock files say what pyproject.toml asks for, with hashes, and every install uses them."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.support.paths import ROOT

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
LOCK = tomllib.loads((ROOT / "uv.lock").read_text())
PACKAGES = {canonicalize_name(p["name"]): p for p in LOCK["package"]}


def asked(requirements: list[str]) -> set[tuple[str, str, str]]:
    """(name, specifier, marker) of each requirement, as uv records them."""
    found = set()
    for text in requirements:
        req = Requirement(text)
        found.add((canonicalize_name(req.name), str(req.specifier), str(req.marker or "")))
    return found


def recorded(entries: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {
        (
            canonicalize_name(e["name"]),
            str(Requirement(f"x{e.get('specifier', '')}").specifier),
            e.get("marker", ""),
        )
        for e in entries
    }


def test_the_lock_records_what_pyproject_asks_for() -> None:
    project = PACKAGES["envship"]
    metadata = project["metadata"]
    assert LOCK["requires-python"] == PYPROJECT["project"]["requires-python"]
    assert recorded(metadata["requires-dist"]) == asked(PYPROJECT["project"]["dependencies"]), (
        "pyproject.toml's dependencies changed: run scripts/lock --keep"
    )
    groups = PYPROJECT["dependency-groups"]
    assert set(metadata["requires-dev"]) == set(groups)
    for group, requirements in groups.items():
        assert recorded(metadata["requires-dev"][group]) == asked(requirements), group


def test_every_locked_version_is_in_its_range_and_has_hashes() -> None:
    wanted = [*PYPROJECT["project"]["dependencies"]]
    for requirements in PYPROJECT["dependency-groups"].values():
        wanted += requirements
    for text in wanted:
        req = Requirement(text)
        package = PACKAGES[canonicalize_name(req.name)]
        assert req.specifier.contains(Version(package["version"]), prereleases=True), text
    for package in LOCK["package"]:
        if "registry" not in package["source"]:
            continue  # envship itself
        artifacts = [package.get("sdist", {}), *package.get("wheels", [])]
        hashes = [a["hash"] for a in artifacts if a]
        assert hashes, f"{package['name']} has no hashes in uv.lock"
        assert all(h.startswith("sha256:") for h in hashes), package["name"]


def hashed_pins(path: Path) -> dict[str, str]:
    """name -> version of a requirements file compiled with hashes (every pin must have one)."""
    text = path.read_text()
    pins: dict[str, str] = {}
    for block in re.split(r"\n(?=\S)", text):
        line = block.strip()
        if not line or line.startswith("#"):
            continue
        match = re.match(r"([A-Za-z0-9_.\[\]-]+)==(\S+)", line)
        assert match, f"{path.name}: not a pin: {line.splitlines()[0]}"
        assert "--hash=sha256:" in block, f"{path.name}: {match.group(1)} has no hash"
        pins[canonicalize_name(match.group(1).split("[")[0])] = match.group(2)
    return pins


def test_the_image_installs_the_locked_versions() -> None:
    pins = hashed_pins(ROOT / "deploy" / "requirements.txt")
    runtime = {n for n, p in PACKAGES.items() if "registry" in p["source"]}
    backend = {"setuptools", "wheel"}
    """envship's build backend, and what builds the one dependency published as source only."""
    for name, version in pins.items():
        if name in backend:
            if name == "setuptools":
                requirement = Requirement(PYPROJECT["build-system"]["requires"][0])
                assert requirement.specifier.contains(version)
            continue
        assert name in runtime, name
        assert PACKAGES[name]["version"] == version, name
    for text in PYPROJECT["project"]["dependencies"]:
        assert canonicalize_name(Requirement(text).name) in pins, text
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    assert "--require-hashes" in dockerfile
    assert "deploy/requirements.txt" in dockerfile


def test_the_sdk_and_uv_are_locked_with_hashes() -> None:
    sdk = hashed_pins(ROOT / "tests" / "sdk" / "requirements.txt")
    wanted = [
        Requirement(line)
        for line in (ROOT / "tests" / "sdk" / "requirements.in").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for req in wanted:
        assert req.specifier.contains(sdk[canonicalize_name(req.name)]), str(req)
    assert list(hashed_pins(ROOT / "scripts" / "uv.txt")) == ["uv"]


def test_the_scripts_install_from_the_locks_only() -> None:
    """No script resolves versions by itself except scripts/lock and `--latest`."""
    helper = (ROOT / "scripts" / "python-env.sh").read_text()
    assert "sync --quiet --frozen" in helper or "sync --quiet --locked" in helper
    assert "--require-hashes -r scripts/uv.txt" in helper
    assert '--require-hashes "$requirements"' in helper
    for script in ("test", "quickstart"):
        text = (ROOT / "scripts" / script).read_text()
        assert "source scripts/python-env.sh" in text, script
        assert "pip install" not in text, f"scripts/{script} installs without the lock"
    assert "scripts/test" in (ROOT / ".ci" / "run").read_text()


def test_each_package_is_locked_at_one_version_for_every_python() -> None:
    """The image's wheelhouse is made on the host, whose Python may be another 3.11 patch
    release than the image's: a package locked at two versions by Python version would not
    install there (pyproject's [tool.uv] fork-strategy keeps one)."""
    versions: dict[str, set[str]] = {}
    for package in LOCK["package"]:
        versions.setdefault(canonicalize_name(package["name"]), set()).add(package["version"])
    assert {name: v for name, v in versions.items() if len(v) > 1} == {}
