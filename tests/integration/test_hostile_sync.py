"""Every hostile case of `tests/cases/bad_inputs/` at once, through a real sync and a real
controller.

The cases are put side by side in one repository (each in a folder of its own) beside `ok/`, a
Dockerfile environment on a local base image. `envship sync` runs on it with base images
resolved and with `--no-resolve-base` (the quickstart's mode, where one bad FROM used to end
the whole sync); `envship run` reconciles it from a git repository. Each time: no traceback,
every environment gets an outcome of its own, `ok` is built and pushed, every environment its
case refuses is refused, and no secret or outside file's canary appears in any output.

Side by side, the cases are a harder input than each alone: explicit names repeat across cases
(so some are refused as name conflicts too), and paths that left one case's folder now land in
another's (still inside the repository).
"""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import pytest

from controller.core.tree import Blob
from tests.support.bad_inputs import CASE_NAMES, Case, load_case, materialize
from tests.support.canaries import record_output
from tests.support.controller_process import Launcher, wait_until
from tests.support.envship import Envship
from tests.support.infra import Registry

pytestmark = pytest.mark.slow

OK = "ok"


def side_by_side(tmp_path: Path, base: str) -> tuple[Path, list[Case]]:
    """Every case materialized under `repo/<case>/`, and `repo/ok/Dockerfile` FROM `base`."""
    repo = tmp_path / "hostile"
    repo.mkdir()
    cases = []
    for name in CASE_NAMES:
        case = load_case(name)
        sandbox = tmp_path / "cases" / name
        sandbox.mkdir(parents=True)
        os.rename(materialize(case, sandbox, cli=True), repo / name)
        cases.append(case)
    (repo / OK).mkdir()
    (repo / OK / "Dockerfile").write_text(f"FROM {base}\nRUN echo hostile-neighbours > /ok\n")
    return repo, cases


def secrets_of(cases: list[Case]) -> list[str]:
    found = [secret for case in cases for secret in case.secrets]
    found += [text.strip() for case in cases for text in case.outside.values() if text.strip()]
    return found


def expected_refusals(cases: list[Case]) -> dict[str, Case]:
    """Path in the side-by-side repository -> its case, for every environment a case refuses."""
    return {f"{case.name}/{row['path']}": case for case in cases for row in case.refused}


def moved_links(cases: list[Case]) -> set[str]:
    """Environments of cases with a relative symlink that left the case's folder: side by side
    it points at a path of the repository that does not exist, and the build fails instead."""
    return {
        f"{case.name}/{row['path']}"
        for case in cases
        if any(not target.startswith("{outside}") for target in case.symlinks.values())
        for row in case.refused
    }


def check_outputs_clean(cases: list[Case], *outputs: str) -> None:
    for secret in secrets_of(cases):
        for output in outputs:
            assert secret not in output, f"{secret!r} leaked"


@pytest.mark.parametrize("resolve", [True, False], ids=["bases-resolved", "no-resolve-base"])
def test_a_sync_of_every_hostile_case_refuses_each_alone_and_builds_the_rest(
    envship: Envship, public_bases: Registry, tmp_path: Path, resolve: bool
):
    repo, cases = side_by_side(tmp_path, f"{public_bases.host}/base/busybox:1")
    extra = () if resolve else ("--no-resolve-base",)
    started = time.monotonic()
    result = envship("sync", str(repo), *envship.target_args("hostile"), "-o", "json", *extra)
    seconds = time.monotonic() - started
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 1, result.stderr  # refusals and failures: 1, not a crash
    items = json.loads(result.stdout)
    by_path = {item["path"]: item for item in items}
    assert len(by_path) == len(items)
    allowed = {"built", "copied", "up-to-date", "failed", "refused"}
    assert {item["action"] for item in items} <= allowed
    for item in items:
        if item["action"] in ("failed", "refused"):
            assert item["error"], item
            assert "please report this" not in item["error"], item
    ok = by_path[OK]
    assert ok["action"] == "built", ok
    image = str(ok["image"])
    repository, tag = image.split("/", 1)[1].rsplit(":", 1)
    assert envship.target.manifest_digest(repository, tag) == ok["digest"]
    refusals = expected_refusals(cases)
    for path in refusals:
        assert path in by_path, f"{path} is missing from the sync's result"
        if path in moved_links(cases):  # its link now dangles inside the repository: a failed build
            assert by_path[path]["action"] in ("refused", "failed"), by_path[path]
        else:
            assert by_path[path]["action"] == "refused", by_path[path]
    check_outputs_clean(cases, result.stdout, result.stderr)
    record_output(f"hostile sync ({'resolved' if resolve else 'not resolved'}): "
                  f"{len(items)} environments, {len(refusals)} refused by their case, "
                  f"{seconds:.1f} s")  # fmt: skip


def committed(folder: Path, under: str) -> dict[str, bytes | Blob]:
    """Every file and symbolic link below `folder` as git tree entries under `under/`, read by
    descriptor (a path may be longer than the system allows)."""
    files: dict[str, bytes | Blob] = {}
    for top, _dirs, names, fd in os.fwalk(folder):
        relative = os.path.relpath(top, folder)
        prefix = under if relative == "." else f"{under}/{relative}"
        for name in names:
            info = os.stat(name, dir_fd=fd, follow_symlinks=False)
            if stat.S_ISLNK(info.st_mode):
                files[f"{prefix}/{name}"] = Blob(link_target=os.readlink(name, dir_fd=fd))
            elif stat.S_ISREG(info.st_mode):
                handle = os.open(name, os.O_RDONLY, dir_fd=fd)
                with os.fdopen(handle, "rb") as file:
                    files[f"{prefix}/{name}"] = file.read()
    return files


@pytest.mark.parametrize("resolve", [True, False], ids=["bases-resolved", "no-resolve-base"])
def test_the_controller_reconciles_every_hostile_case_and_keeps_each_refusal_alone(
    launch: Launcher, tmp_path: Path, resolve: bool
):
    repo, cases = side_by_side(tmp_path, launch.base)
    controller, _upstream, _secret = launch(committed(repo, "envs"), resolve_base=resolve)
    wait_until(lambda: controller.status()["last_reconcile"] is not None, 300,
               "the first reconcile", controller)  # fmt: skip
    status = controller.status()
    assert controller.metric("envship_reconcile_total", result="error") == 0
    envs = {env["path"].removeprefix("envs/"): env for env in status["environments"]}
    assert envs[OK]["phase"] == "Ready", envs[OK]
    for path in expected_refusals(cases):
        assert path in envs, f"{path} is missing from /status"
        assert envs[path]["phase"] in (
            ("Stalled", "Failed") if path in moved_links(cases) else ("Stalled",)
        ), envs[path]
        assert envs[path]["last_error"]
    for env in envs.values():
        assert env["phase"] in ("Ready", "Stalled", "Failed"), env
    stdout, stderr = controller.output()
    assert "Traceback" not in stdout + stderr
    check_outputs_clean(cases, json.dumps(status), stdout, stderr, controller.get("/metrics").text)
