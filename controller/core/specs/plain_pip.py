"""A folder whose only spec is `requirements.txt`.

Read like `Environment.from_pip_requirements`: azureml-core's default conda template with these
pip lines, on the default base image. Not beside a conda file (that is the folder's environment),
nor beside a YAML that may be one and does not parse: envship never builds a fallback instead.
"""

from __future__ import annotations

from typing import Any

from controller.core.conda import CondaSpec
from controller.core.documents import decode_text
from controller.core.model import BuildSpec, Environment, Kind, PythonSetup
from controller.core.requirements import parse_requirements_file
from controller.core.specs.base import NO_CLAIMS, Claims, Detection, Folder, Found, ReadSettings
from controller.core.tree import TreeView, join

REQUIREMENTS = "requirements.txt"
PIP_TEMPLATE = CondaSpec(
    channels=("anaconda", "conda-forge"),
    dependencies=("pip", "python=3.8.13"),
    pip=(),
    variables=(),
)
"""azureml-core's default conda template, which `from_pip_requirements` fills with pip lines."""


class PlainPip:
    kind: Kind = "pip"

    def documents(self, names: frozenset[str]) -> tuple[tuple[str, ...], bool]:
        return (), False

    def claims(self, path: str, doc: Any) -> Claims:
        return NO_CLAIMS

    def detect(self, folder: Folder) -> Detection | None:
        if folder.built or REQUIREMENTS not in folder.names:
            return None
        if any(f.kind == "conda" or (f.error and f.kind == "unknown") for f in folder.found):
            return None
        return Detection([Found(self.kind, folder.path, folder.implicit_name)])

    def read(self, view: TreeView, found: Found, settings: ReadSettings) -> Environment:
        path = join(found.path, REQUIREMENTS)
        text = decode_text(view.read_file(path, origin=path), path)
        lines = parse_requirements_file(text, path, view.include)
        conda = CondaSpec(PIP_TEMPLATE.channels, PIP_TEMPLATE.dependencies, tuple(lines), ())
        build = BuildSpec(
            python=PythonSetup("conda", "python", conda), base_image=settings.default_base_image
        )
        return Environment(found.name, self.kind, found.path, (path,), None, build)
