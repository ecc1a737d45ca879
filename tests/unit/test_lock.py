"""The lock files say what pyproject.toml asks for, with hashes, and every install uses them."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.support.paths import ROOT

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
LOCK = tomllib.loads((ROOT / "uv.lock").read_text())
PACKAGES = {canonicalize_name(p["name"]): p for p in LOCK["package"]}
EXTRAS: dict[str, list[str]] = PYPROJECT["project"].get("optional-dependencies", {})
"""envship's optional parts (`pip install envship[EXTRA]`) and what each needs."""
IMAGE_PLATFORM = {
    "sys_platform": "linux",
    "platform_system": "Linux",
    "os_name": "posix",
    "platform_machine": "x86_64",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "python_version": "3.11",
    "python_full_version": "3.11.2",
    "extra": "",
}
"""Where the controller's image runs (markers are evaluated for it)."""


def asked(requirements: list[str], extra: str | None = None) -> set[tuple[str, str, str]]:
    """(name, specifier, marker) of each requirement, as uv records them (a requirement of an
    extra is recorded with the marker `extra == EXTRA`)."""
    found = set()
    for text in requirements:
        req = Requirement(text if extra is None else f"{text}; extra == {extra!r}")
        found.add((canonicalize_name(req.name), str(req.specifier), str(req.marker or "")))
    return found


def recorded(entries: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {
        (
            canonicalize_name(e["name"]),
            str(Requirement(f"x{e.get('specifier', '')}").specifier),
            str(Marker(e["marker"])) if e.get("marker") else "",
        )
        for e in entries
    }


def test_the_lock_records_what_pyproject_asks_for() -> None:
    project = PACKAGES["envship"]
    metadata = project["metadata"]
    assert LOCK["requires-python"] == PYPROJECT["project"]["requires-python"]
    wanted = asked(PYPROJECT["project"]["dependencies"])
    for extra, requirements in EXTRAS.items():
        wanted |= asked(requirements, extra)
    assert recorded(metadata["requires-dist"]) == wanted, (
        "pyproject.toml's dependencies changed: run scripts/lock --keep"
    )
    assert metadata.get("provides-extras", []) == list(EXTRAS)
    groups = PYPROJECT["dependency-groups"]
    assert set(metadata["requires-dev"]) == set(groups)
    for group, requirements in groups.items():
        assert recorded(metadata["requires-dev"][group]) == asked(requirements), group


def test_every_locked_version_is_in_its_range_and_has_hashes() -> None:
    wanted = [*PYPROJECT["project"]["dependencies"]]
    for requirements in [*EXTRAS.values(), *PYPROJECT["dependency-groups"].values()]:
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


def image_locks() -> dict[str, Path]:
    """What the controller's image installs: "" (always) or the extra -> its lock file."""
    deploy = ROOT / "deploy"
    locks = {"": deploy / "requirements.txt"}
    locks |= {extra: deploy / f"requirements-{extra}.txt" for extra in EXTRAS}
    return locks


def test_the_image_installs_the_locked_versions() -> None:
    locks = image_locks()
    assert sorted((ROOT / "deploy").glob("requirements*.txt")) == sorted(locks.values())
    for extra, lock in locks.items():
        pins = hashed_pins(lock)
        assert pins, lock.name
        check_image_pins(pins, PYPROJECT["project"]["dependencies"] if not extra else EXTRAS[extra])
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    assert "--require-hashes" in dockerfile
    assert "deploy/requirements.txt" in dockerfile
    assert "deploy/requirements-$extra.txt" in dockerfile
    default = re.search(r"^ARG EXTRAS=(.*)$", dockerfile, re.MULTILINE)
    assert default is not None
    # The chart turns leader election on with replicas > 1: its default image must have it.
    assert "leader-election" in default.group(1).split()
    assert set(default.group(1).split()) <= set(EXTRAS)


def check_image_pins(pins: dict[str, str], requirements: list[str]) -> None:
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
    for text in requirements:
        assert canonicalize_name(Requirement(text).name) in pins, text


def image_pins(path: Path) -> set[str]:
    """The packages a requirements file installs where the image runs (markers evaluated)."""
    names = set()
    for line in path.read_text().splitlines():
        match = re.match(r"([A-Za-z0-9_.-]+)==[^ ;]+(?: ; (.*?))? \\$", line)
        if match and (not match.group(2) or Marker(match.group(2)).evaluate(IMAGE_PLATFORM)):
            names.add(canonicalize_name(match.group(1)))
    return names


def needed(extras: tuple[str, ...] = ()) -> set[str]:
    """What envship (with `extras`) needs where the image runs, by uv.lock's graph."""
    envship = PACKAGES["envship"]
    todo: list[dict[str, Any]] = list(envship["dependencies"])
    for extra in extras:
        todo += envship["optional-dependencies"][extra]
    seen: set[tuple[str, str]] = set()
    while todo:
        dependency = todo.pop()
        marker = dependency.get("marker")
        if marker and not Marker(marker).evaluate(IMAGE_PLATFORM):
            continue
        name = canonicalize_name(dependency["name"])
        package = PACKAGES[name]
        for extra in ["", *dependency.get("extra", [])]:
            if (name, extra) in seen:
                continue
            seen.add((name, extra))
            if extra:
                todo += package.get("optional-dependencies", {}).get(extra, [])
            else:
                todo += package.get("dependencies", [])
    return {name for name, _ in seen}


def test_the_image_locks_hold_what_envship_and_each_extra_need() -> None:
    """deploy/requirements.txt is envship's closure in uv.lock (and the build backend), each
    deploy/requirements-EXTRA.txt exactly what the extra adds: nothing twice, nothing missing."""
    locks = image_locks()
    core = image_pins(locks[""]) - {"setuptools", "wheel"}
    assert core == needed()
    for extra in EXTRAS:
        added = image_pins(locks[extra])
        assert added, extra
        assert not added & image_pins(locks[""]), f"{extra}: installed twice"
        assert core | added == needed((extra,)), extra


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
