"""A folder on disk as a trigger: watchdog events, debounced and coalesced into rounds.

`Watcher(path, on_round).start()` calls `on_round` once at start and then once per burst of
changes under the folder. A round starts when no change has been seen for `debounce` seconds
(or `max_delay` seconds after the first change of a burst, so a file written without pause
cannot hold rounds off for ever): an editor's burst of writes is one round. Rounds run one at a
time on the watcher's own thread; any number of changes while one runs make exactly one more.

What counts as a change: a file or folder created, deleted or moved, a file's bytes or mode
changed. Not counted: anything under a hidden folder or named with a leading dot (`.git/`,
editors' swap files, `.venv/`), backups ending in `~`, reads (discovery opens every file it
reads, which must not trigger the next round) and folder metadata changes.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.polling import PollingObserver

log = logging.getLogger("envship.watch")

DEBOUNCE = 0.3
"""Seconds without a change before a round starts."""
MAX_DELAY = 10.0
"""Seconds after the first change of a burst by which a round starts, quiet or not."""
CHANGES_KEPT = 100
"""Changed paths remembered per round (the count goes on)."""

_FILE_EVENTS = frozenset({"created", "deleted", "modified", "moved", "attrib"})
_FOLDER_EVENTS = frozenset({"created", "deleted", "moved"})


@dataclass(frozen=True)
class Round:
    """What `on_round` is told: its number (1 is the first), and what changed since the last
    round started (none for the first): up to `CHANGES_KEPT` paths relative to the folder,
    sorted, and how many change events there were (a file saved twice counts twice)."""

    number: int
    changes: tuple[str, ...] = ()
    changed: int = 0


def ignored(relative: str) -> bool:
    """Hidden paths and backups: `relative` is relative to the watched folder."""
    if relative in ("", ".") or relative == ".." or relative.startswith(".." + os.sep):
        return True
    return any(part.startswith(".") or part.endswith("~") for part in relative.split(os.sep))


class _Handler(FileSystemEventHandler):
    def __init__(self, watcher: Watcher) -> None:
        super().__init__()
        self.watcher = watcher

    def on_any_event(self, event: FileSystemEvent) -> None:
        kinds = _FOLDER_EVENTS if event.is_directory else _FILE_EVENTS
        if event.event_type not in kinds:
            return
        paths = [event.src_path]
        if event.event_type == "moved":
            paths.append(event.dest_path)
        for path in paths:
            if path:
                self.watcher.changed(os.fsdecode(path))


class Watcher:
    """Rounds of `on_round` on a thread of its own, driven by changes under `path`.
    `start()` it, `stop()` it; `changed(path)` is what every relevant event calls."""

    def __init__(
        self,
        path: str,
        on_round: Callable[[Round], Any],
        *,
        debounce: float = DEBOUNCE,
        max_delay: float = MAX_DELAY,
        observer_factory: Callable[[], Any] | None = None,
    ) -> None:
        if debounce < 0 or max_delay < 0:
            raise ValueError("debounce and max_delay are seconds, not negative")
        self.root = os.path.abspath(path)
        if not os.path.isdir(self.root):
            raise NotADirectoryError(f"{path}: not a folder")
        self.on_round = on_round
        self.debounce = debounce
        self.max_delay = max(max_delay, debounce)
        self._observer_factory = observer_factory
        self._clock = time.monotonic
        self._cond = threading.Condition()
        self._pending = False
        self._first_change = 0.0
        self._last_change = 0.0
        self._changes: set[str] = set()
        self._changed = 0
        self._running = False
        self._stopping = False
        self._rounds = 0
        self._observer: Any = None
        self._worker: threading.Thread | None = None

    # -- state --------------------------------------------------------------------------------

    def idle(self) -> bool:
        """No round runs and none is waiting for its quiet period."""
        with self._cond:
            return not self._running and not self._pending

    # -- triggers -----------------------------------------------------------------------------

    def changed(self, path: str) -> None:
        """A change at `path` (absolute, or relative to the folder): a round after the quiet
        period, unless the path is ignored."""
        relative = os.path.relpath(os.path.join(self.root, path), self.root)
        if ignored(relative):
            return
        now = self._clock()
        with self._cond:
            if self._stopping:
                return
            if not self._pending:
                self._first_change = now
            self._pending = True
            self._last_change = now
            self._changed += 1
            if len(self._changes) < CHANGES_KEPT:
                self._changes.add(relative)
            self._cond.notify_all()

    # -- life ---------------------------------------------------------------------------------

    def start(self, *, initial: bool = True) -> Watcher:
        """Watch the folder; with `initial`, the first round starts at once."""
        if initial:
            with self._cond:
                self._pending = True
                self._first_change = self._last_change = self._clock() - self.max_delay
        self._observer = self._start_observer()
        self._worker = threading.Thread(target=self._work, name="envship-watch", daemon=True)
        self._worker.start()
        return self

    def _start_observer(self) -> Any:
        factory = self._observer_factory or Observer
        observer = factory()
        observer.schedule(_Handler(self), self.root, recursive=True)
        try:
            observer.start()
        except OSError as exc:  # e.g. out of inotify watches: poll instead
            if self._observer_factory is not None:
                raise
            log.warning("file events unavailable (%s): polling %s instead", exc, self.root)
            observer = PollingObserver(timeout=1)
            observer.schedule(_Handler(self), self.root, recursive=True)
            observer.start()
        return observer

    def stop(self, timeout: float | None = None) -> bool:
        """Stop watching; no round starts after this. A running round may finish within
        `timeout` seconds (None: however long it takes). True when none is left running."""
        with self._cond:
            self._stopping = True
            self._pending = False
            self._cond.notify_all()
        observer = self._observer
        if observer is not None:
            observer.stop()
            observer.join(timeout)
        worker = self._worker
        if worker is not None:
            worker.join(timeout)
            return not worker.is_alive()
        return True

    # -- the worker ---------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._stopping:
                    if self._pending:
                        now = self._clock()
                        due = min(
                            self._last_change + self.debounce, self._first_change + self.max_delay
                        )
                        if now >= due:
                            break
                        self._cond.wait(due - now)
                    else:
                        self._cond.wait()
                if self._stopping:
                    return
                self._pending = False
                self._rounds += 1
                this = Round(self._rounds, tuple(sorted(self._changes)), self._changed)
                self._changes = set()
                self._changed = 0
                self._running = True
            try:
                self.on_round(this)
            except Exception:
                log.exception("round %d failed", this.number)
            finally:
                with self._cond:
                    self._running = False
                    self._cond.notify_all()


__all__ = ["DEBOUNCE", "MAX_DELAY", "Round", "Watcher", "ignored"]
