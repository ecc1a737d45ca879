"""Step 3 of a sync: moving tags (`latest`, the spec's version) follow verified images only."""

from __future__ import annotations

import re
from collections.abc import Sequence

from controller.adapters.registry import OciRegistry
from controller.core.errors import EnvshipError
from controller.core.naming import tag_for
from controller.pipeline.building import InternalError
from controller.pipeline.options import SyncOptions
from controller.pipeline.outcome import DONE, Reporter, Result, Step, failure

TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


def move_tags(
    registry: OciRegistry, options: SyncOptions, reporter: Reporter, results: Sequence[Result]
) -> None:
    """Point moving tags at images that are known good; never at a failed build. A tag that
    cannot be moved fails its environment (its image is pushed)."""
    for result in results:
        try:
            _move(registry, options, reporter, result)
        except Exception as exc:
            error = InternalError(
                f"internal error moving tags ({type(exc).__name__}); please report"
            )
            result.outcome = "failed"
            result.failure = failure(error, "tag")


def _move(registry: OciRegistry, options: SyncOptions, reporter: Reporter, result: Result) -> None:
    env = result.item.env
    if result.outcome not in DONE or not env.repository:
        return
    tags = list(options.moving_tags)
    if options.tag_version and env.version:
        tags.append(env.version)
    for tag in tags:
        if not TAG.fullmatch(tag):
            reporter.line(env.status_key, f"not tagged {tag!r}: not a valid tag", Step.TAG)
            continue
        try:
            current = registry.digest(env.repository, tag, refresh=True)
            if current == result.digest:
                continue
            registry.retag(env.repository, tag_for(result.item.hash or ""), tag)
            reporter.line(env.status_key, f"tagged {tag}", Step.TAG)
        except EnvshipError as exc:
            result.outcome = "failed"
            message = f"image pushed, but moving tag {tag!r} failed: {exc}"
            result.failure = failure(exc, "tag", message)


__all__ = ["TAG", "move_tags"]
