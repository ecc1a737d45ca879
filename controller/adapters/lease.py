"""Leader election through a `coordination.k8s.io/v1` Lease, for running several replicas.

The protocol is client-go's (`k8s.io/client-go/tools/leaderelection`), so envship interoperates
with any other client of the same Lease:

- a candidate reads the Lease every `retry_period` (with a little jitter); it may take it when
  nobody holds it (`holderIdentity` empty, or the Lease does not exist yet: created) or when the
  record has not changed for the record's `leaseDurationSeconds` *as measured on this
  candidate's own monotonic clock* since it first saw that record (the holder's `renewTime` is
  never compared with the local wall clock: clocks of two machines may disagree);
- every write is a `replace` carrying the `metadata.resourceVersion` that was read, so of two
  candidates racing for the same record exactly one wins; the other gets 409 Conflict (or 409
  AlreadyExists on a racing create) and tries again later;
- the leader renews (`renewTime`) every `retry_period`. Its deadline is `renew_deadline` after
  the *start* of its last successful renewal; a watchdog thread declares the leadership lost the
  moment that deadline passes, whatever the HTTP calls are doing, and also as soon as a read
  shows another holder. Since `renew_deadline < lease_duration` and a follower waits a full
  `lease_duration` after it saw the last change, the old leader has stopped before a new one
  can start;
- `stop(release=True)` gives the Lease up as client-go's `ReleaseOnCancel` does:
  `holderIdentity` empty, `leaseDurationSeconds` 1, so another replica takes over within about
  one `retry_period` instead of waiting for the lease to expire;
- the leader publishes where it serves HTTP (`settings.address`, `http://<pod IP>:<port>`) in
  the Lease's annotation `envship.io/address`, written with the holder on every acquisition and
  renewal (removed when it has none, and on release); followers keep the holder's address from
  the records they read (`leader_address()`) to relay webhooks to the leader.

Why not `kubernetes.leaderelection`: its `LeaderElection.run()` blocks its caller in loops that
never end (no way to stop it or to stand down as follower), it cannot release the Lease on
shutdown, its `LeaseLock` builds its own API client from the global configuration (nothing to
inject), and a renewal that hangs in an HTTP call is not cut off at the renew deadline.

What to do when the leadership is lost is the caller's decision (`on_stopped_leading`);
`envship run` exits the process (see `controller.cli.main`).

The kubernetes library is slow to import: this module is imported only when leader election is
enabled.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import os
import random
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from controller.adapters.redact import redact
from controller.core.errors import Misconfigured

log = logging.getLogger("envship.leader")

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
"""Where Kubernetes mounts a pod's service account: token, ca.crt, namespace."""
FOLLOWER_JITTER = 0.2
"""A follower waits `retry_period` times 1 to 1.2 between attempts (client-go's JitterFactor)."""
MIN_TIMEOUT = 0.05
"""The shortest timeout an API call is given, in seconds."""
ADDRESS_ANNOTATION = "envship.io/address"
"""The Lease annotation holding the leader's HTTP address (`http://<pod IP>:<port>`)."""
MAX_ADDRESS = 200
"""A longer annotation value is not taken for an address."""


class LeaseError(Misconfigured):
    """Leader election cannot be set up (no namespace, no credentials): fix the deployment."""


@dataclass(frozen=True)
class LeaseSettings:
    name: str
    namespace: str
    identity: str
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0
    address: str | None = None
    """Where this replica serves HTTP (`http://<pod IP>:<port>`), published in the Lease while
    it leads so that followers can relay webhooks to it; None: nothing is published."""

    def __post_init__(self) -> None:
        if not self.name or not self.namespace or not self.identity:
            raise ValueError("a lease needs a name, a namespace and an identity")
        if self.address is not None and not self.address.startswith("http://"):
            raise ValueError("the published address must be http://HOST:PORT")
        if not 0 < self.retry_period < self.renew_deadline < self.lease_duration:
            raise ValueError(
                "leader election needs 0 < retryPeriod < renewDeadline < leaseDuration"
            )

    @property
    def recorded_duration(self) -> int:
        """`spec.leaseDurationSeconds` is whole seconds: rounded up (waiting longer is safe)."""
        return max(1, math.ceil(self.lease_duration))


def default_namespace(
    environ: Mapping[str, str] = os.environ, service_account: Path = SERVICE_ACCOUNT
) -> str:
    """`POD_NAMESPACE`, else the namespace of the pod's service account."""
    namespace = environ.get("POD_NAMESPACE", "").strip()
    if namespace:
        return namespace
    try:
        namespace = (service_account / "namespace").read_text(encoding="utf-8").strip()
    except OSError:
        namespace = ""
    if not namespace:
        raise LeaseError(
            "leaderElection.namespace is not set, POD_NAMESPACE is not set and there is no "
            "service account namespace file: set one of them"
        )
    return namespace


def default_identity(environ: Mapping[str, str] = os.environ) -> str:
    """`POD_NAME`, else the host name (in a pod: the pod's name). Must differ per replica."""
    return environ.get("POD_NAME", "").strip() or socket.gethostname()


def default_address(port: int, environ: Mapping[str, str] = os.environ) -> str | None:
    """`http://<POD_IP>:<port>` (brackets around an IPv6 address); None without `POD_IP`."""
    value = environ.get("POD_IP", "").strip()
    if not value:
        return None
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        raise LeaseError("POD_IP is not an IP address: set it from status.podIP") from None
    host = f"[{ip}]" if ip.version == 6 else str(ip)
    return f"http://{host}:{port}"


def coordination_api(
    *,
    environ: Mapping[str, str] = os.environ,
    service_account: Path = SERVICE_ACCOUNT,
    kubeconfig: str | None = None,
) -> client.CoordinationV1Api:
    """An API client for Leases: the pod's service account (in-cluster: `KUBERNETES_SERVICE_HOST`
    and the mounted token, re-read as it rotates), else a kubeconfig (`kubeconfig`, `KUBECONFIG`
    or `~/.kube/config`). Raises LeaseError when neither is there."""
    configuration = client.Configuration()
    try:
        config.incluster_config.InClusterConfigLoader(
            token_filename=str(service_account / "token"),
            cert_filename=str(service_account / "ca.crt"),
            environ=environ,
        ).load_and_set(configuration)
    except config.ConfigException as incluster:
        try:
            config.load_kube_config(
                config_file=kubeconfig or environ.get("KUBECONFIG") or None,
                client_configuration=configuration,
                persist_config=False,
            )
        except (config.ConfigException, OSError) as exc:
            raise LeaseError(
                f"no Kubernetes credentials: not in a pod ({incluster}) and no kubeconfig "
                f"({redact(str(exc))})"
            ) from None
    return api_from_configuration(configuration)


def api_from_configuration(configuration: client.Configuration) -> client.CoordinationV1Api:
    """The Lease API over `configuration`, with urllib3's own retries off: the elector retries
    every `retry_period` itself, and a retried call could outlast the renew deadline."""
    configuration.retries = 0
    return client.CoordinationV1Api(client.ApiClient(configuration))


class _Try(Enum):
    ACQUIRED = "acquired"
    """Created, taken or renewed: this candidate holds the lease."""
    HELD = "held"
    """Another candidate holds a lease that has not expired."""
    CONFLICT = "conflict"
    """Someone else wrote first (409): read again next time."""
    ERROR = "error"
    """The API server could not be reached or refused the request."""


class LeaderElector:
    """Campaigns for a Lease in a daemon thread and holds it until `stop()` or until it is lost.

    `on_started_leading` is called (in the elector's thread) once the Lease is held, and
    `on_stopped_leading` (in the watchdog's or the elector's thread) once it is lost: not renewed
    within `renew_deadline`, or taken by another holder. Neither is called by `stop()`. Both
    must return quickly; an exception from `on_started_leading` counts as losing the lease.
    One elector leads at most once: after a loss it stops campaigning.
    """

    def __init__(
        self,
        settings: LeaseSettings,
        api: client.CoordinationV1Api,
        *,
        on_started_leading: Callable[[], Any] = lambda: None,
        on_stopped_leading: Callable[[], Any] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.settings = settings
        self.api = api
        self.on_started_leading = on_started_leading
        self.on_stopped_leading = on_stopped_leading
        self._clock = clock
        self._now = now
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._leading = False
        self._deadline = 0.0
        """`clock()` time by which the next renewal must have started (while leading)."""
        self._holder: str | None = None
        """The holder in the last record read or written ("" or None: nobody)."""
        self._holder_address: tuple[str, str | None] = ("", None)
        """The same holder and the address its record publishes, swapped as one."""
        self._observed_version: str | None = None
        self._observed_at = 0.0
        self._failing: str | None = None
        self._thread: threading.Thread | None = None
        self._watchdog: threading.Thread | None = None

    # -- reading (flags only: safe on an event loop) ---------------------------------------

    def is_leader(self) -> bool:
        return self._leading

    def describe(self) -> dict[str, Any]:
        """For `/status`: this replica's identity, the Lease, whether it leads, and who does."""
        s = self.settings
        return {
            "identity": s.identity,
            "lease": f"{s.namespace}/{s.name}",
            "leading": self._leading,
            "leader": self._holder or None,
            "leader_address": self._holder_address[1],
        }

    def leader_address(self) -> str | None:
        """Where another replica that leads serves HTTP, as its Lease record publishes it;
        None while this replica leads, when nobody does, when the leader publishes nothing, or
        when the record names this replica (never relay to oneself)."""
        holder, address = self._holder_address
        if self._leading or not holder or holder == self.settings.identity:
            return None
        if address is None or address == self.settings.address:
            return None
        return address

    # -- life -------------------------------------------------------------------------------

    def start(self) -> LeaderElector:
        if self._thread is not None:
            raise RuntimeError("the elector was started already")
        self._thread = threading.Thread(target=self._run, name="envship-lease", daemon=True)
        self._thread.start()
        return self

    def stop(self, *, release: bool = True, timeout: float | None = None) -> None:
        """Stop campaigning and renewing; with `release`, give the Lease up if it is held (a
        clean shutdown), without it leave the Lease to expire (as a crash would)."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(self.settings.renew_deadline + 1 if timeout is None else timeout)
        with self._cond:
            leading, self._leading = self._leading, False
            self._cond.notify_all()
        if release and leading:
            self._release()

    # -- the campaign -----------------------------------------------------------------------

    def _run(self) -> None:
        s = self.settings
        log.info("campaigning for lease %s/%s as %s", s.namespace, s.name, s.identity)
        while not self._stop.is_set():
            started = self._clock()
            if self._try(s.renew_deadline) is _Try.ACQUIRED:
                self._lead(started)
                return
            self._stop.wait(s.retry_period * (1 + FOLLOWER_JITTER * random.random()))  # noqa: S311

    def _lead(self, renewed: float) -> None:
        s = self.settings
        with self._cond:
            self._leading = True
            self._deadline = renewed + s.renew_deadline
        log.info("became the leader (lease %s/%s)", s.namespace, s.name)
        self._watchdog = threading.Thread(target=self._watch, name="envship-lease-watchdog")
        self._watchdog.daemon = True
        self._watchdog.start()
        try:
            self.on_started_leading()
        except Exception as exc:
            log.exception("starting to lead failed")
            self._lose(f"starting to lead failed: {type(exc).__name__}")
            return
        while not self._stop.wait(s.retry_period):
            started = self._clock()
            with self._cond:
                if not self._leading:
                    return
                remaining = self._deadline - started
            outcome = self._try(max(MIN_TIMEOUT, remaining))
            if outcome is _Try.ACQUIRED:
                with self._cond:
                    if not self._leading:  # the watchdog was first
                        return
                    self._deadline = started + s.renew_deadline
                    self._cond.notify_all()
            elif outcome is _Try.HELD:
                self._lose(f"the lease is held by {self._holder}")
                return

    def _watch(self) -> None:
        """Declares the leadership lost the moment the renew deadline passes."""
        with self._cond:
            while self._leading and not self._stop.is_set():
                remaining = self._deadline - self._clock()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            else:
                return
        self._lose(f"not renewed within {self.settings.renew_deadline:g} s")

    def _lose(self, reason: str) -> None:
        with self._cond:
            if not self._leading or self._stop.is_set():
                return
            self._leading = False
            self._cond.notify_all()
        self._stop.set()  # one leadership per elector
        log.error("lost the leadership: %s", reason)
        self.on_stopped_leading()

    # -- one attempt ------------------------------------------------------------------------

    def _wall(self) -> datetime:
        now = self._now().astimezone(UTC)
        if now.microsecond == 0:
            # The API server parses MicroTime as RFC 3339 with exactly 6 fraction digits, and
            # the client writes datetime.isoformat(), which leaves out a zero fraction.
            now = now.replace(microsecond=1)
        return now

    def _failed(self, what: str, exc: BaseException) -> _Try:
        if isinstance(exc, ApiException):
            detail = f"{exc.status} {exc.reason}"
        else:
            detail = f"{type(exc).__name__}: {exc}"
        text = redact(f"{what}: {detail}")
        if text != self._failing:
            log.warning("lease %s", text)
        else:
            log.debug("lease %s", text)
        self._failing = text
        return _Try.ERROR

    def _observe(self, lease: client.V1Lease, at: float) -> None:
        version = lease.metadata.resource_version if lease.metadata is not None else None
        if version == self._observed_version and version is not None:
            return
        self._observed_version = version
        self._observed_at = at
        holder = (lease.spec.holder_identity if lease.spec is not None else None) or ""
        annotations = (lease.metadata.annotations if lease.metadata is not None else None) or {}
        address = annotations.get(ADDRESS_ANNOTATION)
        if not isinstance(address, str) or not address or len(address) > MAX_ADDRESS:
            address = None
        if holder != (self._holder or ""):
            log.info("the lease is held by %s", holder or "nobody")
        self._holder_address = (holder, address if holder else None)
        self._holder = holder

    def _publish(self, metadata: client.V1ObjectMeta) -> None:
        """Set (or, without an address, remove) this replica's address on the Lease."""
        annotations = dict(metadata.annotations or {})
        if self.settings.address is None:
            annotations.pop(ADDRESS_ANNOTATION, None)
        else:
            annotations[ADDRESS_ANNOTATION] = self.settings.address
        metadata.annotations = annotations or None

    def _spec(self, old: client.V1LeaseSpec | None, now: datetime) -> client.V1LeaseSpec:
        identity = self.settings.identity
        mine = old is not None and old.holder_identity == identity
        transitions = (old.lease_transitions or 0) if old is not None else 0
        return client.V1LeaseSpec(
            holder_identity=identity,
            lease_duration_seconds=self.settings.recorded_duration,
            acquire_time=(old.acquire_time if mine and old and old.acquire_time else now),
            renew_time=now,
            lease_transitions=transitions if mine or old is None else transitions + 1,
        )

    def _try(self, timeout: float) -> _Try:
        """Create, take or renew the Lease: one read and at most one write."""
        s = self.settings
        now = self._wall()
        try:
            lease: client.V1Lease | None = self.api.read_namespaced_lease(
                s.name, s.namespace, _request_timeout=timeout
            )
        except ApiException as exc:
            if exc.status != 404:
                return self._failed("read failed", exc)
            lease = None
        except Exception as exc:
            return self._failed("read failed", exc)
        read_at = self._clock()
        if lease is None:
            metadata = client.V1ObjectMeta(name=s.name, namespace=s.namespace)
            self._publish(metadata)
            body = client.V1Lease(metadata=metadata, spec=self._spec(None, now))
            try:
                created = self.api.create_namespaced_lease(
                    s.namespace, body, _request_timeout=timeout
                )
            except ApiException as exc:
                if exc.status == 409:
                    return _Try.CONFLICT
                return self._failed("create failed", exc)
            except Exception as exc:
                return self._failed("create failed", exc)
            self._observe(created, self._clock())
            self._failing = None
            return _Try.ACQUIRED
        self._observe(lease, read_at)
        old = lease.spec
        holder = (old.holder_identity if old is not None else None) or ""
        if holder and holder != s.identity:
            duration = (old.lease_duration_seconds if old is not None else None) or 0
            if self._observed_at + (duration or s.lease_duration) > read_at:
                self._failing = None
                return _Try.HELD
        lease.spec = self._spec(old, now)
        if lease.metadata is None:
            lease.metadata = client.V1ObjectMeta(name=s.name, namespace=s.namespace)
        self._publish(lease.metadata)
        try:
            replaced = self.api.replace_namespaced_lease(
                s.name, s.namespace, lease, _request_timeout=timeout
            )
        except ApiException as exc:
            if exc.status == 409:
                return _Try.CONFLICT
            return self._failed("update failed", exc)
        except Exception as exc:
            return self._failed("update failed", exc)
        self._observe(replaced, self._clock())
        self._failing = None
        return _Try.ACQUIRED

    def _release(self) -> None:
        """Give the Lease up (client-go's ReleaseOnCancel): holder empty, duration 1 s."""
        s = self.settings
        for _attempt in range(2):
            try:
                lease = self.api.read_namespaced_lease(
                    s.name, s.namespace, _request_timeout=s.renew_deadline
                )
                if lease.spec is None or lease.spec.holder_identity != s.identity:
                    return
                now = self._wall()
                lease.spec = client.V1LeaseSpec(
                    holder_identity="",
                    lease_duration_seconds=1,
                    acquire_time=now,
                    renew_time=now,
                    lease_transitions=lease.spec.lease_transitions or 0,
                )
                if lease.metadata is not None and lease.metadata.annotations:
                    lease.metadata.annotations.pop(ADDRESS_ANNOTATION, None)
                released = self.api.replace_namespaced_lease(
                    s.name, s.namespace, lease, _request_timeout=s.renew_deadline
                )
            except ApiException as exc:
                if exc.status == 409:
                    continue
                self._failed("release failed", exc)
                return
            except Exception as exc:
                self._failed("release failed", exc)
                return
            self._observe(released, self._clock())
            log.info("released the lease %s/%s", s.namespace, s.name)
            return


__all__ = [
    "ADDRESS_ANNOTATION",
    "LeaderElector",
    "LeaseError",
    "LeaseSettings",
    "api_from_configuration",
    "coordination_api",
    "default_address",
    "default_identity",
    "default_namespace",
]
