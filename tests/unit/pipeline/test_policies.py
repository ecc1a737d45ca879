"""What happens after a failure: the error's class is its policy, held hashes are not built,
the registry-outage check reads typed failures, and the per-hash build locks are pruned."""

from __future__ import annotations

import threading
import time

import pytest

from controller.adapters.builder import BuildError, EngineError, PullError, PushError
from controller.adapters.gitsource import GitAuthError, GitRefError, GitSourceError
from controller.adapters.registry import RegistryAuthError, RegistryError
from controller.adapters.secrets import SecretError
from controller.core.errors import Failure, Policy, SpecError, policy_of
from controller.core.plan import plan
from controller.pipeline.building import HashLocks, InternalError
from controller.pipeline.outcome import Result
from controller.pipeline.planning import CHECK
from controller.service.config import ConfigError
from controller.service.reconcile import registry_outage
from tests.support.helpers import plan_files

FILES = {
    "a/Dockerfile": "FROM registry.test/base:1\nRUN echo a\n",
    "b/Dockerfile": "FROM registry.test/base:1\nRUN echo b\n",
}


@pytest.mark.parametrize(
    ("error", "policy"),
    [
        (SpecError("a/env.yml", "no name"), Policy.FIX_SPEC),
        (BuildError("build failed: RUN exited 1"), Policy.FIX_SPEC),
        (PullError("base image could not be pulled"), Policy.RETRY_LATER),
        (EngineError("the Docker engine is not reachable"), Policy.RETRY_LATER),
        (PushError("push refused"), Policy.RETRY_LATER),
        (RegistryError("registry.test: connection refused"), Policy.RETRY_LATER),
        (GitSourceError("git fetch failed"), Policy.RETRY_LATER),
        (InternalError("internal error"), Policy.RETRY_LATER),
        (ValueError("not envship's"), Policy.RETRY_LATER),
        (RegistryAuthError("registry refused the credentials"), Policy.MISCONFIGURED),
        (GitAuthError("git refused the credentials"), Policy.MISCONFIGURED),
        (GitRefError("no such branch"), Policy.MISCONFIGURED),
        (SecretError("env:NOPE is not set"), Policy.MISCONFIGURED),
        (ConfigError("bad configuration"), Policy.MISCONFIGURED),
    ],
)
def test_an_errors_class_is_its_policy(error: BaseException, policy: Policy) -> None:
    assert policy_of(error) is policy
    assert Failure(str(error), error, "build").policy is policy
    assert policy.retried is (policy is not Policy.FIX_SPEC)


def test_a_held_hash_is_planned_as_held_and_nothing_else_is() -> None:
    items = plan_files(FILES)
    envs = [item.env for item in items.values()]
    held = frozenset({items["a"].hash or ""})
    planned = {item.env.path: item.action for item in plan(envs, "r.test", {}, {}, held)}
    assert planned == {"a": "held", "b": "build"}
    # an image that is there after all (pushed by hand, or by another replica) is up to date
    present = {(items["a"].env.repository or "", items["a"].tag or ""): "sha256:" + "1" * 64}
    planned = {item.env.path: item.action for item in plan(envs, "r.test", present, {}, held)}
    assert planned == {"a": "up-to-date", "b": "build"}


def _results(*steps: str) -> list[Result]:
    items = list(plan_files(FILES).values())
    results = []
    for item, step in zip(items, steps, strict=True):
        error = RegistryError("registry.test: connection refused")
        results.append(Result(item, "failed", failure=Failure(str(error), error, step)))
    return results


def test_an_outage_is_every_check_failing_not_the_words_of_an_error() -> None:
    assert registry_outage(_results(CHECK, CHECK), retrying=set()) == (
        "registry.test: connection refused"
    )
    # the same words from a push are that environment's failure, not an outage
    assert registry_outage(_results(CHECK, "build"), retrying=set()) is None
    assert registry_outage(_results("build", "build"), retrying=set()) is None
    # only environments already backing off were synced: their failures are their own
    assert registry_outage(_results(CHECK, CHECK), retrying={"a", "b"}) is None


def test_build_locks_serialize_one_hash_and_are_pruned_when_released() -> None:
    locks = HashLocks()
    inside: list[str] = []
    overlap = threading.Event()

    def build(name: str) -> None:
        with locks.hold("sha256:same"):
            inside.append(name)
            if len(inside) > 1:
                overlap.set()
            time.sleep(0.05)
            inside.remove(name)

    threads = [threading.Thread(target=build, args=(str(i),)) for i in range(4)]
    for thread in threads:
        thread.start()
    with locks.hold("sha256:other"):
        assert len(locks) >= 1
    for thread in threads:
        thread.join(5)
    assert not overlap.is_set()
    assert len(locks) == 0  # nothing left behind, however many hashes were built
