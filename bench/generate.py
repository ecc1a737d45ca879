"""Write N synthetic environment specs into a folder, deterministically (same seed, same bytes).

The mix follows what a real repository of Azure ML environments holds:

- 40% Azure ML v1 saved folders: `<team>/aml-v1/<name>/azureml_environment.json` +
  `conda_dependencies.yml` (shaped like what `Environment.save_to_directory` writes);
- 20% v2 YAMLs with `image` + `conda_file`: `<team>/aml-v2/<name>.yml`, its conda file in the
  shared sibling folder `<team>/aml-v2/conda-yamls/`;
- 10% v2 YAMLs with `build.path`: `<team>/aml-v2/<name>.yml` ->
  `<team>/aml-v2/docker-contexts/<name>/` (Dockerfile + requirements.txt);
- 15% plain conda files: `<team>/conda/<name>/environment.yml` (or `env.yml`, `conda.yaml`);
- 10% plain `requirements.txt`: `<team>/pip/<name>/requirements.txt`;
- 5% plain Dockerfile folders: `<team>/docker/<name>/` (Dockerfile, requirements.txt and an
  executable entrypoint script).

Everything is written below `<folder>/specs`. Every environment gets a unique name (so a unique
registry repository) and its own pins, so no two hash alike by accident. Every spec is valid:
planning the output must refuse nothing.

    python bench/generate.py OUT_DIR --count 10000 [--seed 1]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections import Counter
from pathlib import Path

ROOT = "specs"
TEAMS = 25
"""Environments are spread over this many top-level folders, like teams sharing a repository."""

# One cycle of 20 environments gives the exact shares above (8/4/2/3/2/1).
PATTERN = (
    ("aml-v1",) * 8
    + ("v2-image",) * 4
    + ("v2-build",) * 2
    + ("conda",) * 3
    + ("pip",) * 2
    + ("dockerfile",) * 1
)
FORMS = tuple(dict.fromkeys(PATTERN))

BASE_IMAGES = (
    "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04:20251130.v1",
    "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu20.04:latest",
    "mcr.microsoft.com/azureml/openmpi4.1.0-cuda11.8-cudnn8-ubuntu22.04:20240709.v1",
    "mcr.microsoft.com/azureml/intelmpi2018.3-ubuntu16.04:20210507.v1",
    "mcr.microsoft.com/azureml/curated/sklearn-1.5:20",
)
DOCKER_FROM = ("python:3.10-slim", "python:3.11-slim", "python:3.12", "ubuntu:22.04")
PYTHONS = ("3.8.13", "3.9.18", "3.10.14", "3.11.9", "3.12.4")

# (name, candidate versions); pins are drawn from these.
PIP_PACKAGES = (
    ("numpy", ("1.21.2", "1.23.5", "1.24.4", "1.26.4", "2.0.2", "2.1.3")),
    ("scipy", ("1.7.1", "1.10.1", "1.11.4", "1.13.1", "1.14.1")),
    ("pandas", ("1.3.0", "1.5.3", "2.0.3", "2.1.4", "2.2.3")),
    ("scikit-learn", ("0.24.2", "1.2.2", "1.3.2", "1.4.2", "1.5.2")),
    ("xgboost", ("1.4.2", "1.7.6", "2.0.3", "2.1.2")),
    ("lightgbm", ("3.2.1", "3.3.5", "4.3.0", "4.5.0")),
    ("mlflow", ("1.20.2", "2.9.2", "2.12.2", "2.17.2")),
    ("azureml-mlflow", ("1.34.0", "1.55.0", "1.57.0", "1.58.0")),
    ("azureml-core", ("1.35.0", "1.48.0", "1.55.0", "1.57.0")),
    ("azureml-defaults", ("1.35.0", "1.48.0", "1.55.0", "1.57.0")),
    ("azure-ai-ml", ("1.12.1", "1.15.0", "1.19.0", "1.21.1")),
    ("matplotlib", ("3.4.3", "3.7.5", "3.8.4", "3.9.2")),
    ("seaborn", ("0.11.2", "0.12.2", "0.13.2")),
    ("tqdm", ("4.62.2", "4.65.0", "4.66.5")),
    ("numba", ("0.54.0", "0.57.1", "0.59.1", "0.60.0")),
    ("joblib", ("1.0.1", "1.2.0", "1.3.2", "1.4.2")),
    ("fsspec", ("2021.8.1", "2023.6.0", "2024.6.1")),
    ("adlfs", ("2021.9.1", "2023.8.0", "2024.7.0")),
    ("torch", ("1.13.1", "2.1.2", "2.3.1", "2.5.1")),
    ("torchvision", ("0.14.1", "0.16.2", "0.18.1", "0.20.1")),
    ("transformers", ("4.30.2", "4.38.2", "4.44.2", "4.46.3")),
    ("datasets", ("2.14.7", "2.19.2", "3.1.0")),
    ("onnxruntime", ("1.15.1", "1.17.3", "1.19.2", "1.20.1")),
    ("pyarrow", ("12.0.1", "14.0.2", "16.1.0", "18.0.0")),
    ("requests", ("2.28.2", "2.31.0", "2.32.3")),
    ("pydantic", ("1.10.13", "2.5.3", "2.9.2")),
    ("fastapi", ("0.95.2", "0.110.3", "0.115.5")),
    ("uvicorn", ("0.22.0", "0.29.0", "0.32.1")),
    ("ipykernel", ("6.4.1", "6.25.2", "6.29.5")),
    ("papermill", ("2.3.3", "2.4.0", "2.6.0")),
    ("opencv-python-headless", ("4.7.0.72", "4.9.0.80", "4.10.0.84")),
    ("statsmodels", ("0.13.5", "0.14.1", "0.14.4")),
)
CONDA_PACKAGES = (
    ("pip", ("22.3.1", "23.3.1", "24.2")),
    ("numpy", ("1.23.5", "1.24.4", "1.26.4")),
    ("pandas", ("1.5.3", "2.0.3", "2.2.3")),
    ("scikit-learn", ("1.2.2", "1.3.2", "1.5.2")),
    ("tqdm", ("4.65.0", "4.66.5")),
    ("matplotlib", ("3.7.5", "3.8.4", "3.9.2")),
    ("libgomp", ("12.2.0", "13.2.0", "14.2.0")),
    ("openssl", ("3.0.12", "3.3.2")),
    ("cudatoolkit", ("11.3.1", "11.8.0")),
)
CHANNELS = (("anaconda", "conda-forge"), ("conda-forge",), ("conda-forge", "defaults"))
WORDS = (
    "churn", "fraud", "forecast", "vision", "nlp", "ranking", "pricing", "demand", "anomaly",
    "speech", "ocr", "recsys", "segment", "credit", "triage", "summarize", "embed", "tabular",
)  # fmt: skip


class Generator:
    def __init__(self, out: Path, seed: int) -> None:
        self.out = out
        self.rng = random.Random(seed)
        self.written = 0

    def write(self, relative: str, text: str, *, executable: bool = False) -> None:
        path = self.out / ROOT / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        if executable:
            path.chmod(0o755)
        self.written += 1

    def pins(self, pool: tuple[tuple[str, tuple[str, ...]], ...], low: int, high: int) -> list[str]:
        chosen = self.rng.sample(pool, self.rng.randint(low, min(high, len(pool))))
        return [f"{name}=={self.rng.choice(versions)}" for name, versions in chosen]

    def conda_yaml(self, *, name: str | None, server_style: bool = False) -> str:
        """A conda file; `server_style` mimics what the Azure ML service writes back."""
        rng = self.rng
        channels = rng.choice(CHANNELS)
        python = f"python={rng.choice(PYTHONS)}"
        conda = [p.replace("==", "=") for p in self.pins(CONDA_PACKAGES, 1, 4)]
        pip = self.pins(PIP_PACKAGES, 3, 18)
        lines: list[str] = []
        if server_style:
            lines += ["channels:", *(f"- {c}" for c in channels), "dependencies:", f"- {python}"]
            lines += ["- pip:", *(f"  - {p}" for p in pip), *(f"- {c}" for c in conda)]
            lines.append(f"name: azureml_{rng.getrandbits(128):032x}")
        else:
            if name is not None:
                lines.append(f"name: {name}")
            lines += ["channels:", *(f"  - {c}" for c in channels), "dependencies:"]
            lines += [f"  - {python}", *(f"  - {c}" for c in conda), "  - pip:"]
            lines += [f"    - {p}" for p in pip]
        return "\n".join(lines) + "\n"

    def requirements(self) -> str:
        rng = self.rng
        lines = ["# generated for the envship benchmark"]
        for pin in self.pins(PIP_PACKAGES, 4, 20):
            if rng.random() < 0.15:
                lines.append(f"# {rng.choice(WORDS)}")
            lines.append(pin)
        return "\n".join(lines) + "\n"

    def aml_v1(self, team: str, name: str) -> None:
        rng = self.rng
        definition: dict[str, object] = {
            "name": name,
            "version": str(rng.randint(1, 120)),
            "environmentVariables": {"EXAMPLE_ENV_VAR": "EXAMPLE_VALUE", "TEAM": team},
            "python": {
                "userManagedDependencies": False,
                "interpreterPath": "python",
                "condaDependenciesFile": None,
                "baseCondaEnvironment": None,
            },
            "docker": {
                "enabled": False,
                "baseImage": rng.choice(BASE_IMAGES),
                "baseDockerfile": None,
                "sharedVolumes": True,
                "shmSize": None,
                "arguments": [],
                "baseImageRegistry": {
                    "address": None,
                    "username": None,
                    "password": None,
                    "registryIdentity": None,
                },
                "platform": {"os": "Linux", "architecture": "amd64"},
            },
            "spark": {"repositories": [], "packages": [], "precachePackages": True},
            "databricks": {
                "mavenLibraries": [],
                "pypiLibraries": [],
                "rcranLibraries": [],
                "jarLibraries": [],
                "eggLibraries": [],
            },
            "r": None,
            "inferencingStackVersion": None,
        }
        folder = f"{team}/aml-v1/{name}"
        self.write(f"{folder}/azureml_environment.json", json.dumps(definition, indent=4))
        self.write(
            f"{folder}/conda_dependencies.yml", self.conda_yaml(name=None, server_style=True)
        )

    def v2_image(self, team: str, name: str) -> None:
        folder = f"{team}/aml-v2"
        self.write(f"{folder}/conda-yamls/{name}.yml", self.conda_yaml(name=name))
        self.write(
            f"{folder}/{name}.yml",
            "$schema: https://azuremlschemas.azureedge.net/latest/environment.schema.json\n"
            f"name: {name}\n"
            f"version: {self.rng.randint(1, 40)}\n"
            f"image: {self.rng.choice(BASE_IMAGES)}\n"
            f"conda_file: conda-yamls/{name}.yml\n"
            f"description: Benchmark environment {name} ({team}).\n",
        )

    def docker_context(self, folder: str) -> None:
        base = self.rng.choice(DOCKER_FROM)
        self.write(
            f"{folder}/Dockerfile",
            f"FROM {base}\n\n# python installs\nCOPY requirements.txt .\n"
            "RUN pip install --no-cache-dir -r requirements.txt && rm requirements.txt\n\n"
            'CMD ["bash"]\n',
        )
        self.write(f"{folder}/requirements.txt", self.requirements())

    def v2_build(self, team: str, name: str) -> None:
        folder = f"{team}/aml-v2"
        self.docker_context(f"{folder}/docker-contexts/{name}")
        self.write(
            f"{folder}/{name}.yml",
            "$schema: https://azuremlschemas.azureedge.net/latest/environment.schema.json\n"
            f"name: {name}\n"
            "build:\n"
            f"  path: docker-contexts/{name}\n",
        )

    def conda(self, team: str, name: str) -> None:
        filename = self.rng.choice(("environment.yml", "env.yml", "conda.yaml"))
        self.write(f"{team}/conda/{name}/{filename}", self.conda_yaml(name=name))

    def pip(self, team: str, name: str) -> None:
        self.write(f"{team}/pip/{name}/requirements.txt", self.requirements())

    def dockerfile(self, team: str, name: str) -> None:
        folder = f"{team}/docker/{name}"
        self.docker_context(folder)
        self.write(
            f"{folder}/entrypoint.sh",
            f'#!/bin/sh\nset -e\nexec python -m {name.replace("-", "_")} "$@"\n',
            executable=True,
        )


def generate(out: str | Path, count: int, seed: int = 1) -> Counter[str]:
    """Write `count` environments below `out/specs`; returns how many of each form."""
    target = Path(out)
    if (target / ROOT).exists():
        raise FileExistsError(f"{target / ROOT} exists; generate into an empty folder")
    gen = Generator(target, seed)
    forms: Counter[str] = Counter()
    for index in range(count):
        form = PATTERN[index % len(PATTERN)]
        team = f"team-{index % TEAMS:02d}"
        # Unique across the whole repository: the index is part of every name.
        name = f"{gen.rng.choice(WORDS)}-{form}-{index:05d}"
        getattr(gen, form.replace("-", "_"))(team, name)
        forms[form] += 1
    return forms


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="folder to write into (specs/ is created inside)")
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    forms = generate(args.out, args.count, args.seed)
    summary = ", ".join(f"{forms[f]} {f}" for f in FORMS)
    print(f"{args.count} environments in {args.out}/{ROOT}: {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
