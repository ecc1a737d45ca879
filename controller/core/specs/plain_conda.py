"""A conda file on its own: one environment per file, wherever several share a folder.

Read like `Environment.from_conda_specification` (Python added if missing) on the default base
image. A conda file that a v2 environment names (`conda_file`) belongs to that environment and
is not one of its own; nor is any inside a v2 `build.path`.
"""

from __future__ import annotations

import posixpath
from typing import Any

from controller.core.conda import DEFAULT_PYTHON, is_conda_document, parse_conda
from controller.core.errors import SpecError
from controller.core.model import BuildSpec, Environment, Kind, PythonSetup
from controller.core.naming import implicit_name
from controller.core.specs.base import NO_CLAIMS, Claims, Detection, Folder, Found, ReadSettings
from controller.core.tree import TreeView


class PlainConda:
    kind: Kind = "conda"

    def documents(self, names: frozenset[str]) -> tuple[tuple[str, ...], bool]:
        return (), False  # every YAML file is parsed anyway (see the v2 form)

    def claims(self, path: str, doc: Any) -> Claims:
        return NO_CLAIMS

    def detect(self, folder: Folder) -> Detection | None:
        if folder.built:
            return None
        found = [
            Found(self.kind, path, conda_name(path, folder.root))
            for path, doc in sorted(folder.docs.items())
            if path not in folder.claimed_files and is_conda_document(doc)
        ]
        return Detection(found) if found else None

    def read(self, view: TreeView, found: Found, settings: ReadSettings) -> Environment:
        path = found.path
        doc = view.parsed_yaml(path)
        if doc is None:
            raise SpecError(path, "the conda file could not be read")
        view.depend_on(path)
        conda = parse_conda(doc, path, view.include)
        if not conda.has_python():
            conda = conda.with_dependency(DEFAULT_PYTHON)
        build = BuildSpec(
            python=PythonSetup("conda", "python", conda), base_image=settings.default_base_image
        )
        return Environment(found.name, self.kind, path, (path,), None, build)


def conda_name(path: str, root: str) -> str:
    folder, name = posixpath.split(path)
    return implicit_name(folder, root, stem=posixpath.splitext(name)[0])
