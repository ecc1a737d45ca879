"""The controller's web application served on loopback in a process of its own, for the hostile
HTTP tests and benchmark (`tests/support/hostile_http.py`): its memory and descriptors are its own.

    python -m tests.support.http_server_child '{"header_timeout": 1, ...}' [NOFILE] [plain]

prints `PORT <n>` once it listens. The controller behind it is a stand-in that is ready and
answers at once; the web application, its limits and its listener are envship's own. With
`plain`, the same application is served by aiohttp's own runner with its defaults (no limits):
the benchmark's side-by-side baseline."""

from __future__ import annotations

import asyncio
import json
import resource
import sys
from typing import Any

from aiohttp import web

from controller.http.app import WebhookSecrets, make_app, start_server
from controller.http.server import Limits
from controller.service.metrics import Metrics

WEBHOOK_SECRET = "hostile-http-test-secret"


class ReadyController:
    """Ready at once; every reconcile request gets the next ticket."""

    def __init__(self) -> None:
        self.tickets = 0

    def request_reconcile(self, reason: str) -> int:
        self.tickets += 1
        return self.tickets

    def wait_for(self, ticket: int, timeout: float) -> dict[str, Any] | None:
        return {"result": "success"}

    def status(self) -> dict[str, Any]:
        return {"revision": None, "environments": {}}

    def ready(self) -> bool:
        return True

    def stopping(self) -> bool:
        return False


async def main(limits: Limits, *, plain: bool) -> None:
    app = make_app(
        ReadyController(),
        secrets=WebhookSecrets(github=lambda: WEBHOOK_SECRET),
        metrics=Metrics(),
        limits=limits,
    )
    if plain:
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        print(f"PORT {runner.addresses[0][1]}", flush=True)
    else:
        listener = await start_server(app, host="127.0.0.1", port=0)
        print(f"PORT {listener.addresses[0][1]}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[2] != "-":
        nofile = int(sys.argv[2])
        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
    asyncio.run(main(Limits(**json.loads(sys.argv[1])), plain="plain" in sys.argv[3:]))
