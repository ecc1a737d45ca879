"""Hostile and broken specs are refused one environment at a time, never with a traceback.

Every folder of `tests/cases/bad_inputs/` is a small repository with one valid environment
(`good/requirements.txt`) beside the bad ones; its `case.json` says what must be planned and what
refused, with the file and a key phrase of each refusal (see `tests/cases/bad_inputs/README.md`;
tests/support/bad_inputs.py loads them). Each case is copied to a temporary folder (where
test-time symlinks, outside files and large files are made), then read twice: in process
through the real filesystem adapter, and by `envship plan` run as a subprocess, in JSON and in
table form. Both must agree with `case.json`, leak no secret or canary, and read nothing outside
the repository.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from controller.adapters.folder import FolderTree
from controller.core.discovery import DiscoveryOptions, discover
from controller.core.limits import Limits
from controller.core.plan import plan
from tests.support.bad_inputs import CASE_NAMES, CASES, Case, load_case, materialize
from tests.support.paths import ROOT

GOOD = {"path": "good", "kind": "pip", "name": "good"}
MARKER = "envship-pwned-marker"
"""File the payloads of the `yaml-python-tag` case would create in the working folder."""
CLI_TIMEOUT = 120
ISOLATED_TIMEOUT = 120


# --- the cases (tests/support/bad_inputs.py) --------------------------------------------------


def case_params(mode: str) -> list[Any]:
    params = []
    for name in CASE_NAMES:
        reason = load_case(name).xfail.get(mode)
        marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
        params.append(pytest.param(name, id=name, marks=marks))
    return params


# --- reading a case in process ----------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    path: str
    kind: str
    name: str
    action: str
    error: str | None
    hash: str | None


@dataclass
class Observed:
    rows: list[Row]
    reads: list[str]
    """Tree paths the adapter was asked to read."""
    touched: list[tuple[str, str]]
    """(audit event, absolute path) of every file opened or folder listed."""


_AUDIT: list[tuple[str, str]] | None = None
_AUDITED = ("open", "os.scandir", "os.listdir")


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if _AUDIT is None or event not in _AUDITED or not args:
        return
    target = args[0]
    if isinstance(target, bytes):
        target = os.fsdecode(target)
    if isinstance(target, str | os.PathLike):
        target = os.fspath(target)
        if os.path.isabs(target):
            _AUDIT.append((event, target))


sys.addaudithook(_audit)


@contextmanager
def audited() -> Iterator[list[tuple[str, str]]]:
    global _AUDIT  # noqa: PLW0603 - the audit hook cannot be removed, so it reads a module global
    _AUDIT = []
    try:
        yield _AUDIT
    finally:
        _AUDIT = None


class RecordingTree(FolderTree):
    """The real filesystem adapter, noting which paths it is asked to read."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.reads: list[str] = []

    def read(self, path: str, max_bytes: int) -> bytes:
        self.reads.append(path)
        return super().read(path, max_bytes)


def observe(repo: Path, options: DiscoveryOptions) -> Observed:
    tree = RecordingTree(repo)
    with audited() as touched:
        items = plan(discover(tree, options))
    rows = [Row(i.env.path, i.env.kind, i.env.name, i.action, i.error, i.hash) for i in items]
    return Observed(rows, list(tree.reads), list(touched))


def _child(send: Any, repo: Path, options: DiscoveryOptions) -> None:
    try:
        send.send(("ok", observe(repo, options)))
    except BaseException:  # report everything to the parent
        send.send(("error", traceback.format_exc()))
    finally:
        send.close()


def observe_isolated(repo: Path, options: DiscoveryOptions) -> Observed:
    """`observe` in a forked child, for inputs that may kill the interpreter."""
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_child, args=(send, repo, options))
    child.start()
    send.close()
    result = None
    if receive.poll(ISOLATED_TIMEOUT):
        try:
            result = receive.recv()
        except EOFError:  # the child died before it could answer
            result = None
    child.join(ISOLATED_TIMEOUT)
    if child.is_alive():
        child.kill()
        pytest.fail(f"discovery did not finish within {ISOLATED_TIMEOUT} s")
    if result is None:
        pytest.fail(f"discovery killed the interpreter (exit code {child.exitcode})")
    status, value = result
    if status == "error":
        pytest.fail(f"discovery raised:\n{value}")
    return value


# --- checks shared by both ways of reading a case ---------------------------------------------


def check_rows(case: Case, rows: list[Row]) -> None:
    by_path = {row.path: row for row in rows}
    assert len(by_path) == len(rows), f"two environments share a path: {rows}"
    expected = {e["path"] for e in case.planned} | {e["path"] for e in case.refused}
    assert set(by_path) == expected, (
        f"unexpected environments {sorted(set(by_path) - expected)}, "
        f"missing {sorted(expected - set(by_path))}"
    )
    for want in case.planned:
        row = by_path[want["path"]]
        assert row.action in ("build", "copy"), f"{row.path} should plan: {row.error}"
        assert row.error is None
        assert row.hash is not None
        assert row.hash.startswith("sha256:")
        assert row.kind == want["kind"]
        assert row.name == want.get("name", row.name)
    for want in case.refused:
        row = by_path[want["path"]]
        assert row.action == "refused", f"{row.path} should be refused"
        assert row.error, f"{row.path} is refused without a message"
        if "file" in want:
            assert row.error.startswith(f"{want['file']}: "), row.error
        for phrase in want["phrases"]:
            assert phrase in row.error, f"{phrase!r} not in {row.error!r}"
        assert row.kind == want.get("kind", row.kind)
        assert row.name == want.get("name", row.name)
    for row in rows:
        if row.error:
            assert "Traceback" not in row.error
            assert "please report this" not in row.error, row.error
    check_no_secrets(case, repr(rows))


def check_no_secrets(case: Case, *outputs: str) -> None:
    for secret in case.secrets:
        for output in outputs:
            assert secret not in output, f"{secret!r} leaked"
            assert secret not in "".join(output.split()), f"{secret!r} leaked (wrapped)"


def within(path: str, folder: Path) -> bool:
    return os.path.commonpath([path, str(folder)]) == str(folder)


def check_nothing_outside_read(observed: Observed, repo: Path, sandbox: Path) -> None:
    real_repo = repo.resolve()
    for path in observed.reads:
        assert within(os.path.realpath(repo / path), real_repo), f"read {path} outside"
    for event, path in observed.touched:
        real = os.path.realpath(path)
        if within(real, sandbox.resolve()):
            assert within(real, real_repo), f"{event} {path} leaves the repository"


# --- the data-driven tests --------------------------------------------------------------------


@pytest.mark.parametrize("case_name", case_params("discover"))
def test_case_in_process(case_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    case = load_case(case_name)
    repo = materialize(case, tmp_path, cli=False)
    monkeypatch.chdir(tmp_path)
    run: Callable[[Path, DiscoveryOptions], Observed] = (
        observe_isolated if case.isolate else observe
    )
    observed = run(repo, case.options(cli=False))
    check_rows(case, observed.rows)
    check_nothing_outside_read(observed, repo, tmp_path)
    assert not (tmp_path / MARKER).exists(), "a YAML payload ran"


def run_plan(repo: Path, output: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.run(
        [sys.executable, "-m", "controller.cli", "plan", str(repo), "--output", output],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        errors="replace",
        timeout=CLI_TIMEOUT,
        check=False,
    )


def rows_from_json(stdout: str) -> list[Row]:
    return [
        Row(i["path"], i["kind"], i["name"], i["action"], i["error"], i["hash"])
        for i in json.loads(stdout)
    ]


def squeeze(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize("case_name", case_params("cli"))
def test_case_through_cli(case_name: str, tmp_path: Path) -> None:
    case = load_case(case_name)
    repo = materialize(case, tmp_path, cli=True)

    as_json = run_plan(repo, "json", tmp_path)
    assert "Traceback" not in as_json.stderr, as_json.stderr
    assert as_json.returncode == 1, as_json.stderr
    check_rows(case, rows_from_json(as_json.stdout))
    check_no_secrets(case, as_json.stdout, as_json.stderr)

    table = run_plan(repo, "table", tmp_path)
    assert "Traceback" not in table.stderr, table.stderr
    assert table.returncode == 1, table.stderr
    check_no_secrets(case, table.stdout, table.stderr)
    text = squeeze(table.stdout)
    assert f"{len(case.refused)} refused:" in text
    for want in case.refused:
        for phrase in [*want["phrases"], *([f"{want['file']}:"] if "file" in want else [])]:
            assert squeeze(phrase) in text, f"{phrase!r} not in the table output"
    good = next(line for line in table.stdout.splitlines() if line.startswith("good "))
    assert " build " in good
    assert not (tmp_path / MARKER).exists(), "a YAML payload ran"


# --- the corpus itself ------------------------------------------------------------------------


def test_every_case_is_described() -> None:
    assert CASE_NAMES, "no cases found"
    for name in CASE_NAMES:
        case = load_case(name)
        assert case.about
        assert GOOD in case.planned, f"{name}: the valid environment good/ must plan"
        assert case.refused, f"{name}: a bad-input case refuses something"
        assert (CASES / name / "good" / "requirements.txt").is_file()
        for want in case.refused:
            assert set(want) <= {"path", "kind", "name", "file", "phrases"}
            assert "file" in want or want["phrases"], f"{name}: {want['path']} checks nothing"


def test_no_large_files_committed() -> None:
    """Large and deep inputs are made at test time, not kept in git."""
    for path in CASES.rglob("*"):
        if path.is_file():
            assert path.stat().st_size < 16 * 1024, path


# --- explicit tests ---------------------------------------------------------------------------


PASSWORD = "canary-pw-7f3a91"


def test_plaintext_password_is_never_echoed(tmp_path: Path) -> None:
    case = load_case("plaintext-password")
    repo = materialize(case, tmp_path, cli=True)
    assert PASSWORD in (repo / "with-password" / "azureml_environment.json").read_text()

    envs = {e.path: e for e in discover(FolderTree(repo))}
    error = envs["with-password"].error
    assert error is not None
    for text in (str(error), repr(error), repr(error.args), error.problem, error.path):
        assert PASSWORD not in text
    assert envs["username-only"].ok
    assert envs["address-only"].ok
    assert envs["address-only"].build is not None
    assert envs["address-only"].build.base_image == "myregistry.azurecr.io/private/base:1.0"

    for output in ("json", "table"):
        result = run_plan(repo, output, tmp_path)
        assert result.returncode == 1
        assert PASSWORD not in result.stdout
        assert PASSWORD not in result.stderr
    refused = subprocess.run(
        [
            sys.executable,
            "-m",
            "controller.cli",
            "render",
            "with-password",
            "--path",
            str(repo),
        ],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        check=False,
    )
    assert refused.returncode == 1
    assert "refused: with-password/azureml_environment.json" in refused.stderr
    assert PASSWORD not in refused.stdout + refused.stderr


def test_python_tags_run_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Were an unsafe loader used, the payloads would call these; they are never called."""
    calls: list[Any] = []

    def spy(*args: Any, **kwargs: Any) -> int:
        calls.append(args)
        return 0

    case = load_case("yaml-python-tag")
    repo = materialize(case, tmp_path, cli=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(os, "system", spy)
    monkeypatch.setattr(subprocess, "check_call", spy)
    envs = discover(FolderTree(repo))
    assert calls == []
    assert not (tmp_path / MARKER).exists()
    tagged = [e for e in envs if e.path != "good"]
    assert len(tagged) == 4
    assert all(e.error is not None and "plain data only" in str(e) for e in tagged)

    result = run_plan(repo, "json", tmp_path)
    assert result.returncode == 1
    assert not (tmp_path / MARKER).exists()


def test_deep_json_is_refused_without_recursion_error(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "good").mkdir(parents=True)
    (repo / "good" / "requirements.txt").write_text("numpy\n")
    (repo / "deep").mkdir()
    (repo / "deep" / "azureml_environment.json").write_text("[" * 100_000)
    envs = {e.path: e for e in discover(FolderTree(repo))}
    assert (
        str(envs["deep"].error)
        == "deep/azureml_environment.json: invalid JSON: nesting is too deep"
    )
    assert envs["good"].ok
    result = run_plan(repo, "json", tmp_path)
    assert result.returncode == 1
    assert "RecursionError" not in result.stderr
    assert "Traceback" not in result.stderr


def test_size_limit_is_configurable(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "big").mkdir(parents=True)
    (repo / "big" / "requirements.txt").write_text("numpy\n" + "\n" * 5000)
    accepted = discover(FolderTree(repo))
    assert [e.ok for e in accepted] == [True]
    small = DiscoveryOptions(limits=Limits(max_spec_file_bytes=4096))
    (refused,) = discover(FolderTree(repo), small)
    assert str(refused.error) == (
        "big/requirements.txt: file is 5006 bytes, over the limit of 4096"
    )


def test_canary_outside_is_never_in_any_output(tmp_path: Path) -> None:
    """The symlink cases with the outside canary rendered through every command that reads."""
    case = load_case("symlink-outside-file")
    repo = materialize(case, tmp_path, cli=True)
    canary = case.secrets[0]
    assert canary in (tmp_path / "outside" / "conda.yml").read_text()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for args in (
        ["plan", str(repo), "-o", "json"],
        ["plan", str(repo)],
        ["render", "link-conda", "--path", str(repo)],
        ["hash", "link-context", "--path", str(repo)],
    ):
        result = subprocess.run(
            [sys.executable, "-m", "controller.cli", *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT,
            check=False,
        )
        assert result.returncode == 1, args
        assert "Traceback" not in result.stderr
        assert canary not in result.stdout + result.stderr, args
