"""Canary secrets: every credential the tests create is a unique value registered here.

At the end of the session (tests/conftest.py) the captured output of every test, the output of
every envship command the tests ran, and every file under the session's temporary folders and
HOME are scanned; a canary found anywhere but in the files that are deliberately its source
(a `file:` secret) fails the run.
"""

from __future__ import annotations

import secrets
import threading
from pathlib import Path

_lock = threading.Lock()
CANARIES: set[str] = set()
SOURCES: set[Path] = set()
"""Files that hold a secret on purpose (the `file:` source under test)."""
OUTPUTS: list[str] = []
"""Everything envship printed during the tests."""


def canary(kind: str) -> str:
    value = f"canary-{kind}-{secrets.token_hex(10)}"
    with _lock:
        CANARIES.add(value)
    return value


def secret_file(path: Path, value: str) -> Path:
    """Write a `file:` secret; this file is allowed to hold it."""
    path.write_text(value + "\n")
    with _lock:
        SOURCES.add(path.resolve())
    return path


def record_output(*texts: str) -> None:
    with _lock:
        OUTPUTS.extend(texts)


def find(texts: list[str], files: list[Path]) -> list[str]:
    """Where canaries appear: a list of human-readable findings."""
    with _lock:
        values = set(CANARIES)
        sources = set(SOURCES)
    found = []
    for index, text in enumerate(texts):
        for value in values:
            if value in text:
                found.append(f"output #{index}: {value[:16]}...")
    for path in files:
        if path.resolve() in sources or not path.is_file() or path.is_symlink():
            continue
        try:
            data = path.read_bytes()
        except OSError:
            continue
        for value in values:
            if value.encode() in data:
                found.append(f"file {path}: {value[:16]}...")
    return found
