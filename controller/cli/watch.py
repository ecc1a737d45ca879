"""`envship watch`: sync a folder, then again after every burst of changes (development)."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Sequence
from typing import Any

import click

from controller import compose
from controller.adapters.folder import FolderTree
from controller.adapters.gitinfo import provenance
from controller.cli.options import (
    BuildArgs,
    Discovery,
    RegistryArgs,
    build_options,
    discovery_options,
    first_line,
    registry_options,
    say,
    short_reference,
)
from controller.core.discovery import discover
from controller.pipeline.sync import Reporter, Result

WATCH_OUTCOMES = ("built", "copied", "up-to-date", "failed")


@click.command("watch")
@click.argument("path", default=".", type=click.Path(exists=True, file_okay=False))
@discovery_options
@registry_options(required=True)
@click.option(
    "--debounce",
    type=click.FloatRange(0, 60),
    default=0.3,
    show_default=True,
    help="Seconds without a change before a sync starts (a burst of writes is one sync).",
)
@build_options
@click.option("--quiet", "-q", is_flag=True, help="No build output, only a summary per sync.")
def watch_command(
    path: str,
    discovery: Discovery,
    target: RegistryArgs,
    build: BuildArgs,
    debounce: float,
    quiet: bool,
) -> None:
    """Sync PATH with the registry as `sync` does, then again after every burst of changes
    under PATH (for development). Hidden files and folders are ignored; a change during a sync
    makes one more. Ctrl-C or SIGTERM stops it (a running sync finishes first)."""
    import time  # noqa: PLC0415

    from controller.adapters.watch import Round, Watcher  # noqa: PLC0415 - watchdog

    where = target.target(discovery.prefix)
    # The first discovery checks --root and --prefix, forking its jobs before any thread runs;
    # the later ones run beside the watcher's threads, so in this process.
    preloaded = [discovery.load(path, where.prefix)]
    options = discovery.options(where.prefix)
    runner = compose.runner(target.wiring(where, build, provenance(path).source))
    reporter = Reporter(None if quiet else lambda line: say(line, err=True))

    def one_round(this: Round) -> None:
        started = time.monotonic()
        if this.changes:
            more = len(this.changes) - 3
            shown = ", ".join(this.changes[:3]) + (f" and {more} more" if more > 0 else "")
            say(f"sync {this.number}: changed {shown}")
        else:
            say(f"sync {this.number}: {path}")
        try:
            envs = preloaded.pop() if preloaded else discover(FolderTree(path), options)
            # fresh registry clients each time, as `envship sync` would have
            results = runner.run(
                envs, revision=provenance(path).revision or "", fresh=True, reporter=reporter
            )
        except Exception as exc:  # a development loop outlives a bad moment
            say(f"sync {this.number} failed: {type(exc).__name__}: {exc}")
            return
        print_watch_round(this.number, results, time.monotonic() - started)
        say(f"watching {path} (Ctrl-C to stop)")

    watcher = Watcher(path, one_round, debounce=debounce)

    def stop() -> None:
        if not watcher.idle():
            click.echo("stopping: the running sync finishes first (Ctrl-C again to quit now)")
        watcher.stop()
        runner.close()
        click.echo("stopped")

    until_signal(watcher.start, stop)


def print_watch_round(number: int, results: Sequence[Result], seconds: float) -> None:
    counts = {o: sum(1 for r in results if r.outcome == o) for o in WATCH_OUTCOMES}
    summary = ", ".join(f"{n} {o}" for o, n in counts.items() if n) or "no environments"
    click.echo(f"sync {number} done in {seconds:.1f} s: {summary}")
    for result in results:
        item = result.item
        if result.outcome in ("built", "copied"):
            image = short_reference(item.image, result.digest)
            say(f"  {result.outcome} {item.env.status_key}: {image}")
        elif result.outcome == "failed":
            say(f"  failed {item.env.status_key}: {first_line(result.error, 200)}")


def until_signal(start: Callable[[], Any], stop: Callable[[], Any]) -> None:
    """`start()`, wait for SIGINT or SIGTERM, `stop()`; a second signal during `stop()` ends
    the process at once. The signal handlers from before are restored after."""
    import threading  # noqa: PLC0415

    stopping = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        if stopping.is_set():  # do not wait for the running sync
            os.write(2, b"envship: stopped at once\n")
            os._exit(130)
        stopping.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        start()
        while not stopping.wait(0.5):
            pass
        stop()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
