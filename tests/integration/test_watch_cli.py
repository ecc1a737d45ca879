"""`envship watch` end to end: the command as a separate process on a folder, the real TLS
registry with basic auth and the real Docker engine; a spec changes, its new image appears."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from tests.support.canaries import record_output
from tests.support.envship import Envship
from tests.support.infra import Registry
from tests.support.paths import ROOT


def read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def wait_for(
    check: Callable[[], bool], process: subprocess.Popen[bytes], what: str, timeout: float = 300
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if process.poll() is not None:
            raise AssertionError(f"envship watch exited ({process.returncode}) before {what}")
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_watch_rebuilds_a_changed_spec_and_stops_on_sigterm(
    envship: Envship, public_bases: Registry, target: Registry, tmp_path: Path
):
    base = f"{public_bases.host}/base/busybox:1"
    marker = uuid.uuid4().hex[:12]
    prefix = f"watch-{marker}"
    specs = tmp_path / "specs"
    (specs / "one").mkdir(parents=True)
    dockerfile = specs / "one" / "Dockerfile"
    dockerfile.write_text(f"FROM {base}\nRUN echo {marker} > /one\n")
    stdout, stderr = tmp_path / "stdout.log", tmp_path / "stderr.log"
    command = [sys.executable, "-m", "controller.cli", "watch", str(specs)]
    command += [*envship.target_args(prefix), "--debounce", "0.2"]
    with stdout.open("wb") as out, stderr.open("wb") as err:
        process = subprocess.Popen(command, stdout=out, stderr=err, env=envship.env(), cwd=ROOT)
    try:
        wait_for(lambda: "sync 1 done" in read(stdout), process, "the first sync")
        assert "sync 1 done" in read(stdout)
        assert "1 built" in read(stdout), read(stdout) + read(stderr)

        # an editor's save: a burst of writes, one sync
        for i in range(5):
            dockerfile.write_text(f"FROM {base}\nRUN echo {marker}-changed > /one{'#' * i}\n")
        dockerfile.write_text(f"FROM {base}\nRUN echo {marker}-changed > /one\n")
        (specs / ".one.swp").write_text("an editor's swap file: ignored")
        wait_for(lambda: "sync 2 done" in read(stdout), process, "the sync after the change")
        # what `envship plan` sees now is in the registry: the image sync 2 built
        planned = envship("plan", str(specs), *envship.target_args(prefix), "-o", "json")
        [item] = json.loads(planned.stdout)
        assert item["action"] == "up-to-date", planned.stdout + planned.stderr
        second = read(stdout).split("sync 2 done", 1)[1]
        assert "1 built" in second.splitlines()[0]
        assert f"built one: {item['image']}@" in second
        first = read(stdout).split("sync 2 done", 1)[0]
        assert f"built one: {item['image']}@" not in first
        repository, tag = str(item["image"]).split("/", 1)[1].rsplit(":", 1)
        assert target.labels(repository, tag)["io.envship.hash"] == item["hash"]
        assert "one/Dockerfile" in read(stdout)

        time.sleep(1.0)  # nothing else changed: no third sync
        assert "sync 3" not in read(stdout)

        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        record_output(read(stdout), read(stderr))
    assert "stopped" in read(stdout)
    assert "Traceback" not in read(stderr), read(stderr)
