"""Hostile HTTP clients against the controller's web application in a process of its own
(`tests/support/http_server_child.py`), on loopback, while a prober asks `/healthz` as kubelet
does (a new connection each time). Used by the HTTP limit tests and by `bench/bench_http.py`,
which writes the figures into docs/security.md.

Each attack returns what it saw: how long the server kept each hostile connection open, every
probe's latency (None: not answered within the probe timeout) and the server's resident memory
before and at its peak."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import http.client
import json
import os
import select
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.http_server_child import WEBHOOK_SECRET
from tests.support.paths import ROOT

PROBE_TIMEOUT = 2.0
"""The chart's shortest HTTP probe timeout (readiness and startup: 2 s)."""
PROBE_EVERY = 0.1


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


@dataclass
class Server:
    """The web application in its own process (`limits`: webserver.Limits keyword arguments)."""

    limits: dict[str, Any]
    nofile: int | None = None
    plain: bool = False
    """aiohttp's own runner and defaults instead of envship's listener (a baseline)."""
    process: subprocess.Popen[str] | None = None
    port: int = 0

    def __enter__(self) -> Server:
        args = [sys.executable, "-m", "tests.support.http_server_child", json.dumps(self.limits)]
        args.append(str(self.nofile) if self.nofile is not None else "-")
        if self.plain:
            args.append("plain")
        self.process = subprocess.Popen(
            args,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            # the baseline logs every accept() that fails for want of descriptors: say nothing
            stderr=subprocess.DEVNULL if self.plain else None,
            text=True,
            env={**os.environ},
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line.startswith("PORT "):
            self.process.kill()
            raise RuntimeError(f"the web application did not start: {line!r}")
        self.port = int(line.split()[1])
        return self

    def __exit__(self, *_exc: object) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)

    def rss(self) -> int:
        assert self.process is not None
        return rss_kib(self.process.pid)


def probe(port: int, path: str = "/healthz", timeout: float = PROBE_TIMEOUT) -> float | None:
    """One kubelet-like probe: seconds to a 200, or None."""
    started = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", path)
        answer = connection.getresponse()
        answer.read()
        return time.perf_counter() - started if answer.status == 200 else None
    except OSError:
        return None
    finally:
        connection.close()


@dataclass
class Observed:
    """What one attack saw."""

    held: list[float | None] = field(default_factory=list)
    """Per hostile connection: seconds until the server closed it (None: still open at the end)."""
    probes: list[float | None] = field(default_factory=list)
    rss_before_kib: int = 0
    rss_peak_kib: int = 0
    answers: dict[int, int] = field(default_factory=dict)
    """Status -> count, for attacks that send whole requests."""
    seconds: float = 0.0
    """How long the attack took (the flood: from its first request to its last answer)."""

    @property
    def unanswered(self) -> int:
        return sum(1 for p in self.probes if p is None)

    @property
    def slowest_probe(self) -> float:
        return max((p for p in self.probes if p is not None), default=float("inf"))

    @property
    def median_probe(self) -> float:
        return statistics.median(p for p in self.probes if p is not None)

    @property
    def longest_held(self) -> float:
        return max((h if h is not None else float("inf")) for h in self.held)

    @property
    def rss_growth_mib(self) -> float:
        return (self.rss_peak_kib - self.rss_before_kib) / 1024


@contextlib.contextmanager
def watched(server: Server, observed: Observed) -> Iterator[None]:
    """Probe `/healthz` and sample the server's memory while the block runs."""
    observed.rss_before_kib = observed.rss_peak_kib = server.rss()
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            observed.probes.append(probe(server.port))
            observed.rss_peak_kib = max(observed.rss_peak_kib, server.rss())
            done.wait(PROBE_EVERY)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(PROBE_TIMEOUT * 2)


def _closed_after(connected: dict[socket.socket, float], until: float,
                  drip: Callable[[socket.socket], None] | None = None,
                  every: float = 0.5) -> list[float | None]:  # fmt: skip
    """Seconds from each socket's connection until the server closed it (EOF or reset),
    dripping `drip` into the open ones every `every` seconds, until `until` (monotonic)."""
    sockets = list(connected)
    closed: dict[socket.socket, float] = {}
    next_drip = time.monotonic() + every
    while len(closed) < len(sockets) and time.monotonic() < until:
        open_ones = [s for s in sockets if s not in closed]
        readable, _, _ = select.select(open_ones, [], [], 0.05)
        for s in readable:
            try:
                data = s.recv(65536)
            except OSError:
                data = b""
            if not data:
                closed[s] = time.monotonic() - connected[s]
        if drip is not None and time.monotonic() >= next_drip:
            next_drip += every
            for s in open_ones:
                if s not in closed:
                    with contextlib.suppress(OSError):
                        drip(s)
    return [closed.get(s) for s in sockets]


def _connect(port: int, count: int) -> dict[socket.socket, float]:
    """`count` connections, each with when it was made (a connection the server's accept queue
    had no room for is made a second or so later, when the client tries again)."""
    connected = {}
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.setblocking(False)
        connected[s] = time.monotonic()
    return connected


def _hold(
    server: Server,
    connections: int,
    seconds: float,
    send: Callable[[socket.socket], None] | None = None,
    drip: Callable[[socket.socket], None] | None = None,
) -> Observed:
    """Open `connections`, `send` on each, then watch until the server closes them (dripping
    `drip` into the open ones) for `seconds`, probing all the while."""
    observed = Observed()
    with watched(server, observed):
        started = time.monotonic()
        sockets = _connect(server.port, connections)
        for s in sockets:
            if send is not None:
                send(s)
        observed.held = _closed_after(sockets, started + seconds, drip=drip)
        for s in sockets:
            s.close()
    return observed


def slowloris(server: Server, connections: int, seconds: float) -> Observed:
    """Connections that send a request's headers one byte every half second, never finishing."""

    def start(s: socket.socket) -> None:
        s.send(b"POST /hooks/github HTTP/1.1\r\nHost: envship\r\nX-Slow: ")

    def drip(s: socket.socket) -> None:
        s.send(b"a")

    return _hold(server, connections, seconds, start, drip)


def idle(server: Server, connections: int, seconds: float) -> Observed:
    """Connections that send nothing at all (more of them than the server may hold)."""
    return _hold(server, connections, seconds)


def half_bodies(server: Server, connections: int, declared: int, sent: int,
                seconds: float) -> Observed:  # fmt: skip
    """Webhooks that declare `declared` bytes of body, send `sent` of them and stall."""
    head = (
        "POST /hooks/github HTTP/1.1\r\nHost: envship\r\nContent-Type: application/json\r\n"
        f"X-Hub-Signature-256: sha256={'0' * 64}\r\nContent-Length: {declared}\r\n\r\n"
    ).encode()

    def start(s: socket.socket) -> None:
        s.setblocking(True)
        s.settimeout(5)
        s.sendall(head)
        with contextlib.suppress(OSError):
            s.sendall(b"x" * sent)
        s.setblocking(False)

    return _hold(server, connections, seconds, start)


def flood(server: Server, requests: int, concurrency: int) -> Observed:
    """`requests` whole requests from `concurrency` kept-alive clients: webhooks with a wrong
    signature, signed ones, and status reads."""
    observed = Observed()
    body = b'{"ref": "refs/heads/main"}'
    signed = "sha256=" + hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
    lock = threading.Lock()
    left = [requests]

    def client() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        try:
            while True:
                with lock:
                    if left[0] <= 0:
                        return
                    left[0] -= 1
                    n = left[0]
                kind = n % 3
                try:
                    if kind == 2:
                        connection.request("GET", "/status")
                    else:
                        signature = signed if kind == 1 else "sha256=" + "0" * 64
                        connection.request(
                            "POST",
                            "/hooks/github",
                            body,
                            {"X-Hub-Signature-256": signature, "X-GitHub-Event": "push",
                             "X-GitHub-Delivery": f"flood-{n}"},
                        )  # fmt: skip
                    answer = connection.getresponse()
                    answer.read()
                    status = answer.status
                except OSError:
                    status = 0
                    connection.close()
                    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
                with lock:
                    observed.answers[status] = observed.answers.get(status, 0) + 1
        finally:
            connection.close()

    with watched(server, observed):
        started = time.monotonic()
        threads = [threading.Thread(target=client, daemon=True) for _ in range(concurrency)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(300)
        observed.seconds = time.monotonic() - started
    return observed
