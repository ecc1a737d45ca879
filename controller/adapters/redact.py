"""Keep secret values out of everything envship prints, logs, stores or raises.

Every secret value read (`SecretStore`) is registered here; `redact(text)` replaces each
registered value (and its URL-encoded form) with `***`. The CLI, the sync's progress lines and
results, logs and the controller's status pass their text through it.
"""

from __future__ import annotations

import threading
from urllib.parse import quote

MASK = "***"
MIN_LENGTH = 4
"""Shorter values would mask ordinary words; such values are too weak to be secrets anyway."""


class Redactor:
    def __init__(self) -> None:
        self._values: set[str] = set()
        self._ordered: list[str] = []
        self._lock = threading.Lock()

    def add(self, value: str) -> None:
        if len(value) < MIN_LENGTH:
            return
        with self._lock:
            forms = {value, quote(value, safe=""), quote(value)}
            if forms <= self._values:
                return
            self._values |= forms
            # longest first, so a value that contains another is masked whole
            self._ordered = sorted(self._values, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for value in self._ordered:
            if value in text:
                text = text.replace(value, MASK)
        return text


REDACTOR = Redactor()


def redact(text: str) -> str:
    return REDACTOR(text)
