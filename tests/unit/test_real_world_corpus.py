"""The corpus of real-world specs: each case plans, or is refused naming file and reason.

The corpus is environment definitions copied verbatim from public repositories (see its
README), in `tests/cases/corpus/real-world`; `ENVSHIP_CORPUS` points the tests at another copy.
Every case folder must have an entry in `EXPECTED`, so a case added there fails here until
someone decides what envship should do with it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from controller.adapters.folder import FolderTree
from controller.adapters.registries import RegistryPool, RegistrySettings
from controller.core.discovery import discover
from controller.core.model import Environment, base_references
from controller.core.plan import PlanItem, plan
from controller.core.templates import fill
from controller.pipeline.resolve import Resolver
from tests.support.paths import CASES, ROOT

SNAPSHOT = CASES / "corpus" / "real-world"
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


SAVED = "aml-v1-"
"""Saved v1 folders copied in bulk: each must plan as azureml-core would read it (its name and
version from its JSON, its conda file beside it); cases with notes of their own are in
EXPECTED."""


@pytest.fixture(scope="module")
def corpus() -> Path:
    assert CORPUS.is_dir(), f"the real-world corpus is missing: {CORPUS}"
    return CORPUS


@pytest.fixture(scope="module")
def environments(corpus: Path) -> list[Environment]:
    return discover(FolderTree(corpus))


def case_of(path: str) -> str:
    return path.split("/", 1)[0]


def cases(corpus: Path) -> list[str]:
    return sorted(p.name for p in corpus.iterdir() if p.is_dir() and not p.name.startswith("."))


def test_every_case_has_an_expectation(corpus: Path) -> None:
    described = [c for c in cases(corpus) if c in EXPECTED]
    saved = [c for c in cases(corpus) if c not in EXPECTED]
    assert described == sorted(EXPECTED)
    assert saved, "the saved v1 folders are missing"
    assert all(c.startswith(SAVED) for c in saved), saved


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_case(case: str, environments: list[Environment]) -> None:
    found = {e.path: e for e in environments if case_of(e.path) == case}
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


def test_every_saved_folder_plans_as_azureml_core_reads_it(
    corpus: Path, environments: list[Environment]
) -> None:
    by_path = {path: env for env in environments for path in env.paths}
    items = {item.env.path: item for item in plan(environments)}
    saved = [c for c in cases(corpus) if c not in EXPECTED]
    for case in saved:
        doc = json.loads((corpus / case / "azureml_environment.json").read_text("utf-8-sig"))
        env = by_path[case]
        assert env.kind == "aml-v1"
        assert env.error is None, str(env.error)
        assert (env.name, env.version) == (doc["name"], doc["version"])
        conda = corpus / env.path / "conda_dependencies.yml"
        assert (f"{env.path}/conda_dependencies.yml" in env.files) == conda.exists()
        assert env.build is not None
        assert env.build.base_image == doc["docker"]["baseImage"]
        assert items[env.path].action in ("build", "copy")
    # one saved folder is a copy of another: one name, one content, one environment
    twins = [env for env in environments if env.also]
    assert [(env.path, env.also) for env in twins] == [
        ("aml-v1-forest-fires", ("aml-v1-forest-fires-2",))
    ]
    # versions of one name are one environment's versions, each planned
    automl = [env for env in environments if env.name == "AzureML-AutoML"]
    assert sorted(str(env.version) for env in automl) == ["131", "132", "133", "54", "62"]
    assert len({env.status_key for env in automl}) == 5


def test_plan_command_on_the_corpus(corpus: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "controller.cli", "plan", str(corpus), "--output", "json"],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert "Traceback" not in result.stderr
    assert result.returncode == 1  # python-ml-basic-cpu.yml is refused
    items = {i["path"]: i for i in json.loads(result.stdout)}
    expected = {item.path: item for case in EXPECTED.values() for item in case}
    assert set(expected) <= set(items)
    assert {case_of(p) for p in set(items) - set(expected)} <= {
        c for c in cases(corpus) if c not in EXPECTED
    }
    for path, want in expected.items():
        item = items[path]
        assert (item["kind"], item["name"]) == (want.kind, want.name)
        if isinstance(want, Planned):
            assert (item["action"], item["error"]) == ("build", None)
        else:
            assert item["action"] == "refused"
            assert item["error"].startswith(f"{want.file}: ")


# --- whole repositories -----------------------------------------------------------------------

REPOSITORIES = CORPUS.parent / "repositories"
UNBUILDABLE = {
    "missing file": "does not exist",
    "remote file": "is remote; keep the requirements file in git",
    "look-up offline": "cannot be looked up: base resolution is off",
    "one name, other content": "environments with different content",
}
"""Why a real environment may be refused: it cannot be built as written. (`one name, other
content`: one name and version given to different specs, which no Azure ML environment version
can be; `look-up offline`: a curated environment's template look-ups, made here with base
resolution off, as on a machine without the internet: `tests/integration/test_curated.py` makes
them against real registries and a real index.)"""


@dataclass(frozen=True)
class Repository:
    planned: int
    refused: dict[str, int]
    notes: int


EXPECTED_REPOSITORIES = {
    "azureml-assets": Repository(9, {"look-up offline": 65, "one name, other content": 2}, 6),
    "azureml-examples": Repository(154, {"one name, other content": 4, "missing file": 1}, 557),
    "machinelearningnotebooks": Repository(31, {"remote file": 3}, 0),
    "mlops-project-template": Repository(11, {"one name, other content": 2}, 47),
}


def discovered(name: str) -> tuple[list[PlanItem], list[Any]]:
    found = discover(FolderTree(REPOSITORIES / name))
    resolution = Resolver(RegistryPool(RegistrySettings()), enabled=False).resolve(found)
    return plan(resolution.envs, failures=resolution.failures), found.notes


def reason(item: PlanItem) -> str:
    return next((k for k, phrase in UNBUILDABLE.items() if phrase in (item.error or "")), "")


@pytest.mark.parametrize("name", sorted(EXPECTED_REPOSITORIES))
def test_every_environment_of_a_real_repository_plans_or_cannot_be_built_as_written(
    name: str,
) -> None:
    items, notes = discovered(name)
    want = EXPECTED_REPOSITORIES[name]
    planned = [i for i in items if i.action in ("build", "copy")]
    refused = [i for i in items if i.action not in ("build", "copy")]
    for item in refused:
        assert reason(item), f"{item.env.path}: {item.error}"
        assert item.error is not None
        named = item.error.split(": ", 1)[0]  # the file is named first
        assert (REPOSITORIES / name / named).exists(), item.error
        assert "\n" not in item.error
        if reason(item) == "one name, other content":
            assert len(item.error) < 300, item.error
    counts: dict[str, int] = {}
    for item in refused:
        counts[reason(item)] = counts.get(reason(item), 0) + 1
    assert (len(planned), counts, len(notes)) == (want.planned, want.refused, want.notes)
    assert len({i.env.status_key for i in items}) == len(items)


def test_folders_called_environment_each_get_a_name_of_their_own() -> None:
    items, _ = discovered("azureml-examples")
    inside = [i for i in items if "/environment/" in f"/{i.env.path}" and i.env.ok]
    assert len(inside) >= 35
    assert len({i.env.name for i in inside}) == len(inside)
    by_path = {i.env.path: i for i in items}
    item = by_path["cli/endpoints/online/model-1/environment/conda-managedidentity.yaml"]
    assert (item.env.kind, item.env.name, item.action) == (
        "conda",
        "cli-endpoints-online-model-1-environment-conda-managedidentity",
        "build",
    )
    sibling = by_path["cli/endpoints/online/model-1/environment/conda.yaml"]
    assert sibling.env.name == "cli-endpoints-online-model-1-environment"


def test_each_conda_file_of_a_notebook_folder_is_an_environment() -> None:
    items, _ = discovered("machinelearningnotebooks")
    folder = "how-to-use-azureml/automated-machine-learning/"
    automl = sorted(i.env.path for i in items if i.env.path.startswith(folder + "automl_env"))
    assert automl == [f"{folder}automl_env.yml", f"{folder}automl_env_linux.yml",
                      f"{folder}automl_env_mac.yml"]  # fmt: skip
    tutorials = [i for i in items if i.env.path.startswith("tutorials/")]
    assert tutorials
    assert all(i.action in ("build", "copy") for i in tutorials)


def test_curated_environments_are_their_assets_and_their_contexts_are_not_environments() -> None:
    items, notes = discovered("azureml-assets")
    curated = [i for i in items if i.env.kind == "azureml-asset"]
    assert len(curated) == 71
    assert not any("/context" in i.env.path for i in items)
    by_path = {i.env.path: i for i in items}
    acpt = by_path["assets/training/general/environments/acpt-pytorch-2.2-cuda12.1"]
    assert acpt.env.name == "acpt-pytorch-2.2-cuda12.1"
    assert acpt.error is not None
    assert acpt.error.startswith(
        "assets/training/general/environments/acpt-pytorch-2.2-cuda12.1/context/Dockerfile: "
        "{{latest-image-tag}} for mcr.microsoft.com/aifx/acpt/"
    )
    # images named by COPY --from are bases like FROM's (pinned and hashed once resolved)
    found = discover(FolderTree(REPOSITORIES / "azureml-assets"))
    automl = next(e for e in found if e.path.endswith("automl/environments/ai-ml-automl"))
    assert automl.build is not None
    filled = fill(automl.build, {p: "1.0" for p in automl.build.placeholders})
    copied = "mcr.microsoft.com/azureml/mlflow-ubuntu20.04-py38-cpu-inference:20250506.v1"
    assert copied in base_references(filled)
    assert {n.text for n in notes} >= {
        "an azureml-assets asset of type 'component', not an environment",
        "an azureml-assets asset of type 'model', not an environment",
    }


def test_what_is_not_an_environment_is_noted_and_never_changes_the_exit_status() -> None:
    repository = REPOSITORIES / "mlops-project-template"
    result = subprocess.run(
        [sys.executable, "-m", "controller.cli", "plan", str(repository),
         "--ignore", "classical/*/mlops/azureml/train/train-env.yml", "--no-resolve-base",
         "--show-skipped", "-o", "json"],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert all(i["action"] in ("build", "copy") for i in json.loads(result.stdout))
    skipped = result.stderr.splitlines()
    workflow = "nlp/aml-cli-v2/mlops/github-actions/deploy-model-training-pipeline.yml"
    assert (
        f"skipped {workflow}: a CI workflow or pipeline, not an environment; it does not "
        "parse as YAML either" in skipped
    )
    assert len(skipped) == 47
