"""The corpus of real-world specs: each case plans, or is refused naming file and reason.

The corpus is environment definitions copied verbatim from public repositories (see its
README), in `tests/corpus/real-world`; `ENVSHIP_CORPUS` points the tests at another copy. Every
case folder must have an entry in `EXPECTED`, so a case added there fails here until someone
decides what envship should do with it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from controller.adapters.folder import FolderTree
from controller.core.discovery import discover
from controller.core.model import Environment
from controller.core.plan import plan

REPOSITORY = Path(__file__).resolve().parent.parent
SNAPSHOT = REPOSITORY / "tests" / "corpus" / "real-world"
CORPUS = Path(os.environ.get("ENVSHIP_CORPUS") or SNAPSHOT)


@dataclass(frozen=True)
class Planned:
    path: str
    kind: str
    name: str
    version: str | None
    files: tuple[str, ...]
    """Every repository path the build is read from (what makes the hash)."""


@dataclass(frozen=True)
class Refused:
    path: str
    kind: str
    name: str
    file: str
    phrases: tuple[str, ...]


EXPECTED: dict[str, tuple[Planned | Refused, ...]] = {
    "aml-v1-assetid": (
        Planned(
            "aml-v1-assetid",
            "aml-v1",
            "AzureML-AutoML",
            "132",
            ("aml-v1-assetid/azureml_environment.json",),
        ),
    ),
    "aml-v1-autosave": (
        Planned(
            "aml-v1-autosave",
            "aml-v1",
            "AutoML-AzureML-AutoML",
            "Autosave_2021-02-18T17:10:13Z_0f3ba454",
            ("aml-v1-autosave/azureml_environment.json",),
        ),
    ),
    "aml-v1-basedockerfile": (
        Planned(
            "aml-v1-basedockerfile",
            "aml-v1",
            "AzureML-sklearn-0.24-ubuntu18.04-py37-cpu",
            "21",
            (
                "aml-v1-basedockerfile/azureml_environment.json",
                "aml-v1-basedockerfile/BaseDockerfile",
            ),
        ),
    ),
    "aml-v1-server-conda": (
        Planned(
            "aml-v1-server-conda",
            "aml-v1",
            "AzureML-Tutorial",
            "81",
            (
                "aml-v1-server-conda/azureml_environment.json",
                "aml-v1-server-conda/conda_dependencies.yml",
            ),
        ),
    ),
    "azureml-examples-v2": (
        Planned(
            "azureml-examples-v2/docker-context.yml",
            "aml-v2",
            "docker-context-example",
            None,
            (
                "azureml-examples-v2/docker-context.yml",
                "azureml-examples-v2/docker-contexts/python-and-pip/Dockerfile",
                "azureml-examples-v2/docker-contexts/python-and-pip/requirements.txt",
            ),
        ),
        Planned(
            "azureml-examples-v2/docker-image-plus-conda.yml",
            "aml-v2",
            "docker-image-plus-conda-example",
            None,
            (
                "azureml-examples-v2/docker-image-plus-conda.yml",
                "azureml-examples-v2/conda-yamls/pydata.yml",
            ),
        ),
        Refused(
            "azureml-examples-v2/python-ml-basic-cpu.yml",
            "aml-v2",
            "python-ml-basic-cpu-example",
            "azureml-examples-v2/python-ml-basic-cpu.yml",
            (
                "pre-GA environment YAML is not accepted",
                "'docker: {image: ...}' is now 'image: ...'",
                "'conda_file: file:PATH' is now 'conda_file: PATH'",
            ),
        ),
    ),
    "conda-trailing-null": (
        Planned(
            "conda-trailing-null/conda_dependencies.yml",
            "conda",
            "conda-trailing-null",
            None,
            ("conda-trailing-null/conda_dependencies.yml",),
        ),
    ),
}


@pytest.fixture(scope="module")
def corpus() -> Path:
    assert CORPUS.is_dir(), f"the real-world corpus is missing: {CORPUS}"
    return CORPUS


@pytest.fixture(scope="module")
def environments(corpus: Path) -> list[Environment]:
    return discover(FolderTree(corpus))


def case_of(env: Environment) -> str:
    return env.path.split("/", 1)[0]


def test_every_case_has_an_expectation(corpus: Path) -> None:
    cases = sorted(p.name for p in corpus.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert cases == sorted(EXPECTED)


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_case(case: str, environments: list[Environment]) -> None:
    found = {e.path: e for e in environments if case_of(e) == case}
    expected = {item.path: item for item in EXPECTED[case]}
    assert sorted(found) == sorted(expected)
    items = {item.env.path: item for item in plan(found.values())}
    for path, want in expected.items():
        env, item = found[path], items[path]
        assert env.kind == want.kind
        assert env.name == want.name
        if isinstance(want, Planned):
            assert env.error is None, str(env.error)
            assert item.action == "build"
            assert env.version == want.version
            assert sorted(env.files) == sorted(want.files)
            assert item.hash is not None
            assert item.hash.startswith("sha256:")
            assert item.image == f"envship/{want.name.lower()}:{item.hash[7:39]}"
        else:
            assert item.action == "refused"
            message = str(env.error)
            assert message.startswith(f"{want.file}: "), message
            for phrase in want.phrases:
                assert phrase in message


def test_plan_command_on_the_corpus(corpus: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "controller.cli", "plan", str(corpus), "--output", "json"],
        env={**os.environ, "PYTHONPATH": str(REPOSITORY)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert "Traceback" not in result.stderr
    assert result.returncode == 1  # python-ml-basic-cpu.yml is refused
    items = {i["path"]: i for i in json.loads(result.stdout)}
    expected = {item.path: item for case in EXPECTED.values() for item in case}
    assert sorted(items) == sorted(expected)
    for path, want in expected.items():
        item = items[path]
        assert (item["kind"], item["name"]) == (want.kind, want.name)
        if isinstance(want, Planned):
            assert (item["action"], item["error"]) == ("build", None)
        else:
            assert item["action"] == "refused"
            assert item["error"].startswith(f"{want.file}: ")
