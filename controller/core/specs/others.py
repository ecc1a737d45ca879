"""YAML that is not an environment: what Azure ML repositories keep beside their environments.

Jobs, components, pipelines, endpoints, deployments, models, data assets, compute and
schedules carry a `$schema` naming their own Azure ML schema; CI workflows (GitHub Actions,
Azure Pipelines, GitLab CI) have their own top-level keys. Both are told from the text as well as
from the parsed document, because real files of both kinds often do not parse: deployment and
model YAMLs with `{{ENDPOINT_NAME}}`-style placeholders, workflows with template expressions.
Such files are skipped with a note and never refused, so they cannot block an environment beside
them. A YAML that does not parse and looks like it may be an environment is refused instead.
"""

from __future__ import annotations

import posixpath
import re
from typing import Any

from controller.core.conda import ALLOWED_KEYS as CONDA_KEYS
from controller.core.conda import is_conda_document
from controller.core.errors import SpecError
from controller.core.model import Environment, Kind
from controller.core.naming import implicit_name
from controller.core.specs.aml_v2 import KEYS as V2_KEYS
from controller.core.specs.aml_v2 import SCHEMA_MARK, is_v2_document
from controller.core.specs.base import (
    NO_CLAIMS,
    Claims,
    Detection,
    Folder,
    Found,
    Note,
    ReadSettings,
    Unparsed,
)
from controller.core.tree import TreeView, parent

_SCHEMA_LINE = re.compile(r"""^\s*["']?\$schema["']?\s*:\s*["']?([^\s"'#]+)""", re.MULTILINE)
_SCHEMA_NAME = re.compile(r"/([A-Za-z]+)\.schema\.json$")
_CI_KEYS = frozenset({"jobs", "stages", "steps", "trigger", "pr", "pool", "extends"})
"""Top-level keys of CI workflows (Actions: on + jobs; Pipelines: trigger, pool, stages, steps,
jobs, extends; GitLab CI: stages). No environment form has any of them."""
_ASSET_TYPE = re.compile(r"""^type\s*:\s*["']?([A-Za-z_]+)""", re.MULTILINE)
_TOP_KEY = re.compile(r"^([A-Za-z_$][\w$-]*)\s*:", re.MULTILINE)
_ENVIRONMENT_KEYS = frozenset({"dependencies", "channels", "image", "build", "conda_file"})
"""Top-level keys of environments (conda files, v2 environments): a file with one is never
taken for a CI workflow."""
CI = "a CI workflow or pipeline, not an environment"
_ANY_ENVIRONMENT_KEY = CONDA_KEYS | V2_KEYS
"""Every top-level key a conda file or a v2 environment may have."""


def _schema_note(url: str) -> str:
    match = _SCHEMA_NAME.search(url.rstrip("/"))
    if match is None:
        return "its $schema is not the environment schema: not an environment"
    return f"an Azure ML {match.group(1)} (by its $schema), not an environment"


def not_an_environment(doc: Any, text: str | None, *, name: str = "") -> str | None:
    """Why a YAML file is not an environment (a note), or None when it may be one.

    `doc` is the parsed document (None when it did not parse); `text` its text when it did not
    parse (None otherwise); `name` the file's name.
    """
    if isinstance(doc, dict):
        schema = doc.get("$schema")
        if isinstance(schema, str) and not schema.rstrip("/").endswith(SCHEMA_MARK):
            return _schema_note(schema)
        keys = {key for key in doc if isinstance(key, str)}
        if keys & _CI_KEYS and not keys & _ENVIRONMENT_KEYS:
            return CI
        return None
    if text is None:
        return None
    if name == "asset.yaml":
        asset_type = _ASSET_TYPE.search(text)
        if asset_type and asset_type.group(1) != "environment":
            return f"an azureml-assets asset of type {asset_type.group(1)!r}, not an environment"
        return None
    match = _SCHEMA_LINE.search(text)
    if match and not match.group(1).rstrip("/").endswith(SCHEMA_MARK):
        return f"{_schema_note(match.group(1))}; it does not parse as YAML either (placeholders?)"
    keys = set(_TOP_KEY.findall(text))
    if keys & _CI_KEYS and not keys & _ENVIRONMENT_KEYS:
        return f"{CI}; it does not parse as YAML either"
    if keys and keys.isdisjoint(_ANY_ENVIRONMENT_KEY):
        shown = ", ".join(sorted(keys)[:4])
        return f"does not parse as YAML, and its top-level keys ({shown}) are no environment's"
    return None  # it may be an environment: refused with the parser's problem


class Others:
    """Not a form of environment: the YAML files that are something else, each noted, and the
    ones that do not parse but may be environments, each refused on its own."""

    kind: Kind = "unknown"

    def documents(self, names: frozenset[str]) -> tuple[tuple[str, ...], bool]:
        return (), False  # the v2 form has every YAML file parsed

    def claims(self, path: str, doc: Any) -> Claims:
        return NO_CLAIMS

    def detect(self, folder: Folder) -> Detection | None:
        detection = Detection()
        for path, doc in sorted(folder.docs.items()):
            if not path.endswith((".yml", ".yaml")):
                continue
            if isinstance(doc, Unparsed):
                if path in folder.claimed_files:
                    continue  # reported by the environment that names it
                kept = folder.kept.get(path)
                if kept is not None:  # a v2 environment that broke: under its name, refused
                    detection.found.append(Found(kept.kind, path, kept.name, error=doc.error))
                    continue
                if doc.not_environment is not None:
                    detection.notes.append(Note(path, doc.not_environment))
                    continue
                stem = posixpath.splitext(posixpath.basename(path))[0]
                name = implicit_name(parent(path), folder.root, stem=stem)
                detection.found.append(Found(self.kind, path, name, error=doc.error))
            elif not is_v2_document(doc) and not is_conda_document(doc):
                reason = not_an_environment(doc, None)
                if reason is not None:
                    detection.notes.append(Note(path, reason))
        return detection if detection.found or detection.notes else None

    def read(self, view: TreeView, found: Found, settings: ReadSettings) -> Environment:
        raise SpecError(found.path, "not an environment")  # pragma: no cover - never queued
