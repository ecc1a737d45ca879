"""The content hash: what decides whether an image must be built.

The hash is SHA-256 over the canonical JSON (sorted keys, no spaces, ASCII escapes) of the
*hash input* built here from a `BuildSpec`. The input holds exactly what can change the image:
the scheme version (bumped whenever rendering changes), the platform, the base image (and the
digest of every base once resolved), every build-context file (path, exec bit or link target,
SHA-256 of the bytes), how Python is installed (conda channels in order, the sorted package set,
pip lines, variables, or the user-managed interpreter), environment variables, and the values a
curated environment's template files looked up (`filled`, only when there are any). Names,
versions, descriptions, tags, formatting, comments and file metadata never reach it. The
renderer emits nothing that is not derived from this input (apart from provenance labels), so
equal hashes mean equal builds.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from controller.core.model import BuildSpec, ContextFile, PythonSetup

SCHEME = "envship/2"
"""Bump when the hash input or the rendered Dockerfile changes shape."""


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_input(item: ContextFile) -> list[str]:
    if item.link_target is not None:
        return [item.path, "link", item.link_target]
    return [item.path, "exec" if item.executable else "file", digest(item.data)]


def python_input(python: PythonSetup) -> dict[str, Any]:
    if python.mode == "conda" and python.conda is not None:
        return {"mode": "conda", "conda": python.conda.canonical()}
    if python.mode == "user":
        return {"mode": "user", "interpreter": python.interpreter}
    return {"mode": "none"}


def hash_input(build: BuildSpec) -> dict[str, Any]:
    """The canonical, documented input of the content hash."""
    base: dict[str, Any]
    digests = dict(build.base_digests)
    if build.base_image is not None:
        base = {"image": build.base_image}
        if build.base_image in digests:
            base["digest"] = digests[build.base_image]
    else:
        base = {"dockerfile": build.dockerfile_path}
        if digests:
            base["digests"] = digests
    doc = {
        "scheme": SCHEME,
        "platform": build.platform,
        "base": base,
        "context": [file_input(f) for f in sorted(build.context, key=lambda f: f.path)],
        "python": python_input(build.python),
        "environment": dict(build.environment),
    }
    if build.filled:
        doc["filled"] = dict(build.filled)
    if build.placeholders:  # not buildable yet: plan refuses it; the hash only tells specs apart
        doc["unfilled"] = sorted({p.text for p in build.placeholders})
    return doc


def content_hash(build: BuildSpec) -> str:
    """`sha256:<64 hex>` of the canonical hash input."""
    return "sha256:" + digest(canonical_json(hash_input(build)))
