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

from tests.support.buildkit_cli import CLI_KINDS, use_cli
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
    for image in engine.images.list():
        for tag in image.tags:
            if tag.startswith(f"{started.host}/"):
                with contextlib.suppress(docker.errors.APIError):
                    engine.images.remove(tag, force=True)


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


def build_forget_rebuild(
    envship: Envship, engine: docker.DockerClient, base: str, folder: Path, prefix: str, *extra: str
) -> tuple[Run, Run, str]:
    """Build the environment, forget everything the engine has of it, change its last step
    and sync again: both runs, and the second's output."""
    marker = secrets.token_hex(8)  # no earlier run's cache can answer for these builds
    write(folder, {"app/Dockerfile": DOCKERFILE.format(base=base, marker=marker, version=1)})
    first, output = sync(envship, folder, prefix, *extra)
    assert first.actions() == {"app": "built"}, output
    forget_everything(engine, first)
    write(folder, {"app/Dockerfile": DOCKERFILE.format(base=base, marker=marker, version=2)})
    second, output = sync(envship, folder, prefix, *extra)
    assert second.actions() == {"app": "built"}, output
    assert "x509" not in output, "the engine does not trust the test CA: see the module's docstring"
    return first, second, output


def inline_cache_of(target: Registry, repository: str) -> dict[str, object]:
    """The config of the image the repository's `buildcache` tag points at."""
    manifest = target.session().get(
        f"{target.url}/v2/{repository}/manifests/buildcache",
        headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
        timeout=10,
    )
    digest = manifest.json()["config"]["digest"]
    blob = target.session().get(f"{target.url}/v2/{repository}/blobs/{digest}", timeout=10)
    config: dict[str, object] = json.loads(blob.content)
    return config


@pytest.mark.parametrize("kind", CLI_KINDS)
def test_a_fresh_engine_reuses_the_layers_in_the_registry_cache(
    kind: str,
    cached_envship: Envship,
    public_bases: Registry,
    registry: Registry,
    engine: docker.DockerClient,
    tmp_path: Path,
):
    envship, target = cached_envship, registry
    use_cli(envship, kind)
    prefix = f"cache1-{kind}"
    base = f"{public_bases.host}/base/busybox:1"
    first, second, output = build_forget_rebuild(envship, engine, base, tmp_path / "s", prefix)
    assert "moby.buildkit.cache.v0" in inline_cache_of(target, f"{prefix}/app")
    assert "importing cache manifest from" in output
    before = layers(target, str(first.items["app"]["image"]))
    after = layers(target, str(second.items["app"]["image"]))
    assert after[:-1] == before[:-1]  # the expensive step came from the registry's cache
    assert after[-1] != before[-1]
    # the verified image is the repository's cache
    assert target.manifest_digest(f"{prefix}/app", "buildcache") == second.items["app"]["digest"]


def test_without_the_cache_a_fresh_engine_builds_every_layer_again(
    cached_envship: Envship,
    public_bases: Registry,
    registry: Registry,
    engine: docker.DockerClient,
    tmp_path: Path,
):
    envship, target = cached_envship, registry
    base = f"{public_bases.host}/base/busybox:1"
    first, second, output = build_forget_rebuild(
        envship, engine, base, tmp_path / "s", "cache2", "--build-cache", "off"
    )
    assert target.manifest_digest("cache2/app", "buildcache") is None
    assert "importing cache manifest" not in output
    before = layers(target, str(first.items["app"]["image"]))
    after = layers(target, str(second.items["app"]["image"]))
    assert after[1] != before[1]  # built again: the same files, a new layer
