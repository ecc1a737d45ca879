"""Webhook verification (controller.http.webhooks): pure functions, constant-time, never raising."""

from __future__ import annotations

import base64
import hashlib
import hmac
import inspect

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from controller.http import webhooks
from controller.http.webhooks import (
    github_event,
    verify_azure_devops,
    verify_bearer,
    verify_generic,
    verify_github,
    verify_gitlab,
)
from tests.support.canaries import canary

SECRET = canary("webhook")
OTHER = canary("webhook")
USER = "azure-devops-hook"
PASSWORD = canary("webhook")
BODY = b'{"ref": "refs/heads/main"}'


def sign(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


# -- GitHub and generic HMAC ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("verify", "name"),
    [(verify_github, "X-Hub-Signature-256"), (verify_generic, "X-Signature")],
)
def test_hmac_accepts_the_signature_of_the_raw_body(verify, name):
    assert verify({name: sign(BODY)}, BODY, SECRET).accepted
    assert verify({name.lower(): sign(BODY)}, BODY, SECRET).accepted  # header case
    upper = "sha256=" + sign(BODY).removeprefix("sha256=").upper()
    assert verify({name: upper}, BODY, SECRET).accepted
    assert verify({name: sign(b"")}, b"", SECRET).accepted
    assert verify(CIMultiDict({name: sign(BODY)}), BODY, SECRET).accepted


@pytest.mark.parametrize(
    ("verify", "name"),
    [(verify_github, "X-Hub-Signature-256"), (verify_generic, "X-Signature")],
)
@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "   ",
        "sha256=",
        "sha256=" + "0" * 64,
        "sha256=" + "z" * 64,
        "sha256=" + "a" * 63,
        "sha256=" + "a" * 65,
        "sha1=" + "a" * 40,
        "SHA256=" + "a" * 64,
        "sha256 " + "a" * 64,
        "sha256=\u00e9" + "a" * 63,
        "sha256=\udcff" + "a" * 63,
        "sha256=" + "\u0661" * 64,  # Arabic-Indic digits: not hex for us
        "x" * 10_000,
    ],
)
def test_hmac_refuses_missing_malformed_and_wrong_signatures(verify, name, value):
    headers = {} if value is None else {name: value}
    verdict = verify(headers, BODY, SECRET)
    assert not verdict.accepted
    assert SECRET not in verdict.reason
    if value and len(value) > 10:
        assert value not in verdict.reason


@pytest.mark.parametrize("verify", [verify_github, verify_generic])
def test_hmac_refuses_other_secret_other_body_and_no_secret(verify):
    name = "X-Hub-Signature-256" if verify is verify_github else "X-Signature"
    assert not verify({name: sign(BODY, OTHER)}, BODY, SECRET).accepted
    assert not verify({name: sign(BODY + b" ")}, BODY, SECRET).accepted
    for missing in (None, ""):
        verdict = verify({name: sign(BODY, "")}, BODY, missing)
        assert not verdict.accepted
        assert verdict.reason == "no secret configured"


def test_hmac_refuses_a_repeated_signature_header():
    headers = CIMultiDict([("X-Hub-Signature-256", sign(BODY)), ("X-Hub-Signature-256", "x")])
    verdict = verify_github(headers, BODY, SECRET)
    assert not verdict.accepted
    assert "more than once" in verdict.reason
    same_twice = CIMultiDict([("X-Signature", sign(BODY)), ("x-signature", sign(BODY))])
    assert not verify_generic(same_twice, BODY, SECRET).accepted
    plain = {"X-Signature": sign(BODY), "x-signature": sign(BODY)}
    assert not verify_generic(plain, BODY, SECRET).accepted


def test_github_signature_is_not_the_generic_header():
    assert not verify_github({"X-Signature": sign(BODY)}, BODY, SECRET).accepted
    assert not verify_generic({"X-Hub-Signature-256": sign(BODY)}, BODY, SECRET).accepted


def test_github_event_is_read_only_when_it_is_one_plain_word():
    assert github_event({"X-GitHub-Event": "ping"}) == "ping"
    assert github_event({"x-github-event": " push "}) == "push"
    assert github_event({}) is None
    assert github_event({"X-GitHub-Event": "ping pong"}) is None
    assert github_event({"X-GitHub-Event": "p" * 65}) is None
    assert (
        github_event(CIMultiDict([("X-GitHub-Event", "ping"), ("X-GitHub-Event", "ping")])) is None
    )


# -- GitLab --------------------------------------------------------------------------------------


def test_gitlab_token():
    assert verify_gitlab({"X-Gitlab-Token": SECRET}, SECRET).accepted
    assert verify_gitlab({"x-gitlab-token": f" {SECRET} "}, SECRET).accepted
    for headers in (
        {},
        {"X-Gitlab-Token": ""},
        {"X-Gitlab-Token": OTHER},
        {"X-Gitlab-Token": SECRET[:-1]},
        {"X-Gitlab-Token": SECRET + "x"},
        {"X-Gitlab-Token": "\udcff\ud800"},
        {"X-Gitlab-Token": "\u00e9" * 5000},
        {"X-Hub-Signature-256": SECRET},
    ):
        verdict = verify_gitlab(headers, SECRET)
        assert not verdict.accepted, headers
        assert SECRET not in verdict.reason
    assert not verify_gitlab({"X-Gitlab-Token": "anything"}, None).accepted
    assert not verify_gitlab({"X-Gitlab-Token": ""}, "").accepted


# -- Azure DevOps --------------------------------------------------------------------------------


def test_azure_devops_basic_auth():
    assert verify_azure_devops({"Authorization": basic(USER, PASSWORD)}, USER, PASSWORD).accepted
    lower = "basic " + basic(USER, PASSWORD).split()[1]
    assert verify_azure_devops({"authorization": lower}, USER, PASSWORD).accepted
    with_colon = PASSWORD + ":and:more"
    assert verify_azure_devops(
        {"Authorization": basic(USER, with_colon)}, USER, with_colon
    ).accepted


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "Basic",
        "Basic ",
        "Basic !!!not-base64!!!",
        "Basic " + base64.b64encode(b"no-colon-here").decode(),
        "Basic " + base64.b64encode(b"\xff\xfe:\x00\x01").decode(),
        "Basic " + base64.b64encode(b":").decode(),
        "Basic " + base64.b64encode(f"{USER}:".encode()).decode(),
        "Basic " + base64.b64encode(f":{PASSWORD}".encode()).decode(),
        "Basic \u00e9\u00e9\u00e9\u00e9",
        "Basic \udcff",
        "Bearer " + PASSWORD,
        PASSWORD,
        basic(USER, OTHER),
        basic("someone-else", PASSWORD),
        basic(USER, PASSWORD + "x"),
        basic(USER.upper(), PASSWORD),
    ],
)
def test_azure_devops_refuses_missing_malformed_and_wrong_credentials(value):
    headers = {} if value is None else {"Authorization": value}
    verdict = verify_azure_devops(headers, USER, PASSWORD)
    assert not verdict.accepted
    assert PASSWORD not in verdict.reason


def test_azure_devops_without_configured_credentials_refuses_everything():
    headers = {"Authorization": basic(USER, PASSWORD)}
    assert not verify_azure_devops(headers, None, PASSWORD).accepted
    assert not verify_azure_devops(headers, USER, None).accepted
    assert not verify_azure_devops({"Authorization": basic("", "")}, "", "").accepted


def test_azure_devops_compares_both_parts_even_when_the_username_is_wrong(monkeypatch):
    calls = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append(1)
        return real(a, b)

    monkeypatch.setattr(webhooks.hmac, "compare_digest", spy)
    assert not verify_azure_devops(
        {"Authorization": basic("wrong", PASSWORD)}, USER, PASSWORD
    ).accepted
    assert len(calls) == 2


# -- bearer (manual trigger) ---------------------------------------------------------------------


def test_bearer_token():
    assert verify_bearer({"Authorization": f"Bearer {SECRET}"}, SECRET).accepted
    assert verify_bearer({"Authorization": f"bearer {SECRET}"}, SECRET).accepted
    for value in ("", "Bearer", "Bearer ", f"Basic {SECRET}", f"Bearer {OTHER}", SECRET):
        assert not verify_bearer({"Authorization": value}, SECRET).accepted, value
    assert not verify_bearer({}, SECRET).accepted
    assert not verify_bearer({"Authorization": "Bearer x"}, None).accepted
    assert not verify_bearer({"Authorization": "Bearer "}, "").accepted


# -- constant time, never raising ----------------------------------------------------------------


def test_every_comparison_with_a_secret_is_constant_time(monkeypatch):
    source = inspect.getsource(webhooks)
    assert "hmac.compare_digest" in source
    calls = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((type(a), type(b)))
        return real(a, b)

    monkeypatch.setattr(webhooks.hmac, "compare_digest", spy)
    checks = [
        lambda: verify_github({"X-Hub-Signature-256": sign(BODY)}, BODY, SECRET),
        lambda: verify_github({"X-Hub-Signature-256": sign(BODY, OTHER)}, BODY, SECRET),
        lambda: verify_generic({"X-Signature": sign(BODY)}, BODY, SECRET),
        lambda: verify_gitlab({"X-Gitlab-Token": SECRET}, SECRET),
        lambda: verify_gitlab({"X-Gitlab-Token": OTHER}, SECRET),
        lambda: verify_azure_devops({"Authorization": basic(USER, PASSWORD)}, USER, PASSWORD),
        lambda: verify_bearer({"Authorization": f"Bearer {SECRET}"}, SECRET),
    ]
    for check in checks:
        calls.clear()
        check()
        assert calls, "no constant-time comparison"
        assert all(a is bytes and b is bytes for a, b in calls)


header_names = st.sampled_from(
    ["X-Hub-Signature-256", "X-Signature", "X-Gitlab-Token", "Authorization", "X-GitHub-Event"]
)
header_values = st.one_of(
    st.text(max_size=200),
    st.from_regex(r"(sha256=|Basic |Bearer )[ -~]{0,80}", fullmatch=True),
    st.binary(max_size=60).map(lambda b: "Basic " + base64.b64encode(b).decode()),
)


@settings(max_examples=300, deadline=None)
@given(
    headers=st.dictionaries(header_names, header_values, max_size=5),
    body=st.binary(max_size=200),
)
def test_no_input_makes_a_verifier_raise_or_accept(headers, body):
    for verdict in (
        verify_github(headers, body, SECRET),
        verify_generic(headers, body, SECRET),
        verify_gitlab(headers, SECRET),
        verify_azure_devops(headers, USER, PASSWORD),
        verify_bearer(headers, SECRET),
    ):
        assert not verdict.accepted
        assert isinstance(verdict.reason, str)
    github_event(headers)
