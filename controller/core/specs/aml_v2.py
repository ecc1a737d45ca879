"""Azure ML v2 environment YAML (azure-ai-ml's `Environment`).

Several may live in one folder; `conda_file` and `build.path` are relative to the YAML and may
point into sibling folders, but never out of the repository. Like the SDK, unknown keys are
refused, exactly one of `image` and `build` is required, and `conda_file` goes with `image`.
The pre-GA shape (`docker.image`, `conda_file: file:...`) is refused with the modern spelling.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from controller.core.conda import CondaSpec, is_conda_document, parse_conda
from controller.core.documents import expect_mapping, load_yaml, optional_str
from controller.core.errors import SpecError
from controller.core.model import BuildSpec, Environment, Kind, PythonSetup
from controller.core.naming import check_image_reference, implicit_name
from controller.core.specs.base import Claims, Detection, Folder, Found, ReadSettings
from controller.core.specs.common import check_build_dockerfile, collect_context, platform_of
from controller.core.tree import TreeView, encloses, join, normalize_reference, parent

SCHEMA_MARK = "environment.schema.json"
KEYS = frozenset(
    {
        "$schema",
        "name",
        "version",
        "description",
        "tags",
        "properties",
        "image",
        "conda_file",
        "build",
        "inference_config",
        "os_type",
        "datastore",
        "id",
        "creation_context",
        "intellectual_property",
        "latest_version",
    }
)
BUILD_KEYS = frozenset({"path", "dockerfile_path"})
_SPEC_KEYS = frozenset({"image", "build", "conda_file", "docker"})


def is_v2_document(value: Any) -> bool:
    """True for a YAML document that is (or tries to be) an Azure ML v2 environment."""
    if not isinstance(value, dict) or is_conda_document(value):
        return False
    schema = value.get("$schema")
    if isinstance(schema, str):
        return schema.rstrip("/").endswith(SCHEMA_MARK)
    return "name" in value and any(key in value for key in _SPEC_KEYS)


YAML_SUFFIXES = (".yml", ".yaml")


class AmlV2:
    """Every YAML file in a folder that is an Azure ML v2 environment: one environment each.

    Its `conda_file` and `build.path` belong to it (they are not environments of their own);
    a folder with a v2 environment holds no plain environment besides.
    """

    kind: Kind = "aml-v2"

    def documents(self, names: frozenset[str]) -> tuple[tuple[str, ...], bool]:
        return tuple(sorted(n for n in names if n.endswith(YAML_SUFFIXES))), False

    def claims(self, path: str, doc: Any) -> Claims:
        if not is_v2_document(doc):
            return Claims()
        conda, build = referenced_paths(doc, path)
        if build is not None and encloses(build, parent(path)):
            build = None  # a context above the spec: the environments in it stay environments
        return Claims((conda,) if conda else (), ((build, "build"),) if build is not None else ())

    def detect(self, folder: Folder) -> Detection | None:
        found = []
        for path, doc in sorted(folder.docs.items()):
            if is_v2_document(doc):
                name = doc.get("name")
                if not isinstance(name, str) or not name.strip():
                    stem = posixpath.splitext(posixpath.basename(path))[0]
                    name = implicit_name(parent(path), folder.root, stem=stem)
                found.append(Found(self.kind, path, name))
        return Detection(found, final=True) if found else None

    def read(self, view: TreeView, found: Found, settings: ReadSettings) -> Environment:
        return read_aml_v2(view, found.path, view.parsed_yaml(found.path))


def referenced_paths(value: Any, yaml_path: str) -> tuple[str | None, str | None]:
    """(conda file, build folder) a v2 document points at, as tree paths, when well-formed."""
    if not isinstance(value, dict):
        return None, None
    folder = parent(yaml_path)
    conda: str | None = None
    build: str | None = None
    try:
        if isinstance(value.get("conda_file"), str):
            conda = normalize_reference(folder, value["conda_file"], origin=yaml_path)
        section = value.get("build")
        if isinstance(section, dict):
            # `local_path` is the pre-GA spelling: refused, but its folder is still not an env.
            path = section.get("path", section.get("local_path"))
            if isinstance(path, str):
                build = normalize_reference(folder, path, origin=yaml_path)
    except SpecError:
        pass
    return conda, build


def _refuse_pre_ga(doc: dict[str, Any], path: str) -> None:
    hints = []
    if "docker" in doc:
        hints.append("'docker: {image: ...}' is now 'image: ...'")
    conda_file = doc.get("conda_file")
    if isinstance(conda_file, str) and conda_file.startswith("file:"):
        hints.append("'conda_file: file:PATH' is now 'conda_file: PATH'")
    build = doc.get("build")
    if isinstance(build, dict) and "local_path" in build:
        hints.append("'build.local_path' is now 'build.path'")
    if hints:
        raise SpecError(path, "pre-GA environment YAML is not accepted: " + "; ".join(hints))


def _conda(view: TreeView, doc: dict[str, Any], path: str, files: list[str]) -> CondaSpec:
    raw = doc["conda_file"]
    if isinstance(raw, dict):
        return parse_conda(raw, path, view.include)
    reference = optional_str(raw, path, "conda_file") or ""
    if "://" in reference or reference.startswith("azureml:"):
        raise SpecError(path, f"conda_file {reference!r} is remote; keep the conda file in git")
    conda_path = normalize_reference(parent(path), reference, origin=path)
    parsed = view.parsed_yaml(conda_path)
    if parsed is not None:  # read and parsed by discovery already
        view.depend_on(conda_path)
        files.append(conda_path)
        return parse_conda(parsed, conda_path, view.include)
    data = view.read_file(conda_path, origin=path)
    files.append(conda_path)
    return parse_conda(
        load_yaml(data, conda_path, max_nodes=view.limits.max_yaml_nodes),
        conda_path,
        view.include,
    )


def read_aml_v2(view: TreeView, path: str, doc: Any, *, check_from: bool = True) -> Environment:
    """Read the v2 environment YAML at `path`, already parsed into `doc`. `check_from`: refuse
    a build whose Dockerfile cannot be built as written (off while templates are unfilled)."""
    doc = expect_mapping(doc, path, "the environment YAML")
    _refuse_pre_ga(doc, path)
    unknown = sorted(set(doc) - KEYS)
    if unknown:
        raise SpecError(
            path, f"unknown keys {', '.join(unknown)} (the Azure ML SDK refuses them too)"
        )
    name = optional_str(doc.get("name"), path, "name")
    if not name:
        raise SpecError(path, "the environment has no name")
    version = optional_str(doc.get("version"), path, "version")
    files = [path]
    has_image = doc.get("image") is not None
    has_build = doc.get("build") is not None
    if has_image == has_build:
        raise SpecError(path, "set exactly one of 'image' and 'build'")
    platform = platform_of(doc.get("os_type"), None, path)

    if has_image:
        image = check_image_reference(optional_str(doc["image"], path, "image") or "", path)
        if doc.get("conda_file") is None:
            setup = PythonSetup("none")
        else:
            setup = PythonSetup("conda", "python", _conda(view, doc, path, files))
        build = BuildSpec(python=setup, base_image=image, platform=platform)
        return _described(Environment(name, "aml-v2", path, tuple(files), version, build), doc)

    if doc.get("conda_file") is not None:
        raise SpecError(
            path, "conda_file goes with 'image'; with 'build', install packages in the Dockerfile"
        )
    build, context_files = _build(view, doc, path, platform, check_from=check_from)
    env = Environment(name, "aml-v2", path, (*files, *context_files), version, build)
    return _described(env, doc)


def _described(env: Environment, doc: Mapping[str, Any]) -> Environment:
    """`env` with the YAML's description and tags (what publishing carries to Azure ML)."""
    raw = doc.get("description")
    description = str(raw).strip() if isinstance(raw, str | int | float) else None
    tags = doc.get("tags")
    if tags is None:
        tags = {}
    if not isinstance(tags, Mapping) or not all(
        isinstance(v, str | int | float | bool) for v in tags.values()
    ):
        raise SpecError(env.path, "tags must map names to strings or numbers")
    pairs = tuple(sorted((str(k), str(v)) for k, v in tags.items()))
    return replace(env, description=description, tags=pairs)


def _build(
    view: TreeView, doc: dict[str, Any], path: str, platform: str, *, check_from: bool
) -> tuple[BuildSpec, list[str]]:
    """The build of a `build:` section, and the repository paths of its context."""
    section = expect_mapping(doc["build"], path, "build")
    unknown = sorted(set(section) - BUILD_KEYS)
    if unknown:
        raise SpecError(path, f"unknown keys in build: {', '.join(unknown)}")
    reference = optional_str(section.get("path"), path, "build.path")
    if not reference:
        raise SpecError(path, "build.path is required")
    if "://" in reference or reference.startswith("azureml:"):
        raise SpecError(path, f"build.path {reference!r} is remote; keep the build context in git")
    folder = view.resolve(normalize_reference(parent(path), reference, origin=path), origin=path)
    if not view.is_folder(folder) or view.has_entry(folder):
        raise SpecError(path, f"build.path {reference!r} is not a folder in the repository")
    dockerfile = optional_str(section.get("dockerfile_path"), path, "build.dockerfile_path")
    dockerfile_path = normalize_reference("", dockerfile or "Dockerfile", origin=path)
    context = collect_context(view, folder, origin=path)
    dockerfile_file = next(
        (f for f in context if f.path == dockerfile_path and f.link_target is None), None
    )
    if dockerfile_file is None:
        raise SpecError(path, f"build.path {reference!r} has no {dockerfile_path}")
    if len(dockerfile_file.data) > view.limits.max_spec_file_bytes:
        raise SpecError(
            join(folder, dockerfile_path),
            f"file is over the limit of {view.limits.max_spec_file_bytes} bytes",
        )
    build = BuildSpec(
        python=PythonSetup("user"),
        dockerfile_path=dockerfile_path,
        context=context,
        platform=platform,
    )
    if check_from:
        check_build_dockerfile(build, folder, view.documents)
    return build, [join(folder, f.path) for f in context]
