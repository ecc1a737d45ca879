"""Leader election through a coordination.k8s.io/v1 Lease (controller.adapters.lease), with the
real `kubernetes` client over TLS and a bearer token against a stand-in API server
(tests/support/kube_standin.py), the controller's HTTP surface, and two real `envship run`
processes.

Durations are short (lease 2 s, renew deadline 1.5 s, retry period 0.3 s) to keep this fast.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
import trustme
import yaml
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from controller.adapters.gitsource import GitSettings, GitSource
from controller.adapters.lease import (
    ADDRESS_ANNOTATION,
    LeaderElector,
    LeaseError,
    LeaseSettings,
    coordination_api,
    default_address,
    default_identity,
    default_namespace,
)
from controller.adapters.secrets import SecretStore
from controller.core.discovery import DiscoveryOptions
from controller.http.app import WebhookSecrets, make_app
from controller.service.config import ConfigError, load
from controller.service.controller import Controller
from controller.service.metrics import Metrics
from tests.support.canaries import canary, record_output
from tests.support.kube_standin import KubeStandin
from tests.support.paths import ROOT
from tests.support.upstream import Upstream

NS = "envship-test"
LEASE = "envship"
DURATION, DEADLINE, RETRY = 2.0, 1.5, 0.3
TOKEN = "standin-token-4f1c"  # not a secret: the stand-in's own
CHART_SECTION = """
leaderElection:
  enabled: false            # default
  leaseName: envship
  namespace: null           # default: env POD_NAMESPACE, then the service account namespace
  identity: null            # default: env POD_NAME, then the hostname
  leaseDurationSeconds: 15  # controller-runtime defaults 15/10/2
  renewDeadlineSeconds: 10
  retryPeriodSeconds: 2
"""


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll `check` until true; returns the time.monotonic() it became true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return time.monotonic()
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


# -- the stand-in and candidates ---------------------------------------------------------------


@dataclass(frozen=True)
class Tls:
    ca_file: str
    cert_file: str
    key_file: str


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    folder = tmp_path_factory.mktemp("kube-tls")
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    server.private_key_pem.write_to_path(str(folder / "server.key"))
    server.cert_chain_pems[0].write_to_path(str(folder / "server.pem"))
    return Tls(str(folder / "ca.pem"), str(folder / "server.pem"), str(folder / "server.key"))


@pytest.fixture
def standin(tls: Tls) -> Iterator[KubeStandin]:
    server = KubeStandin(TOKEN, tls.cert_file, tls.key_file, tls.ca_file).start()
    yield server
    server.hang.clear()
    server.stop()


@dataclass
class Candidate:
    elector: LeaderElector
    started: threading.Event = field(default_factory=threading.Event)
    lost: threading.Event = field(default_factory=threading.Event)
    lost_at: float = 0.0
    leading_when_told: bool | None = None

    @property
    def identity(self) -> str:
        return self.elector.settings.identity


@dataclass
class Candidates:
    standin: KubeStandin
    kubeconfig: Path
    made: list[Candidate] = field(default_factory=list)

    def api(self, kubeconfig: Path | None = None) -> Any:
        return coordination_api(
            environ={},
            service_account=Path("/nonexistent"),
            kubeconfig=str(kubeconfig or self.kubeconfig),
        )

    def __call__(
        self, identity: str, *, start: bool = True, address: str | None = None, **options: Any
    ) -> Candidate:
        settings = LeaseSettings(LEASE, NS, identity, DURATION, DEADLINE, RETRY, address)
        candidate: Candidate

        def started() -> None:
            candidate.started.set()

        def stopped() -> None:
            candidate.lost_at = time.monotonic()
            candidate.leading_when_told = candidate.elector.is_leader()
            candidate.lost.set()

        api = options.pop("api", None) or self.api()
        elector = LeaderElector(
            settings, api, on_started_leading=started, on_stopped_leading=stopped, **options
        )
        candidate = Candidate(elector)
        self.made.append(candidate)
        if start:
            elector.start()
        return candidate

    def lease(self) -> dict[str, Any]:
        lease = self.standin.lease(NS, LEASE)
        assert lease is not None
        return lease


@pytest.fixture
def candidates(standin: KubeStandin, tmp_path: Path) -> Iterator[Candidates]:
    made = Candidates(standin, standin.kubeconfig(tmp_path / "kubeconfig"))
    yield made
    for candidate in made.made:
        candidate.elector.stop(release=False, timeout=3)


class HoldUntilAll:
    """A `before` hook: the first `count` requests that `match` wait until all have arrived, so
    that they reach the store together (a real race); later ones pass at once."""

    def __init__(self, count: int, match: Callable[[str, dict[str, Any] | None], bool]) -> None:
        self.count = count
        self.match = match
        self.arrived = 0
        self.lock = threading.Lock()
        self.all_here = threading.Event()

    def __call__(self, method: str, _path: str, body: dict[str, Any] | None) -> None:
        if not self.match(method, body):
            return
        with self.lock:
            if self.arrived >= self.count:
                return
            self.arrived += 1
            if self.arrived == self.count:
                self.all_here.set()
        self.all_here.wait(5)


def holder_of(body: dict[str, Any] | None) -> str | None:
    return ((body or {}).get("spec") or {}).get("holderIdentity")


def never_two_leaders(group: Sequence[Candidate], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        leaders = [c.identity for c in group if c.elector.is_leader()]
        assert len(leaders) <= 1, f"two leaders at once: {leaders}"
        time.sleep(0.005)


# -- configuration ------------------------------------------------------------------------------


BASE_CONFIG = {"git": {"url": "https://example.org/specs.git"}, "registry": {"url": "r.test/p"}}


def write_config(tmp_path: Path, extra: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(BASE_CONFIG) + extra, encoding="utf-8")
    return path


def test_the_charts_section_reads_with_its_defaults(tmp_path: Path) -> None:
    section = load(write_config(tmp_path, CHART_SECTION)).leaderElection
    assert section.enabled is False
    assert section.lease_name == "envship"
    assert section.namespace is None
    assert section.identity is None
    assert (section.lease_duration, section.renew_deadline, section.retry_period) == (15, 10, 2)
    # absent: the same defaults
    assert load(write_config(tmp_path, "")).leaderElection == section


def test_the_environment_overrides_the_files_section(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ENVSHIP_LEADERELECTION__ENABLED", "true")
    monkeypatch.setenv("ENVSHIP_LEADERELECTION__RETRYPERIODSECONDS", "1")
    monkeypatch.setenv("LEADERELECTION__IDENTITY", "not-envships-variable")
    section = load(write_config(tmp_path, CHART_SECTION)).leaderElection
    assert section.enabled is True
    assert section.retry_period == 1
    assert section.lease_name == "envship"  # kept from the file
    assert section.identity is None


@pytest.mark.parametrize(
    ("durations", "problem"),
    [
        ("{leaseDurationSeconds: 10, renewDeadlineSeconds: 10}", "renewDeadlineSeconds (10)"),
        ("{leaseDurationSeconds: 5, renewDeadlineSeconds: 10}", "renewDeadlineSeconds (10)"),
        ("{renewDeadlineSeconds: 2, retryPeriodSeconds: 2}", "retryPeriodSeconds (2)"),
        ("{retryPeriodSeconds: 0}", "leaderElection.retryPeriodSeconds: Input should be greater"),
        ("{renewDeadlineSeconds: -1}", "leaderElection.renewDeadlineSeconds: Input should be"),
        ("{leaseDurationSeconds: .nan}", "leaderElection.leaseDurationSeconds"),
        ("{leaseDurationSeconds: .inf}", "leaderElection.leaseDurationSeconds"),
        ("{leaseName: Not_A_Name}", "leaderElection.leaseName"),
        ("{namespace: Bad.Namespace}", "leaderElection.namespace"),
        ("{identity: ''}", "leaderElection.identity"),
        ("{renewDeadline: 5}", "leaderElection.renewDeadline: Extra inputs"),
    ],
)
def test_bad_settings_are_refused(tmp_path: Path, durations: str, problem: str) -> None:
    with pytest.raises(ConfigError) as error:
        load(write_config(tmp_path, f"leaderElection: {durations}\n"))
    assert problem in str(error.value)


def test_the_lease_settings_check_the_order_too() -> None:
    with pytest.raises(ValueError, match="retryPeriod < renewDeadline < leaseDuration"):
        LeaseSettings(LEASE, NS, "a", lease_duration=2, renew_deadline=2, retry_period=1)
    assert LeaseSettings(LEASE, NS, "a", 1.2, 1.0, 0.5).recorded_duration == 2


def test_namespace_and_identity_defaults(tmp_path: Path) -> None:
    account = tmp_path / "serviceaccount"
    account.mkdir()
    assert default_namespace({"POD_NAMESPACE": "from-env"}, account) == "from-env"
    with pytest.raises(LeaseError, match="POD_NAMESPACE"):
        default_namespace({}, account)
    (account / "namespace").write_text("from-file\n")
    assert default_namespace({}, account) == "from-file"
    assert default_namespace({"POD_NAMESPACE": " "}, account) == "from-file"
    assert default_identity({"POD_NAME": "envship-7d9-x2"}) == "envship-7d9-x2"
    assert default_identity({}) == socket.gethostname()


def test_the_published_address_is_the_pod_ip_and_the_http_port() -> None:
    assert default_address(8080, {"POD_IP": "10.244.1.7"}) == "http://10.244.1.7:8080"
    assert default_address(9000, {"POD_IP": " fd00::a:7 "}) == "http://[fd00::a:7]:9000"
    assert default_address(8080, {}) is None
    assert default_address(8080, {"POD_IP": ""}) is None
    with pytest.raises(LeaseError, match="POD_IP"):
        default_address(8080, {"POD_IP": "10.0.0.7:8080"})
    with pytest.raises(ValueError, match="http://"):
        LeaseSettings(LEASE, NS, "a", address="https://10.0.0.7:8080")


# -- the API client and the stand-in -----------------------------------------------------------


def test_the_pods_service_account_reaches_the_api_server(
    standin: KubeStandin, tls: Tls, tmp_path: Path
) -> None:
    account = tmp_path / "serviceaccount"
    account.mkdir()
    (account / "token").write_text(TOKEN)
    (account / "ca.crt").write_text(Path(tls.ca_file).read_text())
    port = standin.url.rsplit(":", 1)[1]
    environ = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": port}
    api = coordination_api(environ=environ, service_account=account, kubeconfig="/nonexistent")
    elector = LeaderElector(LeaseSettings(LEASE, NS, "pod-a", DURATION, DEADLINE, RETRY), api)
    elector.start()
    try:
        wait_until(elector.is_leader, 5, "leading through the in-cluster configuration")
    finally:
        elector.stop()
    assert standin.count(status=401) == 0


def test_plain_http_works_too(tmp_path: Path) -> None:
    server = KubeStandin(TOKEN).start()
    try:
        assert server.url.startswith("http://")
        api = coordination_api(
            environ={}, service_account=tmp_path, kubeconfig=str(server.kubeconfig(tmp_path / "k"))
        )
        elector = LeaderElector(LeaseSettings(LEASE, NS, "a", DURATION, DEADLINE, RETRY), api)
        elector.start()
        try:
            wait_until(elector.is_leader, 5, "leading over plain HTTP")
        finally:
            elector.stop()
        lease = server.lease(NS, LEASE)
        assert lease is not None
        assert lease["spec"].get("holderIdentity", "") == ""  # released
    finally:
        server.stop()


def test_no_credentials_at_all_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(LeaseError, match="no Kubernetes credentials"):
        coordination_api(
            environ={"KUBECONFIG": str(tmp_path / "missing")}, service_account=tmp_path
        )


def test_the_standin_answers_as_kube_apiserver_does(candidates: Candidates) -> None:
    from kubernetes import client  # noqa: PLC0415
    from kubernetes.client.exceptions import ApiException  # noqa: PLC0415

    api = candidates.api()
    with pytest.raises(ApiException) as missing:
        api.read_namespaced_lease(LEASE, NS)
    assert missing.value.status == 404
    assert '"reason":"NotFound"' in (missing.value.body or "").replace(" ", "")

    now = datetime(2025, 1, 1, 12, 0, 0, 250000, tzinfo=UTC)
    spec = client.V1LeaseSpec(holder_identity="x", lease_duration_seconds=5, renew_time=now)
    body = client.V1Lease(metadata=client.V1ObjectMeta(name=LEASE), spec=spec)
    created = api.create_namespaced_lease(NS, body)
    assert created.spec.renew_time == now
    assert candidates.standin.count("POST", 201) == 1
    with pytest.raises(ApiException) as duplicate:
        api.create_namespaced_lease(NS, body)
    assert duplicate.value.status == 409
    assert "AlreadyExists" in (duplicate.value.body or "")

    first = api.read_namespaced_lease(LEASE, NS)
    first.spec.holder_identity = "y"
    second = api.replace_namespaced_lease(LEASE, NS, first)
    assert int(second.metadata.resource_version) > int(first.metadata.resource_version)
    first.spec.holder_identity = "z"  # first still carries the old resourceVersion
    with pytest.raises(ApiException) as stale:
        api.replace_namespaced_lease(LEASE, NS, first)
    assert stale.value.status == 409
    assert '"reason": "Conflict"' in (stale.value.body or "")
    assert api.read_namespaced_lease(LEASE, NS).spec.holder_identity == "y"

    # MicroTime needs six fraction digits: the client leaves a zero fraction out
    second.spec.renew_time = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
    with pytest.raises(ApiException) as bad_time:
        api.replace_namespaced_lease(LEASE, NS, second)
    assert bad_time.value.status == 400

    other = Candidates(candidates.standin, candidates.kubeconfig.with_name("wrong-token"))
    candidates.standin.kubeconfig(other.kubeconfig, token="wrong")
    with pytest.raises(ApiException) as refused:
        other.api().read_namespaced_lease(LEASE, NS)
    assert refused.value.status == 401


# -- the elector --------------------------------------------------------------------------------


@pytest.mark.slow
def test_two_candidates_race_and_exactly_one_leads(candidates: Candidates) -> None:
    race = HoldUntilAll(2, lambda method, _body: method == "POST")
    candidates.standin.before = race
    a, b = candidates("a"), candidates("b")
    wait_until(lambda: a.elector.is_leader() or b.elector.is_leader(), 5, "a leader")
    assert race.arrived == 2  # both tried to create the Lease at the same moment
    assert candidates.standin.count("POST", 201) == 1
    assert candidates.standin.count("POST", 409) == 1  # AlreadyExists for the other
    never_two_leaders([a, b], 1.5)
    leader, follower = (a, b) if a.elector.is_leader() else (b, a)
    assert leader.started.is_set()
    assert not follower.started.is_set()
    assert candidates.lease()["spec"]["holderIdentity"] == leader.identity
    assert follower.elector.describe() == {
        "identity": follower.identity,
        "lease": f"{NS}/{LEASE}",
        "leading": False,
        "leader": leader.identity,
        "leader_address": None,  # neither publishes one
    }
    assert follower.elector.leader_address() is None
    assert not leader.lost.is_set()
    assert not follower.lost.is_set()


@pytest.mark.slow
def test_the_leader_renews_and_the_follower_waits(candidates: Candidates) -> None:
    a = candidates("a")
    wait_until(a.elector.is_leader, 5, "a leading")
    b = candidates("b")
    first = candidates.lease()
    time.sleep(DURATION * 1.5)  # longer than the lease: only renewals keep it
    later = candidates.lease()
    assert later["spec"]["holderIdentity"] == "a"
    assert later["spec"]["renewTime"] > first["spec"]["renewTime"]
    assert later["spec"]["acquireTime"] == first["spec"]["acquireTime"]
    assert later["spec"]["leaseTransitions"] == 0
    assert later["spec"]["leaseDurationSeconds"] == 2
    renewals = int(later["metadata"]["resourceVersion"]) - int(first["metadata"]["resourceVersion"])
    assert renewals >= DURATION * 1.5 / RETRY / 2
    assert a.elector.is_leader()
    assert not b.started.is_set()
    assert not a.lost.is_set()


@pytest.mark.slow
def test_a_crashed_leader_is_replaced_after_the_lease_duration(candidates: Candidates) -> None:
    a = candidates("a")
    wait_until(a.elector.is_leader, 5, "a leading")
    b = candidates("b")
    time.sleep(3 * RETRY)
    last_renewal = candidates.lease()["metadata"]["resourceVersion"]
    crashed = time.monotonic()
    a.elector.stop(release=False)  # no release: the Lease is left to expire
    assert candidates.lease()["spec"]["holderIdentity"] == "a"
    took_over = wait_until(b.elector.is_leader, DURATION + 3, "b taking over")
    waited = took_over - crashed
    assert waited >= DURATION - RETRY - 0.1, f"took over after {waited:.2f} s"
    assert waited <= DURATION + 2 * RETRY + 0.5, f"took over after {waited:.2f} s"
    lease = candidates.lease()
    assert lease["spec"]["holderIdentity"] == "b"
    assert lease["spec"]["leaseTransitions"] == 1
    assert int(lease["metadata"]["resourceVersion"]) > int(last_renewal)
    assert b.started.wait(1)
    assert not a.lost.is_set()  # a crash is not reported as a loss


@pytest.mark.slow
def test_a_released_lease_is_taken_within_a_retry_period(candidates: Candidates) -> None:
    a = candidates("a")
    wait_until(a.elector.is_leader, 5, "a leading")
    b, c = candidates("b"), candidates("c")
    time.sleep(2 * RETRY)
    # b and c take the released Lease with the same resourceVersion: one gets 409 Conflict
    race = HoldUntilAll(2, lambda method, body: method == "PUT" and holder_of(body) in ("b", "c"))
    candidates.standin.before = race
    released = time.monotonic()
    a.elector.stop()
    assert not a.elector.is_leader()
    record = candidates.standin.lease(NS, LEASE)
    assert record is not None
    assert record["spec"].get("holderIdentity", "") in ("", "b", "c")
    took_over = wait_until(
        lambda: b.elector.is_leader() or c.elector.is_leader(), 3, "b or c taking over"
    )
    assert took_over - released < 2 * RETRY * 1.2 + 0.5
    assert race.arrived == 2
    assert candidates.standin.count("PUT", 409) == 1
    never_two_leaders([a, b, c], 1.0)
    assert candidates.lease()["spec"]["leaseTransitions"] == 1
    assert not a.lost.is_set()


def test_the_release_empties_the_holder_like_client_go(candidates: Candidates) -> None:
    a = candidates("a")
    wait_until(a.elector.is_leader, 5, "a leading")
    a.elector.stop()
    spec = candidates.lease()["spec"]
    assert spec.get("holderIdentity", "") == ""
    assert spec["leaseDurationSeconds"] == 1
    assert spec["leaseTransitions"] == 0
    assert a.elector.describe()["leader"] is None


def annotation(lease: dict[str, Any] | None) -> str | None:
    return ((lease or {}).get("metadata", {}).get("annotations") or {}).get(ADDRESS_ANNOTATION)


def test_the_leader_publishes_its_address_and_followers_learn_it(candidates: Candidates) -> None:
    a = candidates("a", address="http://10.0.0.1:8080")
    wait_until(a.elector.is_leader, 5, "a leading")
    assert annotation(candidates.lease()) == "http://10.0.0.1:8080"  # written as it took it
    b = candidates("b", address="http://10.0.0.2:8080")
    wait_until(lambda: b.elector.leader_address() is not None, 5, "b learning a's address")
    assert b.elector.leader_address() == "http://10.0.0.1:8080"
    assert b.elector.describe()["leader"] == "a"
    assert b.elector.describe()["leader_address"] == "http://10.0.0.1:8080"
    assert a.elector.leader_address() is None  # the leader never relays to itself
    assert a.elector.describe()["leader_address"] == "http://10.0.0.1:8080"

    # someone strips the annotation: the next renewal writes it back
    candidates.standin.write(NS, LEASE, lambda lease: lease["metadata"].pop("annotations"))
    wait_until(lambda: annotation(candidates.lease()) is not None, 2, "the address restored")
    assert annotation(candidates.lease()) == "http://10.0.0.1:8080"
    assert a.elector.is_leader()

    # a gives the Lease up: the address goes with it, b takes over and publishes its own
    gate = threading.Event()
    candidates.standin.before = lambda method, _path, body: (
        gate.wait(5) if method == "PUT" and holder_of(body) == "b" else None
    )
    a.elector.stop()
    released = candidates.lease()
    assert released["spec"].get("holderIdentity", "") == ""
    assert annotation(released) is None
    gate.set()
    wait_until(b.elector.is_leader, 3, "b taking over")
    assert annotation(candidates.lease()) == "http://10.0.0.2:8080"
    assert b.elector.leader_address() is None
    assert b.elector.describe()["leader_address"] == "http://10.0.0.2:8080"


@pytest.mark.slow
def test_a_follower_ignores_an_address_without_a_holder_or_its_own(
    candidates: Candidates,
) -> None:
    a = candidates("a", address="http://10.0.0.1:8080")
    wait_until(a.elector.is_leader, 5, "a leading")
    a.elector.stop(release=False)  # a crashes: the Lease still names it, with its address
    b = candidates("b", address="http://10.0.0.1:8080")  # restarted on the same pod IP
    wait_until(lambda: b.elector.describe()["leader"] == "a", 5, "b reading the Lease")
    assert b.elector.describe()["leader_address"] == "http://10.0.0.1:8080"
    assert b.elector.leader_address() is None  # its own address: never relay to oneself
    wait_until(b.elector.is_leader, DURATION + 3, "b taking over")
    assert annotation(candidates.lease()) == "http://10.0.0.1:8080"


def test_an_address_counts_only_with_a_holder() -> None:
    from kubernetes import client  # noqa: PLC0415

    elector = LeaderElector(LeaseSettings(LEASE, NS, "b", DURATION, DEADLINE, RETRY), api=None)

    def record(version: str, holder: str, annotations: dict[str, str] | None) -> None:
        meta = client.V1ObjectMeta(resource_version=version, annotations=annotations)
        elector._observe(
            client.V1Lease(metadata=meta, spec=client.V1LeaseSpec(holder_identity=holder)), 0.0
        )

    record("1", "a", {ADDRESS_ANNOTATION: "http://10.0.0.1:8080"})
    assert elector.leader_address() == "http://10.0.0.1:8080"
    # released by another client: nobody holds it, the annotation stayed
    record("2", "", {ADDRESS_ANNOTATION: "http://10.0.0.1:8080"})
    assert elector.leader_address() is None
    assert elector.describe()["leader_address"] is None
    record("3", "c", None)  # a leader that publishes nothing
    assert elector.leader_address() is None
    record("4", "c", {ADDRESS_ANNOTATION: "http://" + "x" * 300 + ":1"})
    assert elector.leader_address() is None
    # a record that names this replica (a previous life of it): never relay to oneself
    record("5", "b", {ADDRESS_ANNOTATION: "http://10.0.0.9:8080"})
    assert elector.leader_address() is None
    assert elector.describe()["leader_address"] == "http://10.0.0.9:8080"


@pytest.mark.slow
def test_a_leader_without_an_address_removes_a_stale_one(candidates: Candidates) -> None:
    a = candidates("a")
    wait_until(a.elector.is_leader, 5, "a leading")
    candidates.standin.write(
        NS,
        LEASE,
        lambda lease: lease["metadata"].update(
            annotations={ADDRESS_ANNOTATION: "http://10.9.9.9:8080", "team": "ml"}
        ),
    )
    wait_until(lambda: annotation(candidates.lease()) is None, 2, "the stale address removed")
    assert candidates.lease()["metadata"]["annotations"] == {"team": "ml"}  # others are kept
    b = candidates("b")
    time.sleep(2 * RETRY)
    assert b.elector.describe()["leader"] == "a"
    assert b.elector.leader_address() is None


@pytest.mark.slow
def test_a_conflicting_write_is_retried_and_leadership_kept(candidates: Candidates) -> None:
    a = candidates("a")
    wait_until(a.elector.is_leader, 5, "a leading")
    conflicts = 0

    def another_writer(method: str, _path: str, body: dict[str, Any] | None) -> None:
        nonlocal conflicts
        if method == "PUT" and holder_of(body) == "a" and conflicts < 2:
            conflicts += 1
            # someone labels the Lease between a's read and a's write
            candidates.standin.write(
                NS, LEASE, lambda lease: lease["metadata"].update(labels={"n": str(conflicts)})
            )

    candidates.standin.before = another_writer
    wait_until(lambda: candidates.standin.count("PUT", 409) == 2, 5, "two conflicts")
    renewed = candidates.standin.count("PUT", 200)
    wait_until(lambda: candidates.standin.count("PUT", 200) > renewed, 2, "a renewing again")
    assert a.elector.is_leader()
    assert not a.lost.is_set()
    assert candidates.lease()["spec"]["holderIdentity"] == "a"


@pytest.mark.slow
def test_the_leader_stops_at_the_renew_deadline_when_the_api_server_is_down(
    candidates: Candidates,
) -> None:
    a = candidates("a")
    b = candidates("b", start=False)
    wait_until(a.elector.is_leader, 5, "a leading")
    b.elector.start()
    time.sleep(3 * RETRY)
    down = time.monotonic()
    candidates.standin.stop()
    assert a.lost.wait(DEADLINE + 2), "the leadership was not given up"
    after = a.lost_at - down
    # the deadline counts from the start of the last renewal, at most one retry period before
    assert DEADLINE - RETRY - 0.15 <= after <= DEADLINE + 0.25, f"lost after {after:.2f} s"
    assert a.leading_when_told is False
    assert not a.elector.is_leader()
    assert not b.elector.is_leader()
    # it does not campaign again: back up, the API server sees nothing from a
    candidates.standin.start()
    wait_until(b.elector.is_leader, DURATION + 3, "b leading once the API is back")
    assert not a.elector.is_leader()


@pytest.mark.slow
def test_the_leader_stops_at_the_renew_deadline_when_the_api_server_hangs(
    candidates: Candidates,
) -> None:
    a = candidates("a")
    wait_until(a.elector.is_leader, 5, "a leading")
    time.sleep(2 * RETRY)
    hung = time.monotonic()
    candidates.standin.hang.set()  # connections are accepted, nothing is answered
    assert a.lost.wait(DEADLINE + 2), "the leadership was not given up"
    after = a.lost_at - hung
    assert DEADLINE - RETRY - 0.15 <= after <= DEADLINE + 0.25, f"lost after {after:.2f} s"
    assert not a.elector.is_leader()


def test_another_holder_ends_the_leadership_at_once(candidates: Candidates) -> None:
    a = candidates("a")
    wait_until(a.elector.is_leader, 5, "a leading")
    taken = time.monotonic()
    candidates.standin.write(
        NS, LEASE, lambda lease: lease["spec"].update(holderIdentity="intruder")
    )
    assert a.lost.wait(DEADLINE), "the leadership was not given up"
    assert a.lost_at - taken < RETRY + 0.4  # the next renewal's read, not the deadline
    assert not a.elector.is_leader()
    assert candidates.lease()["spec"]["holderIdentity"] == "intruder"


def test_a_whole_second_is_written_as_a_valid_micro_time(candidates: Candidates) -> None:
    whole = datetime(2025, 6, 1, 8, 0, 0, tzinfo=UTC)
    a = candidates("a", now=lambda: whole)
    wait_until(a.elector.is_leader, 5, "a leading with a whole-second clock")
    assert candidates.standin.count(status=400) == 0
    assert candidates.lease()["spec"]["renewTime"] == "2025-06-01T08:00:00.000001Z"


def test_a_refused_token_never_leads(candidates: Candidates, tmp_path: Path) -> None:
    wrong = candidates.standin.kubeconfig(tmp_path / "wrong", token="not-the-token")
    a = candidates("a", api=candidates.api(wrong))
    wait_until(lambda: candidates.standin.count(status=401) >= 3, 5, "refused attempts")
    assert not a.elector.is_leader()
    assert not a.started.is_set()
    assert candidates.standin.lease(NS, LEASE) is None


def test_a_failing_start_gives_the_leadership_up(candidates: Candidates) -> None:
    def broken() -> None:
        raise RuntimeError("cannot start")

    settings = LeaseSettings(LEASE, NS, "a", DURATION, DEADLINE, RETRY)
    lost = threading.Event()
    elector = LeaderElector(
        settings, candidates.api(), on_started_leading=broken, on_stopped_leading=lost.set
    ).start()
    try:
        assert lost.wait(5)
        assert not elector.is_leader()
    finally:
        elector.stop(release=False)


# -- the controller and its HTTP surface -------------------------------------------------------


class NoRunner:
    def __init__(self) -> None:
        self.calls = 0

    def run(self, envs: Any, **_options: Any) -> list[Any]:
        self.calls += 1
        return []

    def close(self) -> None:
        pass


def refused_spec_repository(folder: Path) -> Upstream:
    """A repository whose one environment is a refused spec: reconciling it needs no
    registry, and it shows on the status board (Stalled)."""
    upstream = Upstream(folder / "specs.git")
    upstream.commit({"envs/broken/azureml_environment.json": "{not json"})
    return upstream


def test_a_follower_without_a_leader_address_is_not_ready_and_relays_nothing_until_it_leads(
    candidates: Candidates, tmp_path: Path
) -> None:
    upstream = refused_spec_repository(tmp_path)
    source = GitSource(GitSettings(str(upstream.path), "main", tmp_path / "cache"), SecretStore())
    runner = NoRunner()
    metrics = Metrics()
    controller = Controller(source, runner, DiscoveryOptions(root="envs"), metrics=metrics)
    a = candidates("a")  # publishes no address (no POD_IP)
    wait_until(a.elector.is_leader, 5, "a leading")
    b = candidates("b", start=False)
    b.elector.on_started_leading = lambda: controller.start(schedule=False)
    controller.election = b.elector
    b.elector.start()
    app = make_app(controller, secrets=WebhookSecrets(generic=lambda: "s3cr3t"), metrics=metrics)

    async def scenario() -> None:
        async with TestClient(TestServer(app)) as client:

            async def get(path: str) -> tuple[int, Any]:
                async with client.get(path) as response:
                    text = await response.text()
                    return response.status, (await response.json() if path != "/metrics" else text)

            await asyncio.sleep(2 * RETRY)
            assert await get("/healthz") == (200, {"ok": True})
            assert await get("/readyz") == (503, {"ready": False, "reason": "no leader known"})
            status, body = await get("/status")
            assert status == 200
            assert body["leader_election"] == {
                "identity": "b",
                "lease": f"{NS}/{LEASE}",
                "leading": False,
                "leader": "a",
                "leader_address": None,
            }
            assert body["environments"] == []
            assert "envship_leader 0.0" in (await get("/metrics"))[1]
            async with client.post("/hooks/generic", data=b"{}") as response:
                assert response.status == 503
                assert await response.json() == {"error": "no leader known"}
            async with client.post("/reconcile", headers={"Authorization": "Bearer x"}) as r:
                assert r.status == 503
                assert await r.json() == {"error": "no leader known"}
            with pytest.raises(RuntimeError, match="not the leader"):
                controller.request_reconcile("scheduled")

            a.elector.stop()  # a shuts down: b takes over and starts reconciling
            for _ in range(300):
                if (await get("/readyz"))[0] == 200:
                    break
                await asyncio.sleep(0.02)
            assert await get("/readyz") == (200, {"ready": True})
            status, body = await get("/status")
            assert body["leader_election"]["leading"] is True
            assert body["leader_election"]["leader"] == "b"
            assert [env["phase"] for env in body["environments"]] == ["Stalled"]
            assert "envship_leader 1.0" in (await get("/metrics"))[1]

    try:
        asyncio.run(scenario())
    finally:
        controller.stop(5)
    assert runner.calls == 0  # a refused spec is never synced


def test_without_leader_election_kubernetes_is_not_imported() -> None:
    code = (
        "import sys\n"
        "from controller.compose import service as assembly\n"
        "from controller.cli import main as cli\n"
        "from controller.http import app as web\n"
        "from controller.service import config\n"
        "settings = config.Config(git={'url': 'https://example.org/s.git'}, "
        "registry={'url': 'r.test/p'})\n"
        "made, _ = assembly.from_config(settings)\n"
        "print('kubernetes' in sys.modules, made.leading(), 'leader_election' in made.status())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert result.stdout.split() == ["False", "True", "False"]


def test_without_the_extra_envship_run_says_what_to_install(tmp_path: Path) -> None:
    """envship installed without its leader-election extra (no kubernetes package): `envship
    run` with leader election on stops at start with envship's message, not a traceback."""
    config = write_config(tmp_path, "leaderElection: {enabled: true, namespace: ns}\n")
    code = (
        "import sys\n"
        "sys.modules['kubernetes'] = None  # importing it fails as if it were not installed\n"
        "from controller.cli.main import main\n"
        "sys.argv = ['envship', 'run', '--config', sys.argv[1]]\n"
        "main()\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(config)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("envship: leader election: needs the Kubernetes client")
    assert "pip install 'envship[leader-election]'" in result.stderr
    assert "Traceback" not in result.stderr


def test_without_leader_election_the_replica_counts_as_leader(tmp_path: Path) -> None:
    upstream = refused_spec_repository(tmp_path)
    source = GitSource(GitSettings(str(upstream.path), "main", tmp_path / "cache"), SecretStore())
    metrics = Metrics()
    controller = Controller(source, NoRunner(), DiscoveryOptions(root="envs"), metrics=metrics)
    app = make_app(controller, secrets=WebhookSecrets(), metrics=metrics)

    async def scenario() -> None:
        async with TestClient(TestServer(app)) as client:
            async with client.get("/readyz") as response:
                assert response.status == 503
                assert (await response.json())["reason"] == "waiting for the first reconcile"
            async with client.get("/metrics") as response:
                assert "envship_leader 1.0" in await response.text()

    asyncio.run(scenario())
    assert controller.request_reconcile("manual") == 1


# -- two real `envship run` processes ----------------------------------------------------------


@dataclass
class Replica:
    name: str
    process: subprocess.Popen[bytes]
    url: str
    log: Path
    hook_secret: str

    def get(self, path: str) -> requests.Response:
        return requests.get(self.url + path, timeout=5)

    def ready(self) -> bool:
        try:
            return self.get("/readyz").status_code == 200
        except requests.RequestException:
            return False

    def reconciles(self) -> float:
        total = 0.0
        for line in self.get("/metrics").text.splitlines():
            if line.startswith("envship_reconcile_total{"):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def metric(self, name: str, **labels: str) -> float:
        for family in text_string_to_metric_families(self.get("/metrics").text):
            for sample in family.samples:
                if sample.name == name and sample.labels == labels:
                    return float(sample.value)
        return 0.0

    def github_push(self, secret: str | None = None) -> requests.Response:
        body = b'{"ref": "refs/heads/main"}'
        key = (secret or self.hook_secret).encode()
        signature = "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()
        headers = {
            "X-Hub-Signature-256": signature,
            "X-GitHub-Event": "push",
            "Content-Type": "application/json",
        }
        return requests.post(self.url + "/hooks/github", data=body, headers=headers, timeout=15)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def replicas(candidates: Candidates, tmp_path: Path) -> Iterator[Callable[[str], Replica]]:
    upstream = refused_spec_repository(tmp_path)
    started: list[Replica] = []
    hook_secret = canary("webhook")

    def launch(name: str) -> Replica:
        folder = tmp_path / name
        folder.mkdir()
        port = free_port()
        config = {
            "git": {"url": upstream.path.as_uri(), "cacheDir": str(folder / "cache")},
            "specs": {"root": "envs"},
            "registry": {"url": "127.0.0.1:9/never-contacted"},
            "intervals": {"reconcile": 600, "resync": 3600, "grace": 5},
            "http": {"port": port},
            "webhooks": {"github": "env:ENVSHIP_TEST_HOOK"},
            "leaderElection": {
                "enabled": True,
                "leaseName": LEASE,
                "leaseDurationSeconds": DURATION,
                "renewDeadlineSeconds": DEADLINE,
                "retryPeriodSeconds": RETRY,
            },
        }
        (folder / "cfg.yaml").write_text(yaml.safe_dump(config))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBERNETES_", "ENVSHIP_"))}
        env.update(
            HOME=str(folder),
            KUBECONFIG=str(candidates.kubeconfig),
            POD_NAME=name,
            POD_NAMESPACE=NS,
            POD_IP="127.0.0.1",
            ENVSHIP_TEST_HOOK=hook_secret,
        )
        log = folder / "stderr.log"
        with log.open("wb") as err:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "controller.cli",
                    "run",
                    "--config",
                    str(folder / "cfg.yaml"),
                ],
                stdout=err,
                stderr=err,
                env=env,
                cwd=ROOT,
            )
        replica = Replica(name, process, f"http://127.0.0.1:{port}", log, hook_secret)
        started.append(replica)
        return replica

    yield launch
    for replica in started:
        if replica.process.poll() is None:
            replica.process.kill()
            replica.process.wait(10)
        record_output(replica.output())


@pytest.mark.slow
def test_two_envship_run_processes_one_leads_the_other_relays_then_it_takes_over_on_sigterm(
    replicas: Callable[[str], Replica], candidates: Candidates
) -> None:
    one, two = replicas("replica-one"), replicas("replica-two")

    def serving(replica: Replica) -> bool:
        assert replica.process.poll() is None, replica.output()
        try:
            return replica.get("/healthz").status_code == 200
        except requests.RequestException:
            return False

    def leading(replica: Replica) -> bool:
        return bool(replica.get("/status").json()["leader_election"]["leading"])

    wait_until(lambda: serving(one) and serving(two), 30, "both serving HTTP")
    wait_until(lambda: leading(one) or leading(two), 15, "one replica leading")
    leader, follower = (one, two) if leading(one) else (two, one)
    wait_until(leader.ready, 15, "the leader ready after its first reconcile")
    time.sleep(3 * RETRY)
    # the follower is Ready too: it knows where the leader is and relays to it
    assert follower.get("/readyz").json() == {"ready": True, "leading": False}
    lease = candidates.lease()
    assert lease["spec"]["holderIdentity"] == leader.name
    assert lease["metadata"]["annotations"][ADDRESS_ANNOTATION] == leader.url
    status = leader.get("/status").json()
    assert status["leader_election"]["leading"] is True
    assert [env["phase"] for env in status["environments"]] == ["Stalled"]
    assert follower.get("/status").json()["leader_election"] == {
        "identity": follower.name,
        "lease": f"{NS}/{LEASE}",
        "leading": False,
        "leader": leader.name,
        "leader_address": leader.url,
    }
    assert leader.reconciles() >= 1
    assert follower.reconciles() == 0

    # a signed GitHub push sent to the follower reaches the leader, which reconciles again
    before = leader.reconciles()
    answer = follower.github_push()
    assert answer.status_code == 202, answer.text
    assert isinstance(answer.json()["ticket"], int)
    wait_until(lambda: leader.reconciles() > before, 10, "the leader reconciling the push")
    assert leader.metric("envship_webhooks_total", provider="github", result="accepted") == 1
    # a wrongly signed one is the leader's to refuse, and triggers nothing
    refused = follower.github_push(secret="not-the-secret")
    assert refused.status_code == 401
    assert refused.json()["error"] == "unauthorized"
    assert leader.metric("envship_webhooks_total", provider="github", result="rejected") == 1
    assert follower.metric("envship_relayed_requests_total", result="relayed") == 2
    assert follower.reconciles() == 0
    assert "reconcile started" not in follower.output()

    leader.process.send_signal(signal.SIGTERM)
    assert leader.process.wait(10) == 0, leader.output()
    assert "released the lease" in leader.output()
    wait_until(lambda: leading(follower), 2 * RETRY + 5, "the other replica leading")
    wait_until(follower.ready, 5, "the new leader ready")
    assert follower.get("/readyz").json() == {"ready": True}
    assert candidates.lease()["spec"]["holderIdentity"] == follower.name
    assert candidates.lease()["metadata"]["annotations"][ADDRESS_ANNOTATION] == follower.url
    assert follower.reconciles() >= 1
    assert follower.github_push().status_code == 202  # now served where it arrives

    # the API server goes away: the new leader exits at the renew deadline, non-zero
    down = time.monotonic()
    candidates.standin.stop()
    assert follower.process.wait(DEADLINE + 5) == 3, follower.output()
    assert time.monotonic() - down >= DEADLINE - RETRY - 0.15
    assert "lost the leader lease" in follower.output()
