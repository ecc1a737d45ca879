"""Names: explicit where the spec names itself, from the path otherwise, never changed by what
the rest of the repository holds; one name and version, one environment."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.core.discovery import (
    DiscoveryOptions,
    RepositoryConfigError,
    discover,
)
from controller.core.discovery.names import conflict
from controller.core.naming import implicit_name
from controller.core.tree import MemoryTree
from tests.support.helpers import plan_files

CONDA = "channels: [conda-forge]\ndependencies: [python=3.11, numpy]\n"
OTHER = "channels: [conda-forge]\ndependencies: [python=3.10, pandas]\n"


def v2(name: str, image: str = "busybox:1", version: str | None = None) -> str:
    text = f"name: {name}\nimage: {image}\n"
    return text + (f"version: '{version}'\n" if version else "")


def tree(files: dict[str, str]) -> MemoryTree:
    return MemoryTree({path: text.encode() for path, text in files.items()})


@pytest.mark.parametrize(
    ("path", "root", "stem", "name"),
    [
        ("specs/conda-env", "specs", None, "conda-env"),
        ("team-a/train/environment", "", "conda", "team-a-train-environment"),
        (
            "cli/assets/environment/conda-yamls",
            "",
            "pydata",
            "cli-assets-environment-conda-yamls-pydata",
        ),
        ("x/_component_upgrade", "", None, "x-component_upgrade"),
        ("a..b/Has Space", "", "train", "a-b-Has-Space-train"),
        ("specs", "specs", None, "root"),
        ("", "", "conda_dependencies", "root"),
    ],
)
def test_implicit_names_come_from_the_path(path: str, root: str, stem: str | None, name: str):
    assert implicit_name(path, root, stem=stem) == name


def test_folders_of_the_same_name_get_names_of_their_own():
    files = {
        f"cli/endpoints/{example}/environment/conda.yaml": CONDA.replace("numpy", example)
        for example in ("one", "two", "three")
    }
    files["sdk/train/environment/requirements.txt"] = "numpy\n"
    items = plan_files(files)
    assert {p: (i.env.name, i.action) for p, i in items.items()} == {
        "cli/endpoints/one/environment/conda.yaml": ("cli-endpoints-one-environment", "build"),
        "cli/endpoints/two/environment/conda.yaml": ("cli-endpoints-two-environment", "build"),
        "cli/endpoints/three/environment/conda.yaml": ("cli-endpoints-three-environment", "build"),
        "sdk/train/environment": ("sdk-train-environment", "build"),
    }


paths = st.lists(
    st.tuples(st.sampled_from(["a", "b", "env", "environment"]), st.integers(0, 3)),
    min_size=1,
    max_size=6,
    unique=True,
)


@settings(max_examples=100, deadline=None)
@given(paths, paths)
def test_a_name_never_changes_because_folders_elsewhere_come_or_go(
    kept: list[tuple[str, int]], others: list[tuple[str, int]]
):
    def files(chosen: list[tuple[str, int]], prefix: str) -> dict[str, str]:
        return {
            f"{prefix}/{folder}/{depth}/environment/conda.yml": CONDA.replace(
                "numpy", f"{prefix}{folder}{depth}"
            )
            for folder, depth in chosen
        }

    alone = {e.path: e.name for e in discover(tree(files(kept, "kept")))}
    together = {e.path: e.name for e in discover(tree(files(kept, "kept") | files(others, "x")))}
    assert all(together[path] == name for path, name in alone.items())
    assert all(e.ok for e in discover(tree(files(kept, "kept") | files(others, "x"))))


def test_identical_content_under_one_name_is_one_environment_with_every_path():
    items = plan_files(
        {
            "team-a/env.yml": v2("shared"),
            "team-b/env.yml": v2("shared"),
            "team-c/other.yml": v2("solo"),
        }
    )
    assert set(items) == {"team-a/env.yml", "team-c/other.yml"}
    shared = items["team-a/env.yml"]
    assert shared.action == "build"
    assert shared.env.paths == ("team-a/env.yml", "team-b/env.yml")


def test_versions_of_one_name_are_planned_into_one_repository():
    items = plan_files(
        {
            "v1/env.yml": v2("taxi", "busybox:1", version="1"),
            "v2/env.yml": v2("taxi", "busybox:2", version="2"),
        }
    )
    assert {i.env.repository for i in items.values()} == {"envship/taxi"}
    assert [i.action for i in items.values()] == ["build", "build"]
    assert {i.env.status_key for i in items.values()} == {"taxi:1", "taxi:2"}


def test_one_name_and_version_with_different_content_refuses_exactly_those():
    files = {f"copy{n}/env.yml": v2("taxi", f"busybox:{n}") for n in range(6)}
    files["other/env.yml"] = v2("unrelated")
    items = plan_files(files)
    assert items["other/env.yml"].action == "build"
    refused = [items[f"copy{n}/env.yml"] for n in range(6)]
    assert {i.action for i in refused} == {"refused"}
    message = refused[0].error or ""
    assert message.startswith("copy0/env.yml: name 'taxi' is used by 6 environments")
    assert "(copy0/env.yml, copy1/env.yml, copy2/env.yml and 3 more)" in message
    assert "name them apart" in message
    assert len(message) < 300
    assert len({i.env.status_key for i in refused}) == 6  # each its own status entry


def test_the_conflict_message_stays_short_for_long_names_and_paths():
    paths = ["p/" * 60 + str(i) for i in range(50)]
    for origin in ("", paths[0], "x" * 140):
        text = conflict("n" * 200, "v" * 80, paths, origin)
        assert len(origin) + 2 + len(text) < 300
        assert "50 environments with different content" in text


def test_a_refused_spec_never_takes_the_name_of_one_that_builds():
    items = plan_files(
        {
            "ok/env.yml": v2("model"),
            "bad/env.yml": "name: model\nimage: Not A Reference\n",
        }
    )
    assert items["ok/env.yml"].env.status_key == "model"
    assert items["bad/env.yml"].action == "refused"
    assert items["bad/env.yml"].env.status_key == "model@bad/env.yml"


def test_names_in_envship_yaml_name_plain_environments_and_the_spec_wins_otherwise():
    files = {
        "envship.yaml": (
            "root: specs\n"
            "ignore: [drafts/]\n"
            "defaultBaseImage: registry.example.org/base:7\n"
            "names:\n"
            "  specs/train/environment/conda.yaml: trainer\n"
            "  specs/v2.yml: ignored-name\n"
        ),
        "specs/train/environment/conda.yaml": CONDA,
        "specs/v2.yml": v2("named-by-itself"),
        "specs/drafts/requirements.txt": "x\n",
        "outside/requirements.txt": "x\n",
    }
    found = discover(tree(files))
    assert [(e.path, e.name) for e in found] == [
        ("specs/train/environment/conda.yaml", "trainer"),
        ("specs/v2.yml", "named-by-itself"),
    ]
    assert found[0].build is not None
    assert found[0].build.base_image == "registry.example.org/base:7"
    assert [n.path for n in found.notes] == ["specs/v2.yml"]
    assert "names itself 'named-by-itself', which wins" in found.notes[0].text
    # the command line's options win over the file
    assert discover(tree(files), DiscoveryOptions(root="outside"))[0].path == "outside"


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("root: [a]\n", "envship.yaml: root: must be a non-empty string"),
        ("root: ../up\n", "envship.yaml: root: '../up' must be a path inside the repository"),
        ("roots: specs\n", "envship.yaml: roots: unknown key"),
        ("ignore: drafts\n", "envship.yaml: ignore: must be a list of patterns"),
        ("defaultBaseImage: 'Not Valid'\n", "envship.yaml: defaultBaseImage:"),
        ("names:\n  a/b: 'bad name!'\n", "envship.yaml: names.a/b: name 'bad name!' cannot be"),
        ("names: [a]\n", "envship.yaml: names: must map repository paths to names"),
        ("- a\n", "envship.yaml: must be a mapping"),
        ("root: [unclosed\n", "envship.yaml: invalid YAML at line"),
    ],
)
def test_an_invalid_envship_yaml_names_the_key(text: str, words: str):
    with pytest.raises(RepositoryConfigError) as caught:
        discover(tree({"envship.yaml": text, "a/requirements.txt": "x\n"}))
    assert str(caught.value).startswith(words)


def test_a_v1_name_from_its_json_and_a_folder_name_when_it_cannot_be_read():
    doc = {"name": "Saved", "python": {}, "docker": {"baseImage": "busybox:1"}}
    items = plan_files(
        {
            "x/good/azureml_environment.json": json.dumps(doc),
            "x/broken/azureml_environment.json": "{",
        }
    )
    assert items["x/good"].env.name == "Saved"
    assert items["x/broken"].env.name == "x-broken"
    assert items["x/broken"].action == "refused"
