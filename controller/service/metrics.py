"""envship's Prometheus metrics: reconcile and build durations, results by outcome, one info
series per environment, git and registry requests, webhooks, relays and leadership. Label values
are redacted and bounded; the registry is the instance's own, nothing global."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from controller.adapters.redact import redact

LABEL_LIMIT = 200
"""Characters of a label value kept."""

RECONCILE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
BUILD_BUCKETS = (1, 5, 10, 30, 60, 120, 300, 600, 900, 1200, 1800, 2700, 3600)


def _label(value: object) -> str:
    return redact("" if value is None else str(value))[:LABEL_LIMIT]


class Metrics:
    """envship's Prometheus metrics, on a registry of their own (nothing global)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.reconcile_duration = Histogram(
            "envship_reconcile_duration_seconds",
            "Time one reconcile took.",
            buckets=RECONCILE_BUCKETS,
            registry=r,
        )
        self.reconciles = Counter(
            "envship_reconcile_total", "Reconciles by result.", ["result"], registry=r
        )
        self.build_duration = Histogram(
            "envship_build_duration_seconds",
            "Time one environment's build and push took.",
            buckets=BUILD_BUCKETS,
            registry=r,
        )
        self.builds = Counter(
            "envship_builds_total", "Environment builds by outcome.", ["outcome"], registry=r
        )
        self.environment_build_seconds = Gauge(
            "envship_environment_build_seconds",
            "One series per environment: how long its last build took (on a local engine, or "
            "its ACR Tasks run with scheduling, upload and log streaming), and how it ended.",
            ["name", "outcome"],
            registry=r,
        )
        self._last_build: dict[str, tuple[str, str]] = {}
        self.environment_azureml = Gauge(
            "envship_environment_azureml_info",
            "One series per published environment, set to 1: the Azure ML environment version "
            "its image is registered as.",
            ["name", "asset"],
            registry=r,
        )
        self._assets: dict[str, tuple[str, str]] = {}
        self.environment_info = Gauge(
            "envship_environment_info",
            "One series per environment, set to 1: its phase, revision and hash.",
            ["name", "phase", "revision", "hash"],
            registry=r,
        )
        self.git_requests = Counter(
            "envship_git_requests_total",
            "Requests to the git remote by kind.",
            ["kind"],
            registry=r,
        )
        self.git_received_objects = Counter(
            "envship_git_received_objects_total",
            "Git objects fetches received (an unchanged remote sends none).",
            registry=r,
        )
        self.registry_requests = Counter(
            "envship_registry_requests_total",
            "Requests to container registries by kind.",
            ["kind"],
            registry=r,
        )
        self.webhooks = Counter(
            "envship_webhooks_total",
            "Webhook requests by provider and result.",
            ["provider", "result"],
            registry=r,
        )
        self.relayed = Counter(
            "envship_relayed_requests_total",
            "Webhooks and manual triggers a follower relayed to the leader, by result.",
            ["result"],
            registry=r,
        )
        self.http_closed_total = Counter(
            "envship_http_connections_closed_total",
            "HTTP connections envship closed by reason: idle (keep-alive limit), headers (not "
            "sent in time), cap (the longest idle one, for a new one), full (every one busy).",
            ["reason"],
            registry=r,
        )
        self.leader = Gauge(
            "envship_leader",
            "1 while this replica reconciles: it holds the leader lease, or leader election is "
            "off; 0 while another replica leads.",
            registry=r,
        )
        self._info: dict[str, tuple[str, str, str, str]] = {}
        self._lock = threading.Lock()

    def observe_reconcile(self, seconds: float, result: str) -> None:
        """One reconcile ended (`result`: e.g. success, failed, unchanged, stale)."""
        self.reconcile_duration.observe(max(0.0, seconds))
        self.reconciles.labels(result=_label(result)).inc()

    def observe_build(
        self, outcome: str, seconds: float | None = None, name: str | None = None
    ) -> None:
        """One environment's build/copy ended (`outcome`: built, copied, failed, ...); its
        duration is observed when given, and kept as the environment's last build."""
        self.builds.labels(outcome=_label(outcome)).inc()
        if seconds is not None:
            self.build_duration.observe(max(0.0, seconds))
            if name is not None:
                labels = (_label(name), _label(outcome))
                with self._lock:
                    old = self._last_build.get(name)
                    if old is not None and old != labels:
                        self.environment_build_seconds.remove(*old)
                    self.environment_build_seconds.labels(*labels).set(max(0.0, seconds))
                    self._last_build[name] = labels

    def git_request(self, kind: str) -> None:
        """One request to the git remote (`kind`: e.g. ls-remote, fetch, clone)."""
        self.git_requests.labels(kind=_label(kind)).inc()

    def registry_request(self, kind: str) -> None:
        """One request to a registry (`kind`: e.g. head, labels, push, copy, tag)."""
        self.registry_requests.labels(kind=_label(kind)).inc()

    def webhook(self, provider: str, result: str) -> None:
        self.webhooks.labels(provider=_label(provider), result=_label(result)).inc()

    def http_closed(self, reason: str) -> None:
        self.http_closed_total.labels(reason=_label(reason)).inc()

    def relay(self, result: str) -> None:
        """One request a follower relayed (`result`: relayed, no_leader, unreachable, loop)."""
        self.relayed.labels(result=_label(result)).inc()

    def set_environment(
        self, name: str, *, phase: str, revision: str | None, hash: str | None
    ) -> None:
        """Set an environment's info series; its previous label set (if different) is removed."""
        labels = (_label(name), _label(phase), _label(revision), _label(hash))
        with self._lock:
            self._set(name, labels)

    def _set(self, name: str, labels: tuple[str, str, str, str]) -> None:
        old = self._info.get(name)
        if old == labels:
            return
        if old is not None:
            self.environment_info.remove(*old)
        self.environment_info.labels(*labels).set(1)
        self._info[name] = labels

    def _set_asset(self, name: str, asset: object) -> None:
        old = self._assets.get(name)
        labels = (_label(name), _label(asset)) if asset else None
        if old == labels:
            return
        if old is not None:
            self.environment_azureml.remove(*old)
            del self._assets[name]
        if labels is not None:
            self.environment_azureml.labels(*labels).set(1)
            self._assets[name] = labels

    def remove_environment(self, name: str) -> None:
        with self._lock:
            old = self._info.pop(name, None)
            if old is not None:
                self.environment_info.remove(*old)
            self._forget_build(name)

    def _forget_build(self, name: str) -> None:
        last = self._last_build.pop(name, None)
        if last is not None:
            self.environment_build_seconds.remove(*last)

    def set_environments(self, environments: Iterable[Mapping[str, Any]]) -> None:
        """Make the info series exactly these environments (dicts as in a status snapshot:
        name, phase, revision, hash); the series of environments not listed are removed."""
        seen: set[str] = set()
        with self._lock:
            for env in environments:
                name = str(env.get("name", ""))
                if not name:
                    continue
                seen.add(name)
                labels = (
                    _label(name),
                    _label(env.get("phase")),
                    _label(env.get("revision")),
                    _label(env.get("hash")),
                )
                self._set(name, labels)
                self._set_asset(name, env.get("azureml"))
            for name in [n for n in self._info if n not in seen]:
                self.environment_info.remove(*self._info.pop(name))
            for name in [n for n in self._assets if n not in seen]:
                self._set_asset(name, None)
            for name in [n for n in self._last_build if n not in seen]:
                self._forget_build(name)

    def exposition(self) -> bytes:
        """The Prometheus text format (`CONTENT_TYPE`)."""
        return generate_latest(self.registry)

    CONTENT_TYPE = CONTENT_TYPE_LATEST


__all__ = ["Metrics"]
