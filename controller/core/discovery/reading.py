"""Reading what the layout found: each environment through its form, then the one credential
check (`controller.core.credentials`); reused while its inputs stay the same.

Readers record every path their result depended on (`TreeView.note`): their own files, shared
files they reference, each symlink on the way, and, for a file looked for and not found, the
nearest folder that exists. With a cache and a tree that names its content, an environment is
read again only when the object id of one of those paths changed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from controller.core import credentials
from controller.core.discovery.options import JobRunner
from controller.core.errors import SpecError
from controller.core.model import Environment
from controller.core.naming import repository_for
from controller.core.specs import BY_KIND, PLAIN_KINDS
from controller.core.specs.base import Found, ReadSettings
from controller.core.tree import TreeView

Inputs = tuple[tuple[str, str | None], ...]
"""(path, object id) of everything one environment's reading depended on."""
Key = tuple[str, str, tuple[str, ...], str]
"""(kind, path, recipe, name) of what was found."""


def key_of(found: Found) -> Key:
    return (found.kind, found.path, found.recipe, found.name)


def with_name(found: Found, names: dict[str, str]) -> Found:
    """A plain environment takes the name the repository file gives its path."""
    name = names.get(found.path)
    if name is None or found.kind not in PLAIN_KINDS:
        return found
    return replace(found, name=name)


def refused(found: Found, error: SpecError) -> Environment:
    return Environment(
        error.env_name or found.name, found.kind, found.path, (found.path,), error=error
    )


class Reader:
    def __init__(self, view: TreeView, settings: ReadSettings, prefix: str) -> None:
        self.view = view
        self.settings = settings
        self.prefix = prefix

    def named(self, env: Environment) -> Environment:
        """`env` with its registry repository (or refused for a name that cannot be one)."""
        if env.error is not None or env.repository is not None:
            return env
        try:
            repository = repository_for(
                env.name, self.prefix, env.files[0] if env.files else env.path
            )
        except SpecError as exc:
            return replace(env, error=exc)
        return replace(env, repository=repository)

    def read(self, found: Found) -> tuple[Environment, bool]:
        """The environment, and False when reading failed in a way nobody foresaw."""
        try:
            env = BY_KIND[found.kind].read(self.view, found, self.settings)
            return credentials.check(env), True
        except SpecError as exc:
            return refused(found, exc), True
        except Exception as exc:
            error = SpecError(
                found.path, f"could not be read ({type(exc).__name__}); please report this"
            )
            return refused(found, error), False

    def recorded(self, queue: list[Found], index: int) -> tuple[Environment, list[str] | None]:
        """Read `queue[index]` with the paths its result depended on (None: do not reuse)."""
        view = self.view
        view.recording = set()
        try:
            found = queue[index]
            env, expected = self.read(found)
            for read in {found.path, *found.recipe, *env.files}:
                view.depend_on(read)
            return self.named(env), sorted(view.recording) if expected else None
        finally:
            view.recording = None

    def plain(self, queue: list[Found], index: int) -> Environment:
        return self.named(self.read(queue[index])[0])


def read_all(
    reader: Reader,
    queue: list[Found],
    run_jobs: JobRunner,
    cache: dict[Key, tuple[Environment, Inputs]] | None,
    object_id: Callable[[str], str | None] | None,
    unchanged: Callable[[Inputs], bool] | None,
) -> tuple[list[Environment], dict[Key, tuple[Environment, Inputs]], int]:
    """Every queued environment, in queue order; with a cache, those whose inputs are
    `unchanged` come from it. Returns the environments, the new cache and how many were read."""
    if cache is None or object_id is None:
        return run_jobs(lambda i: reader.plain(queue, i), len(queue)), {}, len(queue)
    if unchanged is None:

        def unchanged(inputs: Inputs) -> bool:
            return all(object_id(path) == oid for path, oid in inputs)

    envs: list[Environment | None] = []
    kept: dict[Key, tuple[Environment, Inputs]] = {}
    todo: list[int] = []
    for place, found in enumerate(queue):
        key = key_of(found)
        hit = cache.get(key)
        if hit is not None and unchanged(hit[1]):
            envs.append(hit[0])
            kept[key] = hit
        else:
            envs.append(None)
            todo.append(place)
    todo_queue = [queue[i] for i in todo]
    results = run_jobs(lambda i: reader.recorded(todo_queue, i), len(todo_queue))
    for place, (env, inputs) in zip(todo, results, strict=True):
        envs[place] = env
        if inputs is not None:
            kept[key_of(queue[place])] = (env, tuple((p, object_id(p)) for p in inputs))
    return [env for env in envs if env is not None], kept, len(todo)
