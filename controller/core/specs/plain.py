"""The plain forms, one environment per folder.

- `requirements.txt` alone: like `Environment.from_pip_requirements` (the default conda
  template with these pip lines) on the default base image.
- a conda file alone: like `Environment.from_conda_specification` (Python added if missing).
- a `Dockerfile`: the folder is the build context; Python is the image's own (user managed).
"""

from __future__ import annotations

from typing import Any

from controller.core.conda import DEFAULT_PYTHON, CondaSpec, parse_conda
from controller.core.documents import decode_text
from controller.core.errors import SpecError
from controller.core.model import BuildSpec, Environment, PythonSetup
from controller.core.requirements import parse_requirements_file
from controller.core.specs.common import collect_context
from controller.core.tree import TreeView, join

REQUIREMENTS = "requirements.txt"
DOCKERFILE = "Dockerfile"
PIP_TEMPLATE = CondaSpec(
    channels=("anaconda", "conda-forge"),
    dependencies=("pip", "python=3.8.13"),
    pip=(),
    variables=(),
)
"""azureml-core's default conda template, which `from_pip_requirements` fills with pip lines."""


def folder_name(folder: str) -> str:
    return folder.rsplit("/", 1)[-1] if folder else "root"


def read_pip(view: TreeView, folder: str, base_image: str) -> Environment:
    path = join(folder, REQUIREMENTS)
    lines = parse_requirements_file(decode_text(view.read_file(path, origin=path), path), path)
    conda = CondaSpec(PIP_TEMPLATE.channels, PIP_TEMPLATE.dependencies, tuple(lines), ())
    build = BuildSpec(python=PythonSetup("conda", "python", conda), base_image=base_image)
    return Environment(folder_name(folder), "pip", folder, (path,), None, build)


def read_conda(folder: str, path: str, doc: Any, base_image: str) -> Environment:
    conda = parse_conda(doc, path)
    if not conda.has_python():
        conda = conda.with_dependency(DEFAULT_PYTHON)
    build = BuildSpec(python=PythonSetup("conda", "python", conda), base_image=base_image)
    return Environment(folder_name(folder), "conda", folder, (path,), None, build)


def read_dockerfile(view: TreeView, folder: str) -> Environment:
    path = join(folder, DOCKERFILE)
    context = collect_context(view, folder, origin=path)
    dockerfile = next((f for f in context if f.path == DOCKERFILE), None)
    if dockerfile is None or dockerfile.link_target is not None:
        raise SpecError(path, "the Dockerfile must be a regular file")
    if len(dockerfile.data) > view.limits.max_spec_file_bytes:
        raise SpecError(path, f"file is over the limit of {view.limits.max_spec_file_bytes} bytes")
    files = tuple(join(folder, f.path) for f in context)
    build = BuildSpec(python=PythonSetup("user"), dockerfile_path=DOCKERFILE, context=context)
    return Environment(folder_name(folder), "dockerfile", folder, files, None, build)
