"""A base image for envship's managed (conda) builds, on the suite's Debian + Python base.

No conda distribution can be installed where the tests run (conda's channels are not reachable
and PyPI's `conda` is a 2017 release), so this base holds a small `conda` program that does what
envship's rendered conda step asks of conda, with the real pip: `conda env create -p DIR -f FILE`
makes a virtual environment at DIR and runs `pip install` of the file's `pip:` list, as conda
does for that list (the conda packages themselves are not installed; the tests' conda files name
only `python` and `pip` there). `conda info --root` and `conda clean` answer as conda would. It
records the pip cache and package cache folders it was given (`/envship-conda-shim.log`), so a
test can see the rendered step's cache mounts took effect.

Standard library and docker-py only, as python_base.py, so benchmarks can use it too.
"""

from __future__ import annotations

import io
import tarfile

import docker

SHIM = r"""#!/bin/sh
# Stands in for conda in envship's test base image; see tests/support/conda_shim.py.
set -eu
case "${1:-} ${2:-}" in
"env create")
    shift 2
    prefix=""
    file=""
    while [ $# -gt 0 ]; do
        case "$1" in
        -p | --prefix) prefix="$2"; shift 2 ;;
        -f | --file) file="$2"; shift 2 ;;
        *) shift ;;
        esac
    done
    [ -n "$prefix" ] && [ -n "$file" ] || { echo "conda: env create needs -p and -f" >&2; exit 2; }
    echo "pkgs=${CONDA_PKGS_DIRS:-} pip_cache=${PIP_CACHE_DIR:-}" >> /envship-conda-shim.log
    python3 -m venv "$prefix"
    requirements="$(mktemp)"
    python3 - "$file" > "$requirements" <<'PY'
import json, sys
inside = False
for line in open(sys.argv[1], encoding="utf-8"):
    if line.strip() == "- pip:":
        inside = True
    elif inside and line.startswith("      - "):
        print(json.loads(line.strip()[2:]))
    elif inside:
        inside = False
PY
    "$prefix/bin/python" -m pip install --disable-pip-version-check --no-input -r "$requirements"
    rm -f "$requirements"
    ;;
"info --root") echo /opt/conda ;;
"clean "*) ;;
*) echo "conda (envship test stand-in): unsupported: $*" >&2; exit 2 ;;
esac
"""

DOCKERFILE = """FROM {base}
COPY conda /usr/local/bin/conda
RUN mkdir -p /opt/conda/pkgs
ENV PIP_RETRIES=0
"""
TRUST = """COPY ca.pem /usr/local/share/envship-test-ca.pem
ENV PIP_CERT=/usr/local/share/envship-test-ca.pem
"""
"""The test CA stands for a company's own CA in its base image, which pip is told to trust;
no retries, as PyPI (pip's default index, beside the private one) cannot be reached here."""


def _context(base: str, ca_pem: bytes | None, env: dict[str, str]) -> bytes:
    dockerfile = DOCKERFILE.format(base=base) + (TRUST if ca_pem is not None else "")
    dockerfile += "".join(f"ENV {key}={value}\n" for key, value in env.items())
    files = [("Dockerfile", dockerfile.encode(), 0o644), ("conda", SHIM.encode(), 0o755)]
    if ca_pem is not None:
        files.append(("ca.pem", ca_pem, 0o644))
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data, mode in files:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def conda_base(
    client: docker.DockerClient,
    python_base: str,
    tag: str,
    ca_pem: bytes | None = None,
    env: dict[str, str] | None = None,
) -> str:
    """Build the base (tagged `tag`) from the engine's `python_base` image, trusting `ca_pem`
    for pip and with `env` set; returns `tag`."""
    client.images.build(
        fileobj=io.BytesIO(_context(python_base, ca_pem, env or {})),
        custom_context=True,
        tag=tag,
        rm=True,
        forcerm=True,
        pull=False,
    )
    return tag
