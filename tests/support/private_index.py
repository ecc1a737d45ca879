"""A private PEP 503 package index (TLS, basic auth) serving wheels made at test time."""

from __future__ import annotations

import base64
import hashlib
import io
import zipfile
from collections import Counter
from dataclasses import dataclass, field

from aiohttp import web

from tests.support.infra import Certs, free_port, new_password
from tests.support.servers import BackgroundServer


def make_wheel(name: str, version: str, module: str) -> tuple[str, bytes]:
    """A pure-Python wheel holding one module `name` (underscored), built by hand."""
    package = name.replace("-", "_")
    filename = f"{package}-{version}-py3-none-any.whl"
    dist_info = f"{package}-{version}.dist-info"
    files = {
        f"{package}.py": module.encode(),
        f"{dist_info}/METADATA": (
            f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode()
        ),
        f"{dist_info}/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: envship-tests\nRoot-Is-Purelib: true\n"
            b"Tag: py3-none-any\n"
        ),
    }
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{dist_info}/RECORD,,")
    files[f"{dist_info}/RECORD"] = ("\n".join(record) + "\n").encode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)
    return filename, buffer.getvalue()


@dataclass
class PrivateIndex:
    certs: Certs
    username: str = "feed-reader"
    password: str = field(default_factory=new_password)
    port: int = field(default_factory=free_port)
    wheels: dict[str, list[tuple[str, bytes]]] = field(default_factory=dict)
    """Package name -> its files (one wheel per version)."""
    yanked: set[str] = field(default_factory=set)
    """File names marked yanked (PEP 592) on the project pages."""
    requests: Counter[str] = field(default_factory=Counter)
    files_served: Counter[str] = field(default_factory=Counter)
    """File name -> how many times its bytes were sent."""
    address: str = "127.0.0.1"
    """Where it listens: a build container reaches the engine's bridge gateway, not loopback."""
    _server: BackgroundServer | None = field(default=None, init=False, repr=False)

    @property
    def host(self) -> str:
        return f"{self.address}:{self.port}"

    @property
    def url(self) -> str:
        return f"https://{self.host}/simple/"

    def add(self, name: str, version: str, module: str, *, yanked: bool = False) -> None:
        wheel = make_wheel(name, version, module)
        self.wheels.setdefault(name, []).append(wheel)
        if yanked:
            self.yanked.add(wheel[0])

    def _authorized(self, request: web.Request) -> bool:
        expected = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        return request.headers.get("Authorization") == f"Basic {expected}"

    async def handle(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            self.requests["refused"] += 1
            return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="feed"'})
        self.requests["served"] += 1
        path = request.match_info["path"].strip("/")
        if path == "simple":
            links = "".join(f'<a href="{n}/">{n}</a>' for n in self.wheels)
            return web.Response(text=f"<html><body>{links}</body></html>", content_type="text/html")
        if path.startswith("simple/"):
            name = path.split("/", 1)[1]
            if name not in self.wheels:
                return web.Response(status=404)
            anchors = []
            for filename, data in self.wheels[name]:
                digest = hashlib.sha256(data).hexdigest()
                # an absolute link, as Azure Artifacts and others write them
                link = f"https://{self.host}/files/{filename}#sha256={digest}"
                yanked = ' data-yanked=""' if filename in self.yanked else ""
                anchors.append(f'<a href="{link}"{yanked}>{filename}</a>')
            return web.Response(
                text=f"<html><body>{''.join(anchors)}</body></html>", content_type="text/html"
            )
        if path.startswith("files/"):
            for files in self.wheels.values():
                for filename, data in files:
                    if path == f"files/{filename}":
                        self.files_served[filename] += 1
                        # files never change: cacheable, as PyPI and the hosted indexes say
                        return web.Response(
                            body=data,
                            content_type="application/octet-stream",
                            headers={"Cache-Control": "max-age=31536000, immutable"},
                        )
        return web.Response(status=404)

    async def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("GET", "/{path:.*}", self.handle)
        return app

    def start(self) -> PrivateIndex:
        self._server = BackgroundServer(self.certs, self.port, "private-index", self.address)
        self._server.start(self._app)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
