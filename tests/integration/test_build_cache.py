"""The build cache through the target registry (TLS + basic auth): an engine that lost every
image and its whole build cache rebuilds a changed environment reusing the layers before the
change, imported from the repository's `buildcache` tag; with `--build-cache off` it cannot.

The engine here is the engine's own BuildKit (a docker CLI with BuildKit built in, or buildx's
docker driver), so the cache is inline: in the image's config, which envship tags `buildcache`
once the push is verified. The CLI gets the registry's credentials in a configuration of its
own, in memory; the scan at the end of the session finds them nowhere on disk.

The registry listens on the engine's bridge gateway, not loopback: the engine treats loopback
registries as insecure and its BuildKit speaks plain HTTP to them. Its BuildKit trusts the
system's CAs only, so the engine the suite starts also trusts the test CA (SSL_CERT_FILE); an
engine that was already running must have been started that way.
"""

from __future__ import annotations

import contextlib
import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import pytest

from tests.support.envship import Envship, Run
from tests.support.helpers import write
from tests.support.infra import Certs, Registry, bridge_gateway, make_certs, new_password

DOCKERFILE = """\
FROM {base}
RUN echo {marker} > /expensive && sleep 1
RUN echo {version} > /version
"""


@pytest.fixture(scope="module")
def registry(
    engine: docker.DockerClient, certs: Certs, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Registry]:
    """A TLS + basic-auth registry on the engine's bridge gateway (see the module's docstring)."""
    folder = tmp_path_factory.mktemp("cache-registry")
    served = make_certs(folder / "certs", bridge_gateway(engine), ca=certs.ca)
    started = Registry(folder, served, "envship", new_password(), address=bridge_gateway(engine))
    yield started.start()
    started.stop()


@pytest.fixture
def cached_envship(tmp_path: Path, registry: Registry, certs: Certs) -> Envship:
    home = tmp_path / "home"
    home.mkdir()
    return Envship(home, registry, certs)


def layers(registry: Registry, image: str) -> list[str]:
    repository, tag = image.split("/", 1)[1].rsplit(":", 1)
    session = registry.session()
    response = session.get(
        f"{registry.url}/v2/{repository}/manifests/{tag}",
        headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
        timeout=10,
    )
    response.raise_for_status()
    return [layer["digest"] for layer in response.json()["layers"]]


def forget_everything(engine: docker.DockerClient, run: Run) -> None:
    """What a new engine has of this environment: nothing (its image and the build cache go;
    the base, pulled by envship before a build, may stay)."""
    for item in run.items.values():
        with contextlib.suppress(docker.errors.ImageNotFound):
            engine.images.remove(str(item["image"]), force=True)
    engine.api.prune_builds()


def sync(envship: Envship, specs: Path, prefix: str, *extra: str) -> tuple[Run, str]:
    run = envship.sync(specs, prefix, *extra)
    return run, run.result.stdout + run.result.stderr


def test_a_fresh_engine_reuses_the_layers_in_the_registry_cache(
    cached_envship: Envship,
    public_bases: Registry,
    registry: Registry,
    engine: docker.DockerClient,
    tmp_path: Path,
):
    envship, target = cached_envship, registry
    base = f"{public_bases.host}/base/busybox:1"
    marker = secrets.token_hex(8)  # no earlier run's cache can answer for this build
    folder = tmp_path / "specs"
    write(folder, {"app/Dockerfile": DOCKERFILE.format(base=base, marker=marker, version=1)})
    first, output = sync(envship, folder, "cache1")
    assert first.actions() == {"app": "built"}, output
    image = str(first.items["app"]["image"])
    # the verified image is the repository's cache
    assert target.manifest_digest("cache1/app", "buildcache") == first.items["app"]["digest"]
    config = target.session().get(
        f"{target.url}/v2/cache1/app/manifests/buildcache",
        headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
        timeout=10,
    )
    config_digest = config.json()["config"]["digest"]
    blob = target.session().get(f"{target.url}/v2/cache1/app/blobs/{config_digest}", timeout=10)
    assert "moby.buildkit.cache.v0" in json.loads(blob.content)  # BuildKit's inline cache

    forget_everything(engine, first)
    write(folder, {"app/Dockerfile": DOCKERFILE.format(base=base, marker=marker, version=2)})
    second, output = sync(envship, folder, "cache1")
    assert second.actions() == {"app": "built"}, output
    assert "x509" not in output, "the engine does not trust the test CA: see the module's docstring"
    assert "importing cache manifest from" in output
    before, after = layers(target, image), layers(target, str(second.items["app"]["image"]))
    assert after[:-1] == before[:-1]  # the expensive step came from the registry's cache
    assert after[-1] != before[-1]
    assert target.manifest_digest("cache1/app", "buildcache") == second.items["app"]["digest"]


def test_without_the_cache_a_fresh_engine_builds_every_layer_again(
    cached_envship: Envship,
    public_bases: Registry,
    registry: Registry,
    engine: docker.DockerClient,
    tmp_path: Path,
):
    envship, target = cached_envship, registry
    base = f"{public_bases.host}/base/busybox:1"
    marker = secrets.token_hex(8)
    folder = tmp_path / "specs"
    write(folder, {"app/Dockerfile": DOCKERFILE.format(base=base, marker=marker, version=1)})
    first, output = sync(envship, folder, "cache2", "--build-cache", "off")
    assert first.actions() == {"app": "built"}, output
    assert target.manifest_digest("cache2/app", "buildcache") is None

    forget_everything(engine, first)
    write(folder, {"app/Dockerfile": DOCKERFILE.format(base=base, marker=marker, version=2)})
    second, output = sync(envship, folder, "cache2", "--build-cache", "off")
    assert second.actions() == {"app": "built"}, output
    assert "importing cache manifest" not in output
    before = layers(target, str(first.items["app"]["image"]))
    after = layers(target, str(second.items["app"]["image"]))
    assert after[1] != before[1]  # built again: the same files, a new layer
