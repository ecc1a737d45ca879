"""The envship command run as a user runs it, against the integration tests' target registry,
with secrets only in environment variables; `Run` reads its JSON output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.support.canaries import record_output
from tests.support.infra import Certs, Registry
from tests.support.paths import ROOT


@dataclass
class Run:
    result: subprocess.CompletedProcess[str]

    @property
    def items(self) -> dict[str, dict[str, object]]:
        return {item["name"]: item for item in json.loads(self.result.stdout)}

    def actions(self) -> dict[str, object]:
        return {name: item["action"] for name, item in self.items.items()}


@dataclass
class Envship:
    """Runs the envship command as a user would, with secrets only in environment variables."""

    home: Path
    target: Registry
    certs: Certs

    def env(self, **extra: str) -> dict[str, str]:
        env = {
            **os.environ,
            "HOME": str(self.home),
            "ENVSHIP_TEST_USER": self.target.username or "",
            "ENVSHIP_TEST_PASS": self.target.password or "",
        }
        env.update(extra)
        return env

    def target_args(self, prefix: str) -> list[str]:
        return [
            "--registry",
            f"{self.target.host}/{prefix}",
            "--ca-file",
            self.certs.ca_file,
            "--username",
            "env:ENVSHIP_TEST_USER",
            "--password",
            "env:ENVSHIP_TEST_PASS",
        ]

    def __call__(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "controller.cli", *args],
            capture_output=True,
            text=True,
            env=env or self.env(),
            cwd=ROOT,
            check=False,
            timeout=600,
        )
        record_output(result.stdout, result.stderr)
        return result

    def sync(self, specs: Path, prefix: str, *extra: str, env: dict[str, str] | None = None) -> Run:
        result = self("sync", str(specs), *self.target_args(prefix), "-o", "json", *extra, env=env)
        assert "Traceback" not in result.stderr, result.stderr
        return Run(result)
