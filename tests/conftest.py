"""Session-wide: every test under tests/integration is marked `integration`, and no canary secret
may appear in any output or temporary file."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest

from tests.support import canaries
from tests.support.paths import TESTS

_reports: list[str] = []

INTEGRATION = TESTS / "integration"
"""Tests that run real services (a Docker engine, registries, a git or ssh server)."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test under tests/integration `integration`: scripts/test --fast leaves it out."""
    for item in items:
        if INTEGRATION in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.integration)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    for _name, text in report.sections:
        _reports.append(text)
    if report.longrepr is not None:
        _reports.append(str(report.longrepr))


def _files(*roots: Path) -> list[Path]:
    """Regular files below `roots`; folders deeper than a path may be long are passed over
    (only tests make them, and nothing envship writes lives there)."""
    found: list[Path] = []
    for root in roots:
        for top, _folders, names in os.walk(root):  # errors (too long a path) are skipped
            for name in names:
                path = Path(top, name)
                with contextlib.suppress(OSError):
                    if path.is_file() and not path.is_symlink():
                        found.append(path)
    return found


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not canaries.CANARIES:
        return
    roots = [Path.home() / ".docker"]
    factory = getattr(session.config, "_tmp_path_factory", None)
    if factory is not None:
        roots.append(factory.getbasetemp())
    findings = canaries.find(_reports + canaries.OUTPUTS, _files(*roots))
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    line = (
        f"canary scan: {len(canaries.CANARIES)} secrets, {len(_reports) + len(canaries.OUTPUTS)} "
        f"outputs and files under {', '.join(str(r) for r in roots)}: "
        + ("LEAKED" if findings else "clean")
    )
    if reporter is not None:
        reporter.write_line(line)
        for finding in findings:
            reporter.write_line(f"  {finding}")
    if findings:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    os.environ.pop("ENVSHIP_CANARY_SCAN", None)
