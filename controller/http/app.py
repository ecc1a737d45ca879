"""The controller's HTTP surface (aiohttp.web): webhooks, manual trigger, status, probes, metrics.

- `POST /hooks/github`: `X-Hub-Signature-256` HMAC of the raw body (`ping`: 200, no reconcile)
- `POST /hooks/gitlab`: `X-Gitlab-Token`
- `POST /hooks/azure-devops`: HTTP Basic authentication
- `POST /hooks/generic`: `X-Signature: sha256=<hex>` HMAC of the raw body
- `POST /reconcile[?wait=SECONDS]`: manual trigger with `Authorization: Bearer <token>`; with
  `wait`, waits for the reconcile that serves it and returns its outcome
- `GET /status`: the status board's snapshot (JSON)
- `GET /healthz`: liveness, 200 while the process serves; depends on nothing external
- `GET /readyz`: 200 after the first reconcile while every secret reference can be read; 503
  before it, while a reference cannot be read, and while stopping (`ready` and `ready_reason`
  in `/status` give the same answer). With leader
  election, a follower is ready (200) while it knows the leader's address (it relays), else 503
- `GET /metrics`: Prometheus text exposition

Webhooks: 202 `{"ticket": N}` when verified and a reconcile was requested; 401 when the signature,
token or credentials are missing, malformed or wrong (nothing is triggered); 413 over the body
cap (Content-Length checked first, then the body is read with a hard limit); 415 for a
compressed body (the signature covers the bytes sent, and a small compressed body can inflate);
503 while stopping or when the secret cannot be read. The payload is never parsed: it only
triggers a reconcile, which fetches from git itself. Requests coalesce in the controller, so a
flood of hooks is one pending reconcile.

Leader election: on a follower, the webhooks and `POST /reconcile` are relayed to the leader
(its address from the Lease, `http://HOST:PORT` only) after the body cap and the compression
check, with the body and the headers that matter (signatures, tokens, `Authorization`,
`Content-Type`, event names) and nothing else; the leader's status and body are the answer. The
follower verifies nothing (the leader does), and relays only those fixed paths, to that one
address, without following redirects. No address known: 503 "no leader known"; the leader does
not answer in time: 503 "leader unreachable"; a request that was relayed once already is not
relayed again (503 "not the leader"), so stale records cannot make replicas relay in a circle.

Deliveries: a GitHub, GitLab or generic webhook accepted once is remembered by its delivery id
(`X-GitHub-Delivery`; `Idempotency-Key` or `X-Gitlab-Event-UUID`; `Idempotency-Key` or
`X-Delivery-Id`) for an hour: a redelivery is answered 200 with the first ticket and
`"duplicate": true`, and triggers nothing. Only verified requests are remembered.

Connections and bodies are bounded (`controller.http.server`): idle, slow-header and slow-body
connections are closed, bodies are read by a bounded number of requests at once (503 with
`Retry-After` beyond it; 408 for a body not sent in time).

Secrets are read through callables on every request, so a rotated secret is used at once; each
value read is registered with the redactor. Every JSON body that goes out is redacted, no
response or log line echoes a header, and metric labels are bounded and redacted.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol, TypeVar

import aiohttp
from aiohttp import web
from yarl import URL

from controller.adapters.redact import REDACTOR, redact
from controller.http.server import Limits, Listener, serve, track_requests
from controller.http.webhooks import (
    Verdict,
    github_event,
    verify_azure_devops,
    verify_bearer,
    verify_generic,
    verify_github,
    verify_gitlab,
)
from controller.service.metrics import Metrics

log = logging.getLogger("envship.web")

MAX_BODY = 1024 * 1024
MAX_WAIT = 600.0
"""The longest `POST /reconcile?wait=` honoured, in seconds."""
MAX_WAITERS = 16
"""Manual triggers waiting at once; more are answered 429 (and trigger nothing)."""
RELAY_TIMEOUT = 10.0
"""Seconds a follower waits for the leader's answer to a relayed request."""
RELAY_MARK = "X-Envship-Relayed"
"""Set on relayed requests: a replica that does not lead never relays one again."""
RELAYED_HEADERS = (
    "Content-Type",
    "Authorization",
    "User-Agent",
    "X-Hub-Signature-256",
    "X-Hub-Signature",
    "X-GitHub-Event",
    "X-GitHub-Delivery",
    "X-GitHub-Hook-ID",
    "X-Gitlab-Token",
    "X-Gitlab-Event",
    "X-Gitlab-Event-UUID",
    "X-Gitlab-Webhook-UUID",
    "X-Signature",
    "Idempotency-Key",
    "X-Delivery-Id",
)
"""The request headers a follower passes on to the leader (every value of each)."""
DELIVERY_HEADERS = {
    "github": ("X-GitHub-Delivery",),
    "gitlab": ("Idempotency-Key", "X-Gitlab-Event-UUID"),
    "generic": ("Idempotency-Key", "X-Delivery-Id"),
}
"""Where each provider names a delivery (the first header present wins); a redelivery of one
already accepted is answered with its ticket and triggers nothing. Azure DevOps sends none."""
DELIVERY_MEMORY = 4096
DELIVERY_TTL = 3600.0
"""Deliveries remembered (at most this many, for this many seconds)."""
ANSWER_HEADERS = ("Content-Type", "WWW-Authenticate", "Retry-After")
"""The leader's answer headers a follower passes back."""

T = TypeVar("T")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SecretSource = Callable[[], str | None]
"""Returns the secret's current value (None or empty: not configured). Called per request."""


class ControllerPort(Protocol):
    """What the HTTP surface needs from the controller.

    `ready` and `stopping` are read on the event loop and must only read flags; the other
    methods are called from worker threads and may take locks (`wait_for` blocks)."""

    def request_reconcile(self, reason: str) -> int:
        """Ask for a reconcile; returns a ticket. Requests made while one runs coalesce into one
        more reconcile, which serves all their tickets."""
        ...

    def wait_for(self, ticket: int, timeout: float) -> dict[str, Any] | None:
        """Block until the reconcile serving `ticket` ends: its outcome, or None on timeout."""
        ...

    def status(self) -> dict[str, Any]:
        """The status board's snapshot (`controller.service.status.StatusBoard.snapshot`)."""
        ...

    def ready(self) -> bool:
        """True once the first reconcile has completed."""
        ...

    def stopping(self) -> bool:
        """True once shutdown began: triggers are refused."""
        ...

    # Optional: `leading() -> bool` (only reads a flag), False on a replica that does not hold
    # the leader lease, and `leader_address() -> str | None` (only reads attributes), the
    # leader's `http://HOST:PORT` from the Lease: such a replica relays triggers there and is
    # ready while it knows one.


@dataclass(frozen=True)
class WebhookSecrets:
    """Where each shared secret comes from (a provider without one refuses every request)."""

    github: SecretSource | None = None
    gitlab: SecretSource | None = None
    azure_devops_username: SecretSource | None = None
    azure_devops_password: SecretSource | None = None
    generic: SecretSource | None = None
    reconcile_token: SecretSource | None = None
    """The bearer token of `POST /reconcile`."""


class SecretUnavailable(Exception):
    """A secret source failed (its value is never part of the message)."""


# -- the application ---------------------------------------------------------------------------


def _redacted(value: Any) -> Any:
    """A JSON-able structure with every string (keys included) redacted."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {redact(str(k)): _redacted(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redacted(v) for v in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    return redact(str(value))


def _json(data: Mapping[str, Any], status: int = 200, **headers: str) -> web.Response:
    response = web.json_response(_redacted(data), status=status)
    response.headers["Cache-Control"] = "no-store"
    for name, value in headers.items():
        response.headers[name.replace("_", "-")] = value
    return response


def relay_origin(address: str | None) -> URL | None:
    """The leader's `http://HOST:PORT` as a URL; None unless `address` is exactly that (no
    other scheme, no credentials, path, query or fragment)."""
    if not address:
        return None
    try:
        url = URL(address)
    except (TypeError, ValueError):
        return None
    if (
        url.scheme != "http"
        or not url.host
        or url.explicit_port is None
        or url.user is not None
        or url.password is not None
        or url.raw_path not in ("", "/")
        or url.raw_query_string
        or url.raw_fragment
    ):
        return None
    return url.origin()


def _read_secret(source: SecretSource | None) -> str | None:
    if source is None:
        return None
    try:
        value = source()
    except Exception as exc:
        raise SecretUnavailable(type(exc).__name__) from None
    if value:
        REDACTOR.add(value)
    return value or None


class _Server:
    def __init__(
        self,
        controller: ControllerPort,
        secrets: WebhookSecrets,
        metrics: Metrics,
        max_body: int,
        limits: Limits,
    ) -> None:
        self.controller = controller
        self.secrets = secrets
        self.metrics = metrics
        self.max_body = max_body
        self.limits = limits
        self.reserved = 0
        """Bytes of bodies being read now (at most `limits.body_memory`)."""
        self.deliveries: OrderedDict[str, tuple[int, float]] = OrderedDict()
        """`provider:delivery id` -> (ticket, when accepted)."""
        self.calls = ThreadPoolExecutor(max_workers=4, thread_name_prefix="envship-web")
        self.waits = ThreadPoolExecutor(max_workers=MAX_WAITERS, thread_name_prefix="envship-wait")
        self.waiting = 0
        self.session: aiohttp.ClientSession | None = None
        """For relaying to the leader: made on the event loop when first needed."""

    async def close(self, _app: web.Application) -> None:
        self.calls.shutdown(wait=False, cancel_futures=True)
        self.waits.shutdown(wait=False, cancel_futures=True)
        if self.session is not None:
            await self.session.close()

    async def _call(self, function: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.calls, partial(function, *args))

    def _stopping(self) -> bool:
        try:
            return bool(self.controller.stopping())
        except Exception:
            return True

    def _leading(self) -> bool:
        leading = getattr(self.controller, "leading", None)
        if leading is None:
            return True
        try:
            return bool(leading())
        except Exception:
            return False

    def _leader_origin(self) -> URL | None:
        """On a follower: the leader's `http://HOST:PORT`, if known and well formed."""
        address = getattr(self.controller, "leader_address", None)
        if address is None:
            return None
        try:
            return relay_origin(address())
        except Exception:
            return None

    async def _body(self, request: web.Request, provider: str | None) -> bytes | web.Response:
        """The request's body within the cap (413 over it), refusing compressed webhooks
        (415); `provider`: the webhook's, for its metrics (None: the manual trigger)."""
        length = request.content_length
        if length is not None and length > self.max_body:
            return self._too_large(provider)
        encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
        if provider is not None and encoding not in ("", "identity"):
            self.metrics.webhook(provider, "unsupported")
            return _json({"error": "compressed bodies are not accepted"}, 415)
        reserve = min(length, self.max_body) if length is not None else self.max_body
        if self.reserved + reserve > self.limits.body_memory:
            if provider is not None:
                self.metrics.webhook(provider, "busy")
            response = _json({"error": "too many requests are sending a body"}, 503)
            response.headers["Retry-After"] = "1"
            response.force_close()
            return response
        self.reserved += reserve
        try:
            async with asyncio.timeout(self.limits.body_timeout):
                body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return self._too_large(provider)
        except TimeoutError:
            if provider is not None:
                self.metrics.webhook(provider, "slow_body")
            response = _json({"error": "the body was not sent in time"}, 408)
            response.force_close()
            return response
        finally:
            self.reserved -= reserve
        if len(body) > self.max_body:
            return self._too_large(provider)
        return body

    # -- relaying to the leader (on a follower)

    async def _relay(
        self, request: web.Request, path: str, provider: str | None, timeout: float
    ) -> web.Response:
        """Send the request on to the leader (`path`: the route's own, fixed) and answer with
        the leader's answer; nothing is verified here, the leader does it."""
        if RELAY_MARK in request.headers:
            self.metrics.relay("loop")
            return _json({"error": "not the leader"}, 503)
        origin = self._leader_origin()
        if origin is None:
            self.metrics.relay("no_leader")
            return _json({"error": "no leader known"}, 503)
        body = await self._body(request, provider)
        if isinstance(body, web.Response):
            return body
        query = request.rel_url.raw_query_string
        target = URL(f"{origin}{path}" + (f"?{query}" if query else ""), encoded=True)
        headers: list[tuple[str, str]] = [
            (name, value) for name in RELAYED_HEADERS for value in request.headers.getall(name, [])
        ]
        headers.append((RELAY_MARK, "1"))
        if self.session is None:
            # no proxy from the environment; a connection per request (relays are rare, and a
            # kept-alive one could point at a leader that is gone)
            connector = aiohttp.TCPConnector(force_close=True)
            self.session = aiohttp.ClientSession(connector=connector, trust_env=False)
        try:
            async with self.session.request(
                request.method,
                target,
                data=body,
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=timeout),
                skip_auto_headers=() if "Content-Type" in request.headers else ("Content-Type",),
            ) as answer:
                content = await answer.read()
                status = answer.status
                passed = {n: answer.headers[n] for n in ANSWER_HEADERS if n in answer.headers}
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("relaying %s to the leader failed: %s", path, type(exc).__name__)
            self.metrics.relay("unreachable")
            return _json({"error": "leader unreachable"}, 503)
        self.metrics.relay("relayed")
        response = web.Response(status=status, body=content, headers=passed)
        response.headers["Cache-Control"] = "no-store"
        return response

    # -- webhooks

    async def _webhook(
        self,
        request: web.Request,
        provider: str,
        verify: Callable[[Mapping[str, str], bytes], Verdict],
    ) -> web.Response:
        if self._stopping():
            self.metrics.webhook(provider, "stopping")
            return _json({"error": "stopping"}, 503)
        if not self._leading():
            return await self._relay(request, f"/hooks/{provider}", provider, RELAY_TIMEOUT)
        body = await self._body(request, provider)
        if isinstance(body, web.Response):
            return body
        try:
            verdict = await self._call(verify, request.headers, body)
        except SecretUnavailable as exc:
            log.warning("%s webhook: its secret could not be read (%s)", provider, exc)
            self.metrics.webhook(provider, "secret_error")
            return _json({"error": "webhook secret unavailable"}, 503)
        if not verdict.accepted:
            log.info("%s webhook refused: %s", provider, verdict.reason)
            self.metrics.webhook(provider, "rejected")
            return _json({"error": "unauthorized", "reason": verdict.reason}, 401)
        event = github_event(request.headers) if provider == "github" else None
        if event == "ping":
            self.metrics.webhook(provider, "ping")
            return _json({"ok": True, "event": "ping"})
        if self._stopping():
            self.metrics.webhook(provider, "stopping")
            return _json({"error": "stopping"}, 503)
        delivery = self._delivery(provider, request.headers)
        seen = self._seen(delivery)
        if seen is not None:
            self.metrics.webhook(provider, "duplicate")
            return _json({"ticket": seen, "duplicate": True})
        reason = f"webhook {provider}" + (f" {event}" if event else "")
        try:
            ticket = await self._call(self.controller.request_reconcile, reason)
        except Exception as exc:
            log.warning("%s webhook: reconcile not requested: %s", provider, redact(str(exc)))
            self.metrics.webhook(provider, "error")
            return _json({"error": "reconcile could not be requested"}, 503)
        self._remember(delivery, ticket)
        self.metrics.webhook(provider, "accepted")
        return _json({"ticket": ticket}, 202)

    @staticmethod
    def _delivery(provider: str, headers: Mapping[str, str]) -> str | None:
        for name in DELIVERY_HEADERS.get(provider, ()):
            value = headers.get(name, "").strip()
            if value:
                return f"{provider}:{value[:200]}"
        return None

    def _seen(self, delivery: str | None) -> int | None:
        """The ticket a delivery was accepted with, while it is remembered."""
        if delivery is None:
            return None
        now = time.monotonic()
        while self.deliveries:
            oldest = next(iter(self.deliveries.values()))
            if now - oldest[1] <= DELIVERY_TTL:
                break
            self.deliveries.popitem(last=False)
        found = self.deliveries.get(delivery)
        return found[0] if found else None

    def _remember(self, delivery: str | None, ticket: int) -> None:
        if delivery is None:
            return
        self.deliveries[delivery] = (ticket, time.monotonic())
        while len(self.deliveries) > DELIVERY_MEMORY:
            self.deliveries.popitem(last=False)

    def _too_large(self, provider: str | None) -> web.Response:
        if provider is not None:
            self.metrics.webhook(provider, "too_large")
        response = _json({"error": f"body over {self.max_body} bytes"}, 413)
        response.force_close()
        return response

    async def github(self, request: web.Request) -> web.Response:
        def verify(headers: Mapping[str, str], body: bytes) -> Verdict:
            return verify_github(headers, body, _read_secret(self.secrets.github))

        return await self._webhook(request, "github", verify)

    async def gitlab(self, request: web.Request) -> web.Response:
        def verify(headers: Mapping[str, str], _body: bytes) -> Verdict:
            return verify_gitlab(headers, _read_secret(self.secrets.gitlab))

        return await self._webhook(request, "gitlab", verify)

    async def azure_devops(self, request: web.Request) -> web.Response:
        def verify(headers: Mapping[str, str], _body: bytes) -> Verdict:
            return verify_azure_devops(
                headers,
                _read_secret(self.secrets.azure_devops_username),
                _read_secret(self.secrets.azure_devops_password),
            )

        return await self._webhook(request, "azure-devops", verify)

    async def generic(self, request: web.Request) -> web.Response:
        def verify(headers: Mapping[str, str], body: bytes) -> Verdict:
            return verify_generic(headers, body, _read_secret(self.secrets.generic))

        return await self._webhook(request, "generic", verify)

    # -- manual trigger

    def _verify_bearer(self, headers: Mapping[str, str]) -> Verdict:
        return verify_bearer(headers, _read_secret(self.secrets.reconcile_token))

    async def reconcile(self, request: web.Request) -> web.Response:
        if self._stopping():
            return _json({"error": "stopping"}, 503)
        if not self._leading():
            timeout = RELAY_TIMEOUT
            try:  # the leader checks `wait` itself; this only sizes the timeout
                wait = float(request.query.get("wait", "0"))
            except ValueError:
                wait = 0.0
            if math.isfinite(wait) and wait > 0:
                timeout = max(RELAY_TIMEOUT, min(wait, MAX_WAIT) + 5)
            return await self._relay(request, "/reconcile", None, timeout)
        try:
            verdict = await self._call(self._verify_bearer, request.headers)
        except SecretUnavailable as exc:
            log.warning("manual trigger: its token could not be read (%s)", exc)
            return _json({"error": "token unavailable"}, 503)
        if not verdict.accepted:
            return _json(
                {"error": "unauthorized", "reason": verdict.reason},
                401,
                WWW_Authenticate='Bearer realm="envship"',
            )
        wait = 0.0
        if "wait" in request.query:
            try:
                wait = float(request.query["wait"])
            except ValueError:
                wait = math.nan
            if not math.isfinite(wait) or wait < 0:
                return _json({"error": "wait must be a number of seconds"}, 400)
            wait = min(wait, MAX_WAIT)
        if wait > 0 and self.waiting >= MAX_WAITERS:
            return _json({"error": "too many requests are waiting"}, 429)
        try:
            ticket = await self._call(self.controller.request_reconcile, "manual")
        except Exception as exc:
            log.warning("manual trigger: reconcile not requested: %s", redact(str(exc)))
            return _json({"error": "reconcile could not be requested"}, 503)
        if wait <= 0:
            return _json({"ticket": ticket, "done": False}, 202)
        self.waiting += 1
        try:
            loop = asyncio.get_running_loop()
            outcome = await loop.run_in_executor(self.waits, self.controller.wait_for, ticket, wait)
        finally:
            self.waiting -= 1
        if outcome is None:
            return _json({"ticket": ticket, "done": False, "outcome": None}, 202)
        return _json({"ticket": ticket, "done": True, "outcome": outcome})

    # -- reading

    async def status(self, _request: web.Request) -> web.Response:
        data = await self._call(self.controller.status)
        ready, reason = self._readiness()
        data["ready"], data["ready_reason"] = ready, reason  # exactly what /readyz answers
        return _json(data)

    async def healthz(self, _request: web.Request) -> web.Response:
        return _json({"ok": True})

    def _readiness(self) -> tuple[bool, str | None]:
        """Whether this replica can do its job, and why not: the one answer of `/readyz` and
        of `ready` in `/status`. Reads flags only."""
        if self._stopping():
            return False, "stopping"
        if not self._leading():
            if self._leader_origin() is None:
                return False, "no leader known"
            return True, None
        try:
            if not self.controller.ready():
                return False, "waiting for the first reconcile"
            reason = getattr(self.controller, "not_ready_reason", lambda: None)()
        except Exception:
            return False, "waiting for the first reconcile"
        return (False, reason) if reason else (True, None)

    async def readyz(self, _request: web.Request) -> web.Response:
        ready, reason = self._readiness()
        if not ready:
            return _json({"ready": False, "reason": reason}, 503)
        if not self._leading():
            return _json({"ready": True, "leading": False})
        return _json({"ready": True})

    async def metrics_text(self, _request: web.Request) -> web.Response:
        leading = self._leading()

        def render() -> bytes:
            self.metrics.leader.set(1 if leading else 0)
            try:
                environments = self.controller.status().get("environments", [])
            except Exception as exc:
                log.warning("metrics: status not read: %s", redact(str(exc)))
            else:
                self.metrics.set_environments(environments)
            return self.metrics.exposition()

        body = await self._call(render)
        return web.Response(
            body=body, headers={"Content-Type": Metrics.CONTENT_TYPE, "Cache-Control": "no-store"}
        )


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """An unexpected error is a bare 500: its text (which could hold anything) is only logged,
    redacted."""
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except Exception as exc:
        log.error(
            "%s %s failed: %s", request.method, request.path, redact(f"{type(exc).__name__}: {exc}")
        )
        return _json({"error": "internal error"}, 500)


async def _security_headers(_request: web.Request, response: web.StreamResponse) -> None:
    response.headers.setdefault("X-Content-Type-Options", "nosniff")


SERVER_KEY: web.AppKey[_Server] = web.AppKey("envship_server", _Server)


def make_app(
    controller: ControllerPort,
    *,
    secrets: WebhookSecrets,
    metrics: Metrics,
    max_body: int = MAX_BODY,
    limits: Limits | None = None,
) -> web.Application:
    """The controller's web application; serve it with `start_server` (which applies `limits`)
    or with aiohttp's runners."""
    if max_body <= 0:
        raise ValueError("max_body must be positive")
    server = _Server(controller, secrets, metrics, max_body, limits or Limits())
    app = web.Application(client_max_size=max_body, middlewares=[track_requests, _errors])
    app[SERVER_KEY] = server
    app.on_response_prepare.append(_security_headers)
    app.on_cleanup.append(server.close)
    app.add_routes(
        [
            web.post("/hooks/github", server.github),
            web.post("/hooks/gitlab", server.gitlab),
            web.post("/hooks/azure-devops", server.azure_devops),
            web.post("/hooks/generic", server.generic),
            web.post("/reconcile", server.reconcile),
            web.get("/status", server.status),
            web.get("/healthz", server.healthz),
            web.get("/readyz", server.readyz),
            web.get("/metrics", server.metrics_text),
        ]
    )
    return app


async def start_server(app: web.Application, *, host: str, port: int) -> Listener:
    """Serve `app` (from `make_app`) on host:port under its limits (port 0: any free port, see
    `addresses`); stop it with `await listener.cleanup()`."""
    server = app[SERVER_KEY]
    return await serve(
        app, host=host, port=port, limits=server.limits, on_close=server.metrics.http_closed
    )
