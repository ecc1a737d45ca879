"""Run an aiohttp application over TLS on 127.0.0.1 in a thread with its own event loop.

The stand-ins for remote services (ACR's token service, Key Vault) use it, so that the real
Azure SDK clients talk real HTTPS to them from the test process or from envship subprocesses.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from tests.support.infra import Certs

T = TypeVar("T")


class BackgroundServer:
    def __init__(self, certs: Certs, port: int, name: str, address: str = "127.0.0.1") -> None:
        self.certs = certs
        self.port = port
        self.name = name
        self.address = address
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._on_close: list[Callable[[], Awaitable[Any]]] = []

    def call(self, coroutine: Awaitable[T]) -> T:
        """Run a coroutine on the server's loop and wait for its result."""
        assert self._loop is not None, "the server is not running"
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(20)  # type: ignore[arg-type]

    def start(
        self,
        build: Callable[[], Awaitable[web.Application]],
        on_close: Callable[[], Awaitable[Any]] | None = None,
    ) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=self.name, daemon=True)
        self._thread.start()
        if on_close is not None:
            self._on_close.append(on_close)

        async def serve() -> None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(self.certs.cert_file, self.certs.key_file)
            self._runner = web.AppRunner(await build(), access_log=None)
            await self._runner.setup()
            await web.TCPSite(self._runner, self.address, self.port, ssl_context=context).start()

        self.call(serve())

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return

        async def close() -> None:
            if self._runner is not None:
                await self._runner.cleanup()
            for hook in self._on_close:
                await hook()

        with contextlib.suppress(Exception):
            self.call(close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(20)
        self._loop.close()
        self._loop = self._thread = None


HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
CHUNK = 64 * 1024


async def relay(
    session: aiohttp.ClientSession, request: web.Request, upstream_url: str
) -> web.StreamResponse:
    """Pass a request on to `upstream_url` + its path: bodies streamed both ways, headers
    (Location, Docker-Content-Digest, WWW-Authenticate, ...) unchanged but hop-by-hop ones."""
    headers = CIMultiDict((k, v) for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP)
    body = request.content if request.body_exists else None
    async with session.request(
        request.method,
        URL(upstream_url + request.raw_path, encoded=True),
        headers=headers,
        data=body,
        allow_redirects=False,
    ) as upstream:
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        for key, value in upstream.headers.items():
            if key.lower() not in HOP_BY_HOP:
                response.headers.add(key, value)
        await response.prepare(request)
        if request.method != "HEAD":
            async for chunk in upstream.content.iter_chunked(CHUNK):
                await response.write(chunk)
        await response.write_eof()
        return response
