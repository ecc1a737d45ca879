"""A registry that refuses or times out a share of requests: an HTTPS reverse proxy on 127.0.0.1
in front of a real registry.

Healthy, it passes every request on, streamed and unchanged (like `acr_standin`'s `/v2/` proxy),
so envship's registry clients and the Docker engine both talk to the registry through it. Faulty
(`faulty(share, hold_share, engine_share)`), a seeded RNG decides for each request: with
probability `share` (`engine_share` for the Docker engine's requests) the request fails, and a
failing request is either answered at once with `503 Service Unavailable` or, with probability
`hold_share`, held without an answer for `hold_seconds` (longer than envship's 30 s registry
timeout), then answered 503. Only envship's own requests are held unless `hold_engine`: the
engine's registry client has no response timeout, so a held push would only stall for
`hold_seconds`. (The engine retries a refused layer upload itself, 5 s, 10 s, ... apart, so a
lower `engine_share` keeps a test short.) `healthy()` turns the faults off and answers every held
request at once, so nothing waits on a hold after the test.

Decisions are drawn on the server's single event loop from two RNGs of the seed, one for the
engine's requests and one for envship's, started afresh by every `faulty()` call (a phase): the
n-th request of each in a phase always gets the n-th decision, however the two interleave.
Every request is recorded (monotonic time, method, path, user agent and what was done) for the
tests to count requests over a window; no header value is recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import ssl
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Literal

import aiohttp
from aiohttp import web

from tests.support.infra import Certs, Registry, free_port
from tests.support.servers import BackgroundServer, relay

Action = Literal["passed", "refused", "held", "cut"]


@dataclass(frozen=True, slots=True)
class Seen:
    """One request the proxy answered."""

    at: float
    """`time.monotonic()` when it arrived."""
    method: str
    path: str
    agent: str
    action: Action

    @property
    def engine(self) -> bool:
        """Sent by the Docker engine (pushes), not by envship's own registry client."""
        return self.agent.lower().startswith("docker/")


@dataclass
class FaultyProxy:
    """`start()` it in front of `registry`, point clients at `host`, `stop()` it."""

    registry: Registry = field(repr=False)
    certs: Certs = field(repr=False)
    seed: int = 0
    hold_seconds: float = 35.0
    """How long a held request waits before its 503 (envship's registry timeout is 30 s)."""
    hold_engine: bool = False
    port: int = field(default_factory=free_port)
    seen: list[Seen] = field(default_factory=list, init=False, repr=False)
    _share: float = field(default=0.0, init=False)
    _engine_share: float = field(default=0.0, init=False)
    _hold_share: float = field(default=0.0, init=False)
    _rngs: dict[bool, random.Random] = field(default_factory=dict, init=False, repr=False)
    _phase: int = field(default=0, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _release: asyncio.Event | None = field(default=None, init=False, repr=False)
    _cuts: int = field(default=0, init=False)
    _server: BackgroundServer | None = field(default=None, init=False, repr=False)
    _session: aiohttp.ClientSession | None = field(default=None, init=False, repr=False)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    # -- switching ------------------------------------------------------------------------------

    def faulty(
        self, share: float, hold_share: float = 0.0, engine_share: float | None = None
    ) -> FaultyProxy:
        """Fail `share` of envship's requests (`engine_share` of the engine's, by default the
        same) from now on; `hold_share` of the failing ones are held."""
        engine = share if engine_share is None else engine_share
        assert all(0.0 <= x <= 1.0 for x in (share, hold_share, engine))
        with self._lock:
            self._share, self._hold_share, self._engine_share = share, hold_share, engine
            # fresh sequences (str seeds are stable across runs): one for the engine's requests,
            # one for envship's, so the n-th request of each after this call gets the same fate
            self._phase += 1
            self._rngs = {
                kind: random.Random(f"{self.seed}/{self._phase}/{kind}") for kind in (False, True)
            }
        if self._server is not None:
            self._server.call(self._arm())
        return self

    def cut_manifests(self, count: int) -> FaultyProxy:
        """Cut the connection of the engine's next `count` manifest uploads midway: part of the
        body is read, then the connection is dropped without an answer. The layers are in the
        registry by then; the tag is not."""
        with self._lock:
            self._cuts = count
        return self

    def _cut(self, request: web.Request, engine: bool) -> bool:
        if not engine or request.method != "PUT" or "/manifests/" not in request.rel_url.path:
            return False
        with self._lock:
            if self._cuts <= 0:
                return False
            self._cuts -= 1
        return True

    def healthy(self) -> FaultyProxy:
        """Pass everything on from now on, and answer the held requests at once."""
        with self._lock:
            self._share = self._hold_share = self._engine_share = 0.0
        if self._server is not None:
            self._server.call(self._free())
        return self

    async def _arm(self) -> None:
        if self._release is None or self._release.is_set():
            self._release = asyncio.Event()

    async def _free(self) -> None:
        if self._release is not None:
            self._release.set()

    # -- what happened --------------------------------------------------------------------------

    def requests(
        self, start: float = 0.0, end: float = float("inf"), *, engine: bool | None = None
    ) -> list[Seen]:
        """The requests that arrived in [start, end) (`engine`: only the engine's, or none)."""
        with self._lock:
            seen = list(self.seen)
        return [s for s in seen if start <= s.at < end and (engine is None or s.engine == engine)]

    def count(self, action: Action) -> int:
        return sum(1 for s in self.requests() if s.action == action)

    # -- HTTP -----------------------------------------------------------------------------------

    def _decide(self, engine: bool) -> Action:
        with self._lock:
            share = self._engine_share if engine else self._share
            hold_share = self._hold_share
        if share <= 0.0:
            return "passed"
        # Two draws for every request while faulty, so the n-th request gets the n-th decision.
        rng = self._rngs[engine]
        fails, holds = rng.random() < share, rng.random() < hold_share
        if not fails:
            return "passed"
        return "held" if holds and (self.hold_engine or not engine) else "refused"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        agent = request.headers.get("User-Agent", "")
        seen = Seen(time.monotonic(), request.method, request.rel_url.path, agent, "passed")
        cut = self._cut(request, seen.engine)
        seen = replace(seen, action="cut" if cut else self._decide(seen.engine))
        action = seen.action
        with self._lock:
            self.seen.append(seen)
        if action == "cut":
            await request.content.read(64)
            if request.transport is not None:
                request.transport.abort()
            raise ConnectionResetError("cut midway by the test")
        if action == "held":
            release = self._release
            if release is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(release.wait(), self.hold_seconds)
        if action != "passed":
            return web.json_response(
                {"errors": [{"code": "UNAVAILABLE", "message": f"chaos: {action}"}]},
                status=503,
                headers={"Connection": "close"},
            )
        return await self.proxy(request)

    async def proxy(self, request: web.Request) -> web.StreamResponse:
        """Pass a request on, bodies streamed, headers (Location, ...) unchanged."""
        assert self._session is not None
        return await relay(self._session, request, self.registry.url)

    # -- life -----------------------------------------------------------------------------------

    def start(self) -> FaultyProxy:
        self._server = BackgroundServer(self.certs, self.port, "faulty-proxy")
        self._server.start(self._app, self._close)
        self._server.call(self._arm())
        return self

    async def _app(self) -> web.Application:
        app = web.Application(client_max_size=0)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        context = ssl.create_default_context(cafile=self.certs.ca_file)
        self._session = aiohttp.ClientSession(
            auto_decompress=False,
            skip_auto_headers=("Accept", "Accept-Encoding", "User-Agent", "Content-Type"),
            connector=aiohttp.TCPConnector(limit=0, ssl=context),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
        )
        return app

    async def _close(self) -> None:
        await self._free()
        if self._session is not None:
            await self._session.close()

    def stop(self) -> None:
        if self._server is not None:
            self.healthy()
            self._server.stop()
            self._server = None


__all__ = ["FaultyProxy", "Seen"]
