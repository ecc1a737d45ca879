"""What a registry holds of an image, read over the registry API: for scans of every part."""

from __future__ import annotations

import gzip
import io
import tarfile

from tests.support.infra import Registry


def image_parts(registry: Registry, repository: str, tag: str) -> dict[str, bytes]:
    """Everything the registry holds of an image: its manifest, its config (history, labels,
    environment) and each layer, compressed and as a tar."""
    session = registry.session()
    accept = (
        "application/vnd.docker.distribution.manifest.v2+json, "
        "application/vnd.oci.image.manifest.v1+json"
    )
    response = session.get(
        f"{registry.url}/v2/{repository}/manifests/{tag}", headers={"Accept": accept}, timeout=10
    )
    response.raise_for_status()
    manifest = response.json()
    parts = {"manifest": response.content}
    for index, blob in enumerate([manifest["config"], *manifest["layers"]]):
        data = session.get(f"{registry.url}/v2/{repository}/blobs/{blob['digest']}", timeout=30)
        data.raise_for_status()
        name = "config" if index == 0 else f"layer {index}"
        parts[name] = data.content
        if index and data.content[:2] == b"\x1f\x8b":
            parts[f"{name} (tar)"] = gzip.decompress(data.content)
    return parts


def files_of(parts: dict[str, bytes]) -> dict[str, bytes]:
    """The regular files the image's layers hold, by path (the last layer wins)."""
    found: dict[str, bytes] = {}
    for name, data in parts.items():
        if not name.startswith("layer") or name.endswith("(tar)"):
            continue
        raw = parts.get(f"{name} (tar)", data)
        with tarfile.open(fileobj=io.BytesIO(raw)) as archive:
            for member in archive.getmembers():
                extracted = archive.extractfile(member) if member.isfile() else None
                if extracted is not None:
                    found[member.name] = extracted.read()
    return found
