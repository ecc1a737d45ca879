"""The folder watcher (`envship watch`): real watchdog observers on a temporary folder, rounds
recorded by an injected callable (no engine, no registry)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from controller.adapters.watch import Round, Watcher, ignored

DEBOUNCE = 0.4
SETTLE = 3 * DEBOUNCE
"""How long to wait to be sure no further round follows."""


class Rounds:
    """Records rounds; `hold` makes a round block until `release`."""

    def __init__(self, then: Callable[[Round], None] | None = None) -> None:
        self.then = then
        """What each round does after it is recorded (nothing by default)."""
        self.seen: list[Round] = []
        self.finished = 0
        self.started = threading.Event()
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, this: Round) -> None:
        self.seen.append(this)
        self.started.set()
        try:
            assert self.gate.wait(30)
            if self.then is not None:
                self.then(this)
        finally:
            self.finished += 1

    def wait(self, watcher: Watcher, count: int, timeout: float) -> bool:
        """Until `count` rounds have finished and no other runs or waits for its quiet period."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.finished >= count and watcher.idle():
                return True
            time.sleep(0.01)
        return False

    def hold(self) -> None:
        self.gate.clear()

    def release(self) -> None:
        self.gate.set()


@pytest.fixture
def rounds() -> Rounds:
    return Rounds()


@pytest.fixture
def watched(tmp_path: Path) -> Path:
    folder = tmp_path / "specs"
    (folder / "env").mkdir(parents=True)
    (folder / "env" / "requirements.txt").write_text("numpy\n")
    return folder


@pytest.fixture
def watchers() -> Iterator[list[Watcher]]:
    started: list[Watcher] = []
    yield started
    for watcher in started:
        watcher.stop(10)


def watch(
    folder: Path, rounds: Rounds, watchers: list[Watcher], *, initial: bool = False, **kw: float
) -> Watcher:
    watcher = Watcher(str(folder), rounds, debounce=kw.pop("debounce", DEBOUNCE), **kw)
    watchers.append(watcher.start(initial=initial))
    return watcher


@pytest.mark.slow
def test_a_burst_of_writes_is_one_round(watched: Path, rounds: Rounds, watchers: list[Watcher]):
    watcher = watch(watched, rounds, watchers)
    for i in range(20):
        (watched / "env" / f"file{i}.txt").write_text(f"{i}\n" * 100)
        time.sleep(0.005)
    assert rounds.wait(watcher, 1, 10)
    time.sleep(SETTLE)
    assert len(rounds.seen) == 1
    [only] = rounds.seen
    assert only.number == 1
    assert {f"env{os.sep}file{i}.txt" for i in range(20)} <= set(only.changes)
    assert only.changed >= 20


def test_the_first_round_starts_at_once(watched: Path, rounds: Rounds, watchers: list[Watcher]):
    started = time.monotonic()
    watcher = watch(watched, rounds, watchers, initial=True, debounce=5.0)
    assert rounds.started.wait(2)
    assert time.monotonic() - started < 2
    assert rounds.wait(watcher, 1, 5)
    assert rounds.seen == [Round(1)]


@pytest.mark.slow
def test_changes_during_a_round_make_exactly_one_more(
    watched: Path, rounds: Rounds, watchers: list[Watcher]
):
    rounds.hold()
    watcher = watch(watched, rounds, watchers, initial=True)
    assert rounds.started.wait(5)
    # spread over more than the quiet period: still one more round, after this one
    for i in range(5):
        (watched / "env" / f"during{i}.txt").write_text("x")
        time.sleep(DEBOUNCE / 2)
    time.sleep(DEBOUNCE)
    assert len(rounds.seen) == 1
    rounds.release()
    assert rounds.wait(watcher, 2, 10)
    time.sleep(SETTLE)
    assert len(rounds.seen) == 2
    assert [r.number for r in rounds.seen] == [1, 2]
    assert {f"env{os.sep}during{i}.txt" for i in range(5)} <= set(rounds.seen[1].changes)


@pytest.mark.slow
def test_a_stop_is_clean_and_no_round_follows(
    watched: Path, rounds: Rounds, watchers: list[Watcher]
):
    watcher = watch(watched, rounds, watchers, initial=True)
    assert rounds.wait(watcher, 1, 5)
    assert watcher.stop(5) is True
    assert not any(t.name == "envship-watch" for t in threading.enumerate())
    assert watcher._observer is not None
    assert not watcher._observer.is_alive()
    (watched / "env" / "after.txt").write_text("x")
    watcher.changed("env/after.txt")
    time.sleep(SETTLE)
    assert len(rounds.seen) == 1


@pytest.mark.slow
def test_a_stop_lets_the_running_round_finish_and_drops_pending_changes(
    watched: Path, rounds: Rounds, watchers: list[Watcher]
):
    rounds.hold()
    watcher = watch(watched, rounds, watchers, initial=True)
    assert rounds.started.wait(5)
    (watched / "env" / "pending.txt").write_text("x")
    time.sleep(0.2)
    assert watcher.stop(0.2) is False  # the round still runs
    rounds.release()
    assert watcher.stop(5) is True
    time.sleep(SETTLE)
    assert len(rounds.seen) == 1


@pytest.mark.slow
def test_hidden_paths_backups_and_reads_do_not_trigger(watched: Path, watchers: list[Watcher]):
    seen: list[Round] = []

    def read_everything(this: Round) -> None:  # as discovery does
        seen.append(this)
        for path in watched.rglob("*"):
            if path.is_file():
                path.read_bytes()

    rounds = Rounds(read_everything)
    watcher = Watcher(str(watched), rounds, debounce=DEBOUNCE)
    watchers.append(watcher.start(initial=True))
    assert rounds.wait(watcher, 1, 5)
    (watched / ".git" / "objects").mkdir(parents=True)
    (watched / ".git" / "objects" / "ab").write_text("blob")
    (watched / ".git" / "index.lock").write_text("lock")
    (watched / ".git" / "index.lock").unlink()
    (watched / "env" / ".requirements.txt.swp").write_text("swap")
    (watched / "env" / "requirements.txt~").write_text("backup")
    os.utime(watched / "env")
    time.sleep(SETTLE)
    assert len(rounds.seen) == 1, seen


def test_an_editor_save_through_a_hidden_temporary_file_triggers(
    watched: Path, rounds: Rounds, watchers: list[Watcher]
):
    watcher = watch(watched, rounds, watchers)
    temporary = watched / "env" / ".requirements.txt.tmp"
    temporary.write_text("numpy\npandas\n")
    temporary.replace(watched / "env" / "requirements.txt")
    assert rounds.wait(watcher, 1, 5)
    assert rounds.seen[0].changes == (f"env{os.sep}requirements.txt",)


def test_mode_changes_and_deleted_folders_trigger(
    watched: Path, rounds: Rounds, watchers: list[Watcher]
):
    watcher = watch(watched, rounds, watchers)
    (watched / "env" / "requirements.txt").chmod(0o755)
    assert rounds.wait(watcher, 1, 5)
    (watched / "env" / "requirements.txt").unlink()
    (watched / "env").rmdir()
    assert rounds.wait(watcher, 2, 5)
    assert "env" in rounds.seen[1].changes


@pytest.mark.slow
def test_writes_without_pause_still_get_a_round_after_max_delay(
    watched: Path, rounds: Rounds, watchers: list[Watcher]
):
    watch(watched, rounds, watchers, debounce=0.3, max_delay=0.8)
    started = time.monotonic()
    while time.monotonic() - started < 2.0:
        (watched / "env" / "log.txt").write_text(str(time.monotonic()))
        time.sleep(0.05)
    assert len(rounds.seen) >= 1


def test_a_failing_round_does_not_stop_the_watcher(watched: Path, watchers: list[Watcher]):
    calls: list[int] = []

    def broken(this: Round) -> None:
        calls.append(this.number)
        raise RuntimeError("boom")

    rounds = Rounds(broken)
    watcher = Watcher(str(watched), rounds, debounce=DEBOUNCE)
    watchers.append(watcher.start(initial=True))
    assert rounds.wait(watcher, 1, 5)
    (watched / "env" / "requirements.txt").write_text("scipy\n")
    assert rounds.wait(watcher, 2, 5)
    assert calls == [1, 2]


def test_a_missing_folder_is_refused(tmp_path: Path):
    with pytest.raises(NotADirectoryError):
        Watcher(str(tmp_path / "missing"), lambda _round: None)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("env/requirements.txt", False),
        ("v2.yml", False),
        (".git/index", True),
        ("env/.hidden/Dockerfile", True),
        ("env/.conda.yml.swp", True),
        ("env/conda.yml~", True),
        (".", True),
        ("../elsewhere", True),
    ],
)
def test_ignored(path: str, expected: bool):
    assert ignored(path.replace("/", os.sep)) is expected
