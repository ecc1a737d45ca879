"""Curated environments kept as Azure/azureml-assets keeps them: one folder per asset.

- `asset.yaml`: `type: environment`, `name`, `version` (`auto`: the release picks the next),
  `spec` (the v2 YAML) and `extra_config` (the environment's image settings);
- `environment.yaml`: `image.name`, `image.os`, `image.context` (`dir`, `dockerfile`,
  `template_files`) and `image.publish` (`location: mcr`);
- `spec.yaml`: a v2 environment YAML whose values are template tags filled from the two files
  above (`{{asset.name}}`, `{{image.context.path}}`, ...; see `controller.core.templates`);
- the context folder: the build context; its template files may look values up when the image
  is built (`{{latest-image-tag}}`, `{{latest-pypi-version}}`).

As the tooling does, the image is built from `environment.yaml`'s context (the spec's own
`build` is only used to register the release, and is not read); an asset with no context is the
spec's `image` as it is.

Read as the asset tooling reads them: the name and version come from `asset.yaml` (or, when it
has none, from the spec); the folder and everything below it (context, tests) belong to the
asset, so nothing inside is an environment of its own. An `asset.yaml` of another type
(component, model, data, ...) is noted and its folder skipped likewise.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, replace
from typing import Any

from controller.core.documents import decode_text, expect_mapping, load_yaml, optional_str
from controller.core.errors import SpecError
from controller.core.model import Environment, Kind
from controller.core.specs.aml_v2 import read_aml_v2
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
from controller.core.specs.common import check_build_dockerfile
from controller.core.templates import find, render
from controller.core.tree import TreeView, encloses, join, normalize_reference

ASSET = "asset.yaml"
EXTRA_CONFIG = "environment.yaml"
ENVIRONMENT = "environment"
VERSION_AUTO = "auto"
DEFAULT_DOCKERFILE = "Dockerfile"
PUBLISH_HOSTNAMES = {"mcr": "mcr.microsoft.com"}
_ASSET_TAG = re.compile(r"\{\{\s*([^{}]+?)\s*\}\}")


class Assets:
    kind: Kind = "azureml-asset"

    def documents(self, names: frozenset[str]) -> tuple[tuple[str, ...], bool]:
        if ASSET not in names:
            return (), False
        return ((ASSET, EXTRA_CONFIG) if EXTRA_CONFIG in names else (ASSET,)), True

    def claims(self, path: str, doc: Any) -> Claims:
        """An asset's build context outside its own folder (`image.context.dir: ../x`)."""
        if posixpath.basename(path) != EXTRA_CONFIG or not isinstance(doc, dict):
            return NO_CLAIMS
        image = doc.get("image")
        context = image.get("context") if isinstance(image, dict) else None
        folder = context.get("dir") if isinstance(context, dict) else None
        if not isinstance(folder, str) or not folder.startswith(".."):
            return NO_CLAIMS
        try:
            target = normalize_reference(posixpath.dirname(path), folder, origin=path)
        except SpecError:
            return NO_CLAIMS
        if encloses(target, posixpath.dirname(path)):
            return NO_CLAIMS  # a context above the asset: the environments in it stay so
        return Claims(folders=((target, "context"),))

    def detect(self, folder: Folder) -> Detection | None:
        if ASSET not in folder.names:
            return None
        path = join(folder.path, ASSET)
        doc = folder.docs.get(path)
        if isinstance(doc, Unparsed):
            if doc.not_environment is not None:
                notes = [Note(path, doc.not_environment)]
                return Detection(notes=notes, final=True, owns_subtree=True)
            found = Found(self.kind, folder.path, folder.implicit_name, error=doc.error)
            return Detection([found], final=True, owns_subtree=True)
        kind = doc.get("type") if isinstance(doc, dict) else None
        if not isinstance(doc, dict) or kind != ENVIRONMENT:
            text = f"an azureml-assets asset of type {kind!r}, not an environment"
            return Detection(notes=[Note(path, text)], final=True, owns_subtree=True)
        given = doc.get("name")
        name = given if isinstance(given, str) and given.strip() else folder.implicit_name
        return Detection([Found(self.kind, folder.path, name)], final=True, owns_subtree=True)

    def read(self, view: TreeView, found: Found, settings: ReadSettings) -> Environment:
        folder = found.path
        asset = _Asset.of(view, folder)
        image = _image_section(view, asset.config_path)
        context = image["context"]
        context_dir = optional_str(context.get("dir"), asset.config_path, "image.context.dir")
        context_path = (
            normalize_reference(folder, context_dir, origin=asset.config_path)
            if context_dir
            else None
        )
        dockerfile = (
            optional_str(context.get("dockerfile"), asset.config_path, "image.context.dockerfile")
            or DEFAULT_DOCKERFILE
        )
        templates = context.get("template_files", [DEFAULT_DOCKERFILE])
        if not isinstance(templates, list) or not all(isinstance(t, str) for t in templates):
            raise SpecError(
                asset.config_path, "image.context.template_files must be a list of files"
            )
        location = image["publish"].get("location")
        data: dict[str, Any] = {
            "asset": {"name": asset.name, "version": asset.version},
            "image": {
                "name": image.get("name"),
                "publish": {"hostname": PUBLISH_HOSTNAMES.get(str(location))},
            },
        }
        if context_dir:
            data["image"]["context"] = {"path": context_dir}
            data["image"]["dockerfile"] = {"path": dockerfile}
        spec = _spec(view, asset, data, context_dir)
        raw_image = spec.get("image")
        looked_up = find((), (), raw_image) if isinstance(raw_image, str) else ()
        for placeholder in looked_up:  # checked as IMAGE:latest here, looked up when built
            spec["image"] = str(spec["image"]).replace(
                placeholder.text, f"{placeholder.subject}:latest"
            )
        env = read_aml_v2(view, asset.spec_path, spec, check_from=False)
        build = env.build
        if build is not None:
            if looked_up:
                build = replace(build, base_image=raw_image)
            build = replace(build, placeholders=find(build.context, templates, build.base_image))
            if context_path is not None and not build.placeholders:
                check_build_dockerfile(build, context_path)
        files = (asset.path, asset.config_path, *env.files)
        return replace(
            env, kind=self.kind, path=folder, files=files, build=build, name=env.name or found.name
        )


@dataclass(frozen=True, slots=True)
class _Asset:
    """What `asset.yaml` says."""

    path: str
    name: str | None
    version: str | None
    """None for `version: auto`."""
    auto: bool
    spec_path: str
    config_path: str

    @classmethod
    def of(cls, view: TreeView, folder: str) -> _Asset:
        path = join(folder, ASSET)
        asset = expect_mapping(view.parsed_yaml(path), path, "asset.yaml")
        view.depend_on(path)
        name = optional_str(asset.get("name"), path, "name")
        version = optional_str(asset.get("version"), path, "version")
        spec_ref = optional_str(asset.get("spec"), path, "spec")
        config_ref = optional_str(asset.get("extra_config"), path, "extra_config")
        if not spec_ref:
            raise SpecError(path, "spec is required (the environment's spec.yaml)")
        if not config_ref:
            raise SpecError(path, "extra_config is required (the environment.yaml)")
        auto = version == VERSION_AUTO
        return cls(
            path,
            name,
            None if auto else version,
            auto,
            normalize_reference(folder, spec_ref, origin=path),
            normalize_reference(folder, config_ref, origin=path),
        )


def _spec(
    view: TreeView, asset: _Asset, data: dict[str, Any], context_dir: str | None
) -> dict[str, Any]:
    """The asset's spec, its tags filled, as a v2 environment document."""
    path = asset.spec_path
    text = render(decode_text(view.read_file(path, origin=asset.path), path), data)
    spec = expect_mapping(
        load_yaml(text.encode(), path, max_nodes=view.limits.max_yaml_nodes),
        path,
        "the asset's spec",
    )
    if context_dir:
        # The tooling builds the image from environment.yaml's context; the spec's own `build`
        # only matters when the released environment is registered (and may not even render).
        here = posixpath.dirname(path) or "."
        local = posixpath.relpath(join(posixpath.dirname(asset.path), context_dir) or ".", here)
        dockerfile = data["image"]["dockerfile"]["path"]
        spec = {key: value for key, value in spec.items() if key not in ("build", "image")}
        spec["build"] = {"path": local, "dockerfile_path": dockerfile}
    if not isinstance(spec.get("name"), str) or "{{" in spec["name"]:
        spec["name"] = asset.name
    if asset.auto or "{{" in str(spec.get("version", "")):
        spec["version"] = asset.version
    leftover = _unfilled(spec)
    if leftover:
        why = " ('version: auto' leaves it to the release)" if "asset.version" in leftover else ""
        raise SpecError(path, f"{leftover} has no value{why}")
    return spec


def _image_section(view: TreeView, config_path: str) -> dict[str, Any]:
    """`image` of environment.yaml, with `context` and `publish` as mappings."""
    config = expect_mapping(
        load_yaml(
            view.read_file(config_path, origin=config_path),
            config_path,
            max_nodes=view.limits.max_yaml_nodes,
        ),
        config_path,
        "environment.yaml",
    )
    image = expect_mapping(config.get("image"), config_path, "image")
    os_name = image.get("os", "linux")
    if str(os_name).lower() != "linux":
        raise SpecError(
            config_path, f"image.os {os_name!r} is not supported; envship builds Linux images"
        )
    for key in ("context", "publish"):
        image[key] = expect_mapping(image.get(key) or {}, config_path, f"image.{key}")
    return image


def _unfilled(spec: dict[str, Any]) -> str | None:
    """The first asset tag left in the values that make the image (image, build, conda_file);
    `{{latest-...}}` tags are looked up when the image is built."""
    for key in ("image", "build", "conda_file"):
        value = spec.get(key)
        texts = value.values() if isinstance(value, dict) else [value]
        for text in texts:
            if not isinstance(text, str):
                continue
            for match in _ASSET_TAG.finditer(text):
                if not match.group(1).startswith("latest-"):
                    return f"{key}: {match.group(0)}"
    return None
