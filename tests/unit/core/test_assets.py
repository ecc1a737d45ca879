"""Curated environments in the azureml-assets layout, and the template tags their tooling fills."""

from __future__ import annotations

from dataclasses import replace

from controller.core.discovery import discover
from controller.core.hashing import content_hash, hash_input
from controller.core.model import BuildSpec, ContextFile, PythonSetup
from controller.core.plan import plan
from controller.core.templates import fill, find, newest_version, render, tag_candidates
from controller.core.tree import MemoryTree

ASSET = """name: acpt-pytorch-2.2-cuda12.1
version: auto
type: environment
spec: spec.yaml
extra_config: environment.yaml
test:
  pytest:
    enabled: true
    pip_requirements: tests/requirements.txt
    tests_dir: tests
categories: ["PyTorch", "Training"]
"""
ENVIRONMENT = """image:
  name: azureml/curated/acpt-pytorch-2.2-cuda12.1
  os: linux
  context:
    dir: context
    dockerfile: Dockerfile
    template_files:
    - Dockerfile
    - requirements.txt
  publish:
    location: mcr
    visibility: public
"""
SPEC = """$schema: https://azuremlschemas.azureedge.net/latest/environment.schema.json
description: >-
  Recommended environment for Deep Learning with PyTorch.
name: "{{asset.name}}"
version: "{{asset.version}}"
build:
  path: "{{image.context.path}}"
  dockerfile_path: "{{image.dockerfile.path}}"
os_type: linux
tags:
  PyTorch: "2.2"
"""
DOCKERFILE = (
    "FROM mcr.microsoft.com/aifx/acpt/stable-ubuntu2204-cu126-py310-torch280:"
    "{{latest-image-tag:biweekly\\.\\d{6}\\.\\d{1}.*}}\n"
    "COPY requirements.txt .\n"
    "RUN pip install -r requirements.txt --no-cache-dir\n"
)
REQUIREMENTS = "azureml-core=={{latest-pypi-version}}\nazureml-mlflow=={{latest-pypi-version}}\n"
FOLDER = "assets/training/general/environments/acpt-pytorch-2.2-cuda12.1"


def curated(**extra: str) -> dict[str, str]:
    files = {
        f"{FOLDER}/asset.yaml": ASSET,
        f"{FOLDER}/environment.yaml": ENVIRONMENT,
        f"{FOLDER}/spec.yaml": SPEC,
        f"{FOLDER}/context/Dockerfile": DOCKERFILE,
        f"{FOLDER}/context/requirements.txt": REQUIREMENTS,
        f"{FOLDER}/tests/requirements.txt": "pytest\n",
        f"{FOLDER}/tests/conda.yaml": "dependencies: [python=3.10]\n",
    }
    files.update(extra)
    return files


def tree(files: dict[str, str]) -> MemoryTree:
    return MemoryTree({path: text.encode() for path, text in files.items()})


def test_a_curated_environment_is_one_environment_named_by_its_asset():
    found = discover(tree(curated()))
    assert len(found) == 1
    env = found[0]
    assert (env.kind, env.name, env.version, env.path) == (
        "azureml-asset",
        "acpt-pytorch-2.2-cuda12.1",
        None,  # version: auto
        FOLDER,
    )
    assert env.error is None
    assert env.build is not None
    assert env.build.dockerfile_path == "Dockerfile"
    assert sorted(f.path for f in env.build.context) == ["Dockerfile", "requirements.txt"]
    looked_up = [(p.file, p.kind, p.subject, p.option) for p in env.build.placeholders]
    assert looked_up == [
        (
            "Dockerfile",
            "image-tag",
            "mcr.microsoft.com/aifx/acpt/stable-ubuntu2204-cu126-py310-torch280",
            "biweekly\\.\\d{6}\\.\\d{1}.*",
        ),
        ("requirements.txt", "pypi-version", "azureml-core", None),
        ("requirements.txt", "pypi-version", "azureml-mlflow", None),
    ]


def test_an_unfilled_curated_environment_is_not_planned_for_a_build():
    item = plan(discover(tree(curated())))[0]
    assert item.action == "failed"
    assert item.error is not None
    assert "{{latest-image-tag}} for mcr.microsoft.com/aifx/acpt/" in item.error
    assert item.hash is None


def test_filled_values_enter_the_context_the_hash_and_a_valid_from():
    env = discover(tree(curated()))[0]
    assert env.build is not None
    values = {
        p: ("biweekly.202511.1" if p.kind == "image-tag" else "1.61.0")
        for p in env.build.placeholders
    }
    filled = fill(env.build, values)
    dockerfile = next(f for f in filled.context if f.path == "Dockerfile").data.decode()
    base = "mcr.microsoft.com/aifx/acpt/stable-ubuntu2204-cu126-py310-torch280"
    assert dockerfile.startswith(f"FROM {base}:biweekly.202511.1\n")
    requirements = next(f for f in filled.context if f.path == "requirements.txt").data.decode()
    assert requirements == "azureml-core==1.61.0\nazureml-mlflow==1.61.0\n"
    assert not filled.placeholders
    newer = fill(env.build, {**values, env.build.placeholders[1]: "1.62.0"})
    assert content_hash(filled) != content_hash(newer)
    assert hash_input(filled)["filled"]["azureml-core=={{latest-pypi-version}}"] == "1.61.0"
    assert plan([replace(env, build=filled)])[0].action == "build"


def test_nothing_inside_an_asset_folder_is_an_environment_of_its_own():
    found = discover(tree(curated(**{f"{FOLDER}/context/conda.yml": "dependencies: [x]\n"})))
    assert [e.path for e in found] == [FOLDER]


def test_assets_of_other_types_are_noted_and_their_folders_skipped():
    files = {
        "assets/components/train/asset.yaml": "type: component\nname: train\nspec: spec.yaml\n",
        "assets/components/train/src/requirements.txt": "numpy\n",
        "assets/models/m/asset.yaml": "type: model\nname: {{model.name}}\n",
        "assets/models/m/environment/conda.yaml": "dependencies: [python=3.10]\n",
    }
    found = discover(tree(files))
    assert list(found) == []
    kind = "an azureml-assets asset of type {!r}, not an environment"
    assert {n.path: n.text for n in found.notes} == {
        "assets/components/train/asset.yaml": kind.format("component"),
        "assets/models/m/asset.yaml": kind.format("model"),
    }


def test_an_image_only_asset_uses_its_image_and_auto_cannot_name_a_published_one():
    files = {
        "a/asset.yaml": "name: pre-built\nversion: '3'\ntype: environment\nspec: spec.yaml\n"
        "extra_config: environment.yaml\n",
        "a/environment.yaml": "image:\n  name: mcr.microsoft.com/cbl-mariner/base/core:2.0\n"
        "  os: linux\n",
        "a/spec.yaml": 'name: "{{asset.name}}"\nversion: "{{asset.version}}"\n'
        'image: "{{image.name}}"\n',
        "b/asset.yaml": "name: curated\nversion: auto\ntype: environment\nspec: spec.yaml\n"
        "extra_config: environment.yaml\n",
        "b/environment.yaml": "image:\n  name: azureml/curated/x\n  os: linux\n  publish:\n"
        "    location: mcr\n",
        "b/spec.yaml": 'name: "{{asset.name}}"\n'
        'image: "{{image.publish.hostname}}/{{image.name}}:{{asset.version}}"\n',
    }
    found = {e.path: e for e in discover(tree(files))}
    assert found["a"].build is not None
    assert (found["a"].name, found["a"].version) == ("pre-built", "3")
    assert found["a"].build.base_image == "mcr.microsoft.com/cbl-mariner/base/core:2.0"
    assert str(found["b"].error) == (
        "b/spec.yaml: image: {{asset.version}} has no value ('version: auto' leaves it to the "
        "release)"
    )


def test_a_build_that_names_the_asset_repository_is_built_from_its_context_here():
    spec = SPEC.replace(
        '"{{image.context.path}}"',
        '"{{asset.repo.url}}#{{asset.repo.commit_hash}}:{{asset.repo.build_context.path}}"',
    )
    env = discover(tree(curated(**{f"{FOLDER}/spec.yaml": spec})))[0]
    assert env.error is None
    assert env.build is not None
    assert sorted(f.path for f in env.build.context) == ["Dockerfile", "requirements.txt"]


def test_render_leaves_tags_without_a_value():
    data = {"asset": {"name": "n", "version": None}, "image": {"name": "i"}}
    assert render("{{asset.name}}:{{ asset.version }} {{image}} {{x.y}}", data) == (
        "n:{{ asset.version }} {{image}} {{x.y}}"
    )


def test_tag_and_version_choices_follow_the_release_tooling():
    tags = [
        "latest",
        "biweekly.202509.1",
        "biweekly.202511.1",
        "biweekly.202511.1-x",
        "20251130.v1",
    ]
    assert tag_candidates(tags, r"biweekly\.\d{6}\.\d{1}") == [
        "biweekly.202511.1",
        "biweekly.202509.1",
    ]
    assert tag_candidates(tags, None)[0] == "biweekly.202511.1-x"  # string order, greatest first
    assert newest_version(["1.9.0", "1.10.0", "1.11.0rc1", "junk"], pre=False) == "1.10.0"
    assert newest_version(["1.9.0", "1.10.0", "1.11.0rc1"], pre=True) == "1.11.0rc1"
    assert newest_version([], pre=False) is None


def test_a_base_image_tag_to_look_up_in_an_image_only_spec():
    image = "mcr.microsoft.com/x/y:{{latest-image-tag}}"
    found = find((), (), image)
    build = BuildSpec(python=PythonSetup("none"), base_image=image, placeholders=found)
    filled = fill(build, {found[0]: "@sha256:" + "c" * 64})
    assert filled.base_image == "mcr.microsoft.com/x/y@sha256:" + "c" * 64
    context = (ContextFile("Dockerfile", b"FROM a:{{latest-image-tag}}\n"),)
    assert find(context, ["Other"]) == ()  # only the template files are filled
