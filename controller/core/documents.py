"""Parse JSON and YAML spec files into plain Python data, refusing hostile input.

YAML is read with the safe loader (libyaml when present): no custom tags, no Python objects.
Alias bombs are caught by counting nodes with aliases expanded, before anything walks the data.
"""

from __future__ import annotations

import json
from typing import Any

import yaml

from controller.core.errors import SpecError

try:  # libyaml is ten times faster; the pure-Python loader has the same semantics
    _Loader: type[yaml.SafeLoader] = yaml.CSafeLoader  # type: ignore[assignment]
except AttributeError:  # pragma: no cover - depends on how PyYAML was built
    _Loader = yaml.SafeLoader


def decode_text(data: bytes, path: str) -> str:
    """Spec files are UTF-8 (a BOM is allowed); anything else is refused."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SpecError(path, f"not UTF-8 text (byte {exc.start})") from None


def count_nodes(value: Any, budget: int, path: str) -> None:
    """Walk `value` with shared sub-trees counted every time they appear; refuse past `budget`."""
    remaining = budget
    stack = [value]
    while stack:
        item = stack.pop()
        remaining -= 1
        if remaining < 0:
            raise SpecError(
                path, f"document expands to more than {budget} nodes (a YAML alias bomb?)"
            )
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def load_yaml(data: bytes, path: str, *, max_nodes: int) -> Any:
    """One YAML document as plain data (dict, list, str, int, float, bool, None)."""
    text = decode_text(data, path)
    try:
        value = yaml.load(text, Loader=_Loader)  # noqa: S506 - a safe loader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise SpecError(path, f"invalid YAML{where}: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise SpecError(path, f"invalid YAML: {type(exc).__name__}") from None
    except RecursionError:
        raise SpecError(path, "invalid YAML: nesting is too deep") from None
    count_nodes(value, max_nodes, path)
    return value


def load_json(data: bytes, path: str, *, max_nodes: int) -> Any:
    """One JSON document as plain data."""
    text = decode_text(data, path)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SpecError(
            path, f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from None
    except RecursionError:
        raise SpecError(path, "invalid JSON: nesting is too deep") from None
    count_nodes(value, max_nodes, path)
    return value


def expect_mapping(value: Any, path: str, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise SpecError(path, f"{what} must be a mapping, not {type_name(value)}")
    for key in value:
        if not isinstance(key, str):
            raise SpecError(path, f"{what} has a key that is not a string: {key!r}")
    return value


def optional_str(value: Any, path: str, what: str) -> str | None:
    """A string field; None when missing or null, numbers accepted as text."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise SpecError(path, f"{what} must be a string, not {type_name(value)}")
    return str(value)


def type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {
        dict: "a mapping",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
    }.get(type(value), type(value).__name__)
