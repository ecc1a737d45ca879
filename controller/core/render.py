"""Render a `BuildSpec` into a Dockerfile and build-context bytes, deterministically.

Managed conda environments follow Azure ML's image layout: the conda file is copied to
/azureml-environment-setup, the environment is created under /azureml-envs/azureml_<hash>, and
PATH, AZUREML_CONDA_ENVIRONMENT_PATH and LD_LIBRARY_PATH point at it. A user Dockerfile keeps its
bytes and gains the spec's settings at its end, in place, so its own COPY steps see the context
exactly as the user wrote it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from controller.core.conda import CondaSpec
from controller.core.dockerfile import pin
from controller.core.errors import SpecError
from controller.core.hashing import SCHEME, canonical_json, digest, hash_input
from controller.core.model import BuildSpec, ContextFile

SETUP_DIR = "azureml-environment-setup"
CONDA_FILE = f"{SETUP_DIR}/mutated_conda_dependencies.yml"
MAX_INPUT_LABEL = 64 * 1024
LABEL_HASH = "io.envship.hash"
LABEL_SCHEME = "io.envship.scheme"
LABEL_INPUTS = "io.envship.inputs"


@dataclass(frozen=True, slots=True)
class Rendered:
    dockerfile_path: str
    dockerfile: str
    files: tuple[ContextFile, ...]
    """The whole build context, the rendered Dockerfile included, sorted by path."""


def quote(value: str) -> str:
    """A Dockerfile double-quoted word whose `$` and `\\` stay literal."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$")
    return f'"{escaped}"'


def instruction(
    name: str, pairs: Sequence[tuple[str, str]], *, quote_keys: bool = False
) -> list[str]:
    """One ENV or LABEL instruction for all pairs (one build step, not one per pair)."""
    if not pairs:
        return []
    words = [f"{quote(k) if quote_keys else k}={quote(v)}" for k, v in pairs]
    return [f"{name} " + " \\\n    ".join(words)]


def conda_env_dir(conda: CondaSpec) -> str:
    return "/azureml-envs/azureml_" + digest(canonical_json(conda.canonical()))[:32]


def conda_file_text(conda: CondaSpec, env_dir: str) -> str:
    """The conda file the build uses: YAML written by hand with JSON-quoted scalars."""
    lines = [f"name: {json.dumps(env_dir.rsplit('/', 1)[-1])}"]
    if conda.channels:
        lines.append("channels:")
        lines.extend(f"  - {json.dumps(c)}" for c in conda.channels)
    lines.append("dependencies:")
    lines.extend(f"  - {json.dumps(d)}" for d in conda.dependencies)
    if conda.pip:
        lines.append("  - pip:")
        lines.extend(f"      - {json.dumps(p)}" for p in conda.pip)
    if conda.variables:
        lines.append("variables:")
        lines.extend(f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in conda.variables)
    return "\n".join(lines) + "\n"


CACHE_DIR = "/var/cache/envship"
CONDA_PKGS = f"{CACHE_DIR}/conda-pkgs"
PIP_CACHE = f"{CACHE_DIR}/pip"
PIP_CONFIG_SECRET = "envship-pip-conf"  # noqa: S105 - the secret's id, not its value
"""The build secret that holds a pip configuration file naming the private package indexes,
credentials included (`--private-index`); a build that mounts it gets it, others never do."""
RESERVED_SECRET = (
    f"the build secret id {PIP_CONFIG_SECRET} is envship's own (the private indexes' pip "
    "configuration, from privateIndexes / --private-index); give yours another id"
)
PIP_CONFIG_TARGET = f"/run/secrets/{PIP_CONFIG_SECRET}"
CACHE_MOUNTS = (
    f"--mount=type=cache,id=envship-conda-pkgs,target={CONDA_PKGS},sharing=locked",
    f"--mount=type=cache,id=envship-pip,target={PIP_CACHE}",
    f"--mount=type=secret,id={PIP_CONFIG_SECRET},target={PIP_CONFIG_TARGET}",
)
"""BuildKit mounts of the conda step: conda's package cache and pip's cache outlive the build
in the engine (never in a layer), and pip reads the private indexes from a build secret when
one is given (a secret that is not given is not mounted)."""


def conda_steps(env_dir: str, *, buildkit: bool = True) -> list[str]:
    """Create the conda environment as Azure ML does. With BuildKit the caches are mounts, so
    a rebuild downloads only what changed; the classic builder runs the same commands with its
    caches removed in the same layer."""
    tail = [
        ' && CONDA_ROOT_DIR="$(conda info --root)" \\',
        ' && rm -rf "$CONDA_ROOT_DIR/pkgs" \\',
        ' && find "$CONDA_ROOT_DIR" -type d -name __pycache__ -exec rm -rf {} +',
    ]
    if buildkit:
        run = [
            "RUN " + " \\\n    ".join(CACHE_MOUNTS) + " \\",
            f"    export CONDA_PKGS_DIRS={CONDA_PKGS} PIP_CACHE_DIR={PIP_CACHE} \\",
            f" && if [ -f {PIP_CONFIG_TARGET} ]; then "
            f"export PIP_CONFIG_FILE={PIP_CONFIG_TARGET}; fi \\",
            f" && conda env create -p {env_dir} -f /{CONDA_FILE} \\",
        ]
    else:
        run = [
            f"RUN conda env create -p {env_dir} -f /{CONDA_FILE} \\",
            ' && rm -rf "$HOME/.cache/pip" \\',
            " && conda clean -aqy \\",
        ]
    return [
        f"COPY {CONDA_FILE} /{CONDA_FILE}",
        *run,
        *tail,
        f"ENV PATH={env_dir}/bin:$PATH",
        f"ENV AZUREML_CONDA_ENVIRONMENT_PATH={env_dir}",
        f"ENV LD_LIBRARY_PATH={env_dir}/lib:$LD_LIBRARY_PATH",
        "ENV AZUREML_ENVIRONMENT_IMAGE=True",
    ]


def inputs_label(build: BuildSpec) -> str:
    """The hash input, for `explain`; a huge context is summarised to keep the label small."""
    doc = hash_input(build)
    text = canonical_json(doc).decode()
    if len(text) > MAX_INPUT_LABEL:
        context = doc["context"]
        doc["context"] = {"files": len(context), "sha256": digest(canonical_json(context))}
        text = canonical_json(doc).decode()
    return text


def labels_for(
    build: BuildSpec, content_hash: str, *, source: str | None, revision: str | None
) -> dict[str, str]:
    labels = {
        LABEL_HASH: content_hash,
        LABEL_SCHEME: SCHEME,
        LABEL_INPUTS: inputs_label(build),
    }
    if build.python.mode == "user":
        labels["io.envship.python.interpreter"] = build.python.interpreter
    if source:
        labels["org.opencontainers.image.source"] = source
    if revision:
        labels["org.opencontainers.image.revision"] = revision
    return labels


def base_line(build: BuildSpec) -> str:
    image = build.base_image or ""
    digest = dict(build.base_digests).get(image)
    if digest:
        image = image.split("@", 1)[0] + "@" + digest
    return f"FROM {image}"


def render(
    build: BuildSpec,
    content_hash: str,
    *,
    source: str | None = None,
    revision: str | None = None,
    extra_labels: Mapping[str, str] | None = None,
    buildkit: bool = True,
) -> Rendered:
    """The Dockerfile and context for `build`; `source`/`revision` become OCI labels.

    `buildkit=False` renders for the classic builder: the same steps without BuildKit's cache
    and secret mounts (same hash: the image holds the same environment)."""
    files = {f.path: f for f in build.context}
    if build.dockerfile_path is not None:
        original = pin(
            files[build.dockerfile_path].data.decode("utf-8", errors="replace"),
            dict(build.base_digests),
            build.platform,
        )
        head = [original.rstrip("\n"), "", "# --- added by envship ---"]
        dockerfile_path = build.dockerfile_path
    else:
        head = [f"# rendered by envship ({SCHEME})", base_line(build)]
        dockerfile_path = "Dockerfile"
    lines = list(head)
    conda = build.python.conda if build.python.mode == "conda" else None
    if conda is not None:
        if CONDA_FILE in files:
            raise SpecError(CONDA_FILE, "this path is reserved for the generated conda file")
        env_dir = conda_env_dir(conda)
        files[CONDA_FILE] = ContextFile(CONDA_FILE, conda_file_text(conda, env_dir).encode())
        ignore = files.get(".dockerignore")
        if ignore is not None and ignore.link_target is None:
            data = ignore.data.rstrip(b"\n") + f"\n!{CONDA_FILE}\n".encode()
            files[".dockerignore"] = ContextFile(".dockerignore", data, ignore.executable)
        lines.extend(conda_steps(env_dir, buildkit=buildkit))
    lines.extend(instruction("ENV", build.environment))
    labels = labels_for(build, content_hash, source=source, revision=revision)
    labels.update(extra_labels or {})
    lines.extend(instruction("LABEL", sorted(labels.items()), quote_keys=True))
    if conda is not None and build.dockerfile_path is None:
        lines.append('CMD ["bash"]')
    text = "\n".join(lines) + "\n"
    files[dockerfile_path] = ContextFile(
        dockerfile_path,
        text.encode(),
        files[dockerfile_path].executable if dockerfile_path in files else False,
    )
    return Rendered(dockerfile_path, text, tuple(sorted(files.values(), key=lambda f: f.path)))
