"""A stand-in for an Azure ML workspace's environment assets, over HTTPS on 127.0.0.1.

It speaks the REST protocol azure-ai-ml's `MLClient` speaks for environments (api-version
2023-04-01-preview), so envship's real client code runs against it:

- `GET  .../workspaces/{ws}/environments/{name}/versions/{version}` -> the version, or 404;
- `PUT  .../workspaces/{ws}/environments/{name}/versions/{version}` -> 201 (or 200 when the
  same image is put again); another image for an existing version is 409: versions are
  immutable, as Azure ML's are;
- `GET  .../workspaces/{ws}/environments/{name}/versions` -> `{"value": [...]}`;
- `GET  .../workspaces/{ws}/environments` -> the environment containers.

Requests need an Entra token for the stand-in's own URL (MLClient asks for
`<resource manager>/.default`). `fail_next` answers the next requests with the given statuses
(401, 403, 429, 5xx), as the service does under faults.

It also stands for one Azure ML registry (`registry`): discovery
(`/registrymanagement/v1.0/registries/{name}/discovery`, naming this server as the region's
resource provider), then the same versions under `/mferp/managementfrontend/.../registries/
{name}/environments` (api-version 2021-10-01-dataplanepreview), whose ids are
`azureml://registries/...`; the temporary data reference an image-only version asks for first is
answered 409, as for a version that needs no upload.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.support.identity import EntraIssuer
from tests.support.infra import Certs, free_port
from tests.support.servers import BackgroundServer


@dataclass
class AzureMLStandIn:
    certs: Certs
    entra: EntraIssuer
    subscription: str = "00000000-0000-0000-0000-0000000000ml"
    resource_group: str = "ml-rg"
    workspace: str = "ml-ws"
    port: int = field(default_factory=free_port)
    registry: str = "shared-ml"
    """The Azure ML registry it also answers for (discovery, then the data plane)."""
    fail_next: list[int] = field(default_factory=list)
    read_delay: float = 0.0
    """Seconds each version read waits before it is answered (to kill a client meanwhile)."""
    requests: Counter[str] = field(default_factory=Counter)
    versions: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    _server: BackgroundServer | None = field(default=None, init=False, repr=False)

    @property
    def endpoint(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def workspace_arg(self) -> str:
        return f"{self.subscription}/{self.resource_group}/{self.workspace}"

    def _id(self, name: str, version: str, registry: bool = False) -> str:
        if registry:
            return f"azureml://registries/{self.registry}/environments/{name}/versions/{version}"
        return (
            f"/subscriptions/{self.subscription}/resourceGroups/{self.resource_group}/providers/"
            f"Microsoft.MachineLearningServices/workspaces/{self.workspace}/environments/{name}"
            f"/versions/{version}"
        )

    def _body(self, name: str, version: str, registry: bool = False) -> dict[str, Any]:
        return {
            "id": self._id(name, version, registry),
            "name": version,
            "type": "Microsoft.MachineLearningServices/workspaces/environments/versions",
            "properties": {**self.versions[(name, version)], "provisioningState": "Succeeded"},
        }

    @staticmethod
    def _error(status: int, code: str, message: str) -> web.Response:
        headers = {"Retry-After": "1"} if status == 429 else {}
        return web.json_response(
            {"error": {"code": code, "message": message}}, status=status, headers=headers
        )

    def _refused(self, request: web.Request) -> web.Response | None:
        if self.fail_next:
            status = self.fail_next.pop(0)
            self.requests[f"failed {status}"] += 1
            return self._error(status, "ServiceError", f"injected {status}")
        header = request.headers.get("Authorization", "")
        try:
            self.entra.verify(header.removeprefix("Bearer "), self.endpoint)
        except Exception:
            self.requests["refused"] += 1
            return self._error(401, "InvalidAuthenticationToken", "The token is invalid.")
        info = request.match_info
        if "reg" in info:
            unknown = info["reg"] != self.registry
        else:
            unknown = (info["sub"], info["rg"].lower(), info["ws"]) != (
                self.subscription, self.resource_group.lower(), self.workspace,
            )  # fmt: skip
        if unknown:
            self.requests["unknown"] += 1
            return self._error(404, "ResourceNotFound", "The workspace was not found.")
        return None

    async def version(self, request: web.Request) -> web.Response:
        if (refused := self._refused(request)) is not None:
            return refused
        key = (request.match_info["name"], request.match_info["version"])
        registry = "reg" in request.match_info
        if request.method == "GET":
            self.requests["get"] += 1
            if self.read_delay:
                await asyncio.sleep(self.read_delay)
            if key not in self.versions:
                return self._error(404, "UserError", "Not found")
            return web.json_response(self._body(*key, registry))
        self.requests["put"] += 1
        properties = dict((json.loads(await request.read()) or {}).get("properties") or {})
        existing = self.versions.get(key)
        if existing is not None:
            if existing.get("image") != properties.get("image"):
                self.requests["conflict"] += 1
                return self._error(409, "Conflict", "Environment versions are immutable.")
            return web.json_response(self._body(*key, registry), status=200)
        self.versions[key] = properties
        return web.json_response(self._body(*key, registry), status=201)

    async def list_versions(self, request: web.Request) -> web.Response:
        if (refused := self._refused(request)) is not None:
            return refused
        self.requests["list"] += 1
        name = request.match_info["name"]
        registry = "reg" in request.match_info
        found = [self._body(n, v, registry) for (n, v) in sorted(self.versions) if n == name]
        return web.json_response({"value": found})

    async def discovery(self, request: web.Request) -> web.Response:
        self.requests["discovery"] += 1
        if request.match_info["reg"] != self.registry:
            return self._error(404, "NotFound", "registry not found")
        return web.json_response(
            {"registryName": self.registry, "subscriptionId": self.subscription,
             "resourceGroup": self.resource_group,
             "primaryRegionResourceProviderUri": self.endpoint + "/"}
        )  # fmt: skip

    async def temporary_reference(self, request: web.Request) -> web.Response:
        self.requests["tempdataref"] += 1
        return self._error(409, "Conflict", "no upload needed")

    async def list_containers(self, request: web.Request) -> web.Response:
        if (refused := self._refused(request)) is not None:
            return refused
        self.requests["list containers"] += 1
        names = sorted({n for (n, _v) in self.versions})
        prefix = self._id("x", "1").rsplit("/environments/", 1)[0]
        return web.json_response(
            {"value": [
                {"id": f"{prefix}/environments/{n}", "name": n,
                 "type": "Microsoft.MachineLearningServices/workspaces/environments",
                 "properties": {"latestVersion": max(v for (m, v) in self.versions if m == n)}}
                for n in names
            ]}
        )  # fmt: skip

    async def _app(self) -> web.Application:
        app = web.Application()
        base = (
            "/subscriptions/{sub}/resourceGroups/{rg}/providers/"
            "Microsoft.MachineLearningServices/workspaces/{ws}/environments/{name}/versions"
        )
        app.router.add_get(base, self.list_versions)
        app.router.add_get(base.rsplit("/{name}/versions", 1)[0], self.list_containers)
        app.router.add_route("GET", base + "/{version}", self.version)
        app.router.add_route("PUT", base + "/{version}", self.version)
        registry = (
            "/mferp/managementfrontend/subscriptions/{sub}/resourceGroups/{rg}/providers/"
            "Microsoft.MachineLearningServices/registries/{reg}"
        )
        versions = registry + "/environments/{name}/versions"
        app.router.add_get(versions, self.list_versions)
        app.router.add_route("GET", versions + "/{version}", self.version)
        app.router.add_route("PUT", versions + "/{version}", self.version)
        app.router.add_put(registry + "/tempdatarefs/{name}/versions/{version}",
                           self.temporary_reference)  # fmt: skip
        app.router.add_get("/registrymanagement/v1.0/registries/{reg}/discovery", self.discovery)
        return app

    def start(self) -> AzureMLStandIn:
        self._server = BackgroundServer(self.certs, self.port, "azureml-standin")
        self._server.start(self._app)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None


__all__ = ["AzureMLStandIn"]
