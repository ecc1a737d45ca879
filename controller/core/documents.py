"""Parse JSON and YAML spec files into plain Python data, refusing hostile input.

YAML is read with the safe loader (libyaml when present): no custom tags, no Python objects.
Alias bombs are caught by counting nodes with aliases expanded, before anything walks the data;
a document without an alias (`*`), and any JSON, is bounded by the file size limit instead.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

import yaml

from controller.core.errors import SpecError

try:  # libyaml is ten times faster; the pure-Python loader has the same semantics
    _Base: type[yaml.SafeLoader] = yaml.CSafeLoader  # type: ignore[assignment]
except AttributeError:  # pragma: no cover - depends on how PyYAML was built
    _Base = yaml.SafeLoader

_MERGE = "tag:yaml.org,2002:merge"


class DuplicateKey(Exception):
    def __init__(self, key: str, line: int) -> None:
        self.key, self.line = key, line


class _Loader(_Base):  # type: ignore[valid-type, misc]
    """The safe loader, refusing a key given twice in one mapping (the last would win, and a
    check of the first, such as for a password, would be fooled)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        merges = any(key.tag == _MERGE for key, _ in node.value)
        mapping: dict[Any, Any] = super().construct_mapping(node, deep)
        if not merges and len(mapping) != len(node.value):
            seen: set[Any] = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node)
                if key in seen:
                    raise DuplicateKey(str(key)[:80], key_node.start_mark.line + 1)
                seen.add(key)
        return mapping


MAX_INT_BITS = 14_000
"""About 4,200 decimal digits: Python refuses to print longer integers, so none is read."""


class NumberTooLong(Exception):
    pass


def _int_of_yaml(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    value: int = yaml.SafeLoader.construct_yaml_int(loader, node)
    if value.bit_length() > MAX_INT_BITS:
        raise NumberTooLong
    return value


_Loader.add_constructor("tag:yaml.org,2002:int", _int_of_yaml)
TOO_LONG = "a number is too long (over 4,000 digits)"


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    mapping = dict(pairs)
    if len(mapping) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise DuplicateKey(key[:80], 0)
            seen.add(key)
    return mapping


def decode_text(data: bytes, path: str) -> str:
    """Spec files are UTF-8 (a BOM is allowed); anything else is refused."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SpecError(path, f"not UTF-8 text (byte {exc.start})") from None


def count_nodes(value: Any, budget: int, path: str) -> None:
    """Walk `value` with shared sub-trees counted every time they appear; refuse past `budget`.

    Every node counts once: each mapping key and value, each list item, the top value. Nodes
    are counted as their container is visited, and only containers are walked on: keys are
    never containers (YAML and JSON keys are hashable scalars).
    """
    remaining = budget - 1
    stack = [value]
    children: Iterable[Any]
    while remaining >= 0 and stack:
        item = stack.pop()
        if isinstance(item, dict):
            remaining -= 2 * len(item)
            children = item.values()
        elif isinstance(item, list):
            remaining -= len(item)
            children = item
        else:
            continue
        stack.extend(child for child in children if isinstance(child, dict | list))
    if remaining < 0:
        raise SpecError(path, f"document expands to more than {budget} nodes (a YAML alias bomb?)")


MAX_DEPTH = 100
"""Nesting deeper than this is refused: libyaml's composer recurses and can crash the process."""
_NESTING_MARKS = 2_000
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def check_yaml_depth(text: str, path: str) -> None:
    """Refuse deep nesting before composing; the event stream is read without recursion.

    Only files with many nesting marks are scanned, so ordinary specs pay nothing. libyaml has
    a nesting limit of its own in some releases, met before any event arrives: then the pure
    Python parser (no such limit, no recursion) counts, so the refusal is envship's whatever
    libyaml release is installed.
    """
    if text.count("[") + text.count("{") + text.count("-") + text.count(":") < _NESTING_MARKS:
        return
    loaders: list[type[yaml.SafeLoader]] = [_Base]
    if _Base is not yaml.SafeLoader:
        loaders.append(yaml.SafeLoader)
    for loader in loaders:
        depth = 0
        try:
            for event in yaml.parse(text, Loader=loader):
                if isinstance(event, yaml.CollectionStartEvent):
                    depth += 1
                    if depth > MAX_DEPTH:
                        raise SpecError(path, TOO_DEEP)
                elif isinstance(event, yaml.CollectionEndEvent):
                    depth -= 1
            return
        except yaml.YAMLError:
            continue  # the loader below reports a syntax error with its position


TOO_DEEP = f"invalid YAML: nesting is too deep (over {MAX_DEPTH} levels); flatten the document"
NO_OBJECTS = (
    "a YAML tag asks for an object (such as !!python/... or a custom !tag); spec files hold "
    "plain data only: remove the tag"
)


def load_yaml(data: bytes, path: str, *, max_nodes: int) -> Any:
    """One YAML document as plain data (dict, list, str, int, float, bool, None)."""
    text = decode_text(data, path)
    check_yaml_depth(text, path)
    try:
        value = yaml.load(text, Loader=_Loader)  # noqa: S506 - a safe loader
    except DuplicateKey as exc:
        raise SpecError(path, f"invalid YAML at line {exc.line}: {_twice(exc.key)}") from None
    except NumberTooLong:
        raise SpecError(path, f"invalid YAML: {TOO_LONG}") from None
    except yaml.constructor.ConstructorError as exc:
        raise SpecError(path, f"invalid YAML{_where(exc)}: {NO_OBJECTS}") from None
    except yaml.MarkedYAMLError as exc:
        raise SpecError(path, f"invalid YAML{_where(exc)}: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise SpecError(path, f"invalid YAML: {type(exc).__name__}") from None
    except RecursionError:
        raise SpecError(path, TOO_DEEP) from None
    except (ValueError, OverflowError):  # impossible dates, integers past 4300 digits
        raise SpecError(
            path, f"invalid YAML value: {TOO_LONG}, or a date that does not exist"
        ) from None
    if "*" in text:  # only aliases expand a document beyond what its size bounds
        count_nodes(value, max_nodes, path)
    return value


def _twice(key: str) -> str:
    return f"the key {key!r} is given twice in one mapping; keep one (the last would win, unseen)"


def _where(exc: yaml.MarkedYAMLError) -> str:
    mark = exc.problem_mark
    return f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""


def load_json(data: bytes, path: str, *, max_nodes: int) -> Any:
    """One JSON document as plain data."""
    text = decode_text(data, path)
    try:
        value = json.loads(text, object_pairs_hook=_unique_pairs)
    except DuplicateKey as exc:
        raise SpecError(path, f"invalid JSON: {_twice(exc.key)}") from None
    except json.JSONDecodeError as exc:
        raise SpecError(
            path, f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from None
    except RecursionError:
        raise SpecError(path, "invalid JSON: nesting is too deep") from None
    except (ValueError, OverflowError):  # integers past 4300 digits
        raise SpecError(path, f"invalid JSON value: {TOO_LONG}") from None
    if _SURROGATE_ESCAPE.search(text):
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise SpecError(
                path, "invalid JSON: a string holds a lone surrogate (\\uD800-\\uDFFF)"
            ) from None
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
