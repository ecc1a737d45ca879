"""A folder with a `Dockerfile`: the folder, with everything below it, is the build context.

Python is the image's own (user managed). The folder's subtree belongs to the environment:
nothing below it is discovered. A `Dockerfile` with no `FROM` is no build context (a fragment of
steps, say): it is refused on its own, and the folder's other specs are still discovered.
"""

from __future__ import annotations

from typing import Any

from controller.core.dockerfile import DockerfileFacts, read_dockerfile
from controller.core.documents import decode_text
from controller.core.errors import SpecError
from controller.core.model import BuildSpec, Environment, Kind, PythonSetup
from controller.core.specs.base import NO_CLAIMS, Claims, Detection, Folder, Found, ReadSettings
from controller.core.specs.common import check_build_dockerfile, collect_context
from controller.core.tree import TreeView, join

DOCKERFILE = "Dockerfile"


class PlainDockerfile:
    kind: Kind = "dockerfile"

    def documents(self, names: frozenset[str]) -> tuple[tuple[str, ...], bool]:
        return ((DOCKERFILE,) if DOCKERFILE in names else ()), False

    def claims(self, path: str, doc: Any) -> Claims:
        return NO_CLAIMS

    def detect(self, folder: Folder) -> Detection | None:
        if folder.built or DOCKERFILE not in folder.names:
            return None
        path = join(folder.path, DOCKERFILE)
        found = Found(self.kind, folder.path, folder.implicit_name)
        facts = folder.docs.get(path)
        if isinstance(facts, DockerfileFacts) and facts.has_from:
            return Detection([found], final=True, owns_subtree=True)
        return Detection([found])  # refused when read; the folder's other specs still count

    def read(self, view: TreeView, found: Found, settings: ReadSettings) -> Environment:
        folder = found.path
        path = join(folder, DOCKERFILE)
        context = collect_context(view, folder, origin=path)
        dockerfile = next((f for f in context if f.path == DOCKERFILE), None)
        if dockerfile is None or dockerfile.link_target is not None:
            raise SpecError(path, "the Dockerfile must be a regular file")
        if len(dockerfile.data) > view.limits.max_spec_file_bytes:
            raise SpecError(
                path, f"file is over the limit of {view.limits.max_spec_file_bytes} bytes"
            )
        files = tuple(join(folder, f.path) for f in context)
        build = BuildSpec(python=PythonSetup("user"), dockerfile_path=DOCKERFILE, context=context)
        check_build_dockerfile(build, folder, view.documents)
        return Environment(found.name, self.kind, folder, files, None, build)


def dockerfile_facts(data: bytes, path: str) -> DockerfileFacts:
    """What discovery keeps of a Dockerfile's text (it is parsed once per blob)."""
    return read_dockerfile(decode_text(data, path))
