"""The commands that work on a folder of specs: `plan`, `sync`, `render`, `hash`, `explain`
and `gc` (`controller.cli.main` loads this module when one of them runs)."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import click

from controller.adapters.gitinfo import provenance
from controller.adapters.redact import redact
from controller.adapters.registry import RegistryError
from controller.adapters.secrets import SecretError
from controller.cli.options import (
    HASH_TAG_LENGTH,
    LOG_TAIL,
    BuildArgs,
    Discovery,
    RegistryArgs,
    build_options,
    console,
    discovery_options,
    print_errors,
    publish_settings,
    registry_options,
    say,
    short,
    table,
    visible,
)
from controller.core.discovery import Discovered
from controller.core.errors import Failure
from controller.core.explain import differences
from controller.core.hashing import content_hash, hash_input
from controller.core.model import BuildSpec, Environment
from controller.core.plan import PlanItem, plan
from controller.core.render import LABEL_INPUTS, render

if TYPE_CHECKING:
    from controller.pipeline.sync import Result, Sync


def item_json(item: PlanItem) -> dict[str, Any]:
    env = item.env
    return {
        "name": env.name,
        "path": env.path or ".",
        "paths": [p or "." for p in env.paths],
        "key": env.status_key,
        "kind": env.kind,
        "version": env.version,
        "repository": env.repository,
        "hash": item.hash,
        "image": item.image,
        "action": item.action,
        "source": item.source,
        "error": item.error,
        "next": str(item.failure.policy) if item.failure is not None else None,
    }


def shown_path(env: Environment) -> str:
    more = f" (+{len(env.also)} same)" if env.also else ""
    return (env.path or ".") + more


def print_plan(items: list[PlanItem], unpinned: Mapping[str, object]) -> None:
    out = console()
    grid = table(("NAME", "KIND", "PATH", "HASH", "ACTION", "IMAGE"))
    for item in items:
        env = item.env
        mark = "*" if env.path in unpinned and item.hash else ""
        grid.row(
            env.status_key,
            env.kind,
            shown_path(env),
            short(item.hash) + mark,
            item.action,
            item.image or "-",
        )
    out.print(grid.table)
    for action in ("refused", "failed"):
        shown = [(i.env.status_key, i.error) for i in items if i.action == action]
        print_errors(out, shown, action)
    print_unpinned(out, unpinned)


def print_unpinned(out: Any, unpinned: Mapping[str, object]) -> None:
    """Hashes made with bases as tagged: a sync that can resolve them hashes otherwise."""
    if not unpinned:
        return
    out.print(
        f"\n* {len(unpinned)} hashed with base images not pinned to digests: sync pins them, "
        "so its hashes differ",
        markup=False,
    )
    for path, why in sorted(unpinned.items())[:5]:
        out.print(visible(f"  {path or '.'}: {why}"), markup=False, highlight=False)
    if len(unpinned) > 5:
        out.print(f"  and {len(unpinned) - 5} more", markup=False)


def print_notes(found: Discovered) -> None:
    """The files discovery skipped, on stderr (JSON on stdout stays a list)."""
    for note in found.notes:
        say(f"skipped {note.path}: {note.text}", err=True)


def notes_line(found: Discovered) -> None:
    if found.notes:
        click.echo(
            f"{len(found.notes)} files are not environments (jobs, endpoints, CI, other assets)"
            " and were skipped; --show-skipped lists them",
            err=True,
        )


SHOW_SKIPPED = click.option(
    "--show-skipped", is_flag=True, help="List the files that are not environments, and why."
)


@click.command("plan")
@click.argument("path", default=".", type=click.Path(exists=True, file_okay=False))
@discovery_options
@registry_options(required=False)
@SHOW_SKIPPED
@click.option("--output", "-o", type=click.Choice(["table", "json"]), default="table")
def plan_command(
    path: str, discovery: Discovery, target: RegistryArgs, show_skipped: bool, output: str
) -> None:
    """List the environments in PATH with their hash, image and what a sync would do.

    Without --registry, bases are still pinned to their digests where their registries
    answer, as sync pins them; a hash made without that is marked with *.
    """
    unpinned: dict[str, Failure] = {}
    if target.registry is None:
        found = discovery.load(path)
        resolution = target.resolver().resolve(found)
        unpinned = resolution.unpinned
        items = plan(resolution.envs, failures=resolution.failures)
    else:
        where = target.target(discovery.prefix)
        found = discovery.load(path, where.prefix)
        items = target.sync(where).plan(found)
    if show_skipped:
        print_notes(found)
    if output == "json":
        click.echo(redact(json.dumps([item_json(i) for i in items], indent=2)))
    else:
        print_plan(items, unpinned)
        if not show_skipped:
            notes_line(found)
    if any(i.action in ("refused", "failed") for i in items):
        sys.exit(1)


def result_json(result: Result) -> dict[str, Any]:
    return {
        **item_json(result.item),
        "action": result.outcome,
        "digest": result.digest,
        "error": result.error,
        "next": str(result.policy) if result.policy is not None else None,
        "seconds": round(result.seconds, 3),
        "azureml": result.asset,
        "log_tail": result.log[-LOG_TAIL:],
    }


@click.command("sync")
@click.argument("path", default=".", type=click.Path(exists=True, file_okay=False))
@discovery_options
@registry_options(required=True)
@click.option("--dry-run", is_flag=True, help="Stop after the plan.")
@build_options
@click.option("--source", help="org.opencontainers.image.source (default: the checkout's origin).")
@click.option(
    "--revision", help="org.opencontainers.image.revision (default: the checkout's HEAD)."
)
@click.option(
    "--publish-workspace",
    metavar="SUBSCRIPTION/RESOURCE_GROUP/WORKSPACE",
    help="Register each verified image as an Azure ML environment version there (by digest; "
    "the spec's version, or one from the content hash); needs envship's azureml extra.",
)
@click.option(
    "--publish-registry",
    metavar="NAME",
    help="Register them in this Azure ML registry instead (shared across workspaces).",
)
@click.option(
    "--publish-endpoint",
    metavar="URL",
    help="Azure Resource Manager for publishing (default: Azure's public cloud).",
)
@click.option("--quiet", "-q", is_flag=True, help="No build output, only the summary.")
@click.option("--output", "-o", type=click.Choice(["table", "json"]), default="table")
def sync_command(
    path: str,
    discovery: Discovery,
    target: RegistryArgs,
    build: BuildArgs,
    dry_run: bool,
    source: str | None,
    revision: str | None,
    publish_workspace: str | None,
    publish_registry: str | None,
    publish_endpoint: str | None,
    quiet: bool,
    output: str,
) -> None:
    """Build and push exactly the environments in PATH whose hash is not in the registry."""
    from controller.pipeline.sync import Reporter  # noqa: PLC0415 - plan needs none of it

    where = target.target(discovery.prefix)
    found = discovery.load(path, where.prefix)
    origin = provenance(path)
    reporter = Reporter(None if quiet else lambda line: say(line, err=True))
    sync = target.sync(
        where,
        build,
        reporter,
        source=source or origin.source,
        revision=revision or origin.revision,
        dry_run=dry_run,
        publish=publish_settings(publish_workspace, publish_endpoint, publish_registry),
    )
    try:
        results = sync.run(found)
    finally:
        sync.close()
    if output == "json":
        click.echo(redact(json.dumps([result_json(r) for r in results], indent=2)))
    else:
        out = console()
        grid = table(("NAME", "HASH", "ACTION", "DIGEST", "SECONDS", "IMAGE"))
        for result in results:
            item = result.item
            grid.row(
                item.env.status_key,
                short(item.hash),
                result.outcome,
                short(result.digest),
                f"{result.seconds:.1f}",
                item.image or "-",
            )
        out.print(grid.table)
        for outcome in ("refused", "failed"):
            shown = [(r.item.env.status_key, r.error) for r in results if r.outcome == outcome]
            print_errors(out, shown, outcome)
        notes_line(found)
    if any(r.outcome in ("failed", "refused") for r in results):
        sys.exit(1)


def select(envs: list[Environment], wanted: str) -> Environment:
    wanted_path = wanted.rstrip("/") or "."
    matches = [
        e
        for e in envs
        if wanted.lower() in (e.name.lower(), e.status_key.lower())
        or wanted_path in (p or "." for p in e.paths)
    ]
    if not matches:
        names = ", ".join(sorted(e.name for e in envs)) or "none"
        raise click.UsageError(f"no environment named {wanted!r}; found: {names}")
    if len(matches) > 1:
        paths = ", ".join(e.path for e in matches)
        raise click.UsageError(f"{wanted!r} matches several environments ({paths}); give the path")
    env = matches[0]
    if env.error is not None or env.build is None:
        say(f"refused: {env.error}", err=True)
        sys.exit(1)
    return env


def build_of(env: Environment) -> BuildSpec:
    if env.build is None:  # select() has refused these already
        raise click.ClickException(f"{env.name} has no build")
    return env.build


def resolved(env: str, path: str, discovery: Discovery, target: RegistryArgs) -> BuildSpec:
    """ENV's build, with its placeholders filled and bases pinned as sync does; a base that
    cannot be pinned is said on stderr (the hash is then not sync's)."""
    chosen = select(discovery.load(path), env)
    resolution = target.resolver().resolve([chosen])
    one = resolution.envs[0]
    if one.error is not None:
        say(f"refused: {one.error}", err=True)
        sys.exit(1)
    if chosen.path in resolution.failures:
        say(f"failed: {resolution.failures[chosen.path]}", err=True)
        sys.exit(1)
    if chosen.path in resolution.unpinned:
        say(
            f"note: {resolution.unpinned[chosen.path]}; hashed with the base as tagged, "
            "so a sync that can pin it gives another hash",
            err=True,
        )
    return build_of(one)


@click.command("render")
@click.argument("env")
@click.option("--path", "path", default=".", type=click.Path(exists=True, file_okay=False))
@discovery_options
@registry_options(required=False)
def render_command(env: str, path: str, discovery: Discovery, target: RegistryArgs) -> None:
    """Print the Dockerfile envship builds for ENV (a name or a path)."""
    build = resolved(env, path, discovery, target)
    click.echo(render(build, content_hash(build)).dockerfile, nl=False)


@click.command("hash")
@click.argument("env")
@click.option("--path", "path", default=".", type=click.Path(exists=True, file_okay=False))
@discovery_options
@registry_options(required=False)
def hash_command(env: str, path: str, discovery: Discovery, target: RegistryArgs) -> None:
    """Print the content hash of ENV (a name or a path), its bases pinned as sync pins them."""
    click.echo(content_hash(resolved(env, path, discovery, target)))


@click.command("explain")
@click.argument("env")
@click.option("--path", "path", default=".", type=click.Path(exists=True, file_okay=False))
@discovery_options
@registry_options(required=True)
def explain_command(env: str, path: str, discovery: Discovery, target: RegistryArgs) -> None:
    """Say why ENV would be rebuilt: which hash inputs differ from its image in the registry."""
    where = target.target(discovery.prefix)
    found = select(discovery.load(path, where.prefix), env)
    sync = target.sync(where)
    item = sync.plan([found])[0]
    if item.action == "failed" or item.env.build is None or not item.hash:
        raise click.ClickException(item.error or "cannot be planned")
    repository = item.env.repository or ""
    if item.action == "up-to-date":
        say(f"{found.name} is up to date: {item.image} is in the registry ({item.digest}).")
        return
    if item.action == "copy":
        say(f"{found.name}: the same build exists in {item.source}; it would be copied.")
    try:
        previous = newest_image(sync, repository)
    except RegistryError as exc:
        raise click.ClickException(str(exc)) from None
    if previous is None:
        say(f"{found.name} has no image in {where.host}/{repository} yet: first build.")
        return
    tag, labels = previous
    try:
        old = json.loads(labels[LABEL_INPUTS])
    except (KeyError, ValueError):
        say(f"{found.name}: {repository}:{tag} has no envship inputs label to compare with.")
        return
    changes = differences(old, hash_input(item.env.build))
    say(f"{found.name} would be rebuilt: compared with {repository}:{tag},")
    for change in changes or ["(no difference in the inputs: the hash scheme changed)"]:
        say(f"  {change}")


def newest_image(sync: Sync, repository: str) -> tuple[str, dict[str, str]] | None:
    """The image to compare with: `latest` if there is one, else the newest hash tag."""
    registry = sync.registry
    tags = registry.tags(repository)
    if "latest" in tags:
        labels = registry.labels(repository, "latest")
        return ("latest", labels) if labels is not None else None
    candidates = []
    for tag in tags[-50:]:
        if len(tag) == HASH_TAG_LENGTH:
            labels = registry.labels(repository, tag)
            if labels:
                candidates.append((labels.get("org.opencontainers.image.created", ""), tag, labels))
    if not candidates:
        return None
    _created, tag, labels = max(candidates)
    return tag, labels


@click.command("gc")
@click.argument("path", default=".", type=click.Path(exists=True, file_okay=False))
@discovery_options
@registry_options(required=True)
@click.option(
    "--grace",
    type=click.FloatRange(0),
    default=86400.0,
    show_default=True,
    help="Seconds an image must be old before its tag may be deleted.",
)
@click.option("--dry-run", is_flag=True, help="List what would be deleted; delete nothing.")
@click.option(
    "--publish-workspace",
    metavar="SUBSCRIPTION/RESOURCE_GROUP/WORKSPACE",
    help="Keep every image an Azure ML environment version there names.",
)
@click.option(
    "--publish-registry", metavar="NAME", help="The same for an Azure ML registry's versions."
)
@click.option("--publish-endpoint", metavar="URL", help="Azure Resource Manager of another cloud.")
@click.option("--output", "-o", type=click.Choice(["table", "json"]), default="table")
def gc_command(
    path: str,
    discovery: Discovery,
    target: RegistryArgs,
    grace: float,
    dry_run: bool,
    publish_workspace: str | None,
    publish_registry: str | None,
    publish_endpoint: str | None,
    output: str,
) -> None:
    """Delete hash tags whose hash no environment in PATH has any more (after a grace period).

    Moving tags (latest, versions) are never deleted and keep the image they point at. Run with
    --dry-run first: it lists what would go.
    """
    from controller.pipeline.sync import Reporter  # noqa: PLC0415 - plan needs none of it

    where = target.target(discovery.prefix)
    envs = discovery.load(path, where.prefix)
    refused = [env for env in envs if env.error is not None]
    if refused:
        # A spec that cannot be read now may still own images: never collect on a partial view.
        raise click.ClickException(
            f"{len(refused)} environment(s) refused ({refused[0].error}); fix them before gc"
        )
    reporter = Reporter(lambda line: say(line, err=True))
    sync = target.sync(
        where,
        reporter=reporter,
        publish=publish_settings(publish_workspace, publish_endpoint, publish_registry),
    )
    try:
        found = sync.garbage(envs, grace)
    except (RegistryError, SecretError) as exc:
        raise click.ClickException(redact(str(exc))) from None
    errors = [] if dry_run else sync.delete(found)
    rows = [
        {"repository": i.repository, "tag": i.tag, "digest": i.digest, "deleted": not dry_run}
        for i in found
    ]
    if output == "json":
        click.echo(json.dumps(rows, indent=2))
    else:
        verb = "would delete" if dry_run else "deleted"
        click.echo(f"{len(found)} tag(s) {verb}:")
        for row in rows:
            say(f"  {row['repository']}:{row['tag']}  {short(str(row['digest']))}")
    for error in errors:
        say(f"failed: {error}", err=True)
    if errors:
        sys.exit(1)
