"""Why would an environment be rebuilt? Compare two hash inputs and name what differs. Pure.

The hash input of every image envship pushes is in its `io.envship.inputs` label, so the
registry alone can answer, without any local state.
"""

from __future__ import annotations

from typing import Any


def _context_map(value: Any) -> dict[str, str] | None:
    if isinstance(value, list) and all(isinstance(i, list) and len(i) == 3 for i in value):
        return {str(i[0]): f"{i[1]}:{i[2]}" for i in value}
    return None


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def differences(old: Any, new: Any, where: str = "") -> list[str]:
    """Human-readable differences between two hash inputs, most specific first."""
    if old == new:
        return []
    label = where or "input"
    if isinstance(old, dict) and isinstance(new, dict):
        found: list[str] = []
        for key in sorted(set(old) | set(new)):
            path = f"{where}.{key}" if where else key
            if key not in old:
                found.append(f"{path}: added {_short(new[key])}")
            elif key not in new:
                found.append(f"{path}: removed (was {_short(old[key])})")
            else:
                found.extend(differences(old[key], new[key], path))
        return found
    old_files, new_files = _context_map(old), _context_map(new)
    if old_files is not None and new_files is not None:
        found = []
        for name in sorted(set(old_files) | set(new_files)):
            if name not in old_files:
                found.append(f"{label}: file {name} added")
            elif name not in new_files:
                found.append(f"{label}: file {name} removed")
            elif old_files[name] != new_files[name]:
                found.append(f"{label}: file {name} changed")
        return found
    if isinstance(old, list) and isinstance(new, list):
        added = [i for i in new if i not in old]
        removed = [i for i in old if i not in new]
        parts = [f"+ {_short(i)}" for i in added] + [f"- {_short(i)}" for i in removed]
        if not parts:
            return [f"{label}: order changed"]
        return [f"{label}: " + ", ".join(parts)]
    return [f"{label}: {_short(old)} -> {_short(new)}"]
