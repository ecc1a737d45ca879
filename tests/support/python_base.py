"""A Debian bookworm + Python base image for real `pip install` steps, made with mmdebstrap.

No public registry can be reached where the tests run, so the image is made from Debian's own
packages: `mmdebstrap --variant=apt` writes a root filesystem tar (about 200 MB, 20-45 s), and
`docker import` turns it into an image. mmdebstrap does not read the host's apt sources: given
only the suite it uses Debian's mirrors (deb.debian.org for bookworm and bookworm-updates,
security.debian.org for bookworm-security), so nothing from another vendor's repository can get
into the image and no mirror option is needed. Documentation except copyright files is left out,
as Debian's slim images do (-45 MB, which every push of an image built on it pays).

Building it takes long enough to cache: the image stays in the engine as `LOCAL_TAG` with the
recipe's key in a label, and is reused while the key matches. Change the recipe and the key
changes; `docker rmi envship-test/python:bookworm` forces a fresh one (new Debian updates).

Standard library and docker-py only, so `scripts/quickstart` runs the same recipe from the
envship virtualenv (`python -m tests.support.python_base`) and the two share the image.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import docker
import docker.errors

SUITE = "bookworm"
VARIANT = "apt"
PACKAGES = ("python3-minimal", "python3-pip", "python3-venv")
DPKG_OPTIONS = (
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
)
LOCAL_TAG = "envship-test/python:bookworm"
KEY_LABEL = "io.envship.test.recipe"
CHANGES = (
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV LANG=C.UTF-8",
    'CMD ["python3"]',
)
"""What python:3.11-slim also sets: `docker import` starts from an empty config, and a
Dockerfile's `ENV PATH=/opt/venv/bin:$PATH` needs a PATH to extend."""
PYTHON_VERSION = "3.11"
"""bookworm's python3."""


def recipe_key() -> str:
    """Everything that decides what the image holds, hashed."""
    recipe = {
        "tool": "mmdebstrap",
        "suite": SUITE,
        "variant": VARIANT,
        "include": sorted(PACKAGES),
        "dpkg": list(DPKG_OPTIONS),
        "changes": list(CHANGES),
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()


def mmdebstrap_command(output: Path) -> list[str]:
    return [
        "mmdebstrap",
        "--quiet",
        f"--variant={VARIANT}",
        f"--include={','.join(PACKAGES)}",
        *(f"--dpkgopt={option}" for option in DPKG_OPTIONS),
        SUITE,
        str(output),
    ]


def cached(client: docker.DockerClient) -> str | None:
    """The id of the cached image if it was made by this recipe."""
    try:
        data = client.api.inspect_image(LOCAL_TAG)
    except docker.errors.ImageNotFound:
        return None
    labels = (data.get("Config") or {}).get("Labels") or {}
    return str(data["Id"]) if labels.get(KEY_LABEL) == recipe_key() else None


def build(client: docker.DockerClient, workdir: Path) -> float:
    """Run mmdebstrap and import its tar as `LOCAL_TAG`; returns mmdebstrap's seconds."""
    if shutil.which("mmdebstrap") is None:
        raise RuntimeError("mmdebstrap is not installed (apt-get install mmdebstrap)")
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / "mmdebstrap.log"
    with tempfile.TemporaryDirectory(dir=workdir) as scratch:
        rootfs = Path(scratch) / "rootfs.tar"
        started = time.monotonic()
        with log.open("wb") as out:
            done = subprocess.run(
                mmdebstrap_command(rootfs),
                stdout=out,
                stderr=subprocess.STDOUT,
                check=False,
                timeout=900,
                env={**os.environ, "TMPDIR": scratch},
            )
        if done.returncode != 0:
            tail = log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"mmdebstrap failed ({done.returncode}):\n{tail}")
        seconds = time.monotonic() - started
        repository, tag = LOCAL_TAG.rsplit(":", 1)
        changes = [*CHANGES, f"LABEL {KEY_LABEL}={recipe_key()}"]
        client.api.import_image_from_file(
            str(rootfs), repository=repository, tag=tag, changes=changes
        )
    with log.open("a") as out:
        out.write(f"mmdebstrap took {seconds:.1f} s\n")
    if cached(client) is None:
        raise RuntimeError(f"{LOCAL_TAG} is missing after docker import")
    return seconds


def python_image(client: docker.DockerClient, workdir: Path) -> str:
    """`LOCAL_TAG`, made now unless the engine already holds it from an earlier run."""
    if cached(client) is None:
        build(client, workdir)
    return LOCAL_TAG


def main() -> None:
    """Make sure the engine holds the image; print what was done."""
    workdir = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.gettempdir())
    client = docker.from_env(timeout=600)
    if cached(client) is not None:
        print(f"{LOCAL_TAG}: present (recipe {recipe_key()[:12]})")
        return
    print(f"{LOCAL_TAG}: running mmdebstrap ({SUITE}: {', '.join(PACKAGES)})", flush=True)
    try:
        seconds = build(client, workdir)
    except RuntimeError as exc:
        sys.exit(str(exc))
    print(f"{LOCAL_TAG}: made in {seconds:.0f} s (log: {workdir / 'mmdebstrap.log'})")


if __name__ == "__main__":
    main()
