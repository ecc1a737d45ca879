"""The test suite's own shape: tests laid out like the code, and no test module importing another.

Every module under tests/ (outside the data in tests/cases/) is parsed, never imported: one that
imports a test module (`test_*.py`) or a conftest fails here, with the file, the line and what
it imported. Shared code belongs in tests/support/, fixtures in conftest.py files. Test modules
live in tests/unit/, tests/integration/ or tests/sdk/ only, and the `integration` marker is
exactly the tests under tests/integration/.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.paths import ROOT, TESTS

TEST_FOLDERS = {"unit", "integration", "sdk"}
"""Where test modules live (folders of tests/)."""
DATA = "cases"
"""tests/cases/ holds data (copied repositories, golden files), never code of the suite."""


def _forbidden(name: str) -> bool:
    """A test module or a conftest of the suite: `tests.unit.test_x`, `tests.conftest`, or one
    imported by its bare name (`conftest`, `test_x`); `aiohttp.test_utils` is not one."""
    parts = name.split(".")
    if parts[0] != "tests" and len(parts) > 1:
        return False
    return any(part.startswith("test_") or part == "conftest" for part in parts)


def _imports(tree: ast.Module, package: list[str]) -> Iterator[tuple[int, str]]:
    """(line, dotted name) of every module `tree` imports, relative imports resolved against
    `package`; for `from m import a`, both `m` and `m.a` (which may be a module)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *(node.module.split(".") if node.module else [])])
            if node.module:
                yield node.lineno, module
            for alias in node.names:
                yield node.lineno, f"{module}.{alias.name}" if module else alias.name
        elif (
            isinstance(node, ast.Call)
            and (
                (isinstance(node.func, ast.Name) and node.func.id == "__import__")
                or (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
            )
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            yield node.lineno, node.args[0].value


def violations(tests: Path) -> list[str]:
    """What breaks the layout of the test suite in folder `tests` (named `tests`), one line each."""
    found: list[str] = []
    for path in sorted(tests.rglob("*.py")):
        relative = path.relative_to(tests)
        if relative.parts[0] == DATA:
            continue
        shown = f"tests/{relative.as_posix()}"
        if path.name.startswith("test_") and (
            len(relative.parts) == 1 or relative.parts[0] not in TEST_FOLDERS
        ):
            found.append(f"{shown}: a test module outside {', '.join(sorted(TEST_FOLDERS))}")
        package = ["tests", *relative.parts[:-1]]
        tree = ast.parse(path.read_bytes(), filename=str(path))
        reported: set[tuple[int, str]] = set()
        for line, name in _imports(tree, package):
            parent = name.rpartition(".")[0]
            if _forbidden(name) and (line, parent) not in reported:
                reported.add((line, name))
                found.append(f"{shown}:{line}: imports {name}")
    return found


def test_no_test_module_imports_another_and_tests_live_in_their_folders() -> None:
    assert violations(TESTS) == []


def _write(folder: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)


def test_the_check_fails_on_planted_violations(tmp_path: Path) -> None:
    tests = tmp_path / "tests"
    _write(
        tests,
        {
            "__init__.py": "",
            "conftest.py": "from tests.support.stand_in import StandIn\n",
            "test_at_the_top.py": "",
            "cases/corpus/test_copied_from_a_repository.py": "from tests.test_x import y\n",
            "support/__init__.py": "",
            "support/stand_in.py": "import os\nfrom tests.support import paths\n",
            "support/test_misplaced.py": "",
            "support/leaky.py": "from tests.unit.test_b import helper\n",
            "unit/__init__.py": "",
            "unit/test_b.py": "def helper() -> None: ...\n",
            "unit/test_a.py": (
                "import importlib\n"
                "from tests.unit.test_b import helper\n"
                "from .test_b import helper as again\n"
                "from . import test_b\n"
                "import tests.unit.test_b\n"
                "from tests.support.stand_in import StandIn\n"
                "from aiohttp.test_utils import TestClient\n"
                "module = importlib.import_module('tests.unit.test_b')\n"
            ),
            "unit/core/__init__.py": "from ..test_b import helper\n",
            "integration/__init__.py": "",
            "integration/conftest.py": "",
            "integration/test_c.py": (
                "from tests.integration.conftest import Envship\n"
                "from .conftest import Run\n"
                "from tests.conftest import INTEGRATION\n"
                "import conftest\n"
            ),
        },
    )
    assert violations(tests) == [
        "tests/integration/test_c.py:1: imports tests.integration.conftest",
        "tests/integration/test_c.py:2: imports tests.integration.conftest",
        "tests/integration/test_c.py:3: imports tests.conftest",
        "tests/integration/test_c.py:4: imports conftest",
        "tests/support/leaky.py:1: imports tests.unit.test_b",
        "tests/support/test_misplaced.py: a test module outside integration, sdk, unit",
        "tests/test_at_the_top.py: a test module outside integration, sdk, unit",
        "tests/unit/core/__init__.py:1: imports tests.unit.test_b",
        "tests/unit/test_a.py:2: imports tests.unit.test_b",
        "tests/unit/test_a.py:3: imports tests.unit.test_b",
        "tests/unit/test_a.py:4: imports tests.unit.test_b",
        "tests/unit/test_a.py:5: imports tests.unit.test_b",
        "tests/unit/test_a.py:8: imports tests.unit.test_b",
    ]


def _selected(marker: str, *folders: str) -> list[str]:
    """Test ids pytest selects with `-m marker` under `folders` of tests/ (collection only)."""
    command = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"]
    result = subprocess.run(
        [*command, "-m", marker, *(str(TESTS / folder) for folder in folders)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        check=False,
        timeout=300,
    )
    assert result.returncode in (0, 5), result.stdout + result.stderr  # 5: nothing selected
    return [line for line in result.stdout.splitlines() if "::" in line]


@pytest.mark.slow
def test_the_integration_marker_is_exactly_the_integration_folder() -> None:
    assert _selected("not integration", "integration") == []
    assert _selected("integration", "unit", "sdk") == []
    assert _selected("integration", "integration")
