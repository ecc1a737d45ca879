"""How a built environment maps to an Azure ML environment version (controller/core/azureml.py)."""

from __future__ import annotations

import pytest

from controller.core.azureml import (
    TAG_COMMIT,
    TAG_HASH,
    TAG_PYTHON,
    TAG_SOURCE,
    asset_name,
    azureml_version,
    derived_version,
    python_path,
    same_image,
)
from controller.core.conda import parse_conda
from controller.core.model import BuildSpec, PythonSetup
from controller.core.render import conda_env_dir

HASH = "sha256:" + "ab12" * 16
DIGEST = "sha256:" + "cd34" * 16


def mapped(**changes: object):  # type: ignore[no-untyped-def]
    arguments: dict[str, object] = {
        "name": "sklearn-env",
        "version": None,
        "content_hash": HASH,
        "image": "myacr.azurecr.io/ml/sklearn-env:ab12ab12ab12",
        "digest": DIGEST,
    }
    arguments.update(changes)
    return azureml_version(**arguments)  # type: ignore[arg-type]


def test_the_spec_s_version_is_kept_and_a_missing_one_is_derived_from_the_content():
    assert mapped(version="7").version == "7"
    derived = mapped().version
    assert derived == derived_version(HASH) == "hab12ab12ab12"
    assert mapped().version == derived  # a re-run registers nothing new
    other = mapped(content_hash="sha256:" + "ef56" * 16).version
    assert other != derived  # new content, new version
    assert mapped(version="").version == derived


def test_the_image_is_named_by_its_verified_digest_never_by_a_tag():
    assert mapped().image == f"myacr.azurecr.io/ml/sklearn-env@{DIGEST}"
    assert mapped(image="127.0.0.1:5000/ml/app").image == f"127.0.0.1:5000/ml/app@{DIGEST}"
    with pytest.raises(ValueError, match="not a digest"):
        mapped(digest="latest")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("sklearn-env", "sklearn-env"),
        ("team/app", "team-app"),
        ("my env:1", "my-env-1"),
        ("_hidden", "hidden"),
        ("///", "environment"),
        ("x" * 300, "x" * 255),
    ],
)
def test_names_become_what_azure_ml_allows(name: str, expected: str):
    assert asset_name(name) == expected


def test_tags_carry_the_spec_s_and_envship_s_provenance():
    found = mapped(
        tags={"team": "ml", "stage": 3},
        description="Scikit-learn for training",
        source="https://github.com/org/specs",
        commit="0123abc",
    )
    assert found.description == "Scikit-learn for training"
    assert found.tags == {
        "team": "ml",
        "stage": "3",
        TAG_HASH: HASH,
        TAG_SOURCE: "https://github.com/org/specs",
        TAG_COMMIT: "0123abc",
    }
    assert found.reference == f"azureml:sklearn-env:{found.version}"


def test_python_is_where_envship_s_image_layout_puts_it():
    conda = parse_conda({"dependencies": ["python=3.11", "pip"]}, "conda.yml")
    managed = BuildSpec(python=PythonSetup("conda", conda=conda), base_image="base:1")
    assert python_path(managed) == f"{conda_env_dir(conda)}/bin/python"
    assert python_path(managed).startswith("/azureml-envs/azureml_")  # type: ignore[union-attr]
    user = BuildSpec(python=PythonSetup("user", interpreter="/opt/py/bin/python3"))
    assert python_path(user) == "/opt/py/bin/python3"
    assert python_path(BuildSpec(python=PythonSetup("none"))) is None
    assert mapped(build=user).tags[TAG_PYTHON] == "/opt/py/bin/python3"
    assert TAG_PYTHON not in mapped(build=BuildSpec(python=PythonSetup("none"))).tags


def test_a_registered_version_is_the_same_only_with_the_same_digest():
    wanted = mapped()
    assert same_image(wanted.image, wanted)
    assert not same_image(f"myacr.azurecr.io/ml/sklearn-env@sha256:{'0' * 64}", wanted)
    assert not same_image("myacr.azurecr.io/ml/sklearn-env:latest", wanted)
    assert not same_image(None, wanted)


def test_a_v2_environment_s_description_and_tags_are_read_and_bad_tags_refused(tmp_path):  # type: ignore[no-untyped-def]
    from controller.adapters.folder import FolderTree  # noqa: PLC0415
    from controller.core.discovery import DiscoveryOptions, discover  # noqa: PLC0415

    (tmp_path / "good.yml").write_text(
        "name: described\nversion: 2\nimage: base:1\n"
        "description: Scikit-learn for training\ntags: {team: ml, tier: 3}\n"
    )
    (tmp_path / "bad.yml").write_text("name: bad-tags\nimage: base:1\ntags: [a, b]\n")
    envs = {e.name: e for e in discover(FolderTree(tmp_path), DiscoveryOptions(prefix="p"))}
    good = envs["described"]
    assert good.description == "Scikit-learn for training"
    assert good.tags == (("team", "ml"), ("tier", "3"))
    bad = envs["bad-tags"]
    assert bad.error is not None
    assert "bad.yml" in str(bad.error)
    assert "tags must map names to strings or numbers" in str(bad.error)
