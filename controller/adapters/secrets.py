"""Secret references: where a credential comes from, never the credential itself.

`env:NAME` reads an environment variable, `file:PATH` a file (as mounted from a Kubernetes
Secret or by the Secrets Store CSI driver; surrounding whitespace is stripped). Values are
read when needed, so a rotated secret is picked up without a restart. Errors name the reference
and the reason, never the value.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


class SecretError(Exception):
    """A secret could not be read: check the reference (its value is never shown)."""

    action = "check the secret reference"


@dataclass(frozen=True)
class SecretRef:
    scheme: str
    target: str

    @classmethod
    def parse(cls, text: str) -> SecretRef:
        scheme, sep, target = text.partition(":")
        if not sep or scheme not in ("env", "file") or not target:
            # The text may be a pasted secret: say what is expected, never what was given.
            raise SecretError(
                "a secret reference must be env:NAME or file:PATH "
                "(a literal secret is never accepted)"
            )
        return cls(scheme, target)

    def __str__(self) -> str:
        return f"{self.scheme}:{self.target}"

    def read(self) -> str:
        if self.scheme == "env":
            value = os.environ.get(self.target)
            if value is None:
                raise SecretError(f"{self}: the environment variable is not set")
            return value
        try:
            return Path(self.target).read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            raise SecretError(f"{self}: the file does not exist") from None
        except OSError as exc:
            raise SecretError(f"{self}: the file cannot be read ({exc.strerror})") from None


def credential_pair(username: SecretRef, password: SecretRef) -> tuple[str, str]:
    return username.read(), password.read()
