"""The controller's HTTP surface (controller.http.app) through aiohttp's test client, against a fake
controller, and the status board it serves (controller.status)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip
import hashlib
import hmac
import json
import socket
import threading
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from multidict import CIMultiDict

from controller.adapters.redact import REDACTOR
from controller.http import app as controller_web
from controller.http.app import WebhookSecrets, make_app, relay_origin, start_server
from controller.service.metrics import Metrics
from controller.service.status import EnvStatus, Phase, StatusBoard, utc_iso
from tests.support.canaries import canary, record_output

GITHUB = canary("webhook")
GITLAB = canary("webhook")
ADO_USER = "ado-service-hook"
ADO_PASSWORD = canary("webhook")
GENERIC = canary("webhook")
TOKEN = canary("webhook")
SECRETS = (GITHUB, GITLAB, ADO_PASSWORD, GENERIC, TOKEN)
BODY = b'{"ref": "refs/heads/main", "after": "0123abcd"}'


class FakeController:
    """A test double of ControllerPort: records requests, answers from fields."""

    def __init__(self) -> None:
        self.reasons: list[str] = []
        self.waits: list[tuple[int, float]] = []
        self.outcomes: dict[int, dict[str, Any]] = {}
        self.is_ready = False
        self.is_stopping = False
        self.board = StatusBoard()
        self.status_error: Exception | None = None
        self._lock = threading.Lock()

    def request_reconcile(self, reason: str) -> int:
        with self._lock:
            self.reasons.append(reason)
            return len(self.reasons)

    def wait_for(self, ticket: int, timeout: float) -> dict[str, Any] | None:
        self.waits.append((ticket, timeout))
        return self.outcomes.get(ticket)

    def status(self) -> dict[str, Any]:
        if self.status_error is not None:
            raise self.status_error
        return self.board.snapshot()

    def ready(self) -> bool:
        return self.is_ready

    def stopping(self) -> bool:
        return self.is_stopping


class Current:
    """Secret values the app reads through callables (so a test can rotate them)."""

    def __init__(self) -> None:
        self.values: dict[str, str | None] = {
            "github": GITHUB,
            "gitlab": GITLAB,
            "ado_user": ADO_USER,
            "ado_password": ADO_PASSWORD,
            "generic": GENERIC,
            "token": TOKEN,
        }
        self.reads: list[str] = []

    def source(self, key: str) -> Callable[[], str | None]:
        def read() -> str | None:
            self.reads.append(key)
            value = self.values[key]
            if value == "RAISE":
                raise RuntimeError(f"vault unreachable, last value {GITHUB}")
            return value

        return read

    def secrets(self) -> WebhookSecrets:
        return WebhookSecrets(
            github=self.source("github"),
            gitlab=self.source("gitlab"),
            azure_devops_username=self.source("ado_user"),
            azure_devops_password=self.source("ado_password"),
            generic=self.source("generic"),
            reconcile_token=self.source("token"),
        )


class Harness:
    def __init__(self, max_body: int = 1024 * 1024) -> None:
        self.controller = FakeController()
        self.current = Current()
        self.metrics = Metrics()
        self.app = make_app(
            self.controller,
            secrets=self.current.secrets(),
            metrics=self.metrics,
            max_body=max_body,
        )

    def run(self, scenario: Callable[[Client], Awaitable[None]]) -> None:
        async def main() -> None:
            async with TestClient(TestServer(self.app)) as client:
                await scenario(Client(client))

        asyncio.run(main())


class Client:
    def __init__(self, client: TestClient) -> None:
        self.client = client

    async def request(
        self, method: str, path: str, **kwargs: Any
    ) -> tuple[int, str, CIMultiDict[str]]:
        async with self.client.request(method, path, **kwargs) as response:
            text = await response.text()
            record_output(text)
            for value in response.headers.values():
                record_output(value)
            for secret in SECRETS:
                assert secret not in text
            return response.status, text, CIMultiDict(response.headers)

    async def post(self, path: str, **kwargs: Any) -> tuple[int, Any]:
        status, text, _ = await self.request("POST", path, **kwargs)
        return status, _maybe_json(text)

    async def get(self, path: str) -> tuple[int, Any]:
        status, text, _ = await self.request("GET", path)
        return status, _maybe_json(text)


def _maybe_json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def sign(body: bytes, secret: str) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def github_headers(body: bytes = BODY, secret: str = GITHUB, event: str = "push") -> dict[str, str]:
    return {
        "X-Hub-Signature-256": sign(body, secret),
        "X-GitHub-Event": event,
        "Content-Type": "application/json",
    }


# -- webhooks ------------------------------------------------------------------------------------


def test_signed_github_push_triggers_exactly_one_reconcile():
    h = Harness()

    async def scenario(c: Client) -> None:
        status, body = await c.post("/hooks/github", data=BODY, headers=github_headers())
        assert (status, body) == (202, {"ticket": 1})

    h.run(scenario)
    assert h.controller.reasons == ["webhook github push"]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-GitHub-Event": "push"},
        {"X-Hub-Signature-256": sign(BODY, GENERIC)},
        {"X-Hub-Signature-256": sign(BODY + b"\n", GITHUB)},
        {"X-Hub-Signature-256": sign(BODY, GITHUB).replace("sha256=", "sha1=")},
        {"X-Hub-Signature-256": "sha256="},
        {"X-Hub-Signature-256": "sha256=" + "g" * 64},
        {"X-Hub-Signature-256": sign(BODY, GITHUB)[:-1]},
        {"X-Hub-Signature-256": "garbage"},
        {"X-Hub-Signature-256": "sha256=" + "a" * 4000},
        {"X-Signature": sign(BODY, GITHUB)},
        CIMultiDict(
            [("X-Hub-Signature-256", sign(BODY, GITHUB)), ("X-Hub-Signature-256", "sha256=00")]
        ),
    ],
)
def test_github_refuses_unsigned_wrong_and_malformed_signatures(headers):
    h = Harness()

    async def scenario(c: Client) -> None:
        status, body = await c.post("/hooks/github", data=BODY, headers=headers)
        assert status == 401
        assert body["error"] == "unauthorized"

    h.run(scenario)
    assert h.controller.reasons == []


def test_github_ping_is_answered_without_a_reconcile():
    h = Harness()

    async def scenario(c: Client) -> None:
        ping = b'{"zen": "Keep it logically awesome.", "hook_id": 1}'
        status, body = await c.post(
            "/hooks/github", data=ping, headers=github_headers(ping, event="ping")
        )
        assert (status, body) == (200, {"ok": True, "event": "ping"})
        unsigned = {"X-GitHub-Event": "ping"}
        assert (await c.post("/hooks/github", data=ping, headers=unsigned))[0] == 401

    h.run(scenario)
    assert h.controller.reasons == []


def test_a_redelivered_webhook_is_answered_with_its_ticket_and_triggers_nothing():
    h = Harness()

    async def scenario(c: Client) -> None:
        first = {**github_headers(), "X-GitHub-Delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958"}
        assert await c.post("/hooks/github", data=BODY, headers=first) == (202, {"ticket": 1})
        again = await c.post("/hooks/github", data=BODY, headers=first)
        assert again == (200, {"ticket": 1, "duplicate": True})
        # an unverified request naming a delivery is refused and remembers nothing
        forged = {"X-GitHub-Delivery": "forged-1", "X-Hub-Signature-256": "sha256=" + "0" * 64}
        assert (await c.post("/hooks/github", data=BODY, headers=forged))[0] == 401
        other = {**github_headers(), "X-GitHub-Delivery": "forged-1"}
        assert (await c.post("/hooks/github", data=BODY, headers=other))[0] == 202
        # GitLab: Idempotency-Key first, else the event's UUID; the same id at another
        # provider is another delivery
        lab = {"X-Gitlab-Token": GITLAB, "X-Gitlab-Event-UUID": "forged-1"}
        assert (await c.post("/hooks/gitlab", data=BODY, headers=lab))[0] == 202
        assert (await c.post("/hooks/gitlab", data=BODY, headers=lab))[1]["duplicate"] is True
        retried = {**lab, "X-Gitlab-Event-UUID": "changed", "Idempotency-Key": "k-1"}
        assert (await c.post("/hooks/gitlab", data=BODY, headers=retried))[0] == 202
        assert (await c.post("/hooks/gitlab", data=BODY, headers=retried))[0] == 200
        # no delivery id: every request counts
        assert (await c.post("/hooks/github", data=BODY, headers=github_headers()))[0] == 202
        assert (await c.post("/hooks/github", data=BODY, headers=github_headers()))[0] == 202

    h.run(scenario)
    assert len(h.controller.reasons) == 6
    duplicates = {"provider": "github", "result": "duplicate"}
    assert h.metrics.registry.get_sample_value("envship_webhooks_total", duplicates) == 1


def test_gitlab_token():
    h = Harness()

    async def scenario(c: Client) -> None:
        headers = {"X-Gitlab-Token": GITLAB, "X-Gitlab-Event": "Push Hook"}
        assert await c.post("/hooks/gitlab", data=BODY, headers=headers) == (202, {"ticket": 1})
        for bad in ({}, {"X-Gitlab-Token": GITHUB}, {"X-Gitlab-Token": GITLAB + "x"}):
            assert (await c.post("/hooks/gitlab", data=BODY, headers=bad))[0] == 401

    h.run(scenario)
    assert h.controller.reasons == ["webhook gitlab"]


def test_azure_devops_empty_array_without_auth_is_401_never_a_crash():
    """CVE-2025-59538: Argo CD parsed an unauthenticated Azure DevOps payload; `[]` crashed it."""
    h = Harness()
    json_type = {"Content-Type": "application/json"}

    async def scenario(c: Client) -> None:
        for headers in (
            json_type,
            {**json_type, "Authorization": "Basic"},
            {**json_type, "Authorization": "Basic !!!"},
            {**json_type, "Authorization": "Basic " + base64.b64encode(b"[]").decode()},
            {**json_type, "Authorization": basic(ADO_USER, GITHUB)},
            {**json_type, "Authorization": f"Bearer {ADO_PASSWORD}"},
        ):
            for payload in (b"[]", b"", b"[", b"\xff\xfe", b"{}", b"null"):
                status, _ = await c.post("/hooks/azure-devops", data=payload, headers=headers)
                assert status == 401, (headers, payload)
        assert h.controller.reasons == []
        authorized = {**json_type, "Authorization": basic(ADO_USER, ADO_PASSWORD)}
        for payload in (b"[]", b"", b"not json at all"):
            status, body = await c.post("/hooks/azure-devops", data=payload, headers=authorized)
            assert status == 202
            assert isinstance(body["ticket"], int)

    h.run(scenario)
    assert h.controller.reasons == ["webhook azure-devops"] * 3


def test_generic_hmac():
    h = Harness()

    async def scenario(c: Client) -> None:
        good = {"X-Signature": sign(BODY, GENERIC)}
        assert await c.post("/hooks/generic", data=BODY, headers=good) == (202, {"ticket": 1})
        for bad in (
            {},
            {"X-Signature": sign(BODY, GITHUB)},
            {"X-Signature": sign(BODY, GENERIC).removeprefix("sha256=")},
            {"X-Hub-Signature-256": sign(BODY, GENERIC)},
        ):
            assert (await c.post("/hooks/generic", data=BODY, headers=bad))[0] == 401

    h.run(scenario)
    assert h.controller.reasons == ["webhook generic"]


def test_body_over_the_cap_is_413_and_triggers_nothing():
    h = Harness(max_body=1024)
    big = b"x" * 1025

    async def chunks():
        for _ in range(8):
            yield b"y" * 512

    async def scenario(c: Client) -> None:
        # announced by Content-Length, even when correctly signed
        status, body = await c.post("/hooks/github", data=big, headers=github_headers(big))
        assert status == 413
        assert "1024" in body["error"]
        # streamed (chunked, no Content-Length): cut off while reading
        streamed = b"y" * 4096
        status, _ = await c.post("/hooks/generic", data=chunks(), headers=github_headers(streamed))
        assert status == 413
        status, _ = await c.post(
            "/hooks/azure-devops",
            data=chunks(),
            headers={"Authorization": basic(ADO_USER, ADO_PASSWORD)},
        )
        assert status == 413
        # exactly at the cap is fine
        edge = b"z" * 1024
        status, _ = await c.post("/hooks/github", data=edge, headers=github_headers(edge))
        assert status == 202

    h.run(scenario)
    assert h.controller.reasons == ["webhook github push"]


def test_compressed_bodies_are_refused():
    h = Harness()
    packed = gzip.compress(BODY)

    async def scenario(c: Client) -> None:
        headers = {**github_headers(packed), "Content-Encoding": "gzip"}
        status, _ = await c.post("/hooks/github", data=packed, headers=headers)
        assert status == 415

    h.run(scenario)
    assert h.controller.reasons == []


def test_a_rotated_secret_is_used_on_the_next_request():
    h = Harness()
    rotated = canary("webhook")

    async def scenario(c: Client) -> None:
        assert (await c.post("/hooks/github", data=BODY, headers=github_headers()))[0] == 202
        h.current.values["github"] = rotated
        old = await c.post("/hooks/github", data=BODY, headers=github_headers())
        assert old[0] == 401
        new = await c.post("/hooks/github", data=BODY, headers=github_headers(secret=rotated))
        assert new[0] == 202
        h.current.values["gitlab"] = rotated
        assert (await c.post("/hooks/gitlab", headers={"X-Gitlab-Token": GITLAB}))[0] == 401
        assert (await c.post("/hooks/gitlab", headers={"X-Gitlab-Token": rotated}))[0] == 202

    h.run(scenario)
    assert len(h.controller.reasons) == 3
    assert h.current.reads.count("github") == 3


def test_unconfigured_provider_refuses_and_unreadable_secret_is_503():
    h = Harness()
    h.current.values["generic"] = None
    h.current.values["github"] = "RAISE"

    async def scenario(c: Client) -> None:
        status, body = await c.post("/hooks/generic", data=BODY, headers={"X-Signature": "x"})
        assert status == 401
        assert body["reason"] == "no secret configured"
        status, body = await c.post("/hooks/github", data=BODY, headers=github_headers())
        assert status == 503
        assert body == {"error": "webhook secret unavailable"}

    h.run(scenario)
    assert h.controller.reasons == []


def test_wrong_methods_and_unknown_paths():
    h = Harness()

    async def scenario(c: Client) -> None:
        assert (await c.get("/hooks/github"))[0] == 405
        assert (await c.get("/hooks/bitbucket"))[0] == 404
        assert (await c.post("/status"))[0] == 405

    h.run(scenario)
    assert h.controller.reasons == []


def test_while_stopping_webhooks_and_triggers_are_503():
    h = Harness()
    h.controller.is_stopping = True

    async def scenario(c: Client) -> None:
        assert (await c.post("/hooks/github", data=BODY, headers=github_headers()))[0] == 503
        auth = {"Authorization": f"Bearer {TOKEN}"}
        assert (await c.post("/reconcile", headers=auth))[0] == 503

    h.run(scenario)
    assert h.controller.reasons == []


# -- a follower relays to the leader (leader election) ------------------------------------------


class FakeFollower(FakeController):
    """A replica that does not lead; the Lease names the leader's address (or none)."""

    def __init__(self, address: str | None = None) -> None:
        super().__init__()
        self.address = address

    def leading(self) -> bool:
        return False

    def leader_address(self) -> str | None:
        return self.address


class RecordingLeader:
    """A stand-in leader: records every request it gets and answers 202 {"ticket": 7}."""

    def __init__(self, delay: float = 0.0) -> None:
        self.seen: list[tuple[str, str, CIMultiDict[str], bytes]] = []
        self.delay = delay
        self.app = web.Application()
        self.app.router.add_route("*", "/{tail:.*}", self.handle)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.seen.append((request.method, request.path_qs, CIMultiDict(request.headers), body))
        await asyncio.sleep(self.delay)
        return web.json_response(
            {"ticket": 7}, status=202, headers={"Retry-After": "1", "X-Leader-Only": "yes"}
        )


def follow(
    leader: web.Application | None,
    scenario: Callable[[Client, FakeFollower, str], Awaitable[None]],
    *,
    address: str | None = None,
    max_body: int = 1024 * 1024,
) -> Harness:
    """Run `scenario` against a follower whose Lease names `leader`'s address (served on a
    free port), or `address` when given."""
    h = Harness(max_body=max_body)
    follower = FakeFollower()
    h.controller = follower
    h.app = make_app(follower, secrets=h.current.secrets(), metrics=h.metrics, max_body=max_body)

    async def main() -> None:
        async with contextlib.AsyncExitStack() as stack:
            url = ""
            if leader is not None:
                server = await stack.enter_async_context(TestServer(leader, host="127.0.0.1"))
                url = f"http://127.0.0.1:{server.port}"
            follower.address = address if address is not None else url
            client = await stack.enter_async_context(TestClient(TestServer(h.app)))
            await scenario(Client(client), follower, url)

    asyncio.run(main())
    return h


def relayed(h: Harness, result: str) -> float:
    value = h.metrics.registry.get_sample_value(
        "envship_relayed_requests_total", {"result": result}
    )
    return value or 0.0


def test_a_follower_relays_a_github_webhook_to_the_leader_and_returns_its_answer():
    leader = RecordingLeader()
    headers = CIMultiDict(
        {
            **github_headers(),
            "X-GitHub-Delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958",
            "User-Agent": "GitHub-Hookshot/044aadd",
            "Host": "attacker.example",
            "Cookie": "session=1",
            "X-Forwarded-Host": "attacker.example",
            "Proxy-Authorization": "Basic eDp5",
        }
    )

    async def scenario(c: Client, _follower: FakeFollower, url: str) -> None:
        assert await c.get("/readyz") == (200, {"ready": True, "leading": False})
        status, text, answer = await c.request(
            "POST", "/hooks/github?source=test", data=BODY, headers=headers
        )
        assert (status, json.loads(text)) == (202, {"ticket": 7})
        assert answer["Retry-After"] == "1"
        assert "X-Leader-Only" not in answer
        assert len(leader.seen) == 1
        method, path, seen, body = leader.seen[0]
        assert (method, path, body) == ("POST", "/hooks/github?source=test", BODY)
        for name in ("X-Hub-Signature-256", "X-GitHub-Event", "Content-Type", "User-Agent"):
            assert seen[name] == headers[name], name
        assert seen["X-GitHub-Delivery"] == headers["X-GitHub-Delivery"]
        assert seen["X-Envship-Relayed"] == "1"
        assert seen["Host"] == url.removeprefix("http://")  # the leader's, not the caller's
        for name in ("Cookie", "X-Forwarded-Host", "Proxy-Authorization"):
            assert name not in seen, name
        # the follower verifies nothing: a wrongly signed hook is the leader's to refuse
        status, _ = await c.post("/hooks/github", data=BODY, headers={"X-GitHub-Event": "push"})
        assert status == 202
        assert "X-Hub-Signature-256" not in leader.seen[1][2]

    h = follow(leader.app, scenario)
    assert h.controller.reasons == []  # nothing reconciles on the follower
    assert h.current.reads == []  # nor is any secret read there
    assert relayed(h, "relayed") == 2


def test_every_hook_and_the_manual_trigger_reach_a_real_leader():
    leading = Harness()
    leading.controller.outcomes[1] = {"result": "success"}
    auth = {"Authorization": f"Bearer {TOKEN}"}

    async def scenario(c: Client, _follower: FakeFollower, _url: str) -> None:
        status, body = await c.post("/reconcile?wait=3", headers=auth)
        assert (status, body) == (
            200,
            {"ticket": 1, "done": True, "outcome": {"result": "success"}},
        )
        status, _, headers = await c.request("POST", "/reconcile", headers={})
        assert status == 401  # the leader's refusal, with its challenge
        assert headers["WWW-Authenticate"].startswith("Bearer")
        assert (await c.post("/reconcile?wait=abc", headers=auth))[0] == 400
        gitlab = {"X-Gitlab-Token": GITLAB, "X-Gitlab-Event": "Push Hook"}
        assert await c.post("/hooks/gitlab", data=BODY, headers=gitlab) == (202, {"ticket": 2})
        ado = {"Authorization": basic(ADO_USER, ADO_PASSWORD)}
        assert await c.post("/hooks/azure-devops", data=b"[]", headers=ado) == (
            202,
            {"ticket": 3},
        )
        signed = {"X-Signature": sign(BODY, GENERIC)}
        assert await c.post("/hooks/generic", data=BODY, headers=signed) == (202, {"ticket": 4})
        assert (await c.post("/hooks/generic", data=BODY, headers={}))[0] == 401
        ping = b'{"zen": "Keep it logically awesome."}'
        assert await c.post(
            "/hooks/github", data=ping, headers=github_headers(ping, event="ping")
        ) == (200, {"ok": True, "event": "ping"})

    h = follow(leading.app, scenario)
    assert leading.controller.reasons == [
        "manual",
        "webhook gitlab",
        "webhook azure-devops",
        "webhook generic",
    ]
    assert leading.controller.waits == [(1, 3.0)]
    assert h.controller.reasons == []
    assert h.controller.waits == []


@pytest.mark.parametrize(
    "address",
    [
        "",
        "https://10.0.0.7:8080",
        "http://10.0.0.7",
        "http://10.0.0.7:8080/hooks",
        "http://10.0.0.7:8080?x=1",
        "http://user:secret@10.0.0.7:8080",
        "ftp://10.0.0.7:21",
        "10.0.0.7:8080",
        "http://:8080",
    ],
)
def test_without_a_usable_leader_address_a_follower_is_not_ready_and_relays_nothing(address):
    assert relay_origin(address) is None

    async def scenario(c: Client, _follower: FakeFollower, _url: str) -> None:
        assert await c.get("/readyz") == (503, {"ready": False, "reason": "no leader known"})
        status, body = await c.post("/hooks/github", data=BODY, headers=github_headers())
        assert (status, body) == (503, {"error": "no leader known"})
        auth = {"Authorization": f"Bearer {TOKEN}"}
        assert await c.post("/reconcile", headers=auth) == (503, {"error": "no leader known"})

    h = follow(None, scenario, address=address)
    assert relayed(h, "no_leader") == 2
    assert h.controller.reasons == []


def test_the_leader_address_is_http_host_and_port_only():
    assert str(relay_origin("http://10.0.0.7:8080")) == "http://10.0.0.7:8080"
    assert str(relay_origin("http://[fd00::7]:8080/")) == "http://[fd00::7]:8080"


def test_a_leader_that_is_down_or_hangs_is_503_leader_unreachable(monkeypatch):
    with socket.socket() as sock:  # a port where nothing listens
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"

    async def down(c: Client, _follower: FakeFollower, _url: str) -> None:
        status, body = await c.post("/hooks/github", data=BODY, headers=github_headers())
        assert (status, body) == (503, {"error": "leader unreachable"})
        # the follower still knows an address: it stays ready (the Lease decides who leads)
        assert (await c.get("/readyz"))[0] == 200

    h = follow(None, down, address=closed)
    assert relayed(h, "unreachable") == 1

    monkeypatch.setattr(controller_web, "RELAY_TIMEOUT", 0.3)
    slow = RecordingLeader(delay=5)

    async def hangs(c: Client, _follower: FakeFollower, _url: str) -> None:
        started = asyncio.get_running_loop().time()
        status, body = await c.post("/hooks/generic", data=BODY, headers={})
        assert (status, body) == (503, {"error": "leader unreachable"})
        assert asyncio.get_running_loop().time() - started < 3
        assert len(slow.seen) == 1

    assert relayed(follow(slow.app, hangs), "unreachable") == 1


@pytest.mark.slow
def test_a_manual_trigger_that_waits_gets_the_wait_and_five_seconds(monkeypatch):
    monkeypatch.setattr(controller_web, "RELAY_TIMEOUT", 0.3)
    slow = RecordingLeader(delay=1.0)
    auth = {"Authorization": f"Bearer {TOKEN}"}

    async def scenario(c: Client, _follower: FakeFollower, _url: str) -> None:
        # no wait: the short timeout
        assert await c.post("/reconcile", headers=auth) == (503, {"error": "leader unreachable"})
        # wait=0.1 allows 5.1 s: the leader answers within it
        assert await c.post("/reconcile?wait=0.1", headers=auth) == (202, {"ticket": 7})

    follow(slow.app, scenario)
    assert [path for _, path, _, _ in slow.seen] == ["/reconcile", "/reconcile?wait=0.1"]
    assert all(seen["Authorization"] == f"Bearer {TOKEN}" for _, _, seen, _ in slow.seen)


def test_a_follower_refuses_an_oversized_or_compressed_body_without_relaying():
    leader = RecordingLeader()
    big = b"x" * 1025

    async def chunks():
        for _ in range(8):
            yield b"y" * 512

    async def scenario(c: Client, _follower: FakeFollower, _url: str) -> None:
        status, body = await c.post("/hooks/github", data=big, headers=github_headers(big))
        assert status == 413
        assert "1024" in body["error"]
        status, _ = await c.post("/hooks/generic", data=chunks(), headers={})
        assert status == 413
        auth = {"Authorization": f"Bearer {TOKEN}"}
        assert (await c.post("/reconcile", data=big, headers=auth))[0] == 413
        packed = gzip.compress(BODY)
        headers = {**github_headers(packed), "Content-Encoding": "gzip"}
        assert (await c.post("/hooks/github", data=packed, headers=headers))[0] == 415
        # exactly at the cap is relayed
        edge = b"z" * 1024
        assert (await c.post("/hooks/github", data=edge, headers=github_headers(edge)))[0] == 202

    h = follow(leader.app, scenario, max_body=1024)
    assert [body for _, _, _, body in leader.seen] == [b"z" * 1024]
    assert relayed(h, "relayed") == 1


def test_a_follower_relays_only_the_hooks_and_the_manual_trigger():
    leader = RecordingLeader()

    async def scenario(c: Client, follower: FakeFollower, _url: str) -> None:
        follower.board.reconciled("main@sha1:" + "e" * 40)
        status, body = await c.get("/status")  # the follower's own
        assert status == 200
        assert body["revision"] == "main@sha1:" + "e" * 40
        assert (await c.get("/healthz"))[0] == 200
        assert (await c.get("/metrics"))[0] == 200
        assert (await c.get("/hooks/github"))[0] == 405
        assert (await c.get("/reconcile"))[0] == 405
        assert (await c.post("/hooks/bitbucket", data=BODY))[0] == 404
        assert (await c.post("/hooks/github/../../status", data=BODY))[0] in (404, 405)
        assert (await c.post("/status"))[0] == 405
        assert (await c.post("/anything", data=BODY))[0] == 404
        # a request relayed once already is never relayed again (stale records, no circle)
        headers = {**github_headers(), "X-Envship-Relayed": "1"}
        status, body = await c.post("/hooks/github", data=BODY, headers=headers)
        assert (status, body) == (503, {"error": "not the leader"})

    h = follow(leader.app, scenario)
    assert leader.seen == []
    assert relayed(h, "loop") == 1
    assert relayed(h, "relayed") == 0


def test_a_stopping_follower_relays_nothing():
    leader = RecordingLeader()

    async def scenario(c: Client, follower: FakeFollower, _url: str) -> None:
        follower.is_stopping = True
        assert (await c.post("/hooks/github", data=BODY, headers=github_headers()))[0] == 503
        assert (await c.get("/readyz")) == (503, {"ready": False, "reason": "stopping"})

    follow(leader.app, scenario)
    assert leader.seen == []


# -- manual trigger ------------------------------------------------------------------------------


def test_manual_trigger_needs_the_bearer_token():
    h = Harness()

    async def scenario(c: Client) -> None:
        for headers in (
            {},
            {"Authorization": f"Bearer {GITHUB}"},
            {"Authorization": f"Basic {TOKEN}"},
            {"Authorization": TOKEN},
        ):
            status, _, response_headers = await c.request("POST", "/reconcile", headers=headers)
            assert status == 401
            assert response_headers["WWW-Authenticate"].startswith("Bearer")
        assert h.controller.reasons == []
        status, body = await c.post("/reconcile", headers={"Authorization": f"Bearer {TOKEN}"})
        assert (status, body) == (202, {"ticket": 1, "done": False})

    h.run(scenario)
    assert h.controller.reasons == ["manual"]
    assert h.controller.waits == []


def test_manual_trigger_with_wait_returns_the_outcome():
    h = Harness()
    leaked = canary("webhook")
    REDACTOR.add(leaked)
    h.controller.outcomes[1] = {
        "result": "success",
        "revision": "main@sha1:" + "a" * 40,
        "built": ["pytorch"],
        "failed": [{"name": "broken", "error": f"registry said no to {leaked}"}],
    }
    auth = {"Authorization": f"Bearer {TOKEN}"}

    async def scenario(c: Client) -> None:
        status, body = await c.post("/reconcile?wait=30", headers=auth)
        assert status == 200
        assert body["ticket"] == 1
        assert body["done"] is True
        assert body["outcome"]["result"] == "success"
        assert body["outcome"]["built"] == ["pytorch"]
        assert leaked not in json.dumps(body)
        assert "***" in body["outcome"]["failed"][0]["error"]
        # the reconcile did not finish in time
        status, body = await c.post("/reconcile?wait=0.5", headers=auth)
        assert (status, body) == (202, {"ticket": 2, "done": False, "outcome": None})
        for bad in ("abc", "-1", "nan", "inf"):
            assert (await c.post(f"/reconcile?wait={bad}", headers=auth))[0] == 400
        # an absurd wait is capped
        assert (await c.post("/reconcile?wait=100000", headers=auth))[0] == 202

    h.run(scenario)
    assert h.controller.waits == [(1, 30.0), (2, 0.5), (3, 600.0)]
    assert h.controller.reasons == ["manual"] * 3


# -- status, probes, metrics ---------------------------------------------------------------------


def _populate(board: StatusBoard) -> None:
    board.set(
        EnvStatus(
            name="pytorch",
            path="envs/pytorch",
            kind="aml-v1",
            phase=Phase.READY,
            hash="ab" * 32,
            image="registry.example/envship/pytorch:" + "ab" * 16,
            digest="sha256:" + "cd" * 32,
            revision="main@sha1:" + "e" * 40,
            build_seconds=42.5,
        )
    )
    board.set(
        EnvStatus(
            name="broken",
            path="envs/broken/env.yml",
            kind="aml-v2",
            phase=Phase.STALLED,
            revision="main@sha1:" + "e" * 40,
            last_error="envs/broken/env.yml: invalid YAML",
        )
    )
    board.reconciled("main@sha1:" + "e" * 40)


ENV_KEYS = {
    "name",
    "path",
    "kind",
    "phase",
    "hash",
    "image",
    "digest",
    "reference",
    "revision",
    "last_error",
    "last_transition",
    "build_seconds",
    "azureml",
    "attempts",
    "next_retry",
    "next",
    "stale",
}


def test_status_json_shape():
    h = Harness()
    _populate(h.controller.board)

    async def scenario(c: Client) -> None:
        status, text, headers = await c.request("GET", "/status")
        assert status == 200
        assert headers["Content-Type"].startswith("application/json")
        body = json.loads(text)
        assert set(body) >= {"revision", "last_reconcile", "in_sync", "stale", "environments"}
        assert body["revision"] == "main@sha1:" + "e" * 40
        assert body["in_sync"] is False  # one environment is stalled
        # `ready` is exactly /readyz's answer: this replica can do its job
        ready_now, answer = body["ready"], await c.get("/readyz")
        assert (ready_now, body["ready_reason"]) == (answer[1]["ready"], answer[1].get("reason"))
        assert body["stale"] is False
        assert body["phases"]["Ready"] == 1
        assert body["phases"]["Stalled"] == 1
        names = [e["name"] for e in body["environments"]]
        assert names == ["broken", "pytorch"]
        for env in body["environments"]:
            assert set(env) == ENV_KEYS
        ready = body["environments"][1]
        assert ready["phase"] == "Ready"
        assert ready["reference"] == ready["image"] + "@" + ready["digest"]
        assert ready["build_seconds"] == 42.5
        assert datetime.fromisoformat(ready["last_transition"]).tzinfo is not None
        assert body["environments"][0]["last_error"] == "envs/broken/env.yml: invalid YAML"

    h.run(scenario)


def test_healthz_is_always_200_while_serving():
    h = Harness()
    h.controller.status_error = RuntimeError("git is down")

    async def scenario(c: Client) -> None:
        assert await c.get("/healthz") == (200, {"ok": True})
        h.controller.is_stopping = True
        assert (await c.get("/healthz"))[0] == 200

    h.run(scenario)


def test_readyz_before_after_the_first_reconcile_and_while_stopping():
    h = Harness()

    async def scenario(c: Client) -> None:
        status, body = await c.get("/readyz")
        assert status == 503
        assert body["ready"] is False
        h.controller.is_ready = True
        assert await c.get("/readyz") == (200, {"ready": True})
        h.controller.is_stopping = True
        status, body = await c.get("/readyz")
        assert (status, body["reason"]) == (503, "stopping")

    h.run(scenario)


METRIC_NAMES = (
    "envship_reconcile_duration_seconds",
    "envship_reconcile_total",
    "envship_build_duration_seconds",
    "envship_builds_total",
    "envship_environment_info",
    "envship_git_requests_total",
    "envship_git_received_objects_total",
    "envship_registry_requests_total",
    "envship_webhooks_total",
    "envship_relayed_requests_total",
)


def test_metrics_exposition():
    h = Harness()
    _populate(h.controller.board)
    h.metrics.observe_reconcile(0.012, "success")
    h.metrics.observe_build("built", 42.5)
    h.metrics.observe_build("copied")
    h.metrics.git_request("fetch")
    h.metrics.registry_request("head")

    async def scenario(c: Client) -> None:
        await c.post("/hooks/github", data=BODY, headers=github_headers())
        await c.post("/hooks/github", data=BODY, headers={})
        status, text, headers = await c.request("GET", "/metrics")
        assert status == 200
        assert headers["Content-Type"].startswith("text/plain")
        for name in METRIC_NAMES:
            assert f"# TYPE {name.removesuffix('_total')}" in text, name
        assert 'envship_webhooks_total{provider="github",result="accepted"} 1.0' in text
        assert 'envship_webhooks_total{provider="github",result="rejected"} 1.0' in text
        assert 'envship_reconcile_total{result="success"} 1.0' in text
        assert 'envship_builds_total{outcome="built"} 1.0' in text
        assert "envship_build_duration_seconds_count 1.0" in text
        assert 'envship_git_requests_total{kind="fetch"} 1.0' in text
        assert 'envship_registry_requests_total{kind="head"} 1.0' in text
        assert 'name="pytorch",phase="Ready"' in text
        assert 'name="broken",phase="Stalled"' in text
        # an environment that changes phase keeps one series; one that is gone has none
        h.controller.board.update("broken", phase=Phase.BUILDING)
        h.controller.board.remove("pytorch")
        text = (await c.request("GET", "/metrics"))[1]
        assert 'name="broken",phase="Building"' in text
        assert 'phase="Stalled"' not in text
        assert 'name="pytorch"' not in text
        # a status that cannot be read does not break the scrape
        h.controller.status_error = RuntimeError("board unavailable")
        status, text, _ = await c.request("GET", "/metrics")
        assert status == 200
        assert 'name="broken",phase="Building"' in text

    h.run(scenario)


def test_metric_labels_are_redacted_and_info_series_replaced():
    metrics = Metrics()
    leaked = canary("webhook")
    REDACTOR.add(leaked)
    metrics.set_environment("env", phase="Ready", revision="main@sha1:1", hash="aa")
    metrics.set_environment("env", phase="Failed", revision=f"main@sha1:{leaked}", hash="aa")
    metrics.registry_request(f"head {leaked}")
    text = metrics.exposition().decode()
    record_output(text)
    assert leaked not in text
    assert text.count("envship_environment_info{") == 1
    assert 'phase="Failed",revision="main@sha1:***"' in text
    metrics.remove_environment("env")
    assert "envship_environment_info{" not in metrics.exposition().decode()


def test_an_unexpected_error_is_a_bare_500():
    h = Harness()
    h.controller.status_error = RuntimeError(f"exploded with {TOKEN}")

    async def scenario(c: Client) -> None:
        status, body = await c.get("/status")
        assert (status, body) == (500, {"error": "internal error"})

    h.run(scenario)


def test_start_server_serves_over_tcp():
    h = Harness()
    h.controller.is_ready = True

    async def main() -> None:
        runner = await start_server(h.app, host="127.0.0.1", port=0)
        try:
            host, port = runner.addresses[0][:2]
            async with aiohttp.ClientSession() as session:
                async with session.get(f"http://{host}:{port}/readyz") as response:
                    assert response.status == 200
                async with session.post(
                    f"http://{host}:{port}/hooks/github", data=BODY, headers=github_headers()
                ) as response:
                    assert response.status == 202
        finally:
            await runner.cleanup()

    asyncio.run(main())
    assert h.controller.reasons == ["webhook github push"]


def test_make_app_refuses_a_zero_cap():
    with pytest.raises(ValueError, match="max_body"):
        make_app(FakeController(), secrets=WebhookSecrets(), metrics=Metrics(), max_body=0)


# -- the status board ----------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2025, 1, 31, 12, 0, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def test_transition_time_moves_only_when_the_phase_changes():
    clock = Clock()
    board = StatusBoard(clock=clock)
    first = board.set(EnvStatus(name="a", path="a", kind="pip"))
    assert first.phase is Phase.PENDING
    assert first.last_transition == "2025-01-31T12:00:00Z"
    clock.advance(10)
    same = board.set(EnvStatus(name="a", path="a", kind="pip", hash="h1"))
    assert same.last_transition == "2025-01-31T12:00:00Z"
    clock.advance(10)
    building = board.update("a", phase="Building")
    assert building.phase is Phase.BUILDING
    assert building.last_transition == "2025-01-31T12:00:20Z"
    clock.advance(10)
    still = board.update("a", attempts=1, next_retry=utc_iso(clock.now))
    assert still.last_transition == "2025-01-31T12:00:20Z"
    assert still.hash == "h1"
    with pytest.raises(KeyError):
        board.update("missing", phase=Phase.READY)
    with pytest.raises(TypeError):
        board.update("a", colour="red")
    with pytest.raises(TypeError):
        board.update("a", last_transition="whenever")
    with pytest.raises(ValueError, match="Sideways"):
        board.update("a", phase="Sideways")


def test_advancing_unchanged_environments_moves_only_their_revision():
    clock = Clock()
    board = StatusBoard(clock=clock)
    board.set(EnvStatus(name="a", path="a", kind="pip", phase=Phase.READY, revision="r1"))
    board.set(EnvStatus(name="b", path="b", kind="pip", phase=Phase.FAILED, revision="r1"))
    clock.advance(10)
    board.advance(["a", "b", "gone"], "r2")
    a = board.get("a")
    assert a is not None
    assert (a.revision, a.phase, a.last_transition) == ("r2", Phase.READY, "2025-01-31T12:00:00Z")
    peeked = board.peek("b")
    assert peeked is not None
    assert peeked.phase is Phase.FAILED  # peek: the stored status, revision possibly older
    assert board.update("b", attempts=2).revision == "r2"  # an update keeps the new revision
    assert [e["revision"] for e in board.snapshot()["environments"]] == ["r2", "r2"]
    assert board.get("gone") is None
    board.update("a", revision="r3")
    assert board.get("a").revision == "r3"  # type: ignore[union-attr]
    board.retain(["b"])
    board.set(EnvStatus(name="a", path="a", kind="pip"))
    assert board.get("a").revision is None  # type: ignore[union-attr]


def test_stale_keeps_the_last_known_status():
    board = StatusBoard()
    _populate(board)
    before = board.snapshot()
    board.mark_stale("git fetch failed: connection refused")
    after = board.snapshot()
    assert after["stale"] is True
    assert after["stale_reason"] == "git fetch failed: connection refused"
    assert all(env["stale"] for env in after["environments"])
    assert [{k: v for k, v in e.items() if k != "stale"} for e in after["environments"]] == [
        {k: v for k, v in e.items() if k != "stale"} for e in before["environments"]
    ]
    assert after["revision"] == before["revision"]
    board.reconciled("main@sha1:" + "f" * 40)
    again = board.snapshot()
    assert again["stale"] is False
    assert not any(env["stale"] for env in again["environments"])


def test_board_in_sync_and_retain():
    board = StatusBoard()
    assert board.snapshot()["in_sync"] is False  # never reconciled
    board.reconciled("main@sha1:0")
    assert board.snapshot()["in_sync"] is True  # nothing to do is in sync
    _populate(board)
    assert board.snapshot()["in_sync"] is False
    assert board.retain(["pytorch"]) == ["broken"]
    snapshot = board.snapshot()
    assert snapshot["in_sync"] is True
    assert [e["name"] for e in snapshot["environments"]] == ["pytorch"]
    json.dumps(snapshot)


def test_board_redacts_every_string_at_snapshot_time():
    board = StatusBoard()
    leaked = canary("webhook")
    board.set(
        EnvStatus(
            name="a",
            path="a",
            kind="pip",
            phase=Phase.FAILED,
            last_error=f"401 from https://user:{leaked}@registry.example",
        )
    )
    board.mark_stale(f"registry refused {leaked}")
    REDACTOR.add(leaked)  # registered after the status was written
    text = json.dumps(board.snapshot())
    record_output(text)
    assert leaked not in text
    assert text.count("***") == 2


def test_board_is_thread_safe():
    board = StatusBoard()
    for i in range(50):
        board.set(EnvStatus(name=f"env-{i}", path=f"env-{i}", kind="pip"))

    def work(offset: int) -> None:
        for n in range(200):
            name = f"env-{(n + offset) % 50}"
            board.update(name, phase=[Phase.BUILDING, Phase.READY][n % 2], attempts=n)
            board.snapshot()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    snapshot = board.snapshot()
    assert len(snapshot["environments"]) == 50
    assert sum(snapshot["phases"].values()) == 50
