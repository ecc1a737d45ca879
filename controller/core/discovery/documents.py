"""Parsing the documents forms detect with: YAML files and Dockerfiles, once per blob."""

from __future__ import annotations

import posixpath
from typing import Any

from controller.core.documents import load_yaml
from controller.core.errors import SpecError
from controller.core.specs.base import Unparsed
from controller.core.specs.others import not_an_environment
from controller.core.specs.plain_dockerfile import DOCKERFILE, dockerfile_facts
from controller.core.tree import TreeView


def parse_document(view: TreeView, paths: list[str], index: int) -> Any:
    """The document `paths[index]`: YAML data, `DockerfileFacts`, or `Unparsed` (with, for a
    YAML file, why it is not an environment when its text tells)."""
    path = paths[index]
    try:
        data = view.read_file(path, origin=path)
    except SpecError as exc:
        return Unparsed(exc)
    name = posixpath.basename(path)
    try:
        if name == DOCKERFILE:
            return dockerfile_facts(data, path)
        return load_yaml(data, path, max_nodes=view.limits.max_yaml_nodes)
    except SpecError as exc:
        if name == DOCKERFILE:
            return Unparsed(exc)
        text = data.decode("utf-8", errors="replace")
        return Unparsed(exc, not_an_environment(None, text, name=name))
