"""The `envship` command."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from controller import __version__
from controller.adapters.folder import FolderTree
from controller.adapters.forked import ForkedJobs, usable_cpus
from controller.core.discovery import DiscoveryOptions, RootError, discover
from controller.core.hashing import content_hash
from controller.core.model import BuildSpec, Environment
from controller.core.naming import validate_prefix
from controller.core.plan import PlanItem, plan
from controller.core.render import render
from controller.core.specs.common import DEFAULT_BASE_IMAGE

SHORT_HASH = 12


def console() -> Console:
    # A pipe gets long lines rather than wrapped cells, so image references stay whole.
    return Console(width=None if sys.stdout.isatty() else 240, highlight=False)


def discovery_options(f: Any) -> Any:
    f = click.option(
        "--root", default="", help="Folder inside PATH to search (default: all of PATH)."
    )(f)
    f = click.option(
        "--ignore", multiple=True, help="gitignore-style pattern of paths to skip (repeatable)."
    )(f)
    f = click.option(
        "--prefix", default="envship", show_default=True, help="Registry path prefix."
    )(f)
    return click.option(
        "--default-base-image",
        default=DEFAULT_BASE_IMAGE,
        show_default=True,
        help="Base image of the plain pip and conda forms.",
    )(f)


def load(path: str, root: str, ignore: Sequence[str], prefix: str, base: str) -> list[Environment]:
    options = DiscoveryOptions(
        root=root, ignore=tuple(ignore), prefix=prefix, default_base_image=base
    )
    try:
        validate_prefix(prefix)
        tree = FolderTree(path)
    except (ValueError, NotADirectoryError) as exc:
        raise click.UsageError(str(exc)) from None
    try:
        # Reading and hashing use every CPU: the CLI is single-threaded here, so fork is safe.
        return discover(tree, options, run_jobs=ForkedJobs(usable_cpus()))
    except RootError as exc:
        raise click.UsageError(str(exc)) from None


def item_json(item: PlanItem) -> dict[str, Any]:
    env = item.env
    return {
        "name": env.name,
        "path": env.path or ".",
        "kind": env.kind,
        "version": env.version,
        "repository": env.repository,
        "hash": item.hash,
        "image": item.image,
        "action": item.action,
        "error": item.error,
    }


def print_table(items: list[PlanItem]) -> None:
    out = console()
    table = Table(box=None, pad_edge=False)
    for column in ("NAME", "KIND", "PATH", "HASH", "ACTION", "IMAGE"):
        # Long names and paths are cut in the table (JSON keeps them whole) so no column vanishes.
        narrow = column in ("NAME", "PATH")
        table.add_column(
            column,
            no_wrap=True,
            overflow="ellipsis" if narrow else "fold",
            max_width=60 if narrow else None,
        )
    for item in items:
        env = item.env
        table.add_row(
            env.name,
            env.kind,
            env.path or ".",
            (item.hash or "").removeprefix("sha256:")[:SHORT_HASH] or "-",
            item.action,
            item.image or "-",
        )
    out.print(table)
    refused = [i for i in items if i.error]
    if refused:
        out.print(f"\n{len(refused)} refused:")
        for item in refused:
            out.print(f"  {item.error}", markup=False)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="envship")
def main() -> None:
    """Keep a container registry in step with a git repository of Azure ML environments."""


@main.command("plan")
@click.argument("path", default=".", type=click.Path(exists=True, file_okay=False))
@discovery_options
@click.option("--output", "-o", type=click.Choice(["table", "json"]), default="table")
def plan_command(
    path: str, root: str, ignore: tuple[str, ...], prefix: str, default_base_image: str, output: str
) -> None:
    """List the environments in PATH with their content hash and image."""
    items = plan(load(path, root, ignore, prefix, default_base_image))
    if output == "json":
        click.echo(json.dumps([item_json(i) for i in items], indent=2))
    else:
        print_table(items)
    if any(i.action == "refused" for i in items):
        sys.exit(1)


def select(envs: list[Environment], wanted: str) -> Environment:
    wanted_path = wanted.rstrip("/") or "."
    matches = [
        e for e in envs if e.name.lower() == wanted.lower() or (e.path or ".") == wanted_path
    ]
    if not matches:
        names = ", ".join(sorted(e.name for e in envs)) or "none"
        raise click.UsageError(f"no environment named {wanted!r}; found: {names}")
    if len(matches) > 1:
        paths = ", ".join(e.path for e in matches)
        raise click.UsageError(f"{wanted!r} matches several environments ({paths}); give the path")
    env = matches[0]
    if env.error is not None or env.build is None:
        click.echo(f"refused: {env.error}", err=True)
        sys.exit(1)
    return env


def build_of(env: Environment) -> BuildSpec:
    if env.build is None:  # select() has refused these already
        raise click.ClickException(f"{env.name} has no build")
    return env.build


@main.command("render")
@click.argument("env")
@click.option("--path", "path", default=".", type=click.Path(exists=True, file_okay=False))
@discovery_options
def render_command(
    env: str, path: str, root: str, ignore: tuple[str, ...], prefix: str, default_base_image: str
) -> None:
    """Print the Dockerfile envship builds for ENV (a name or a path)."""
    build = build_of(select(load(path, root, ignore, prefix, default_base_image), env))
    click.echo(render(build, content_hash(build)).dockerfile, nl=False)


@main.command("hash")
@click.argument("env")
@click.option("--path", "path", default=".", type=click.Path(exists=True, file_okay=False))
@discovery_options
def hash_command(
    env: str, path: str, root: str, ignore: tuple[str, ...], prefix: str, default_base_image: str
) -> None:
    """Print the content hash of ENV (a name or a path)."""
    build = build_of(select(load(path, root, ignore, prefix, default_base_image), env))
    click.echo(content_hash(build))


if __name__ == "__main__":  # pragma: no cover
    main()

__all__ = ["Path", "main"]
