"""Credentials from Azure Key Vault: the real azure-keyvault-secrets client against a stand-in
that speaks the secrets protocol, and a private base image whose credentials live only there."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from controller.adapters.folder import FolderTree
from controller.adapters.registries import RegistryPool, RegistrySettings
from controller.adapters.secrets import CredentialRefs, SecretError, SecretRef, SecretStore
from controller.core.discovery import DiscoveryOptions, discover
from controller.pipeline.sync import Reporter, Sync, SyncOptions, Target
from tests.support.canaries import record_output
from tests.support.helpers import write
from tests.support.identity import EntraIssuer, IssuingCredential
from tests.support.infra import (
    Certs,
    Registry,
    busybox_rootfs_tar,
    free_port,
    import_image,
    new_password,
    push,
)
from tests.support.keyvault_standin import KeyVaultStandIn


@pytest.fixture
def entra() -> EntraIssuer:
    return EntraIssuer()


@pytest.fixture
def vault(certs: Certs, entra: EntraIssuer) -> Iterator[KeyVaultStandIn]:
    server = KeyVaultStandIn(certs, entra).start()
    yield server
    server.stop()


def store_for(entra: EntraIssuer, certs: Certs, ttl: float = 3600) -> SecretStore:
    return SecretStore(
        ttl=ttl, credential_factory=lambda: IssuingCredential(entra), ca_file=certs.ca_file
    )


def test_the_sdk_reads_latest_and_pinned_versions(vault: KeyVaultStandIn, entra, certs):
    first = vault.rotate("db-password", new_password())
    second_value = new_password()
    vault.rotate("db-password", second_value)
    store = store_for(entra, certs)
    assert store.get(SecretRef.parse(vault.ref("db-password"))) == second_value
    pinned = store.get(SecretRef.parse(vault.ref("db-password", first)))
    assert pinned != second_value
    assert vault.requests["challenge"] >= 1  # the SDK's own challenge handling ran
    assert vault.requests["read"] == 2


def test_vault_failures_name_the_reference_not_the_value(vault: KeyVaultStandIn, entra, certs):
    secret = new_password()
    vault.rotate("hidden", secret)
    vault.forbidden.add("hidden")
    store = store_for(entra, certs)
    with pytest.raises(SecretError, match="forbidden") as forbidden:
        store.get(SecretRef.parse(vault.ref("hidden")))
    with pytest.raises(SecretError, match="not found in the vault"):
        store.get(SecretRef.parse(vault.ref("absent")))
    stranger = store_for(EntraIssuer(), certs)  # tokens the vault does not trust
    vault.forbidden.clear()
    with pytest.raises(SecretError, match="authentication failed") as rejected:
        stranger.get(SecretRef.parse(vault.ref("hidden")))
    closed = SecretRef.parse(f"keyvault://127.0.0.1:{free_port()}/hidden")
    with pytest.raises(SecretError, match="unreachable"):
        store_for(entra, certs).get(closed)
    for failure in (forbidden, rejected):
        assert secret not in str(failure.value)
        assert str(failure.value).startswith(f"keyvault://{vault.host}/hidden")


@pytest.fixture
def vaulted_registry(
    tmp_path: Path, certs: Certs, engine: docker.DockerClient, vault: KeyVaultStandIn
) -> Iterator[Registry]:
    """A private registry whose credentials live only in the vault (and its htpasswd hash)."""
    registry = Registry(tmp_path / "vaulted", certs, "puller", new_password()).start()
    reference = f"{registry.host}/private/base:1"
    import_image(engine, busybox_rootfs_tar("vaulted"), reference)
    push(engine, reference, registry.auth())
    engine.api.remove_image(reference)
    vault.rotate("base-user", registry.username or "")
    vault.rotate("base-pass", registry.password or "")
    yield registry
    registry.stop()


def test_private_base_credentials_from_the_vault_survive_a_rotation(
    tmp_path: Path,
    certs: Certs,
    entra: EntraIssuer,
    vault: KeyVaultStandIn,
    vaulted_registry: Registry,
    target: Registry,
    engine: docker.DockerClient,
):
    base = f"{vaulted_registry.host}/private/base:1"
    specs = write(
        tmp_path / "specs", {"app/Dockerfile": f"FROM {base}\nRUN cat /etc/base-marker\n"}
    )
    store = store_for(entra, certs)
    target_user, target_pass = new_password(), target.password or ""
    vault.rotate("target-user", target.username or "")
    vault.rotate("target-pass", target_pass)
    settings = RegistrySettings(
        ca_file=certs.ca_file,
        credentials={
            vaulted_registry.host: CredentialRefs(
                SecretRef.parse(vault.ref("base-user")), SecretRef.parse(vault.ref("base-pass"))
            ),
            target.host: CredentialRefs(
                SecretRef.parse(vault.ref("target-user")), SecretRef.parse(vault.ref("target-pass"))
            ),
        },
    )
    lines: list[str] = []
    sync = Sync(
        Target(target.host, "kv"),
        RegistryPool(settings, store),
        SyncOptions(),
        Reporter(lines.append),
    )

    def run() -> dict[str, str]:
        envs = discover(FolderTree(specs), DiscoveryOptions(prefix="kv"))
        results = sync.run(envs)
        record_output(*lines, *(r.error or "" for r in results))
        return {r.item.env.name: r.outcome for r in results}

    assert run() == {"app": "built"}
    assert any("base-vaulted" in line for line in lines)
    reads = vault.requests["read"]

    # Rotate in the registry and in the vault; the same process picks the new value up.
    rotated = new_password()
    vaulted_registry.restart(password=rotated)
    vault.rotate("base-pass", rotated)
    for image in engine.images.list():
        for digest in image.attrs.get("RepoDigests") or []:
            if "/private/base@" in digest:
                engine.api.remove_image(digest)  # drop the reference: the next build must pull
    write(specs, {"app/Dockerfile": f"FROM {base}\nRUN cat /etc/base-marker && echo again\n"})
    lines.clear()
    assert run() == {"app": "built"}
    assert vault.requests["read"] > reads  # the rejected value was read again from the vault
    assert any(f"pulling {vaulted_registry.host}/private/base@" in line for line in lines)
    assert target_user not in "".join(lines)
    for line in lines:
        assert rotated not in line
        assert vaulted_registry.password not in line
