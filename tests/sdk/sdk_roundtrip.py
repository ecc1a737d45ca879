"""Save Azure ML v1 environments with the real SDK, load them back, report what the SDK sees.

Run by the interpreter of a virtual environment that has azureml-core (never by the envship
test interpreter: it imports nothing from envship):

    python sdk_roundtrip.py OUT_DIR

It writes the SDK's input files (a requirements file, conda files) under OUT_DIR/inputs and one
saved environment folder per case under OUT_DIR/envs, made with
`Environment.save_to_directory(path, overwrite=True)`. Then, for each folder, it loads it back
with `Environment.load_from_directory` and prints one JSON document per line (JSON Lines) saying
what the SDK read: base image, base Dockerfile, user-managed or not, interpreter, conda channels,
packages and pip lines, environment variables, platform and registry. Registry credentials are
reported as present or absent, never as values. The SDK's own chatter goes to stderr, so stdout
holds only the JSON lines.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable
from typing import Any

from azureml.core import VERSION, Environment
from azureml.core.conda_dependencies import CondaDependencies

PASSWORD_CANARY = "envship-canary-Pw-7f3a91d2"
"""The plaintext registry password of the refused case; must never be echoed by envship."""

DOCKERFILE = (
    "FROM mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04:20251130.v1\n"
    "RUN python -m venv /opt/venv && /opt/venv/bin/pip install numpy==1.26.4\n"
    'ENV PATH="/opt/venv/bin:$PATH"'
)

REQUIREMENTS = """\
# training requirements (comments, blank lines and an index option on purpose)
numpy==1.26.4

--extra-index-url https://pypi.example.org/simple
pandas>=2.0,<3  # data frames
Scikit_Learn [alldeps] >= 1.3
requests
"""

CONDA_WITH_PYTHON = """\
name: training
channels:
  - conda-forge
  - defaults
dependencies:
  # the interpreter first
  - python=3.11
  - numpy>=1.26
  - pip
  - pip:
      - torch==2.3.1
      - --extra-index-url https://download.pytorch.org/whl/cpu
      - Scikit_Learn>=1.3
  - scipy  # after the pip block, as real files have it
variables:
  OMP_NUM_THREADS: "4"
"""

CONDA_WITHOUT_PYTHON = """\
name: no-python
channels:
  - conda-forge
dependencies:
  - numpy
  - pandas=2.2
  - pip:
      - requests>=2.31
"""

CONDA_INLINE = {
    "name": "inline",
    "channels": ["defaults"],
    "dependencies": ["python=3.9", "flask", {"pip": ["gunicorn==22.0.0"]}],
}
"""Written by hand into `python.condaDependencies` of the JSON (the service's inline form)."""


def _write(path: str, text: str) -> str:
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
    return path


def case_pip(inputs: str) -> Environment:
    """(a) `from_pip_requirements` keeps comments, blank lines and options verbatim."""
    requirements = _write(os.path.join(inputs, "requirements.txt"), REQUIREMENTS)
    return Environment.from_pip_requirements("pip-requirements", requirements)


def case_conda_python(inputs: str) -> Environment:
    """(b) `from_conda_specification` with a python dependency: the file as is."""
    conda_file = _write(os.path.join(inputs, "conda-python.yml"), CONDA_WITH_PYTHON)
    return Environment.from_conda_specification("conda-python", conda_file)


def case_conda_no_python(inputs: str) -> Environment:
    """(b) `from_conda_specification` without python: the SDK appends its default Python."""
    conda_file = _write(os.path.join(inputs, "conda-no-python.yml"), CONDA_WITHOUT_PYTHON)
    return Environment.from_conda_specification("conda-no-python", conda_file)


def case_pytorch(_inputs: str) -> Environment:
    """(c) The Azure ML cheat sheet's "create with the SDK" example, verbatim."""
    conda = CondaDependencies()
    conda.add_channel("pytorch")
    conda.add_conda_package("python=3.7")
    conda.add_conda_package("pytorch")
    conda.add_conda_package("torchvision")
    conda.add_pip_package("pyyaml")
    conda.add_pip_package("mpi4py")
    conda.add_pip_package("deepspeed")
    env = Environment("pytorch")
    env.python.conda_dependencies = conda
    return env


def case_dockerfile(_inputs: str) -> Environment:
    """(d) A custom base Dockerfile, user-managed Python in a venv."""
    env = Environment("custom-dockerfile")
    env.docker.base_dockerfile = DOCKERFILE
    env.python.user_managed_dependencies = True
    env.python.interpreter_path = "/opt/venv/bin/python"
    return env


def case_private_base(_inputs: str) -> Environment:
    """(e) A base image relative to a private registry; no credentials in the spec."""
    env = Environment("private-base")
    env.docker.base_image = "myimage:1"
    env.docker.base_image_registry.address = "myregistry.azurecr.io"
    env.python.user_managed_dependencies = True
    return env


def case_private_base_full(_inputs: str) -> Environment:
    """(e) The other spelling seen in the wild: the base image already names the registry."""
    env = Environment("private-base-full")
    env.docker.base_image = "myregistry.azurecr.io/team/myimage:2"
    env.docker.base_image_registry.address = "myregistry.azurecr.io"
    env.python.user_managed_dependencies = True
    return env


def case_env_vars(inputs: str) -> Environment:
    """(f) Environment variables (replacing the SDK's EXAMPLE_ENV_VAR) and an arm64 platform."""
    conda_file = _write(os.path.join(inputs, "conda-env-vars.yml"), CONDA_WITHOUT_PYTHON)
    env = Environment.from_conda_specification("env-vars", conda_file)
    env.environment_variables = {
        "OMP_NUM_THREADS": "4",
        "GREETING": "hello world",
        "EQUATION": "a=b",
        "EMPTY": "",
    }
    env.docker.platform.architecture = "arm64"
    return env


def case_password(_inputs: str) -> Environment:
    """(g) What `from_docker_image(..., container_registry)` leads to: a plaintext password."""
    env = Environment("registry-password")
    env.docker.base_image = "myimage:1"
    env.docker.base_image_registry.address = "myregistry.azurecr.io"
    env.docker.base_image_registry.username = "myregistry"
    env.docker.base_image_registry.password = PASSWORD_CANARY
    return env


def case_inline_and_file(inputs: str) -> Environment:
    """Inline `python.condaDependencies` and a `conda_dependencies.yml`: the file wins."""
    conda_file = _write(os.path.join(inputs, "conda-file-wins.yml"), CONDA_WITHOUT_PYTHON)
    return Environment.from_conda_specification("inline-and-file", conda_file)


def case_inline_only(_inputs: str) -> Environment:
    """Inline `python.condaDependencies` alone (no conda file): the inline spec is used."""
    env = Environment("inline-only")
    env.python.conda_dependencies = None
    return env


def case_no_conda(_inputs: str) -> Environment:
    """Managed, but no conda dependencies at all: nothing to install on the base image."""
    env = Environment("no-conda")
    env.python.conda_dependencies = None
    return env


def _add_inline_conda(folder: str) -> None:
    """Put CONDA_INLINE into the saved JSON by hand (the SDK's save never writes it there)."""
    definition = os.path.join(folder, "azureml_environment.json")
    with open(definition, encoding="utf-8") as handle:
        doc = json.load(handle)
    doc["python"]["condaDependencies"] = CONDA_INLINE
    with open(definition, "w", encoding="utf-8") as handle:
        json.dump(doc, handle, indent=4)


CASES: dict[str, tuple[Callable[[str], Environment], Callable[[str], None] | None]] = {
    "a-pip": (case_pip, None),
    "b-conda-python": (case_conda_python, None),
    "b-conda-no-python": (case_conda_no_python, None),
    "c-pytorch": (case_pytorch, None),
    "d-dockerfile": (case_dockerfile, None),
    "e-private-base": (case_private_base, None),
    "e-private-base-full": (case_private_base_full, None),
    "f-env-vars": (case_env_vars, None),
    "g-password": (case_password, None),
    "h-inline-and-file": (case_inline_and_file, _add_inline_conda),
    "h-inline-only": (case_inline_only, _add_inline_conda),
    "i-no-conda": (case_no_conda, None),
}


def _plain(value: Any) -> Any:
    """ruamel's round-trip types as plain JSON data."""
    return json.loads(json.dumps(value))


def _pip_lines(conda: CondaDependencies) -> list[Any]:
    """The pip list as written, options and comments included, in order (last pip block)."""
    lines: list[Any] = []
    for item in conda._conda_dependencies.get("dependencies") or []:
        if isinstance(item, dict) and "pip" in item:
            lines = list(item["pip"] or [])
    return _plain(lines)


def summarise(case: str, folder: str) -> dict[str, Any]:
    env = Environment.load_from_directory(folder)
    python = env.python
    docker = env.docker
    conda = python.conda_dependencies if python is not None else None
    registry = docker.base_image_registry if docker is not None else None
    platform = docker.platform if docker is not None else None
    return {
        "case": case,
        "files": sorted(os.listdir(folder)),
        "name": env.name,
        "version": env.version,
        "base_image": docker.base_image if docker is not None else None,
        "base_dockerfile": docker.base_dockerfile if docker is not None else None,
        "user_managed_dependencies": python.user_managed_dependencies if python else None,
        "interpreter_path": python.interpreter_path if python is not None else None,
        "conda": None
        if conda is None
        else {
            "channels": _plain(list(conda.conda_channels)),
            "packages": _plain(list(conda.conda_packages)),
            "pip_packages": _plain(list(conda.pip_packages)),
            "pip_options": _plain(list(conda.pip_options)),
            "pip_lines": _pip_lines(conda),
            "variables": _plain(dict(conda._conda_dependencies.get("variables") or {})),
            "python_version": conda.get_python_version(),
        },
        "environment_variables": _plain(dict(env.environment_variables or {})),
        "platform": None
        if platform is None
        else {"os": platform.os, "architecture": platform.architecture},
        "registry": None
        if registry is None
        else {
            "address": registry.address,
            "has_username": bool(registry.username),
            "has_password": bool(registry.password),
        },
    }


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(f"usage: {argv[0]} OUT_DIR", file=sys.stderr)
        return 2
    out = os.path.abspath(argv[1])
    inputs = os.path.join(out, "inputs")
    envs = os.path.join(out, "envs")
    os.makedirs(inputs, exist_ok=True)
    os.makedirs(envs, exist_ok=True)
    summaries = []
    with contextlib.redirect_stdout(sys.stderr):  # the SDK prints; keep stdout for JSON only
        for case, (make, edit) in CASES.items():
            folder = os.path.join(envs, case)
            make(inputs).save_to_directory(folder, overwrite=True)
            if edit is not None:
                edit(folder)
            summary = summarise(case, folder)
            summary["sdk_version"] = VERSION
            summaries.append(summary)
    for summary in summaries:
        print(json.dumps(summary, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
