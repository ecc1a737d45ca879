"""What envship's commands share: the option groups (discovery, registry, build), each handed
to a command as one object, and the helpers that print tables and short references."""

from __future__ import annotations

import dataclasses
import functools
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import click

from controller import compose
from controller.adapters.acrtasks import ARM, AcrTasksSettings, registry_name
from controller.adapters.azureml import AzureMLSettings
from controller.adapters.folder import FolderTree
from controller.adapters.forked import ForkedJobs, usable_cpus
from controller.adapters.packageindex import PYPI
from controller.adapters.redact import redact
from controller.adapters.registries import RegistrySettings
from controller.adapters.secrets import CredentialRefs, SecretError, SecretRef
from controller.compose import Wiring
from controller.core.discovery import (
    Discovered,
    DiscoveryOptions,
    RepositoryConfigError,
    RootError,
    discover,
)
from controller.core.naming import validate_prefix
from controller.core.render import PIP_CONFIG_SECRET, RESERVED_SECRET
from controller.core.specs.common import DEFAULT_BASE_IMAGE
from controller.pipeline.options import CACHE_MODES, CacheMode, Target
from controller.pipeline.resolve import Resolver

if TYPE_CHECKING:
    from controller.pipeline.outcome import Reporter
    from controller.pipeline.sync import Sync

SHORT_HASH = 12
HASH_TAG_LENGTH = 32
LOG_TAIL = 20


def console() -> Any:
    from rich.console import Console  # noqa: PLC0415 - rich is slow to import; JSON needs none

    # A pipe gets long lines rather than wrapped cells, so image references stay whole.
    return Console(width=None if sys.stdout.isatty() else 240, highlight=False)


_INVISIBLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]")
"""Control characters, and the ones that reorder text: what could forge terminal output."""


def visible(text: str) -> str:
    """`text` with every control character shown as an escape (`\\x1b`), never sent raw to a
    terminal; a secret registered with the redactor is masked first."""
    return _INVISIBLE.sub(lambda m: m.group(0).encode("unicode_escape").decode(), redact(text))


def say(text: str, *, err: bool = False) -> None:
    """Print a line for people: redacted, control characters escaped."""
    click.echo(visible(text), err=err)


class Grid:
    """A table whose cells are plain text (names and paths never act as markup)."""

    def __init__(self, columns: Sequence[str], widths: dict[str, int] | None = None) -> None:
        from rich.table import Table  # noqa: PLC0415

        self.table = Table(box=None, pad_edge=False)
        for column in columns:
            # Long names and paths are cut (JSON keeps them whole) so no column vanishes.
            limit = (widths or {}).get(column, 60 if column in ("NAME", "PATH") else None)
            self.table.add_column(
                column,
                no_wrap=True,
                overflow="ellipsis" if limit else "fold",
                max_width=limit,
            )

    def row(self, *cells: str) -> None:
        from rich.text import Text  # noqa: PLC0415

        self.table.add_row(*(Text(visible(cell)) for cell in cells))


def table(columns: Sequence[str], widths: dict[str, int] | None = None) -> Grid:
    return Grid(columns, widths)


@dataclass(frozen=True)
class Discovery:
    """What the discovery options say; `load(path)` finds the environments under PATH."""

    root: str | None
    ignore: tuple[str, ...]
    prefix: str
    default_base_image: str | None

    def options(self, prefix: str | None = None) -> DiscoveryOptions:
        """The options the flags say (`prefix`: the target's, when it has one)."""
        return DiscoveryOptions(
            root=self.root or None,
            ignore=self.ignore,
            prefix=self.prefix if prefix is None else prefix,
            default_base_image=self.default_base_image,
        )

    def load(self, path: str, prefix: str | None = None) -> Discovered:
        options = self.options(prefix)
        try:
            validate_prefix(options.prefix)
            tree = FolderTree(path)
        except (ValueError, NotADirectoryError) as exc:
            raise click.UsageError(str(exc)) from None
        try:
            # Reading and hashing use every CPU: no thread runs yet, so fork is safe here.
            return discover(tree, options, run_jobs=ForkedJobs(usable_cpus()))
        except (RootError, RepositoryConfigError) as exc:
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
        click.option(
            "--root",
            default=None,
            help="Folder inside PATH to search (default: envship.yaml's root, else all).",
        ),
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
            default=None,
            help="Base image of the plain pip and conda forms (default: envship.yaml's, else "
            f"{DEFAULT_BASE_IMAGE}).",
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
                help="Do not pin base images to their digests, nor look up curated "
                "environments' {{latest-...}} values (offline use).",
            ),
            click.option(
                "--package-index",
                metavar="URL",
                default=PYPI,
                show_default=True,
                help="Where {{latest-pypi-version}} is looked up.",
            ),
            click.option(
                "--index-auth",
                multiple=True,
                metavar="HOST=USER_REF,PASS_REF",
                help="Credentials of a private package index host (--private-index, "
                "--package-index), as secret references (repeatable).",
            ),
        ]
        f = collapse(REGISTRY_OPTIONS, "target", RegistryArgs)(f)
        for option in reversed(options):
            f = option(f)
        return f

    return decorate


BUILD_OPTIONS = (
    "jobs", "moving_tags", "tag_version", "private_indexes", "builder", "docker_cli",
    "build_secrets", "build_cache", "engine", "acr_subscription", "acr_resource_group",
    "acr_registry", "acr_endpoint", "acr_timeout",
)  # fmt: skip
SECRET_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


@dataclass(frozen=True)
class BuildArgs:
    """What the build options say (sync and watch)."""

    jobs: int | None
    moving_tags: tuple[str, ...]
    tag_version: bool
    private_indexes: tuple[str, ...]
    builder: Literal["classic", "buildkit"] = "buildkit"
    docker_cli: str | None = None
    build_secrets: tuple[str, ...] = ()
    build_cache: CacheMode = "auto"
    engine: Literal["local", "acr"] = "local"
    acr_subscription: str | None = None
    acr_resource_group: str | None = None
    acr_registry: str | None = None
    acr_endpoint: str | None = None
    acr_timeout: int | None = None

    def acr(self, target: Target | None) -> AcrTasksSettings | None:
        """Where ACR Tasks runs are scheduled (--engine acr); None for a local engine."""
        if self.engine != "acr":
            if self.acr_subscription or self.acr_resource_group or self.acr_registry:
                raise click.UsageError(
                    "--acr-subscription, --acr-resource-group and "
                    "--acr-registry go with --engine acr"
                )
            return None
        name = self.acr_registry or registry_name(target.host if target else None)
        subscription, group = self.acr_subscription, self.acr_resource_group
        if not (subscription and group and name):
            missing = [
                option
                for option, value in (
                    ("--acr-subscription (or AZURE_SUBSCRIPTION_ID)", subscription),
                    ("--acr-resource-group", group),
                    ("--acr-registry (the registry is not NAME.azurecr.io)", name),
                )
                if not value
            ]
            raise click.UsageError(f"--engine acr needs {', '.join(missing)}")
        return AcrTasksSettings(
            subscription=subscription,
            resource_group=group,
            registry=name,
            endpoint=self.acr_endpoint or ARM,
            timeout=self.acr_timeout or 3600,
        )

    def secrets(self) -> dict[str, SecretRef]:
        """`--build-secret ID=REF` entries -> id: reference."""
        found: dict[str, SecretRef] = {}
        for entry in self.build_secrets:
            secret_id, sep, ref = entry.partition("=")
            if not sep or not SECRET_ID.match(secret_id):
                raise click.UsageError(
                    "--build-secret: give ID=REF, ID of letters, digits, '.', '_' or '-'"
                )
            if secret_id == PIP_CONFIG_SECRET:
                raise click.UsageError(f"--build-secret: {RESERVED_SECRET}")
            try:
                found[secret_id] = SecretRef.parse(ref)
            except SecretError as exc:
                raise click.UsageError(f"--build-secret {secret_id}: {exc}") from None
        return found


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
            help="A private package index, given to builds as the build secret "
            "envship-pip-conf (a pip configuration; repeatable; needs BuildKit).",
        ),
        click.option(
            "--builder",
            type=click.Choice(["classic", "buildkit"]),
            default="buildkit",
            show_default=True,
            help="buildkit: BuildKit through the docker CLI (cache and secret mounts, build "
            "secrets, private indexes); classic: the engine's deprecated classic builder.",
        ),
        click.option(
            "--docker-cli",
            metavar="PATH",
            help="The docker CLI BuildKit builds run with (default: the first on PATH with "
            "buildx, else the first with BuildKit built in).",
        ),
        click.option(
            "--build-cache",
            type=click.Choice(list(CACHE_MODES)),
            default="auto",
            show_default=True,
            help="Build cache through the target registry (tag buildcache of each image's "
            "repository), so a new engine reuses layers: registry (buildx with a driver that "
            "exports it), inline (in the image), auto (registry where it can, else inline), "
            "off. BuildKit only.",
        ),
        click.option(
            "--build-secret",
            "build_secrets",
            multiple=True,
            metavar="ID=REF",
            help="A build secret, as a secret reference (env:NAME, file:PATH, keyvault://...), "
            "for RUN --mount=type=secret,id=ID; needs --builder buildkit (repeatable).",
        ),
        click.option(
            "--engine",
            type=click.Choice(["local", "acr"]),
            default="local",
            show_default=True,
            help="local: a Docker engine (DOCKER_HOST); acr: ACR Tasks runs on the target "
            "registry, signed in with Azure's default credential (no engine needed).",
        ),
        click.option(
            "--acr-subscription",
            envvar="AZURE_SUBSCRIPTION_ID",
            metavar="ID",
            help="--engine acr: the registry's subscription (default: AZURE_SUBSCRIPTION_ID).",
        ),
        click.option(
            "--acr-resource-group",
            metavar="NAME",
            help="--engine acr: the registry's resource group.",
        ),
        click.option(
            "--acr-registry",
            metavar="NAME",
            help="--engine acr: the registry's resource name (default: NAME of NAME.azurecr.io).",
        ),
        click.option(
            "--acr-endpoint",
            metavar="URL",
            help=f"--engine acr: Azure Resource Manager (default: {ARM}).",
        ),
        click.option(
            "--acr-timeout",
            type=click.IntRange(300, 28800),
            metavar="SECONDS",
            help="--engine acr: how long a run may take (default: 3600).",
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
    "secret_ttl", "no_resolve_base", "package_index", "index_auth",
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
    package_index: str
    index_auth: tuple[str, ...]

    def target(self, prefix: str) -> Target:
        if self.registry is None:
            raise click.UsageError("--registry is required")
        try:
            target = Target.parse(self.registry, prefix)
            validate_prefix(target.prefix)
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
        return target

    def settings(self, target: Target | None) -> RegistrySettings:
        own: CredentialRefs | None = None
        username, password = self.username, self.password
        if username or password:
            if not (username and password):
                raise click.UsageError("--username and --password go together")
            try:
                own = CredentialRefs(SecretRef.parse(username), SecretRef.parse(password))
            except SecretError as exc:
                raise click.UsageError(str(exc)) from None
        return RegistrySettings.for_target(
            target.host if target is not None else None,
            ca_file=self.ca_file,
            plain_http=self.plain_http,
            base_credentials=credential_map(self.base_auth, "--base-auth"),
            target_credentials=own,
            acr_identity=self.acr_identity,
        )

    def wiring(
        self, target: Target | None, build: BuildArgs | None = None, source: str | None = None
    ) -> Wiring:
        """What the flags say, for the composition root (`controller.compose`)."""
        if target is None and (self.username or self.password or self.acr_identity):
            raise click.UsageError("--username, --password and --acr-identity need --registry")
        build = build or BuildArgs(None, (), False, ())
        return Wiring(
            target=target,
            registry=self.settings(target),
            secret_ttl=self.secret_ttl,
            resolve_bases=not self.no_resolve_base,
            package_index=self.package_index,
            index_credentials=credential_map(self.index_auth, "--index-auth"),
            private_indexes=build.private_indexes,
            jobs=build.jobs,
            moving_tags=build.moving_tags,
            tag_version=build.tag_version,
            source=source,
            builder=build.builder,
            docker_cli=build.docker_cli,
            build_secrets=build.secrets(),
            build_cache=build.build_cache,
            engine=build.engine,
            acr=build.acr(target),
        )

    def sync(
        self,
        target: Target,
        build: BuildArgs | None = None,
        reporter: Reporter | None = None,
        *,
        source: str | None = None,
        revision: str | None = None,
        dry_run: bool = False,
        publish: AzureMLSettings | None = None,
    ) -> Sync:
        """A sync against the target, with the secret store the credentials come from."""
        wiring = dataclasses.replace(self.wiring(target, build, source), publish=publish)
        return compose.sync(wiring, reporter, dry_run=dry_run, revision=revision)

    def resolver(self) -> Resolver:
        """What `plan`, `hash` and `render` resolve with when no target is given: the base
        image registries' own credentials (`--base-auth`), anonymous elsewhere."""
        return compose.resolver(self.wiring(None))


def publish_settings(
    workspace: str | None, endpoint: str | None, registry: str | None = None
) -> AzureMLSettings | None:
    """`--publish-workspace SUBSCRIPTION/RESOURCE_GROUP/WORKSPACE` or `--publish-registry NAME`
    as settings."""
    if workspace and registry:
        raise click.UsageError("give --publish-workspace or --publish-registry, not both")
    if endpoint is not None and not endpoint.startswith("https://"):
        raise click.UsageError("--publish-endpoint: give an https:// URL")
    if registry:
        return AzureMLSettings("", "", None, endpoint=endpoint, registry=registry)
    if not workspace:
        if endpoint:
            raise click.UsageError("--publish-endpoint goes with --publish-workspace")
        return None
    parts = workspace.strip("/").split("/")
    if len(parts) != 3 or not all(parts):
        raise click.UsageError("--publish-workspace: give SUBSCRIPTION/RESOURCE_GROUP/WORKSPACE")
    return AzureMLSettings(parts[0], parts[1], parts[2], endpoint=endpoint)


def short(content: str | None) -> str:
    return (content or "").removeprefix("sha256:")[:SHORT_HASH] or "-"


def short_revision(revision: str | None) -> str:
    """`main@sha1:<40 hex>` -> `main@sha1:<12 hex>`."""
    if not revision:
        return "-"
    head, sep, sha = revision.rpartition("sha1:")
    return f"{head}{sep}{sha[:SHORT_HASH]}" if sep else revision


def short_image(image: str | None, digest: str | None) -> str:
    """`registry/prefix/name:<32 hex>` -> `name:<12 hex>`, and `@<12 hex>` of its digest: the
    status table's column (`/status` keeps them whole)."""
    if not image:
        return "-"
    name, _, tag = image.rpartition("/")[2].partition(":")
    shown = f"{name}:{tag[:SHORT_HASH]}" if tag else name
    return f"{shown}@{short(digest)}" if digest else shown


def short_reference(image: str | None, digest: str | None) -> str:
    if not image:
        return "-"
    return f"{image}@sha256:{short(digest)}" if digest else image


def first_line(text: str | None, width: int = 100) -> str:
    if not text:
        return "-"
    line = text.strip().splitlines()[0] if text.strip() else "-"
    return line if len(line) <= width else line[: width - 3] + "..."


def print_errors(out: Any, errors: Sequence[tuple[str, str | None]], label: str) -> None:
    failed = [(name, error) for name, error in errors if error]
    if failed:
        out.print(f"\n{len(failed)} {label}:", markup=False)
        for name, error in failed:
            out.print(visible(f"  {name}: {error}"), markup=False, highlight=False)
