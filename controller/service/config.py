"""The controller's configuration: one YAML file, every key overridable by an environment variable.

`ENVSHIP_<SECTION>__<KEY>` overrides `section.key` (e.g. `ENVSHIP_REGISTRY__URL`,
`ENVSHIP_INTERVALS__RECONCILE=30`). Credentials are secret references only
(`keyvault://VAULT/NAME`, `file:PATH`, `env:NAME`); a literal is refused at startup without
being repeated. Validation errors name the key and what is wrong.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from controller.adapters.acrtasks import ARM
from controller.adapters.packageindex import PYPI
from controller.adapters.secrets import CredentialRefs, SecretError, SecretRef
from controller.core.credentials import url_credential
from controller.core.errors import Misconfigured
from controller.core.render import PIP_CONFIG_SECRET, RESERVED_SECRET
from controller.core.specs.common import DEFAULT_BASE_IMAGE


class ConfigError(Misconfigured):
    """The configuration is invalid: fix it and restart."""


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


def reference(value: str) -> str:
    try:
        SecretRef.parse(value)
    except SecretError as exc:
        raise ValueError(str(exc)) from None
    return value


SECRET_REFERENCE_SCHEMA: dict[str, Any] = {
    "description": "A secret reference: keyvault://VAULT/NAME[/VERSION], file:PATH or env:NAME "
    "(never the secret itself).",
    "type": "string",
    "not": {"not": {"pattern": r"^(keyvault://[^/]+/[^/]+(/[^/]+)?|file:.+|env:.+)$"}},
}
"""A secret reference in JSON Schema (the chart's values schema is made from this model): what
`SecretRef.parse` accepts. The pattern sits under not/not so that a schema validator's message
never repeats the value, which may be a pasted secret."""

SecretReference = Annotated[str, AfterValidator(reference), WithJsonSchema(SECRET_REFERENCE_SCHEMA)]


def no_credentials_in_git_url(value: str) -> str:
    held = url_credential(value, user_allowed=True)
    if held is not None:
        raise ValueError(f"the URL holds {held}; give it as credentials (secret references)")
    return value


def no_credentials_in_registry(value: str) -> str:
    host = value.strip().split("://", 1)[-1].split("/", 1)[0]
    held = url_credential(value)
    if held is None and "@" in host:
        userinfo = host.rpartition("@")[0]
        held = "a user name and password" if ":" in userinfo else "user-info"
    if held is not None:
        raise ValueError(
            f"the registry holds {held}; give host[:port][/prefix] and the "
            "credentials as secret references"
        )
    return value


class Credentials(Model):
    username: SecretReference
    password: SecretReference

    def refs(self) -> CredentialRefs:
        return CredentialRefs(SecretRef.parse(self.username), SecretRef.parse(self.password))


class Git(Model):
    url: str = Field(min_length=1)
    ref: str = Field(default="main", min_length=1)

    _check_url = field_validator("url")(no_credentials_in_git_url)
    credentials: Credentials | None = None
    ssh_key: SecretReference | None = Field(default=None, alias="sshKey")
    ssh_user: str = Field(default="git", alias="sshUser")
    cache_dir: Path = Field(default=Path("/var/cache/envship/git"), alias="cacheDir")


class Specs(Model):
    """Where the specs are. `root` and `defaultBaseImage` left unset take the repository's
    own `envship.yaml`, then the defaults (everything; Azure ML's base image); `ignore` adds to
    its patterns."""

    root: str | None = None
    ignore: list[str] = []
    prefix: str = "envship"
    default_base_image: str | None = Field(
        default=None,
        alias="defaultBaseImage",
        min_length=1,
        description=f"default: {DEFAULT_BASE_IMAGE}",
    )


class Registry(Model):
    url: str = Field(min_length=1)

    _check_url = field_validator("url")(no_credentials_in_registry)
    ca_file: str | None = Field(default=None, alias="caFile")
    plain_http: list[str] = Field(default=[], alias="plainHttp")
    credentials: Credentials | None = None
    acr_identity: bool = Field(default=False, alias="acrIdentity")
    base_auth: dict[str, Credentials] = Field(default={}, alias="baseAuth")


class AcrTasks(Model):
    """Where ACR Tasks runs are scheduled (engine: acr)."""

    subscription: str = Field(min_length=1, description="the registry's subscription id")
    resource_group: str = Field(
        alias="resourceGroup", min_length=1, description="the registry's resource group"
    )
    registry: str | None = Field(
        default=None,
        min_length=1,
        description="the registry's resource name (default: NAME of NAME.azurecr.io)",
    )
    endpoint: str = Field(
        default=ARM,
        pattern=r"^https://",
        description="Azure Resource Manager (another cloud's, e.g. "
        "https://management.usgovcloudapi.net)",
    )
    timeout: int = Field(
        default=3600, ge=300, le=28800, description="seconds a run may take before ACR stops it"
    )


class Builds(Model):
    jobs: int | None = Field(default=None, ge=1, le=64)
    """Builds in parallel; unset: half the CPUs envship may use (as `envship sync`), or 10
    ACR Tasks runs with engine: acr."""
    engine: Literal["local", "acr"] = Field(
        default="local",
        description="local: a Docker engine (DOCKER_HOST: the chart's dind sidecar or a remote "
        "engine); acr: ACR Tasks runs on the target registry (no engine, nothing privileged)",
    )
    acr: AcrTasks | None = Field(default=None, description="engine: acr: the registry's resource")
    resolve_base: bool = Field(default=True, alias="resolveBase")
    tags: list[str] = []
    tag_version: bool = Field(default=False, alias="tagVersion")
    private_indexes: list[str] = Field(default=[], alias="privateIndexes")
    index_auth: dict[str, Credentials] = Field(default={}, alias="indexAuth")
    package_index: str = Field(
        default=PYPI,
        alias="packageIndex",
        min_length=1,
        description="where {{latest-pypi-version}} is looked up (credentials: indexAuth)",
    )
    builder: Literal["classic", "buildkit"] = Field(
        default="buildkit",
        description="buildkit: BuildKit through the docker CLI (buildx, or a CLI with "
        "BuildKit built in): cache and secret mounts, build secrets, private indexes; "
        "classic: the engine's deprecated classic builder",
    )
    docker_cli: str | None = Field(
        default=None,
        alias="dockerCli",
        min_length=1,
        description="the docker CLI BuildKit builds run with (default: the first on PATH "
        "with buildx, else the first with BuildKit built in)",
    )
    cache: Literal["auto", "registry", "inline", "off"] = Field(
        default="auto",
        description="build cache through the target registry (tag buildcache of each "
        "repository), so a new engine reuses layers: registry (buildx with a driver that "
        "exports it), inline (in the image), auto (registry where it can, else inline), off; "
        "BuildKit only",
    )
    secrets: dict[
        Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")], SecretReference
    ] = Field(
        default={},
        description="build secrets, id: secret reference; a build gets those its Dockerfile "
        "mounts (RUN --mount=type=secret,id=ID); needs builder: buildkit",
    )

    @model_validator(mode="after")
    def _acr_has_its_registry(self) -> Builds:
        if self.engine == "acr" and self.acr is None:
            raise ValueError("engine: acr needs acr: {subscription, resourceGroup}")
        return self

    @field_validator("secrets")
    @classmethod
    def _not_envship_s_own(cls, value: dict[str, Any]) -> dict[str, Any]:
        if PIP_CONFIG_SECRET in value:
            raise ValueError(RESERVED_SECRET)
        return value


class Intervals(Model):
    reconcile: float = Field(default=60.0, gt=0)
    resync: float = Field(default=3600.0, gt=0)
    jitter: float = Field(default=0.05, ge=0, le=0.5)
    grace: float = Field(default=300.0, ge=0, description="SIGTERM: time running builds get")


class Http(Model):
    address: str = Field(
        default="0.0.0.0",  # noqa: S104 - webhooks come from outside; the chart can bind the pod IP
        description="where to listen: an IP address, or empty for every address",
    )
    port: int = Field(default=8080, ge=1, le=65535)
    max_body: int = Field(default=1024 * 1024, alias="maxBody", gt=0)
    header_timeout: float = Field(default=10.0, alias="headerTimeout", gt=0)
    body_timeout: float = Field(default=30.0, alias="bodyTimeout", gt=0)
    idle_timeout: float = Field(default=15.0, alias="idleTimeout", gt=0)
    max_connections: int = Field(default=256, alias="maxConnections", ge=1)
    body_memory: int = Field(
        default=16 * 1024 * 1024,
        alias="bodyMemory",
        ge=1,
        description="bytes of request bodies held at once (beyond: 503, retry later)",
    )

    @field_validator("address")
    @classmethod
    def an_ip_address(cls, value: str) -> str:
        text = value.strip()
        if text:
            try:
                ipaddress.ip_address(text)
            except ValueError:
                raise ValueError("give an IP address (or empty for every address)") from None
        return text


class Webhooks(Model):
    github: SecretReference | None = None
    gitlab: SecretReference | None = None
    azure_devops: Credentials | None = Field(default=None, alias="azureDevOps")
    generic: SecretReference | None = None
    trigger: SecretReference | None = None
    """Bearer token of the manual trigger endpoint."""


class Gc(Model):
    enabled: bool = False
    grace_period: float = Field(default=86400.0, alias="gracePeriod", ge=0)
    dry_run: bool = Field(default=True, alias="dryRun")


class AzureMLWorkspace(Model):
    """The Azure ML workspace (or registry) verified images are registered in as environment
    versions."""

    subscription: str | None = Field(
        default=None, min_length=1, description="the workspace's subscription id"
    )
    resource_group: str | None = Field(
        default=None,
        alias="resourceGroup",
        min_length=1,
        description="the workspace's resource group",
    )
    workspace: str | None = Field(default=None, min_length=1, description="the workspace's name")
    registry: str | None = Field(
        default=None,
        min_length=1,
        description="an Azure ML registry's name, instead of a workspace",
    )
    endpoint: str | None = Field(
        default=None,
        pattern=r"^https://",
        description="Azure Resource Manager of another cloud (default: Azure's public cloud)",
    )

    @model_validator(mode="after")
    def _one_target(self) -> AzureMLWorkspace:
        workspace = self.subscription and self.resource_group and self.workspace
        if bool(workspace) == bool(self.registry):
            raise ValueError("give either subscription, resourceGroup and workspace, or registry")
        return self


class Publish(Model):
    azureml: AzureMLWorkspace | None = Field(
        default=None,
        description="register each verified image as an Azure ML environment version (needs "
        "envship's azureml extra: build the image with --build-arg EXTRAS='leader-election "
        "azureml')",
    )


class Secrets(Model):
    ttl: float = Field(default=300.0, ge=0)


class LeaderElection(Model):
    """Several replicas: only the holder of a coordination.k8s.io/v1 Lease reconciles."""

    enabled: bool = False
    lease_name: str = Field(
        default="envship",
        alias="leaseName",
        max_length=253,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
    )
    namespace: str | None = Field(
        default=None,
        max_length=63,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        description="default: POD_NAMESPACE, then the service account's namespace",
    )
    identity: str | None = Field(
        default=None, min_length=1, description="default: POD_NAME, then the host name"
    )
    lease_duration: float = Field(
        default=15.0, alias="leaseDurationSeconds", gt=0, allow_inf_nan=False
    )
    renew_deadline: float = Field(
        default=10.0, alias="renewDeadlineSeconds", gt=0, allow_inf_nan=False
    )
    retry_period: float = Field(default=2.0, alias="retryPeriodSeconds", gt=0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _durations(self) -> LeaderElection:
        if self.renew_deadline >= self.lease_duration:
            raise ValueError(
                f"renewDeadlineSeconds ({self.renew_deadline:g}) must be less than "
                f"leaseDurationSeconds ({self.lease_duration:g})"
            )
        if self.retry_period >= self.renew_deadline:
            raise ValueError(
                f"retryPeriodSeconds ({self.retry_period:g}) must be less than "
                f"renewDeadlineSeconds ({self.renew_deadline:g})"
            )
        return self


class Config(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="ENVSHIP_",
        env_nested_delimiter="__",
        extra="forbid",
        populate_by_name=True,
    )

    git: Git
    specs: Specs = Specs()
    registry: Registry
    builds: Builds = Builds()
    intervals: Intervals = Intervals()
    http: Http = Http()
    webhooks: Webhooks = Webhooks()
    gc: Gc = Gc()
    publish: Publish = Publish()
    secrets: Secrets = Secrets()
    # Not `leader_election` with an alias: pydantic-settings would read an alias from the bare
    # environment variable LEADERELECTION (no prefix), and a file's `leaderElection` would hide
    # ENVSHIP_LEADER_ELECTION__*. Spelt as in the file, it is ENVSHIP_LEADERELECTION__<KEY>.
    leaderElection: LeaderElection = LeaderElection()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # the environment wins over the file, which wins over the defaults
        return (env_settings, init_settings)


def load(path: str | Path) -> Config:
    """Read and validate the configuration file, with environment overrides."""
    try:
        raw: Any = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML ({type(exc).__name__})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the configuration must be a mapping")
    try:
        return Config(**raw)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"]) or "(top level)"
            # never echo the input: it may be a secret pasted where a reference belongs
            problems.append(f"{where}: {error['msg']}")
        raise ConfigError(f"{path}: " + "; ".join(problems)) from None


__all__ = ["Config", "ConfigError", "load"]
