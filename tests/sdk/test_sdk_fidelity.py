"""envship reads Azure ML v1 saved environment folders the way azureml-core does.

`sdk_roundtrip.py` runs under the real SDK, in its own virtual environment (the SDK caps many
of its dependencies; envship's environment must not inherit those caps). It saves one folder per
case with `Environment.save_to_directory` and reports what `Environment.load_from_directory`
reads back.
These tests run envship's discovery on the same folders and compare field by field.

The SDK's interpreter is found through ENVSHIP_AZUREML_PYTHON (scripts/test sets it). Without it
the tests are skipped on a developer's machine and fail under scripts/test and in CI, where a
silent skip would hide a lost check.
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
from controller.core.discovery import DiscoveryOptions, discover
from controller.core.model import ContextFile, Environment
from controller.core.requirements import canonical_requirements, logical_lines
from tests.support.needs import need

pytestmark = pytest.mark.sdk

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
SCRIPT = HERE / "sdk_roundtrip.py"
PYTHON_VARIABLE = "ENVSHIP_AZUREML_PYTHON"
HOW_TO_CREATE = (
    f"{PYTHON_VARIABLE} must name the python of a virtual environment with azureml-core "
    "(scripts/test makes one by itself from the lock), e.g. from the repository root with\n"
    "Python 3.11:\n"
    "  python3 -m venv .venv-azureml\n"
    "  .venv-azureml/bin/python -m pip install --require-hashes -r tests/sdk/requirements.txt\n"
    f"  export {PYTHON_VARIABLE}=$PWD/.venv-azureml/bin/python"
)
SDK_TIMEOUT = 300

PASSWORD_CANARY = "envship-canary-Pw-7f3a91d2"
"""Same value as in sdk_roundtrip.py; test_password_case_is_real checks they agree."""

DEFINITION = "azureml_environment.json"
CONDA_FILE = "conda_dependencies.yml"

MANAGED = (
    "a-pip",
    "b-conda-python",
    "b-conda-no-python",
    "c-pytorch",
    "f-env-vars",
    "h-inline-and-file",
    "h-inline-only",
)
"""Managed conda environments: Azure ML creates the conda environment from the spec."""
USER_MANAGED = ("d-dockerfile", "e-private-base", "e-private-base-full")
NOTHING_TO_INSTALL = ("i-no-conda",)
ACCEPTED = MANAGED + USER_MANAGED + NOTHING_TO_INSTALL
REFUSED = ("g-password",)
ALL_CASES = ACCEPTED + REFUSED


def sdk_python() -> str:
    """The SDK's interpreter; a skip on a developer's machine, a failure under scripts/test."""
    path = os.environ.get(PYTHON_VARIABLE, "").strip()
    need(bool(path), f"{PYTHON_VARIABLE} is not set. {HOW_TO_CREATE}")
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        pytest.fail(f"{PYTHON_VARIABLE}={path} is not an executable.\n{HOW_TO_CREATE}")
    return path


@dataclass(frozen=True)
class Roundtrip:
    envs_dir: Path
    sdk: dict[str, dict[str, Any]]
    """What the SDK read back, by case (= folder name)."""
    envship: dict[str, Environment]
    """What envship discovered, by folder."""


def _sdk_environment() -> dict[str, str]:
    """The caller's environment without what would make the SDK's python import envship's."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


@pytest.fixture(scope="module")
def roundtrip(tmp_path_factory: pytest.TempPathFactory) -> Roundtrip:
    """Run the SDK once for the module (its import is slow), then envship on its output."""
    python = sdk_python()
    out = tmp_path_factory.mktemp("sdk")
    result = subprocess.run(
        [python, str(SCRIPT), str(out)],
        cwd=out,
        env=_sdk_environment(),
        capture_output=True,
        text=True,
        timeout=SDK_TIMEOUT,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(
            f"{SCRIPT.name} failed ({result.returncode}):\n{result.stderr[-4000:]}",
            pytrace=False,
        )
    summaries = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    sdk = {summary["case"]: summary for summary in summaries}
    envs_dir = out / "envs"
    found = discover(FolderTree(envs_dir), DiscoveryOptions())
    return Roundtrip(envs_dir, sdk, {env.path: env for env in found})


def sdk_pip_requirements(conda: dict[str, Any]) -> list[str]:
    """The SDK's pip list as pip reads it, in envship's canonical form.

    Azure ML builds a managed environment with `conda env create`, and conda hands the pip list
    to pip as a requirements file, one item per line. So a comment item or a blank item is
    nothing and an inline comment is not part of its requirement: read the lines the way pip
    does (`logical_lines`), then canonicalise, so that layout never matters and meaning does.
    """
    lines = logical_lines("\n".join(str(item) for item in conda["pip_lines"]))
    return canonical_requirements(lines, "sdk")


def expected_base_image(sdk: dict[str, Any]) -> str | None:
    """The image Azure ML pulls as the base.

    The SDK never joins `base_image_registry.address` and `base_image` itself: it stores both,
    logs in to `address` for local runs and leaves the pull to the service. The address names
    the registry that holds the base image, and both spellings are found in the wild: an image
    name relative to that registry (the cheat sheet's form) and a full reference that repeats
    it. envship pulls `<address>/<image>` unless the image already starts with `<address>/`;
    test_private_base_composition pins both forms with literal values.
    """
    image = sdk["base_image"]
    address = (sdk["registry"] or {}).get("address")
    if not image or not address:
        return image
    prefix = address.rstrip("/") + "/"
    return image if image.startswith(prefix) else prefix + image


def accepted(roundtrip: Roundtrip, case: str) -> tuple[dict[str, Any], Environment]:
    env = roundtrip.envship[case]
    assert env.error is None, f"envship refused {case}: {env.error}"
    assert env.build is not None
    return roundtrip.sdk[case], env


def test_sdk_python_is_configured() -> None:
    """Fails in CI (skips elsewhere) when the SDK's virtual environment is missing."""
    sdk_python()


def test_every_case_is_reported(roundtrip: Roundtrip) -> None:
    assert sorted(roundtrip.sdk) == sorted(ALL_CASES)
    assert sorted(roundtrip.envship) == sorted(ALL_CASES)
    for case, summary in roundtrip.sdk.items():
        assert summary["files"].count(DEFINITION) == 1, case
        user_managed = bool(summary["user_managed_dependencies"])
        assert user_managed == (case in USER_MANAGED), case
        assert (summary["conda"] is None) == (case in NOTHING_TO_INSTALL), case
        conda = summary["conda"]
        if conda is not None:  # the raw pip list is exactly the SDK's options plus packages
            assert sorted(conda["pip_options"] + conda["pip_packages"]) == sorted(
                conda["pip_lines"]
            )


@pytest.mark.parametrize("case", ACCEPTED)
def test_identity(roundtrip: Roundtrip, case: str) -> None:
    sdk, env = accepted(roundtrip, case)
    assert env.kind == "aml-v1"
    assert env.name == sdk["name"]
    assert env.version == sdk["version"]
    assert f"{case}/{DEFINITION}" in env.files


@pytest.mark.parametrize("case", ACCEPTED)
def test_base_image_or_dockerfile(roundtrip: Roundtrip, case: str) -> None:
    sdk, env = accepted(roundtrip, case)
    build = env.build
    assert build is not None
    if sdk["base_dockerfile"] is not None:
        assert sdk["base_image"] is None
        assert build.base_image is None
        assert build.dockerfile_path == "Dockerfile"
        assert build.context == (ContextFile("Dockerfile", sdk["base_dockerfile"].encode()),)
    else:
        assert sdk["base_image"]
        assert build.base_image == expected_base_image(sdk)
        assert build.dockerfile_path is None
        assert build.context == ()


def test_private_base_composition(roundtrip: Roundtrip) -> None:
    """The address and the image, in both spellings, as literal values."""
    _, relative = accepted(roundtrip, "e-private-base")
    _, full = accepted(roundtrip, "e-private-base-full")
    assert relative.build is not None
    assert full.build is not None
    assert relative.build.base_image == "myregistry.azurecr.io/myimage:1"
    assert full.build.base_image == "myregistry.azurecr.io/team/myimage:2"
    assert relative.build.base_registry == full.build.base_registry == "myregistry.azurecr.io"


@pytest.mark.parametrize("case", ACCEPTED)
def test_registry(roundtrip: Roundtrip, case: str) -> None:
    sdk, env = accepted(roundtrip, case)
    assert env.build is not None
    assert env.build.base_registry == sdk["registry"]["address"]
    assert not sdk["registry"]["has_password"]


@pytest.mark.parametrize("case", ACCEPTED)
def test_python_mode_and_interpreter(roundtrip: Roundtrip, case: str) -> None:
    sdk, env = accepted(roundtrip, case)
    assert env.build is not None
    python = env.build.python
    if sdk["user_managed_dependencies"]:
        # The SDK still writes its default conda file; Azure ML ignores it when user managed.
        assert python.mode == "user"
        assert python.interpreter == sdk["interpreter_path"]
        assert python.conda is None
    elif sdk["conda"] is None:
        assert python.mode == "none"
        assert python.conda is None
    else:
        assert python.mode == "conda"
        assert python.conda is not None


def managed_conda(roundtrip: Roundtrip, case: str) -> tuple[dict[str, Any], Any]:
    sdk, env = accepted(roundtrip, case)
    assert env.build is not None
    conda = env.build.python.conda
    assert conda is not None
    return sdk["conda"], conda


@pytest.mark.parametrize("case", MANAGED)
def test_conda_channels_in_order(roundtrip: Roundtrip, case: str) -> None:
    sdk, conda = managed_conda(roundtrip, case)
    assert list(conda.channels) == sdk["channels"]


@pytest.mark.parametrize("case", MANAGED)
def test_conda_packages(roundtrip: Roundtrip, case: str) -> None:
    sdk, conda = managed_conda(roundtrip, case)
    assert set(conda.dependencies) == set(sdk["packages"])
    assert list(conda.dependencies) == sorted(conda.dependencies)


@pytest.mark.parametrize(
    "case",
    list(MANAGED),
)
def test_pip_requirements(roundtrip: Roundtrip, case: str) -> None:
    sdk, conda = managed_conda(roundtrip, case)
    assert list(conda.pip) == sdk_pip_requirements(sdk)


def test_pip_requirements_apart_from_comments(roundtrip: Roundtrip) -> None:
    """The rest of from_pip_requirements' list while the case above is a known mismatch:
    the index option comes first, the blank item is dropped, names and specifiers are
    canonical."""
    sdk, conda = managed_conda(roundtrip, "a-pip")
    without_comments = [line for line in conda.pip if not line.startswith("#")]
    expected = sdk_pip_requirements(sdk)
    assert without_comments[0] == expected[0] == "--extra-index-url https://pypi.example.org/simple"
    assert "" not in conda.pip
    assert {"numpy==1.26.4", "requests", "scikit-learn[alldeps]>=1.3"} <= set(conda.pip)


@pytest.mark.parametrize("case", MANAGED)
def test_conda_variables(roundtrip: Roundtrip, case: str) -> None:
    sdk, conda = managed_conda(roundtrip, case)
    assert dict(conda.variables) == {k: str(v) for k, v in sdk["variables"].items()}


@pytest.mark.parametrize("case", ACCEPTED)
def test_environment_variables(roundtrip: Roundtrip, case: str) -> None:
    sdk, env = accepted(roundtrip, case)
    assert env.build is not None
    expected = {k: "" if v is None else str(v) for k, v in sdk["environment_variables"].items()}
    assert dict(env.build.environment) == expected
    assert list(env.build.environment) == sorted(env.build.environment)


@pytest.mark.parametrize("case", ACCEPTED)
def test_platform(roundtrip: Roundtrip, case: str) -> None:
    sdk, env = accepted(roundtrip, case)
    assert env.build is not None
    platform = sdk["platform"]
    assert env.build.platform == f"{platform['os']}/{platform['architecture']}".lower()


def test_conda_file_wins_over_inline(roundtrip: Roundtrip) -> None:
    """Both inline `python.condaDependencies` and the file: load_from_directory takes the file."""
    folder = roundtrip.envs_dir / "h-inline-and-file"
    inline = json.loads((folder / DEFINITION).read_text())["python"]["condaDependencies"]
    assert inline["channels"] == ["defaults"]  # the case is real: the inline spec differs
    sdk, conda = managed_conda(roundtrip, "h-inline-and-file")
    assert sdk["channels"] == ["conda-forge"]
    assert conda.channels == ("conda-forge",)
    assert "flask" not in conda.dependencies
    assert "numpy" in conda.dependencies
    assert f"h-inline-and-file/{CONDA_FILE}" in roundtrip.envship["h-inline-and-file"].files


def test_inline_conda_alone_is_read(roundtrip: Roundtrip) -> None:
    sdk, conda = managed_conda(roundtrip, "h-inline-only")
    assert CONDA_FILE not in roundtrip.sdk["h-inline-only"]["files"]
    assert sdk["channels"] == ["defaults"]
    assert conda.channels == ("defaults",)
    assert conda.dependencies == ("flask", "python=3.9")
    assert conda.pip == ("gunicorn==22.0.0",)


def test_password_case_is_real(roundtrip: Roundtrip) -> None:
    """The SDK did save the password in plaintext, so the refusal below is meaningful."""
    assert roundtrip.sdk["g-password"]["registry"]["has_password"]
    assert PASSWORD_CANARY in (roundtrip.envs_dir / "g-password" / DEFINITION).read_text()


def test_plaintext_password_is_refused(roundtrip: Roundtrip) -> None:
    env = roundtrip.envship["g-password"]
    assert env.build is None
    assert env.error is not None
    message = str(env.error)
    assert DEFINITION in message
    assert "plaintext" in message
    assert PASSWORD_CANARY not in message
    assert PASSWORD_CANARY not in repr(env.error)
    assert PASSWORD_CANARY not in repr(env)


def test_plan_refuses_and_never_prints_the_password(roundtrip: Roundtrip) -> None:
    command = [sys.executable, "-m", "controller.cli", "plan", str(roundtrip.envs_dir)]
    result = subprocess.run(
        [*command, "--output", "json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    assert PASSWORD_CANARY not in result.stdout
    assert PASSWORD_CANARY not in result.stderr
    items = {item["path"]: item for item in json.loads(result.stdout)}
    assert sorted(items) == sorted(ALL_CASES)
    refused = items["g-password"]
    assert refused["action"] == "refused"
    assert DEFINITION in refused["error"]
    assert "plaintext" in refused["error"]
    assert all(items[case]["action"] in ("build", "copy") for case in ACCEPTED)
