"""Serving the controller's web application with limits a hostile client cannot outlast.

aiohttp's server keeps a connection while it sends nothing, reads headers and bodies without a
deadline and accepts connections until the process runs out of file descriptors, so a few dozen
slow or idle sockets could starve the liveness probe. Here every connection is tracked:

- idle (no request under way) longer than `idle_timeout`: closed (the keep-alive limit; a new
  connection that sends nothing counts as idle);
- a request's headers not complete `header_timeout` after its first byte: closed (slowloris);
- a body not read within `body_timeout`: 408 and closed (`controller.http.app` reads bodies
  under it; what is still being sent is drained for at most a second first);
- at `max_connections` open, a new connection closes the connection idle the longest, so a
  probe is served while a flood of idle sockets is not; when every connection is inside a
  request, the new one is closed at once. The cap is kept below the process's descriptor limit.

Request bodies held at once are bounded by `body_memory` bytes: each body read reserves its
`Content-Length` (the body cap when it has none), and a request that does not fit is answered
503 with `Retry-After` (`controller.http.app`).
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from aiohttp import web

log = logging.getLogger("envship.web")

FD_RESERVE = 64
"""File descriptors kept for everything but HTTP connections (git, engine, registries, logs)."""
SWEEP_EVERY = 0.5
"""Seconds between two looks for connections past their deadline."""
BACKLOG = FD_RESERVE // 2
"""Connections accepted in one go (asyncio accepts up to the listen backlog before any is
admitted): with the cap, the descriptors in use stay below the limit."""
LINGER = 1.0
"""Seconds a connection whose body was not read to its end is drained before it is closed."""


@dataclass(frozen=True)
class Limits:
    """How long and how many: see the module's docstring."""

    header_timeout: float = 10.0
    body_timeout: float = 30.0
    idle_timeout: float = 15.0
    max_connections: int = 256
    body_memory: int = 16 * 1024 * 1024

    def __post_init__(self) -> None:
        for name in ("header_timeout", "body_timeout", "idle_timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.max_connections < 1 or self.body_memory < 1:
            raise ValueError("max_connections and body_memory must be at least 1")


def connection_cap(wanted: int) -> int:
    """`wanted`, lowered so that HTTP connections cannot use the descriptors the rest needs."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(4, min(wanted, soft - FD_RESERVE))


@dataclass(eq=False)
class _Connection(asyncio.Protocol):
    """One client connection: aiohttp's protocol inside, its deadlines outside."""

    guard: ConnectionGuard
    inner: Any
    """aiohttp's RequestHandler for this connection."""
    transport: asyncio.Transport | None = None
    since: float = field(default_factory=time.monotonic)
    """When the current state began: opened, last request ended, or first byte of a request."""
    receiving: bool = False
    busy: int = 0
    admitted: bool = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # a TCP server's
        if not self.guard.admit(self):
            self.transport.abort()
            return
        self.admitted = True
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if not self.admitted:
            return
        if not self.busy and not self.receiving:
            self.receiving = True
            self.since = time.monotonic()
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        result: bool | None = self.inner.eof_received()
        return result

    def connection_lost(self, exc: Exception | None) -> None:
        self.guard.forget(self)
        if self.admitted:
            self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def close(self, reason: str) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.guard.closed[reason] = self.guard.closed.get(reason, 0) + 1
            self.transport.abort()


@dataclass(eq=False)
class ConnectionGuard:
    """Tracks every open connection and closes those past their deadline or over the cap."""

    limits: Limits
    cap: int
    on_close: Callable[[str], None] | None = None
    """Told the reason each time the guard closes a connection (for a metric)."""
    open: dict[Any, _Connection] = field(default_factory=dict)
    """aiohttp's protocol -> its connection, oldest first."""
    closed: dict[str, int] = field(default_factory=dict)
    """Connections the guard closed, by reason: idle, headers, cap, full."""

    def wrap(self, inner: Any) -> _Connection:
        return _Connection(self, inner)

    def admit(self, connection: _Connection) -> bool:
        if len(self.open) >= self.cap:
            victim = min(
                (c for c in self.open.values() if not c.busy),
                key=lambda c: c.since,
                default=None,
            )
            if victim is None:
                self._count("full")
                return False
            self._close(victim, "cap")
        self.open[connection.inner] = connection
        return True

    def forget(self, connection: _Connection) -> None:
        self.open.pop(connection.inner, None)

    def started(self, protocol: Any) -> None:
        """A request's handler began on `protocol` (its headers are in)."""
        connection = self.open.get(protocol)
        if connection is not None:
            connection.busy += 1
            connection.receiving = False

    def ended(self, protocol: Any) -> None:
        connection = self.open.get(protocol)
        if connection is not None:
            connection.busy = max(0, connection.busy - 1)
            connection.since = time.monotonic()

    def sweep(self) -> None:
        now = time.monotonic()
        for connection in list(self.open.values()):
            if connection.busy:
                continue
            if connection.receiving and now - connection.since > self.limits.header_timeout:
                self._close(connection, "headers")
            elif not connection.receiving and now - connection.since > self.limits.idle_timeout:
                self._close(connection, "idle")

    def _close(self, connection: _Connection, reason: str) -> None:
        self.forget(connection)
        connection.close(reason)
        if self.on_close is not None:
            self.on_close(reason)

    def _count(self, reason: str) -> None:
        self.closed[reason] = self.closed.get(reason, 0) + 1
        if self.on_close is not None:
            self.on_close(reason)


GUARD_KEY: web.AppKey[ConnectionGuard] = web.AppKey("envship_connection_guard", ConnectionGuard)


@web.middleware
async def track_requests(request: web.Request, handler: Any) -> web.StreamResponse:
    """Marks the connection busy while its request is handled (a busy one is never idle)."""
    guard = request.app.get(GUARD_KEY)
    if guard is None:
        response: web.StreamResponse = await handler(request)
        return response
    protocol = request.protocol
    guard.started(protocol)
    try:
        return await handler(request)  # type: ignore[no-any-return]
    finally:
        guard.ended(protocol)


@dataclass(eq=False)
class Listener:
    """The running server: where it listens, and how to stop it."""

    runner: web.AppRunner
    server: asyncio.Server
    guard: ConnectionGuard
    _sweeper: asyncio.Task[None]

    @property
    def addresses(self) -> list[Any]:
        return [sock.getsockname() for sock in self.server.sockets]

    async def cleanup(self) -> None:
        self._sweeper.cancel()
        self.server.close()
        await self.runner.cleanup()  # closes the connections still open
        await self.server.wait_closed()


async def _sweep(guard: ConnectionGuard) -> None:
    while True:
        await asyncio.sleep(SWEEP_EVERY)
        guard.sweep()


async def serve(
    app: web.Application,
    *,
    host: str,
    port: int,
    limits: Limits | None = None,
    on_close: Callable[[str], None] | None = None,
) -> Listener:
    """Serve `app` on host:port (port 0: any free port, see `addresses`) under `limits`; stop it
    with `await listener.cleanup()`. The access log is off: the controller logs what matters."""
    limits = limits or Limits()
    guard = ConnectionGuard(limits, connection_cap(limits.max_connections), on_close)
    app[GUARD_KEY] = guard
    runner = web.AppRunner(
        app,
        access_log=None,
        handle_signals=False,
        keepalive_timeout=limits.idle_timeout,
        lingering_time=LINGER,
    )
    await runner.setup()
    factory = runner.server
    if factory is None:
        raise RuntimeError("the runner made no server")
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: guard.wrap(factory()), host or None, port, reuse_address=True, backlog=BACKLOG
    )
    return Listener(runner, server, guard, asyncio.create_task(_sweep(guard)))


__all__ = ["GUARD_KEY", "ConnectionGuard", "Limits", "Listener", "connection_cap", "serve"]
