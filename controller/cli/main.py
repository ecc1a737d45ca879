"""The `envship` command: a group that imports a command's module only when that command runs
(or shows its own help), so `envship --version` and `envship --help` load click alone and each
command loads what it uses (`bench/bench_startup.py` measures the start-up)."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from gettext import gettext
from typing import Any

import click

from controller import __version__

try:
    from click.exceptions import NoSuchCommand
except ImportError:  # pragma: no cover - click before 8.4 suggests no close names
    NoSuchCommand = None  # type: ignore[assignment, misc]

COMMANDS: Mapping[str, tuple[str, str]] = {
    "explain": (
        "controller.cli.commands:explain_command",
        "Say why ENV would be rebuilt: which hash inputs differ from its image in the registry.",
    ),
    "gc": (
        "controller.cli.commands:gc_command",
        "Delete hash tags whose hash no environment in PATH has any more (after a grace period).",
    ),
    "hash": (
        "controller.cli.commands:hash_command",
        "Print the content hash of ENV (a name or a path), its bases pinned as sync pins them.",
    ),
    "plan": (
        "controller.cli.commands:plan_command",
        "List the environments in PATH with their hash, image and what a sync would do.",
    ),
    "render": (
        "controller.cli.commands:render_command",
        "Print the Dockerfile envship builds for ENV (a name or a path).",
    ),
    "run": (
        "controller.cli.run:run_command",
        "Run the controller: reconcile the registry with git continuously, serve webhooks, "
        "status, probes and metrics over HTTP. SIGTERM stops it cleanly.",
    ),
    "status": (
        "controller.cli.run:status_command",
        "Show the controller's status: one row per environment.",
    ),
    "sync": (
        "controller.cli.commands:sync_command",
        "Build and push exactly the environments in PATH whose hash is not in the registry.",
    ),
    "watch": (
        "controller.cli.watch:watch_command",
        "Sync PATH with the registry as `sync` does, then again after every burst of changes "
        "under PATH (for development). Hidden files and folders are ignored; a change during a "
        "sync makes one more. Ctrl-C or SIGTERM stops it (a running sync finishes first).",
    ),
}
"""Command name -> ("module:attribute" of its click command, the first paragraph of its help,
which `envship --help` lists without importing the module; a test checks they agree)."""


def load(where: str) -> click.Command:
    """The click command at "module:attribute"."""
    module, _, attribute = where.partition(":")
    command = getattr(importlib.import_module(module), attribute)
    if not isinstance(command, click.Command):
        raise TypeError(f"{where} is not a click command")
    return command


class LazyGroup(click.Group):
    """A click group whose commands are named in a table (`lazy`: name -> ("module:attribute",
    summary)) and imported when one is run; its help lists them from the summaries."""

    def __init__(self, *args: Any, lazy: Mapping[str, tuple[str, str]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None and cmd_name in self.lazy:
            command = load(self.lazy[cmd_name][0])
        return command

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        try:
            return super().resolve_command(ctx, args)
        except click.UsageError as exc:
            # click suggests close names from the commands it holds: none are loaded yet.
            if NoSuchCommand is None or not isinstance(exc, NoSuchCommand) or exc.possibilities:
                raise
            possible = self.list_commands(ctx)
            raise NoSuchCommand(exc.command_name, possibilities=possible, ctx=ctx) from None

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The commands' section of the help, as click writes it, from the summaries."""
        commands = [(name, self.summary(ctx, name)) for name in self.list_commands(ctx)]
        shown = [(name, command) for name, command in commands if not command.hidden]
        if not shown:
            return
        limit = formatter.width - 6 - max(len(name) for name, _ in shown)
        rows = [(name, command.get_short_help_str(limit)) for name, command in shown]
        with formatter.section(gettext("Commands")):
            formatter.write_dl(rows)

    def summary(self, ctx: click.Context, name: str) -> click.Command:
        """The command itself when it is loaded, else a stand-in with its summary as help."""
        command = super().get_command(ctx, name)
        return command if command is not None else click.Command(name, help=self.lazy[name][1])


@click.group(cls=LazyGroup, lazy=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="envship")
def main() -> None:
    """Keep a container registry in step with a git repository of Azure ML environments."""


if __name__ == "__main__":  # pragma: no cover
    main()
