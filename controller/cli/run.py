"""`envship run` (the controller, with its optional leader election) and `envship status`."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from typing import Any

import click

from controller.adapters.redact import redact
from controller.cli.options import (
    console,
    first_line,
    short_image,
    short_revision,
    table,
    visible,
)


@click.command("run")
@click.option(
    "--config",
    "config_path",
    required=True,
    envvar="ENVSHIP_CONFIG",
    metavar="FILE",
    help="The controller's configuration (YAML; ENVSHIP_<SECTION>__<KEY> overrides). "
    "Default: $ENVSHIP_CONFIG.",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
)
def run_command(config_path: str, log_level: str) -> None:
    """Run the controller: reconcile the registry with git continuously, serve webhooks,
    status, probes and metrics over HTTP. SIGTERM stops it cleanly."""
    from controller.service.config import ConfigError, load  # noqa: PLC0415 - pydantic is slow to import

    try:
        config = load(config_path)
    except ConfigError as exc:
        click.echo(f"envship: invalid configuration: {exc}", err=True)
        sys.exit(2)
    from controller.compose.service import from_config, webhook_secrets  # noqa: PLC0415
    from controller.http.app import make_app  # noqa: PLC0415
    from controller.service import logs  # noqa: PLC0415
    from controller.service.metrics import Metrics  # noqa: PLC0415

    metrics = Metrics()
    try:
        controller, store = from_config(config, metrics=metrics)
    except ValueError as exc:
        click.echo(f"envship: invalid configuration: {config_path}: {redact(str(exc))}", err=True)
        sys.exit(2)
    elector = None
    if config.leaderElection.enabled:
        try:
            elector = leader_elector(config.leaderElection, controller, port=config.http.port)
        except Exception as exc:  # LeaseError (its module loads only when enabled)
            click.echo(f"envship: leader election: {redact(str(exc))}", err=True)
            sys.exit(2)
    logs.configure(log_level.upper())
    app = make_app(
        controller,
        secrets=webhook_secrets(config, store),
        metrics=metrics,
        max_body=config.http.max_body,
        limits=http_limits(config.http),
    )
    import asyncio  # noqa: PLC0415 - only the controller runs an event loop

    try:
        finished = asyncio.run(
            serve(
                controller,
                app,
                config.http.address,
                config.http.port,
                config.intervals.grace,
                elector,
            )
        )
    except OSError as exc:
        logging.getLogger("envship").error(
            "cannot serve on port %d: %s", config.http.port, exc.strerror or exc
        )
        sys.exit(1)
    if not finished:
        # A build still runs after the grace period: its worker threads would hold the exit.
        logging.shutdown()
        os._exit(0)


EXIT_LEASE_LOST = 3
"""`envship run` lost the leader lease (`lease_lost`)."""
NO_LEADER_ELECTION_EXTRA = (
    "needs the Kubernetes client, which this installation of envship does not have: install "
    "envship with its leader-election extra (pip install 'envship[leader-election]'); the "
    "controller image has it unless it was built with --build-arg EXTRAS="
)


def leader_elector(section: Any, controller: Any, *, port: int) -> Any:
    """The elector for the `leaderElection` section: it starts `controller` once it holds the
    Lease and ends the process if it loses it (`lease_lost`). While it leads it publishes
    `http://<POD_IP>:<port>` in the Lease (nothing without `POD_IP`), where followers relay
    webhooks. Raises LeaseError when there is no namespace or no Kubernetes credentials, or
    when `POD_IP` is not an IP address, and ModuleNotFoundError (saying what to install) when
    envship was installed without its `leader-election` extra."""
    try:
        from controller.adapters.lease import (  # noqa: PLC0415 - kubernetes is slow to import
            LeaderElector,
            LeaseSettings,
            coordination_api,
            default_address,
            default_identity,
            default_namespace,
        )
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] != "kubernetes":
            raise
        raise ModuleNotFoundError(NO_LEADER_ELECTION_EXTRA, name=exc.name) from None

    settings = LeaseSettings(
        name=section.lease_name,
        namespace=section.namespace or default_namespace(),
        identity=section.identity or default_identity(),
        lease_duration=section.lease_duration,
        renew_deadline=section.renew_deadline,
        retry_period=section.retry_period,
        address=default_address(port),
    )

    def started() -> None:
        if not controller.stopping():  # SIGTERM came first: stay stopped
            controller.start()

    elector = LeaderElector(
        settings, coordination_api(), on_started_leading=started, on_stopped_leading=lease_lost
    )
    controller.election = elector
    return elector


def lease_lost() -> None:
    """The leader lease was lost (not renewed within `renewDeadlineSeconds`, or another replica
    holds it): end the process at once, with status `EXIT_LEASE_LOST`, as controller-runtime
    does; Kubernetes restarts the container, which campaigns again as a follower.

    Why not stop the controller cleanly and stay up as a follower: a clean stop lets the running
    reconcile finish (up to `intervals.grace`, 300 s by default) while another replica already
    leads, so two replicas would build and push at the same time, and a build runs in threads
    that cannot be interrupted. Exiting stops them now, and the restarted process keeps nothing
    from its time as leader (backoffs, caches, a half-done reconcile). What is lost is cheap:
    builds are idempotent, and the new leader redoes one that was cut short. The lease is not
    released: another replica may hold it already."""
    logging.getLogger("envship").error(
        "lost the leader lease: exiting (status %d) so that no two replicas reconcile",
        EXIT_LEASE_LOST,
    )
    logging.shutdown()
    os._exit(EXIT_LEASE_LOST)


def http_limits(section: Any) -> Any:
    from controller.http.server import Limits  # noqa: PLC0415

    return Limits(
        header_timeout=section.header_timeout,
        body_timeout=section.body_timeout,
        idle_timeout=section.idle_timeout,
        max_connections=section.max_connections,
        body_memory=section.body_memory,
    )


async def serve(
    controller: Any, app: Any, address: str, port: int, grace: float, elector: Any = None
) -> bool:
    """Serve `app` until SIGTERM or SIGINT, then stop `controller` (readiness turns 503 at
    once, triggers stop, a running reconcile gets `grace` seconds). True when it finished.

    With an `elector` (leader election) HTTP is served at once, the controller starts when the
    elector holds the Lease, and after the controller stopped the Lease is released, so another
    replica takes over within about one retry period."""
    import asyncio  # noqa: PLC0415 - only the controller runs an event loop

    from controller.http.app import start_server  # noqa: PLC0415

    log = logging.getLogger("envship")
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    runner = await start_server(app, host=address, port=port)
    log.info("serving HTTP on %s port %d", address or "every address", port)
    if elector is None:
        controller.start()
    else:
        elector.start()
    await stop.wait()
    log.info("stopping: triggers stopped, a running reconcile gets %.0f s", grace)
    finished = bool(await loop.run_in_executor(None, controller.stop, grace))
    if elector is not None:
        await loop.run_in_executor(None, elector.stop)  # releases the lease if it holds it
    await runner.cleanup()
    log.info("stopped" if finished else "stopped with a reconcile still running")
    return finished


def problem_of(error: str | None) -> str | None:
    """An error without the file it starts with (`file: problem`): the table has no room for
    both, and the environment's row says where it is (`/status` keeps the whole message)."""
    if not error:
        return error
    head, sep, tail = error.partition(": ")
    return tail if sep and " " not in head else error


def print_status(data: dict[str, Any]) -> None:
    out = console()
    stale = f"  STALE: {data.get('stale_reason')}" if data.get("stale") else ""
    out.print(
        visible(
            f"revision {short_revision(data.get('revision'))}, "
            f"last reconcile {data.get('last_reconcile') or 'never'}{stale}"
        ),
        markup=False,
    )
    election = data.get("leader_election")
    if isinstance(election, dict):
        role = "leading" if election.get("leading") else "standing by"
        address = election.get("leader_address")
        out.print(
            visible(
                f"lease {election.get('lease')}: {election.get('identity')} is {role}; "
                f"leader {election.get('leader') or 'none'}" + (f" at {address}" if address else "")
            ),
            markup=False,
        )
    grid = table(
        ("NAME", "PHASE", "REVISION", "IMAGE", "LAST ERROR"),
        {"NAME": 24, "PHASE": 8, "REVISION": 22, "IMAGE": 34, "LAST ERROR": 28},
    )
    for env in data.get("environments", []):
        grid.row(
            str(env.get("name")),
            str(env.get("phase")),
            short_revision(env.get("revision")),
            short_image(env.get("image"), env.get("digest")),
            first_line(problem_of(env.get("last_error"))),
        )
    out.print(grid.table)


@click.command("status")
@click.option(
    "--url",
    default="http://127.0.0.1:8080",
    show_default=True,
    help="Where the controller serves HTTP.",
)
@click.option("--output", "-o", type=click.Choice(["table", "json"]), default="table")
def status_command(url: str, output: str) -> None:
    """Show the controller's status: one row per environment."""
    import requests  # noqa: PLC0415

    try:
        response = requests.get(url.rstrip("/") + "/status", timeout=10)
        response.raise_for_status()
        data = response.json()
    except (requests.RequestException, ValueError) as exc:
        reason = describe_http_error(exc)
        click.echo(f"envship: the status could not be read from {url}: {reason}", err=True)
        sys.exit(1)
    if output == "json":
        click.echo(redact(json.dumps(data, indent=2)))
    else:
        print_status(data)


def describe_http_error(exc: Exception) -> str:
    import requests  # noqa: PLC0415

    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        return f"HTTP {exc.response.status_code}"
    if isinstance(exc, requests.ConnectionError):
        return "connection failed"
    if isinstance(exc, requests.Timeout):
        return "timed out"
    return type(exc).__name__
