"""What every benchmark report shares: the machine it ran on, and its section of the docs."""

from __future__ import annotations

import contextlib
import platform
from pathlib import Path


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def memory() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    return "unknown"


def write_docs(docs: Path, section: str, text: str) -> None:
    """Replace `section` of `docs` (up to the next `## ` heading) with `text`, or append it."""
    current = docs.read_text(encoding="utf-8") if docs.exists() else "# Benchmarks\n"
    start = current.find(section + "\n")
    if start < 0:
        new = current.rstrip("\n") + "\n\n" + text
    else:
        end = current.find("\n## ", start + len(section))
        tail = current[end + 1 :] if end >= 0 else ""
        new = current[:start] + text + ("\n" + tail if tail else "")
    docs.parent.mkdir(parents=True, exist_ok=True)
    docs.write_text(new, encoding="utf-8")
