"""Discovery rules: which files make an environment, what they are called, what they claim."""

from __future__ import annotations

import json

import pytest

from controller.core.discovery import DiscoveryOptions, discover
from controller.core.tree import Blob, MemoryTree
from tests.support.helpers import plan_files

V1 = json.dumps(
    {
        "name": "Saved-Env",
        "version": "4",
        "python": {"userManagedDependencies": False},
        "docker": {"baseImage": "mcr.microsoft.com/azureml/base:1"},
    }
)
CONDA = "channels: [conda-forge]\ndependencies: [python=3.11, numpy]\n"


def test_each_form_is_found_with_its_kind_and_name():
    items = plan_files(
        {
            "v1/azureml_environment.json": V1,
            "v1/conda_dependencies.yml": CONDA,
            "conda/environment.yml": CONDA,
            "pip/requirements.txt": "numpy\n",
            "docker/Dockerfile": "FROM busybox\n",
            "docker/requirements.txt": "part of the context\n",
            "v2/a.yml": "name: a\nimage: busybox:1\nconda_file: ../shared/conda.yml\n",
            "v2/b.yml": "name: b\nbuild:\n  path: ../shared/ctx\n",
            "shared/conda.yml": CONDA,
            "shared/ctx/Dockerfile": "FROM busybox\n",
            "shared/ctx/sub/requirements.txt": "x\n",
        }
    )
    found = {path: (i.env.kind, i.env.name, i.action) for path, i in items.items()}
    assert found == {
        "v1": ("aml-v1", "Saved-Env", "build"),
        "conda/environment.yml": ("conda", "conda", "build"),
        "pip": ("pip", "pip", "build"),
        "docker": ("dockerfile", "docker", "build"),
        "v2/a.yml": ("aml-v2", "a", "build"),
        "v2/b.yml": ("aml-v2", "b", "build"),
    }
    assert items["v1"].env.repository == "envship/saved-env"
    assert items["v1"].image == f"envship/saved-env:{items['v1'].hash[7:39]}"


def test_v1_conda_file_overrides_inline_and_missing_keys_mean_none():
    doc = json.loads(V1)
    doc["python"]["condaDependencies"] = {"dependencies": ["python=3.7"]}
    items = plan_files(
        {"e/azureml_environment.json": json.dumps(doc), "e/conda_dependencies.yml": CONDA}
    )
    conda = items["e"].env.build.python.conda
    assert conda.dependencies == ("numpy", "python=3.11")
    no_base = plan_files({"e/azureml_environment.json": '{"name": "x", "python": {}}'})["e"]
    assert "no base image" in no_base.error


def test_v1_basedockerfile_replaces_the_base_image_and_user_managed_skips_conda():
    doc = json.loads(V1)
    doc["python"] = {"userManagedDependencies": True, "interpreterPath": "/opt/py/bin/python"}
    env = plan_files(
        {
            "e/azureml_environment.json": json.dumps(doc),
            "e/BaseDockerfile": "FROM ubuntu:22.04\n",
            "e/conda_dependencies.yml": CONDA,
        }
    )["e"].env
    assert env.build.base_image is None
    assert env.build.context[0].data == b"FROM ubuntu:22.04\n"
    assert env.build.python.mode == "user"
    assert env.build.python.interpreter == "/opt/py/bin/python"


def test_registry_address_prefixes_a_relative_base_image():
    doc = json.loads(V1)
    doc["docker"]["baseImage"] = "team/base:3"
    doc["docker"]["baseImageRegistry"] = {"address": "myacr.azurecr.io", "username": "u"}
    build = plan_files({"e/azureml_environment.json": json.dumps(doc)})["e"].env.build
    assert build.base_image == "myacr.azurecr.io/team/base:3"
    assert build.base_registry == "myacr.azurecr.io"


def test_plain_conda_gets_python_when_missing_and_pip_gets_the_sdk_template():
    items = plan_files(
        {"c/env.yml": "dependencies: [numpy]\n", "p/requirements.txt": "pandas\n# c\n"}
    )
    assert "python=3.10.18" in items["c/env.yml"].env.build.python.conda.dependencies
    conda = items["p"].env.build.python.conda
    assert conda.channels == ("anaconda", "conda-forge")
    assert conda.dependencies == ("pip", "python=3.8.13")
    assert conda.pip == ("pandas",)


def test_root_ignore_and_hidden_paths():
    files = {
        "specs/a/requirements.txt": "x\n",
        "specs/skip/requirements.txt": "x\n",
        "specs/.hidden/requirements.txt": "x\n",
        "elsewhere/requirements.txt": "x\n",
    }
    tree = MemoryTree({k: v.encode() for k, v in files.items()})
    envs = discover(tree, DiscoveryOptions(root="specs", ignore=("skip/",)))
    assert [e.path for e in envs] == ["specs/a"]
    with pytest.raises(ValueError, match="not a folder"):
        discover(tree, DiscoveryOptions(root="missing"))


def test_v2_may_reference_outside_the_root_but_not_outside_the_repository():
    items = plan_files(
        {
            "specs/a.yml": "name: a\nimage: busybox:1\nconda_file: ../shared/c.yml\n",
            "specs/b.yml": "name: b\nimage: busybox:1\nconda_file: ../../c.yml\n",
            "shared/c.yml": CONDA,
        },
        root="specs",
    )
    assert items["specs/a.yml"].action == "build"
    assert "leaves the repository" in items["specs/b.yml"].error


def test_a_build_context_above_its_spec_does_not_hide_the_environments_in_it():
    # `build.path: ..` takes the team folder as the context; its neighbours stay environments,
    # while a context folder of its own (beside the spec, below it) is still no environment.
    items = plan_files(
        {
            "team/app/env.yml": (
                "name: app\nbuild:\n  path: ..\n  dockerfile_path: app/Dockerfile\n"
            ),
            "team/app/Dockerfile": "FROM busybox:1\n",
            "team/other/requirements.txt": "numpy\n",
            "team/tool/env.yml": "name: tool\nbuild:\n  path: docker\n",
            "team/tool/docker/Dockerfile": "FROM busybox:1\n",
        }
    )
    assert items["team/app/env.yml"].action == "build"
    assert items["team/other"].action == "build"
    assert items["team/tool/env.yml"].action == "build"
    assert "team/tool/docker" not in items


def test_every_conda_file_of_a_folder_is_an_environment_named_by_its_file():
    items = plan_files(
        {
            "nb/train.yml": CONDA,
            "nb/score.yml": "dependencies: [python=3.10, flask]\n",
            "nb/environment.yml": "dependencies: [python=3.9]\n",
            "nb/requirements.txt": "not an environment beside conda files\n",
        }
    )
    names = {path: (i.env.name, i.action) for path, i in items.items()}
    assert names == {
        "nb/environment.yml": ("nb", "build"),
        "nb/score.yml": ("nb-score", "build"),
        "nb/train.yml": ("nb-train", "build"),
    }


def test_unrelated_yaml_is_noted_and_broken_yaml_that_may_be_an_environment_is_refused():
    tree = MemoryTree(
        {
            "ci/pipeline.yml": b"steps:\n  - run: make\n",
            "ci/deploy.yml": b"on: push\njobs:\n  x: {runs-on: ubuntu, steps: [{run: ${{ a }}]}\n",
            "x/broken.yml": b"name: [unclosed\n",
            "ok/requirements.txt": b"x\n",
            "ok/job.yml": b"$schema: https://azuremlschemas.azureedge.net/latest/commandJob.schema.json\n"
            b"command: python train.py\n",
            "ok/deployment.yml": b"$schema: https://azuremlschemas.azureedge.net/latest/"
            b"managedOnlineDeployment.schema.json\nname: {{DEPLOYMENT_NAME}}\n",
        }
    )
    found = discover(tree)
    assert [(e.path, e.kind, e.ok) for e in found] == [
        ("ok", "pip", True),
        ("x/broken.yml", "unknown", False),
    ]
    assert str(found[1].error).startswith("x/broken.yml: invalid YAML at line")
    notes = {note.path: note.text for note in found.notes}
    assert set(notes) == {"ci/pipeline.yml", "ci/deploy.yml", "ok/job.yml", "ok/deployment.yml"}
    assert notes["ok/job.yml"] == "an Azure ML commandJob (by its $schema), not an environment"
    assert "managedOnlineDeployment" in notes["ok/deployment.yml"]
    assert "does not parse" in notes["ok/deployment.yml"]
    assert "CI workflow" in notes["ci/deploy.yml"]


def test_identical_specs_under_two_names_share_a_hash_not_a_repository():
    items = plan_files({"a/requirements.txt": "numpy\n", "b/requirements.txt": "numpy\n"})
    assert items["a"].hash == items["b"].hash
    assert items["a"].image != items["b"].image
    # built once, then copied across repositories
    assert (items["a"].action, items["b"].action) == ("build", "copy")
    assert items["b"].source == "envship/a"


def test_symlink_inside_the_repository_is_followed():
    items = plan_files(
        {
            "real/env.yml": CONDA,
            "v2.yml": "name: v\nimage: busybox:1\nconda_file: link/env.yml\n",
            "link": Blob(link_target="real"),
        }
    )
    assert items["v2.yml"].action == "build"
