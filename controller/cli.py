"""The `envship` command."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import click

from controller import __version__
from controller.adapters.folder import FolderTree
from controller.adapters.forked import ForkedJobs, usable_cpus
from controller.adapters.gitinfo import provenance
from controller.adapters.redact import redact
from controller.adapters.registries import RegistryPool, RegistrySettings
from controller.adapters.registry import RegistryError
from controller.adapters.secrets import CredentialRefs, SecretError, SecretRef, SecretStore
from controller.core.discovery import DiscoveryOptions, RootError, discover
from controller.core.explain import differences
from controller.core.hashing import content_hash, hash_input
from controller.core.model import BuildSpec, Environment
from controller.core.naming import validate_prefix
from controller.core.plan import PlanItem, plan
from controller.core.render import LABEL_INPUTS, render
from controller.core.specs.common import DEFAULT_BASE_IMAGE
from controller.sync import Reporter, Result, Sync, SyncOptions, Target

SHORT_HASH = 12
HASH_TAG_LENGTH = 32
LOG_TAIL = 20


def console() -> Any:
    from rich.console import Console  # noqa: PLC0415 - rich is slow to import; JSON needs none

    # A pipe gets long lines rather than wrapped cells, so image references stay whole.
    return Console(width=None if sys.stdout.isatty() else 240, highlight=False)


def table(columns: Sequence[str]) -> Any:
    from rich.table import Table  # noqa: PLC0415

    grid = Table(box=None, pad_edge=False)
    for column in columns:
        # Long names and paths are cut in the table (JSON keeps them whole) so no column vanishes.
        narrow = column in ("NAME", "PATH")
        grid.add_column(
            column,
            no_wrap=True,
            overflow="ellipsis" if narrow else "fold",
            max_width=60 if narrow else None,
        )
    return grid


@dataclass(frozen=True)
class Discovery:
    """What the discovery options say; `load(path)` finds the environments under PATH."""

    root: str
    ignore: tuple[str, ...]
    prefix: str
    default_base_image: str

    def load(self, path: str, prefix: str | None = None) -> list[Environment]:
        prefix = self.prefix if prefix is None else prefix
        options = DiscoveryOptions(
            root=self.root,
            ignore=self.ignore,
            prefix=prefix,
            default_base_image=self.default_base_image,
        )
        try:
            validate_prefix(prefix)
            tree = FolderTree(path)
        except (ValueError, NotADirectoryError) as exc:
            raise click.UsageError(str(exc)) from None
        try:
            # Reading and hashing use every CPU: no thread runs yet, so fork is safe here.
            return discover(tree, options, run_jobs=ForkedJobs(usable_cpus()))
        except RootError as exc:
            raise click.UsageError(str(exc)) from None


def collapse(
    names: Sequence[str], into: str, build: Callable[..., Any]
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Hand a command the options `names` as one object built by `build`, under `into`."""

    def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(f)
        def command(*args: Any, **kwargs: Any) -> Any:
            kwargs[into] = build(**{name: kwargs.pop(name) for name in names})
            return f(*args, **kwargs)

        return command

    return decorate


def discovery_options(f: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--root", default="", help="Folder inside PATH to search (default: all)."),
        click.option(
            "--ignore", multiple=True, help="gitignore-style pattern to skip (repeatable)."
        ),
        click.option(
            "--prefix",
            default="envship",
            show_default=True,
            help="Registry path prefix (a prefix in --registry wins).",
        ),
        click.option(
            "--default-base-image",
            default=DEFAULT_BASE_IMAGE,
            show_default=True,
            help="Base image of the plain pip and conda forms.",
        ),
    ]
    f = collapse(("root", "ignore", "prefix", "default_base_image"), "discovery", Discovery)(f)
    for option in reversed(options):
        f = option(f)
    return f


def registry_options(required: bool) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
        options = [
            click.option(
                "--registry",
                "registry",
                required=required,
                help="Target registry: host[:port][/prefix]. Loopback hosts may speak plain HTTP.",
            ),
            click.option(
                "--ca-file", help="CA bundle that registry certificates are checked with."
            ),
            click.option(
                "--plain-http",
                "plain_http",
                multiple=True,
                help="Allow plain HTTP to this non-loopback registry host (repeatable).",
            ),
            click.option(
                "--username", help="Target registry user: a secret reference (env:NAME, file:PATH)."
            ),
            click.option("--password", help="Target registry password: a secret reference."),
            click.option(
                "--acr-identity",
                is_flag=True,
                help="Sign in to the target ACR with an Entra identity (DefaultAzureCredential).",
            ),
            click.option(
                "--base-auth",
                multiple=True,
                metavar="HOST=USER_REF,PASS_REF",
                help="Credentials for a base image registry, as secret references (repeatable).",
            ),
            click.option(
                "--secret-ttl",
                type=click.FloatRange(0),
                default=300.0,
                show_default=True,
                help="Seconds a secret value is kept before it is read from its source again.",
            ),
            click.option(
                "--no-resolve-base",
                is_flag=True,
                help="Do not pin base images to their digests (offline use).",
            ),
        ]
        f = collapse(REGISTRY_OPTIONS, "target", RegistryArgs)(f)
        for option in reversed(options):
            f = option(f)
        return f

    return decorate


BUILD_OPTIONS = ("jobs", "moving_tags", "tag_version", "private_indexes", "index_auth")


@dataclass(frozen=True)
class BuildArgs:
    """What the build options say (sync and watch)."""

    jobs: int | None
    moving_tags: tuple[str, ...]
    tag_version: bool
    private_indexes: tuple[str, ...]
    index_auth: tuple[str, ...]

    def options(self, **more: Any) -> SyncOptions:
        options = SyncOptions(
            moving_tags=self.moving_tags,
            tag_version=self.tag_version,
            private_indexes=self.private_indexes,
            index_credentials=credential_map(self.index_auth, "--index-auth"),
            **more,
        )
        if self.jobs:
            options.jobs = self.jobs
        return options


def build_options(f: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option(
            "--jobs", "-j", type=click.IntRange(1, 64), help="Builds in parallel (default: CPUs/2)."
        ),
        click.option(
            "--tag",
            "moving_tags",
            multiple=True,
            help="Moving tag to update after a push, e.g. latest.",
        ),
        click.option(
            "--tag-version", is_flag=True, help="Also tag each image with its spec's version."
        ),
        click.option(
            "--private-index",
            "private_indexes",
            multiple=True,
            metavar="URL",
            help="A private package index served to builds as PIP_EXTRA_INDEX_URL (repeatable).",
        ),
        click.option(
            "--index-auth",
            multiple=True,
            metavar="HOST=USER_REF,PASS_REF",
            help="Credentials of a private index host, as secret references (repeatable).",
        ),
    ]
    f = collapse(BUILD_OPTIONS, "build", BuildArgs)(f)
    for option in reversed(options):
        f = option(f)
    return f


def credential_map(entries: Sequence[str], option: str) -> dict[str, CredentialRefs]:
    """`HOST=USER_REF,PASS_REF` entries -> host: references."""
    found: dict[str, CredentialRefs] = {}
    for entry in entries:
        host, sep, refs = entry.partition("=")
        user_ref, comma, pass_ref = refs.partition(",")
        if not sep or not comma:
            raise click.UsageError(f"{option} {host}=...: give HOST=USER_REF,PASS_REF")
        try:
            found[host] = CredentialRefs(SecretRef.parse(user_ref), SecretRef.parse(pass_ref))
        except SecretError as exc:
            raise click.UsageError(f"{option} {host}: {exc}") from None
    return found


REGISTRY_OPTIONS = (
    "registry", "ca_file", "plain_http", "username", "password", "acr_identity", "base_auth",
    "secret_ttl", "no_resolve_base",
)  # fmt: skip


@dataclass(frozen=True)
class RegistryArgs:
    """What the registry options say."""

    registry: str | None
    ca_file: str | None
    plain_http: tuple[str, ...]
    username: str | None
    password: str | None
    acr_identity: bool
    base_auth: tuple[str, ...]
    secret_ttl: float
    no_resolve_base: bool

    def target(self, prefix: str) -> Target:
        if self.registry is None:
            raise click.UsageError("--registry is required")
        try:
            target = Target.parse(self.registry, prefix)
            validate_prefix(target.prefix)
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
        return target

    def settings(self, target: Target) -> RegistrySettings:
        credentials = credential_map(self.base_auth, "--base-auth")
        username, password = self.username, self.password
        if username or password:
            if not (username and password):
                raise click.UsageError("--username and --password go together")
            try:
                credentials[target.host] = CredentialRefs(
                    SecretRef.parse(username), SecretRef.parse(password)
                )
            except SecretError as exc:
                raise click.UsageError(str(exc)) from None
        return RegistrySettings(
            ca_file=self.ca_file,
            plain_http=frozenset(self.plain_http),
            credentials=credentials,
            entra=frozenset({target.host}) if self.acr_identity else frozenset(),
        )

    def sync(
        self, target: Target, options: SyncOptions | None = None, reporter: Reporter | None = None
    ) -> Sync:
        """A sync against the target, with the secret store the credentials come from."""
        settings = self.settings(target)
        store = SecretStore(self.secret_ttl, settings.credential_factory, settings.ca_file)
        options = options or SyncOptions()
        options.resolve_bases = not self.no_resolve_base
        return Sync(target, RegistryPool(settings, store), options, reporter)


def short(content: str | None) -> str:
    return (content or "").removeprefix("sha256:")[:SHORT_HASH] or "-"


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
        "source": item.source,
        "error": item.error,
    }


def print_plan(items: list[PlanItem]) -> None:
    out = console()
    grid = table(("NAME", "KIND", "PATH", "HASH", "ACTION", "IMAGE"))
    for item in items:
        env = item.env
        grid.add_row(
            env.name, env.kind, env.path or ".", short(item.hash), item.action, item.image or "-"
        )
    out.print(grid)
    print_errors(out, [(i.env.name, i.error) for i in items], "refused")


def print_errors(out: Any, errors: Sequence[tuple[str, str | None]], label: str) -> None:
    failed = [(name, error) for name, error in errors if error]
    if failed:
        out.print(f"\n{len(failed)} {label}:")
        for name, error in failed:
            out.print(redact(f"  {name}: {error}"), markup=False)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="envship")
def main() -> None:
    """Keep a container registry in step with a git repository of Azure ML environments."""


@main.command("plan")
@click.argument("path", default=".", type=click.Path(exists=True, file_okay=False))
@discovery_options
@registry_options(required=False)
@click.option("--output", "-o", type=click.Choice(["table", "json"]), default="table")
def plan_command(path: str, discovery: Discovery, target: RegistryArgs, output: str) -> None:
    """List the environments in PATH with their hash, image and what a sync would do."""
    if target.registry is None:
        items = plan(discovery.load(path))
    else:
        where = target.target(discovery.prefix)
        items = target.sync(where).plan(discovery.load(path, where.prefix))
    if output == "json":
        click.echo(redact(json.dumps([item_json(i) for i in items], indent=2)))
    else:
        print_plan(items)
    if any(i.action in ("refused", "failed") for i in items):
        sys.exit(1)


def result_json(result: Result) -> dict[str, Any]:
    return {
        **item_json(result.item),
        "action": result.outcome,
        "digest": result.digest,
        "error": result.error,
        "seconds": round(result.seconds, 3),
        "log_tail": result.log[-LOG_TAIL:],
    }


@main.command("sync")
@click.argument("path", default=".", type=click.Path(exists=True, file_okay=False))
@discovery_options
@registry_options(required=True)
@click.option("--dry-run", is_flag=True, help="Stop after the plan.")
@build_options
@click.option("--source", help="org.opencontainers.image.source (default: the checkout's origin).")
@click.option(
    "--revision", help="org.opencontainers.image.revision (default: the checkout's HEAD)."
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
    quiet: bool,
    output: str,
) -> None:
    """Build and push exactly the environments in PATH whose hash is not in the registry."""
    where = target.target(discovery.prefix)
    envs = discovery.load(path, where.prefix)
    found = provenance(path)
    options = build.options(
        dry_run=dry_run, source=source or found.source, revision=revision or found.revision
    )
    reporter = Reporter(None if quiet else lambda line: click.echo(line, err=True))
    sync = target.sync(where, options, reporter)
    try:
        results = sync.run(envs)
    finally:
        sync.close()
    if output == "json":
        click.echo(redact(json.dumps([result_json(r) for r in results], indent=2)))
    else:
        out = console()
        grid = table(("NAME", "HASH", "ACTION", "DIGEST", "SECONDS", "IMAGE"))
        for result in results:
            item = result.item
            grid.add_row(
                item.env.name,
                short(item.hash),
                result.outcome,
                short(result.digest),
                f"{result.seconds:.1f}",
                item.image or "-",
            )
        out.print(grid)
        print_errors(out, [(r.item.env.name, r.error) for r in results], "failed")
    if any(r.outcome == "failed" for r in results):
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
def render_command(env: str, path: str, discovery: Discovery) -> None:
    """Print the Dockerfile envship builds for ENV (a name or a path)."""
    found = discovery.load(path)
    build = build_of(select(found, env))
    click.echo(render(build, content_hash(build)).dockerfile, nl=False)


@main.command("hash")
@click.argument("env")
@click.option("--path", "path", default=".", type=click.Path(exists=True, file_okay=False))
@discovery_options
def hash_command(env: str, path: str, discovery: Discovery) -> None:
    """Print the content hash of ENV (a name or a path)."""
    found = discovery.load(path)
    click.echo(content_hash(build_of(select(found, env))))


@main.command("explain")
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
        click.echo(f"{found.name} is up to date: {item.image} is in the registry ({item.digest}).")
        return
    if item.action == "copy":
        click.echo(f"{found.name}: the same build exists in {item.source}; it would be copied.")
    try:
        previous = newest_image(sync, repository)
    except RegistryError as exc:
        raise click.ClickException(str(exc)) from None
    if previous is None:
        click.echo(f"{found.name} has no image in {where.host}/{repository} yet: first build.")
        return
    tag, labels = previous
    try:
        old = json.loads(labels[LABEL_INPUTS])
    except (KeyError, ValueError):
        click.echo(f"{found.name}: {repository}:{tag} has no envship inputs label to compare with.")
        return
    changes = differences(old, hash_input(item.env.build))
    click.echo(f"{found.name} would be rebuilt: compared with {repository}:{tag},")
    for change in changes or ["(no difference in the inputs: the hash scheme changed)"]:
        click.echo(f"  {change}")


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


@main.command("gc")
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
@click.option("--output", "-o", type=click.Choice(["table", "json"]), default="table")
def gc_command(
    path: str, discovery: Discovery, target: RegistryArgs, grace: float, dry_run: bool, output: str
) -> None:
    """Delete hash tags whose hash no environment in PATH has any more (after a grace period).

    Moving tags (latest, versions) are never deleted and keep the image they point at. Run with
    --dry-run first: it lists what would go.
    """
    where = target.target(discovery.prefix)
    envs = discovery.load(path, where.prefix)
    refused = [env for env in envs if env.error is not None]
    if refused:
        # A spec that cannot be read now may still own images: never collect on a partial view.
        raise click.ClickException(
            f"{len(refused)} environment(s) refused ({refused[0].error}); fix them before gc"
        )
    reporter = Reporter(lambda line: click.echo(line, err=True))
    sync = target.sync(where, reporter=reporter)
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
            click.echo(f"  {row['repository']}:{row['tag']}  {short(str(row['digest']))}")
    for error in errors:
        click.echo(f"failed: {error}", err=True)
    if errors:
        sys.exit(1)


# -- the controller --------------------------------------------------------------------------


@main.command("run")
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
    from controller.config import ConfigError, load  # noqa: PLC0415 - pydantic is slow to import

    try:
        config = load(config_path)
    except ConfigError as exc:
        click.echo(f"envship: invalid configuration: {exc}", err=True)
        sys.exit(2)
    from controller import logs  # noqa: PLC0415
    from controller.controller import from_config, webhook_secrets  # noqa: PLC0415
    from controller.web import Metrics, make_app  # noqa: PLC0415

    metrics = Metrics()
    try:
        controller, store = from_config(config, metrics=metrics)
    except ValueError as exc:
        click.echo(f"envship: invalid configuration: {config_path}: {redact(str(exc))}", err=True)
        sys.exit(2)
    elector = None
    if config.leaderElection.enabled:
        try:
            elector = leader_elector(config.leaderElection, controller)
        except Exception as exc:  # LeaseError (its module loads only when enabled)
            click.echo(f"envship: leader election: {redact(str(exc))}", err=True)
            sys.exit(2)
    logs.configure(log_level.upper())
    app = make_app(
        controller,
        secrets=webhook_secrets(config, store),
        metrics=metrics,
        max_body=config.http.max_body,
    )
    try:
        finished = asyncio.run(
            serve(controller, app, config.http.port, config.intervals.grace, elector)
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


def leader_elector(section: Any, controller: Any) -> Any:
    """The elector for the `leaderElection` section: it starts `controller` once it holds the
    Lease and ends the process if it loses it (`lease_lost`). Raises LeaseError when there is no
    namespace or no Kubernetes credentials."""
    from controller.adapters.lease import (  # noqa: PLC0415 - kubernetes is slow to import
        LeaderElector,
        LeaseSettings,
        coordination_api,
        default_identity,
        default_namespace,
    )

    settings = LeaseSettings(
        name=section.lease_name,
        namespace=section.namespace or default_namespace(),
        identity=section.identity or default_identity(),
        lease_duration=section.lease_duration,
        renew_deadline=section.renew_deadline,
        retry_period=section.retry_period,
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


async def serve(controller: Any, app: Any, port: int, grace: float, elector: Any = None) -> bool:
    """Serve `app` until SIGTERM or SIGINT, then stop `controller` (readiness turns 503 at
    once, triggers stop, a running reconcile gets `grace` seconds). True when it finished.

    With an `elector` (leader election) HTTP is served at once, the controller starts when the
    elector holds the Lease, and after the controller stopped the Lease is released, so another
    replica takes over within about one retry period."""
    from controller.web import start_server  # noqa: PLC0415

    log = logging.getLogger("envship")
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    runner = await start_server(app, host="0.0.0.0", port=port)  # noqa: S104 - webhooks come from outside
    log.info("serving HTTP on port %d", port)
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


def short_revision(revision: str | None) -> str:
    """`main@sha1:<40 hex>` -> `main@sha1:<12 hex>`."""
    if not revision:
        return "-"
    head, sep, sha = revision.rpartition("sha1:")
    return f"{head}{sep}{sha[:SHORT_HASH]}" if sep else revision


def short_reference(image: str | None, digest: str | None) -> str:
    if not image:
        return "-"
    return f"{image}@sha256:{short(digest)}" if digest else image


def first_line(text: str | None, width: int = 100) -> str:
    if not text:
        return "-"
    line = text.strip().splitlines()[0] if text.strip() else "-"
    return line if len(line) <= width else line[: width - 3] + "..."


def print_status(data: dict[str, Any]) -> None:
    out = console()
    stale = f"  STALE: {data.get('stale_reason')}" if data.get("stale") else ""
    out.print(
        f"revision {short_revision(data.get('revision'))}, "
        f"last reconcile {data.get('last_reconcile') or 'never'}{stale}",
        markup=False,
    )
    election = data.get("leader_election")
    if isinstance(election, dict):
        role = "leading" if election.get("leading") else "standing by"
        out.print(
            f"lease {election.get('lease')}: {election.get('identity')} is {role}; "
            f"leader {election.get('leader') or 'none'}",
            markup=False,
        )
    grid = table(("NAME", "PHASE", "REVISION", "IMAGE@DIGEST", "LAST ERROR"))
    for env in data.get("environments", []):
        grid.add_row(
            str(env.get("name")),
            str(env.get("phase")),
            short_revision(env.get("revision")),
            short_reference(env.get("image"), env.get("digest")),
            first_line(env.get("last_error")),
        )
    out.print(grid)


@main.command("status")
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


# -- watching a folder (development) -----------------------------------------------------------

WATCH_OUTCOMES = ("built", "copied", "up-to-date", "failed")


@main.command("watch")
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
    from controller.controller import SyncRunner  # noqa: PLC0415

    where = target.target(discovery.prefix)
    # The first discovery checks --root and --prefix, forking its jobs before any thread runs;
    # the later ones run beside the watcher's threads, so in this process.
    preloaded = [discovery.load(path, where.prefix)]
    options = DiscoveryOptions(
        root=discovery.root,
        ignore=discovery.ignore,
        prefix=where.prefix,
        default_base_image=discovery.default_base_image,
    )
    settings = target.settings(where)
    store = SecretStore(target.secret_ttl, settings.credential_factory, settings.ca_file)
    sync_options = build.options(
        resolve_bases=not target.no_resolve_base, source=provenance(path).source
    )
    runner = SyncRunner(where, lambda: RegistryPool(settings, store), sync_options)
    reporter = Reporter(None if quiet else lambda line: click.echo(line, err=True))

    def one_round(this: Round) -> None:
        started = time.monotonic()
        if this.changes:
            more = len(this.changes) - 3
            shown = ", ".join(this.changes[:3]) + (f" and {more} more" if more > 0 else "")
            click.echo(f"sync {this.number}: changed {shown}")
        else:
            click.echo(f"sync {this.number}: {path}")
        try:
            envs = preloaded.pop() if preloaded else discover(FolderTree(path), options)
            # fresh registry clients each time, as `envship sync` would have
            results = runner.run(
                envs, revision=provenance(path).revision or "", fresh=True, reporter=reporter
            )
        except Exception as exc:  # a development loop outlives a bad moment
            click.echo(redact(f"sync {this.number} failed: {type(exc).__name__}: {exc}"))
            return
        print_watch_round(this.number, results, time.monotonic() - started)
        click.echo(f"watching {path} (Ctrl-C to stop)")

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
            click.echo(f"  {result.outcome} {item.env.name}: {image}")
        elif result.outcome == "failed":
            click.echo(redact(f"  failed {item.env.name}: {first_line(result.error, 200)}"))


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


if __name__ == "__main__":  # pragma: no cover
    main()
