"""Azure ML v1 saved environment folders (`Environment.save_to_directory`).

Read the way `Environment.load_from_directory` reads them: keys that are missing mean nothing
(not the constructor's defaults), unknown keys are ignored, `conda_dependencies.yml` overrides
inline `python.condaDependencies`, and a `BaseDockerfile` file replaces any base image.
Run-time settings (`shmSize`, `arguments`, `sharedVolumes`, `enabled`, spark, databricks) do not
change the image and are not read.
"""

from __future__ import annotations

from typing import Any

from controller.core.conda import CondaSpec, parse_conda
from controller.core.dockerfile import check_dockerfile, read_dockerfile
from controller.core.documents import (
    decode_text,
    expect_mapping,
    load_json,
    load_yaml,
    optional_str,
    type_name,
)
from controller.core.errors import SpecError
from controller.core.model import BuildSpec, ContextFile, Environment, Kind, PythonSetup
from controller.core.naming import check_image_reference
from controller.core.requirements import find_url_credentials
from controller.core.specs.base import NO_CLAIMS, Claims, Detection, Folder, Found, ReadSettings
from controller.core.specs.common import environment_variables, platform_of
from controller.core.tree import TreeView, join

DEFINITION = "azureml_environment.json"
CONDA_FILE = "conda_dependencies.yml"
BASE_DOCKERFILE = "BaseDockerfile"


class AmlV1:
    """A folder with `azureml_environment.json`: the folder is one saved environment (its conda
    file and BaseDockerfile belong to it; nothing else in the folder is parsed). Folders below
    it are discovered as usual."""

    kind: Kind = "aml-v1"

    def documents(self, names: frozenset[str]) -> tuple[tuple[str, ...], bool]:
        return (), DEFINITION in names

    def claims(self, path: str, doc: Any) -> Claims:
        return NO_CLAIMS

    def detect(self, folder: Folder) -> Detection | None:
        if DEFINITION not in folder.names:
            return None
        return Detection([Found(self.kind, folder.path, folder.implicit_name)], final=True)

    def read(self, view: TreeView, found: Found, settings: ReadSettings) -> Environment:
        return read_aml_v1(view, found.path)


def _section(doc: dict[str, Any], key: str, path: str) -> dict[str, Any]:
    value = doc.get(key)
    if value is None:
        return {}
    return expect_mapping(value, path, key)


def _registry(docker: dict[str, Any], path: str) -> tuple[str | None, str | None]:
    """(address, managed identity client id); plaintext credentials are refused unread."""
    raw = docker.get("baseImageRegistry")
    if raw is None:
        return None, None
    registry = expect_mapping(raw, path, "docker.baseImageRegistry")
    if registry.get("password") not in (None, ""):
        raise SpecError(
            path,
            "docker.baseImageRegistry.password holds a credential in plaintext; remove it and "
            "configure the registry's credentials as a secret reference",
        )
    address = optional_str(registry.get("address"), path, "docker.baseImageRegistry.address")
    if address and ("@" in address or find_url_credentials(address)):
        raise SpecError(
            path,
            "docker.baseImageRegistry.address carries credentials; give the host name only and "
            "configure the registry's credentials as a secret reference",
        )
    if address and "://" in address:
        address = address.split("://", 1)[1]
    identity = registry.get("registryIdentity")
    client_id = None
    if identity is not None:
        identity_map = expect_mapping(identity, path, "docker.baseImageRegistry.registryIdentity")
        client_id = optional_str(identity_map.get("clientId"), path, "registryIdentity.clientId")
        client_id = client_id or optional_str(
            identity_map.get("resourceId"), path, "registryIdentity.resourceId"
        )
    return (address.strip() or None) if address else None, client_id


def _refuse_unsupported(doc: dict[str, Any], python: dict[str, Any], path: str) -> None:
    if python.get("baseCondaEnvironment") not in (None, ""):
        raise SpecError(
            path, "python.baseCondaEnvironment is not supported; list the packages instead"
        )
    if doc.get("r") is not None:
        raise SpecError(path, "R environments (the 'r' section) are not supported")
    if doc.get("inferencingStackVersion") not in (None, ""):
        raise SpecError(
            path, "inferencingStackVersion is not supported; add the packages explicitly"
        )


def _base(
    view: TreeView, folder: str, docker: dict[str, Any], path: str, files: list[str]
) -> tuple[str | None, bytes | None]:
    """(base image, base Dockerfile): the `BaseDockerfile` file wins over both inline keys."""
    base_image = optional_str(docker.get("baseImage"), path, "docker.baseImage") or None
    inline_dockerfile = optional_str(docker.get("baseDockerfile"), path, "docker.baseDockerfile")
    if docker.get("buildContext") not in (None, {}):
        raise SpecError(
            path,
            "docker.buildContext points at remote storage; envship builds from git, so use a "
            "v2 environment with build.path instead",
        )
    dockerfile = inline_dockerfile.encode() if inline_dockerfile else None
    sidecar = join(folder, BASE_DOCKERFILE)
    if view.has_entry(sidecar):
        files.append(sidecar)
        return None, view.read_file(sidecar, origin=sidecar)
    if dockerfile is not None and base_image:
        raise SpecError(path, "docker.baseImage and docker.baseDockerfile are both set; keep one")
    if not base_image and dockerfile is None:
        raise SpecError(path, "no base image: set docker.baseImage or add a BaseDockerfile")
    return base_image, dockerfile


def _python(
    view: TreeView, folder: str, python: dict[str, Any], path: str, files: list[str]
) -> PythonSetup:
    """Managed conda, user managed, or managed with nothing to install."""
    conda: CondaSpec | None = None
    inline_conda = python.get("condaDependencies")
    if inline_conda is not None:
        conda = parse_conda(inline_conda, path, view.include)
    conda_path = join(folder, CONDA_FILE)
    if view.has_entry(conda_path):
        data = view.read_file(conda_path, origin=conda_path)
        raw = load_yaml(data, conda_path, max_nodes=view.limits.max_yaml_nodes)
        conda = parse_conda(raw, conda_path, view.include)
        files.append(conda_path)
    user_managed = python.get("userManagedDependencies")
    if user_managed not in (None, True, False):
        raise SpecError(
            path,
            f"python.userManagedDependencies must be true or false, not {type_name(user_managed)}",
        )
    interpreter = optional_str(python.get("interpreterPath"), path, "python.interpreterPath")
    if user_managed:
        return PythonSetup("user", interpreter or "python")
    if conda is not None:
        return PythonSetup("conda", "python", conda)
    return PythonSetup("none", interpreter or "python")


def read_aml_v1(view: TreeView, folder: str) -> Environment:
    """Read the saved environment in `folder`."""
    path = join(folder, DEFINITION)
    data = view.read_file(path, origin=path)
    doc = expect_mapping(
        load_json(data, path, max_nodes=view.limits.max_yaml_nodes),
        path,
        "the environment definition",
    )
    files = [path]
    name = optional_str(doc.get("name"), path, "name")
    if not name:
        raise SpecError(path, "the environment has no name")
    try:
        return _read_definition(view, folder, doc, name, files)
    except SpecError as exc:
        exc.env_name = exc.env_name or name
        raise


def _read_definition(
    view: TreeView, folder: str, doc: dict[str, Any], name: str, files: list[str]
) -> Environment:
    path = files[0]
    version = optional_str(doc.get("version"), path, "version")
    if set(doc) <= {"name", "version"}:
        raise SpecError(
            path,
            "this only references a registered environment (name and version); save the full "
            "definition with Environment.save_to_directory",
        )
    python = _section(doc, "python", path)
    docker = _section(doc, "docker", path)
    _refuse_unsupported(doc, python, path)
    address, identity = _registry(docker, path)
    base_image, dockerfile = _base(view, folder, docker, path, files)
    if base_image:
        base_image = check_image_reference(base_image, path)
        if address and not base_image.startswith(address.rstrip("/") + "/"):
            base_image = check_image_reference(f"{address.rstrip('/')}/{base_image}", path)
    setup = _python(view, folder, python, path, files)
    platform = _section(docker, "platform", path)
    target = platform_of(platform.get("os"), platform.get("architecture"), path)
    if dockerfile is not None:
        sidecar = join(folder, BASE_DOCKERFILE)
        origin = sidecar if sidecar in files else path
        check_dockerfile(read_dockerfile(decode_text(dockerfile, origin), target), origin)
    context = (ContextFile("Dockerfile", dockerfile),) if dockerfile is not None else ()
    build = BuildSpec(
        python=setup,
        base_image=base_image,
        dockerfile_path="Dockerfile" if dockerfile is not None else None,
        context=context,
        environment=environment_variables(doc.get("environmentVariables"), path),
        platform=target,
        base_registry=address,
        base_registry_identity=identity,
    )
    return Environment(name, "aml-v1", folder, tuple(files), version, build)
