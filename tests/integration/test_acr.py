"""ACR sign-in with an Entra identity, through the real azure-containerregistry exchange client,
python-dxf and the Docker engine, against an ACR stand-in in front of a real registry.

The CLI's `--acr-identity` uses DefaultAzureCredential, which cannot reach Entra ID here, so the
sync runs in process with the same settings and a static credential whose tokens the stand-in
trusts.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError

from controller.adapters.acr import ACR_SCOPE, DOCKER_USER, AcrEntra
from controller.adapters.folder import FolderTree
from controller.adapters.registries import RegistryPool, RegistrySettings
from controller.adapters.secrets import CredentialRefs, SecretRef
from controller.core.discovery import DiscoveryOptions, discover
from controller.core.model import Environment
from controller.core.naming import tag_for
from controller.pipeline.sync import Reporter, Sync, SyncOptions, Target
from tests.support.acr_standin import AcrStandIn, Counts
from tests.support.canaries import canary, secret_file
from tests.support.identity import EntraIssuer, IssuingCredential
from tests.support.infra import Certs, Registry


class StaticCredential:
    """A `TokenCredential` that hands out one Entra token (or raises), counting the calls."""

    def __init__(self, token: str = "", expires_on: int = 0, error: Exception | None = None):
        self.token = token
        self.expires_on = expires_on
        self.error = error
        self.calls = 0
        self.scopes: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str, **kwargs: object) -> AccessToken:
        self.calls += 1
        self.scopes.append(scopes)
        if self.error is not None:
            raise self.error
        return AccessToken(self.token, self.expires_on)


@pytest.fixture(scope="module")
def entra() -> EntraIssuer:
    return EntraIssuer()


@pytest.fixture(scope="module")
def acr(workdir: Path, certs: Certs, entra: EntraIssuer) -> Iterator[AcrStandIn]:
    standin = AcrStandIn(workdir / "acr", certs, entra).start()
    yield standin
    standin.stop()


@pytest.fixture
def credential(entra: EntraIssuer) -> StaticCredential:
    return StaticCredential(*entra.token())


def write(folder: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return folder


def load(folder: Path, prefix: str) -> list[Environment]:
    with FolderTree(folder) as tree:
        return discover(tree, DiscoveryOptions(prefix=prefix))


class Session:
    """What `envship sync --acr-identity` sets up, with the test's credential."""

    def __init__(self, acr: AcrStandIn, certs: Certs, credential: StaticCredential) -> None:
        settings = RegistrySettings(
            ca_file=certs.ca_file,
            entra=frozenset({acr.host}),
            credential_factory=lambda: credential,
        )
        self.pool = RegistryPool(settings)
        self.lines: list[str] = []
        self.acr = acr

    def sync(self, prefix: str, **options: object) -> Sync:
        return Sync(
            Target(self.acr.host, prefix),
            self.pool,
            SyncOptions(jobs=2, **options),  # type: ignore[arg-type]
            Reporter(self.lines.append),
        )

    @property
    def authenticator(self) -> AcrEntra:
        authenticator = self.pool.get(self.acr.host).authenticator
        assert isinstance(authenticator, AcrEntra)
        return authenticator


@pytest.fixture
def session(acr: AcrStandIn, certs: Certs, credential: StaticCredential) -> Iterator[Session]:
    opened = Session(acr, certs, credential)
    yield opened
    opened.pool.close()


def test_sync_signs_in_with_entra_builds_pushes_then_finds_everything_up_to_date(
    acr: AcrStandIn,
    certs: Certs,
    credential: StaticCredential,
    session: Session,
    public_bases: Registry,
    engine: docker.DockerClient,
    tmp_path: Path,
):
    base = f"{public_bases.host}/base/busybox:1"
    specs = write(
        tmp_path / "specs",
        {
            "one/Dockerfile": f"FROM {base}\nRUN echo one > /one\n",
            "same/Dockerfile": f"FROM {base}\nRUN echo one > /one\n",
            "two/Dockerfile": f"FROM {base}\nCOPY data.txt /data.txt\n",
            "two/data.txt": "payload\n",
        },
    )
    envs = load(specs, "acr1")
    before = acr.counts.copy()
    results = session.sync("acr1", moving_tags=("latest",)).run(envs)
    spent = acr.counts - before

    outcomes = {r.item.env.name: r.outcome for r in results}
    assert outcomes == {"one": "built", "same": "copied", "two": "built"}, [
        r.error for r in results
    ]
    for result in results:
        repository = result.item.env.repository
        assert repository is not None
        assert result.digest
        # The registry behind the stand-in holds each image under its hash tag and `latest`.
        assert acr.manifest_digest(repository, tag_for(result.item.hash or "")) == result.digest
        assert acr.manifest_digest(repository, "latest") == result.digest
    # One Entra token, one refresh-token exchange for the whole sync; the Docker engine signed
    # in with that refresh token (GET /oauth2/token with the all-zero user); nothing refused.
    assert credential.calls == 1
    assert credential.scopes == [(ACR_SCOPE,)]
    assert spent.exchange == 1
    assert spent.token_get >= 1
    assert spent.refused == 0
    assert session.authenticator.docker_auth() == {
        "username": DOCKER_USER,
        "password": session.authenticator.refresh_token(),
    }

    # A second sync in a fresh process-like pool: everything is up to date, at the cost of one
    # exchange and one pull-scope access token per repository.
    again = Session(acr, certs, credential)
    before = acr.counts.copy()
    try:
        second = again.sync("acr1", moving_tags=("latest",)).run(load(specs, "acr1"))
    finally:
        again.pool.close()
    spent = acr.counts - before
    assert {r.item.env.name: r.outcome for r in second} == dict.fromkeys(outcomes, "up-to-date")
    assert (spent.exchange, spent.token_post, spent.token_get) == (1, 3, 0)
    assert sorted(acr.token_scopes[-3:]) == [
        f"repository:acr1/{name}:pull" for name in ("one", "same", "two")
    ]


def test_a_plan_of_60_repositories_costs_one_exchange_then_nothing(
    acr: AcrStandIn,
    credential: StaticCredential,
    session: Session,
    public_bases: Registry,
    tmp_path: Path,
):
    base = f"{public_bases.host}/base/busybox:1"
    count = 60
    specs = write(
        tmp_path / "specs",
        {f"env-{i:02d}/Dockerfile": f"FROM {base}\nRUN echo {i} > /i\n" for i in range(count)},
    )
    envs = load(specs, "acr2")
    sync = session.sync("acr2")

    before = acr.counts.copy()
    first = sync.plan(envs)
    spent = acr.counts - before
    assert [i.action for i in first] == ["build"] * count, [i.error for i in first]
    assert spent.exchange == 1  # the refresh token is shared by every repository
    assert spent.token_post == count  # one access token per repository scope, none twice
    assert sorted(acr.token_scopes[-count:]) == [
        f"repository:acr2/env-{i:02d}:pull" for i in range(count)
    ]
    assert spent.token_get == 0
    assert spent.refused == 0
    assert spent.registry <= 2 * count + 1  # challenge + HEAD per repository, one TLS probe
    assert credential.calls == 1

    before = acr.counts.copy()
    second = session.sync("acr2").plan(envs)
    assert acr.counts - before == Counts()  # no token and no registry request at all
    assert [i.action for i in second] == ["build"] * count
    assert credential.calls == 1


def test_a_refresh_token_about_to_expire_is_renewed(
    acr: AcrStandIn,
    credential: StaticCredential,
    session: Session,
    public_bases: Registry,
    engine: docker.DockerClient,
    tmp_path: Path,
):
    # Issued for 302 s: fresh for 1-2 s under the 300 s margin, then renewed before use.
    acr.refresh_lifetime = 302
    try:
        registry = session.pool.get(acr.host)
        before = acr.counts.copy()
        assert registry.digest("acr3/a", "missing") is None
        assert registry.digest("acr3/b", "missing") is None
        assert (acr.counts - before).exchange == 1
        first_refresh = acr.refresh_ids[-1]

        time.sleep(2.1)
        before = acr.counts.copy()
        assert registry.digest("acr3/c", "missing") is None
        spent = acr.counts - before
        assert (spent.exchange, spent.token_post) == (1, 1)
        assert acr.refresh_ids[-1] != first_refresh
        assert credential.calls == 2  # a new Entra token for the new exchange
        # Access tokens (1 h) outlive the refresh token's renewal: no new ones for known scopes.
        before = acr.counts.copy()
        assert registry.digest("acr3/a", "other", refresh=True) is None
        assert acr.counts - before == Counts(registry=1)

        # The Docker engine pushes with the renewed refresh token.
        base = f"{public_bases.host}/base/busybox:1"
        specs = write(tmp_path / "specs", {"late/Dockerfile": f"FROM {base}\nRUN echo late\n"})
        before = acr.counts.copy()
        results = session.sync("acr3").run(load(specs, "acr3"))
        assert [r.outcome for r in results] == ["built"], [r.error for r in results]
        spent = acr.counts - before
        assert spent.token_get >= 1
        assert spent.refused == 0
        used = set(acr.docker_refresh_ids[-spent.token_get :])
        assert first_refresh not in used
        assert used <= set(acr.refresh_ids[acr.refresh_ids.index(first_refresh) + 1 :])
    finally:
        acr.refresh_lifetime = AcrStandIn.refresh_lifetime


@pytest.mark.parametrize("case", ["unknown-signer", "wrong-audience", "no-identity"])
def test_a_rejected_entra_token_fails_each_environment_clearly(
    case: str,
    acr: AcrStandIn,
    certs: Certs,
    entra: EntraIssuer,
    public_bases: Registry,
    tmp_path: Path,
):
    if case == "unknown-signer":
        credential = StaticCredential(*EntraIssuer().token())
        expected = "refused the Entra sign-in (refresh token exchange: HTTP 401)"
    elif case == "wrong-audience":
        credential = StaticCredential(*entra.token(audience="https://management.azure.com"))
        expected = "refused the Entra sign-in (refresh token exchange: HTTP 401)"
    else:
        credential = StaticCredential(error=ClientAuthenticationError("no managed identity"))
        expected = "no Entra token for ACR (ClientAuthenticationError)"
    base = f"{public_bases.host}/base/busybox:1"
    names = ("a", "b", "c", "d", "e")
    specs = write(
        tmp_path / "specs",
        {f"{name}/Dockerfile": f"FROM {base}\nRUN echo {name}\n" for name in names},
    )
    session = Session(acr, certs, credential)
    before = acr.counts.copy()
    try:
        results = session.sync("acr4").run(load(specs, "acr4"))
    finally:
        session.pool.close()
    assert [r.outcome for r in results] == ["failed"] * len(names)
    for result in results:
        assert result.error is not None
        assert expected in result.error, result.error
        assert acr.host in result.error
        if credential.token:
            assert credential.token not in result.error
            assert credential.token.split(".")[2] not in result.error
    assert not any(credential.token and credential.token in line for line in session.lines)
    assert acr.manifest_digest("acr4/a", "latest") is None
    spent = acr.counts - before
    assert spent.token_post == spent.token_get == 0  # no refresh token, so no access token
    # The refusal is remembered: one Entra token and one refused exchange for all five.
    assert credential.calls == 1
    assert spent.refused == spent.exchange == (0 if case == "no-identity" else 1)


def test_a_v1_registry_identity_pulls_its_base_as_that_identity(
    acr: AcrStandIn,
    certs: Certs,
    entra: EntraIssuer,
    session: Session,
    public_bases: Registry,
    target: Registry,
    engine: docker.DockerClient,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
):
    """`baseImageRegistry.registryIdentity`: the base registry is signed in to with Entra as the
    managed identity the spec names; no credential for it is configured anywhere."""
    # A private base in the ACR (pushed as the session's identity).
    base = f"{acr.host}/private/base:1"
    engine.api.tag(f"{public_bases.host}/base/busybox:1", f"{acr.host}/private/base", "1")
    docker_auth = session.authenticator.docker_auth()
    for item in engine.api.push(f"{acr.host}/private/base", tag="1", stream=True, decode=True,
                                auth_config=docker_auth):  # fmt: skip
        assert "error" not in item, item
    engine.api.remove_image(base)
    v1 = {
        "name": "uses-identity",
        "python": {"userManagedDependencies": True},
        "docker": {
            "baseImage": "private/base:1",
            "baseImageRegistry": {
                "address": acr.host,
                "registryIdentity": {"clientId": "22222222-aaaa-bbbb-cccc-333333333333"},
            },
        },
    }
    specs = write(tmp_path / "specs", {"e/azureml_environment.json": json.dumps(v1)})
    asked: list[str] = []

    def identity(client_id: str) -> IssuingCredential:
        asked.append(client_id)
        return IssuingCredential(entra)

    monkeypatch.setenv("ENVSHIP_TEST_USER", target.username or "")
    monkeypatch.setenv("ENVSHIP_TEST_PASS", target.password or "")
    target_refs = CredentialRefs(
        SecretRef.parse("env:ENVSHIP_TEST_USER"), SecretRef.parse("env:ENVSHIP_TEST_PASS")
    )
    settings = RegistrySettings(
        ca_file=certs.ca_file, credentials={target.host: target_refs}, identity_factory=identity
    )
    pool = RegistryPool(settings)
    lines: list[str] = []
    sync = Sync(Target(target.host, "identity"), pool, SyncOptions(), Reporter(lines.append))
    results = sync.run(load(specs, "identity"))
    assert [(r.item.env.name, r.outcome, r.error) for r in results] == [
        ("uses-identity", "built", None)
    ]
    assert asked == ["22222222-aaaa-bbbb-cccc-333333333333"]
    assert any(f"pulling {acr.host}/private/base@" in line for line in lines)
    pool.close()


def test_admin_username_and_password_sign_in_through_the_token_endpoint(
    acr: AcrStandIn,
    certs: Certs,
    public_bases: Registry,
    engine: docker.DockerClient,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
):
    """ACR's admin user (or a token with a password) is basic credentials, but ACR answers
    the registry's 401 with a bearer challenge: both the plan (python-dxf) and the engine's push
    must trade them at `GET /oauth2/token`; no Entra exchange happens."""
    password = canary("acr-admin")
    acr.admin = ("envship-admin", password)
    monkeypatch.setenv("ENVSHIP_TEST_ACR_USER", "envship-admin")
    password_file = secret_file(tmp_path / "acr-password", password)
    base = f"{public_bases.host}/base/busybox:1"
    specs = write(tmp_path / "specs", {"admin/Dockerfile": f"FROM {base}\nRUN echo admin\n"})

    def sync(password_ref: str) -> tuple[list[str], list[str | None], list[str], Counts]:
        refs = CredentialRefs(
            SecretRef.parse("env:ENVSHIP_TEST_ACR_USER"), SecretRef.parse(password_ref)
        )
        pool = RegistryPool(RegistrySettings(ca_file=certs.ca_file, credentials={acr.host: refs}))
        lines: list[str] = []
        before = acr.counts.copy()
        try:
            results = Sync(
                Target(acr.host, "acr6"), pool, SyncOptions(jobs=1), Reporter(lines.append)
            ).run(load(specs, "acr6"))
        finally:
            pool.close()
        return [r.outcome for r in results], [r.error for r in results], lines, acr.counts - before

    try:
        outcomes, errors, lines, spent = sync(f"file:{password_file}")
        assert outcomes == ["built"], errors
        assert spent.exchange == spent.token_post == 0
        assert spent.token_get >= 2  # the plan's check and the engine's push, each a token
        assert acr.manifest_digest("acr6/admin", "latest") is None  # no moving tag asked
        outcomes, errors, lines, spent = sync(f"file:{password_file}")
        assert outcomes == ["up-to-date"], errors

        (tmp_path / "wrong").write_text("not-the-password\n")
        outcomes, errors, lines, spent = sync(f"file:{tmp_path / 'wrong'}")
        assert outcomes == ["failed"]
        assert errors[0] is not None
        assert acr.host in errors[0]
        assert "not-the-password" not in errors[0]
        assert spent.refused >= 1
        assert not any(password in line or "not-the-password" in line for line in lines)
    finally:
        acr.admin = None
