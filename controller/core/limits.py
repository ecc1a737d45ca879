"""Bounds on what one spec may make envship read, so a hostile repository cannot exhaust memory."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Limits:
    """Size limits; defaults suit environments kept in git."""

    max_spec_file_bytes: int = 1024 * 1024
    """A spec file (JSON, YAML, requirements, Dockerfile) larger than this is refused."""

    max_context_bytes: int = 256 * 1024 * 1024
    """The whole build context of one environment, summed over its files."""

    max_context_files: int = 20_000
    """Files in one build context."""

    max_yaml_nodes: int = 100_000
    """YAML/JSON nodes after alias expansion; more is refused as an alias bomb."""

    max_symlink_hops: int = 40
    """Links followed when resolving one path inside the repository."""
