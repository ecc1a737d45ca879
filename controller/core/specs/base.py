"""What a spec form is: a way to find environments in a folder, and to read one.

Discovery looks at every folder below the root once, parents before children, and asks each
form of `controller.core.specs.FORMS`, in order, what it finds there (`Form.detect`). A form
answers with a `Detection`: the environments it found (`Found`), notes on files that are not
environments, and whether the folders after it may still look (`final`) or whether the folder's
whole subtree belongs to what it found (`owns_subtree`, a build context). Forms never read files
while detecting: they see the folder's file names and its parsed documents (`Folder`), which
discovery parses once per blob and shares. A found environment is read later, in a batch that
may run in other processes, by its form's `read`.

Some forms claim paths elsewhere (an Azure ML v2 `conda_file` or `build.path`); `Form.claims`
says which, from one parsed document, so discovery can count them before any folder decides.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from controller.core.errors import SpecError
from controller.core.model import Environment, Kind
from controller.core.naming import implicit_name
from controller.core.tree import TreeView

ClaimKind = Literal["context", "build"]
"""`context`: nothing is discovered at or below the folder (it is another spec's build context).
`build`: no plain form (conda, pip, Dockerfile) is discovered at or below it (a v2 `build.path`);
saved v1 folders and v2 YAMLs inside are still environments of their own."""


@dataclass(frozen=True, slots=True)
class Claims:
    """Paths one document takes from its neighbours: files, and folders with their kind."""

    files: tuple[str, ...] = ()
    folders: tuple[tuple[str, ClaimKind], ...] = ()

    def __bool__(self) -> bool:
        return bool(self.files or self.folders)


NO_CLAIMS = Claims()


@dataclass(frozen=True, slots=True)
class Found:
    """An environment a form found: what its reader needs, and what it is called."""

    kind: Kind
    path: str
    """The environment's path: its folder, or its spec file (v2, a conda file)."""
    name: str
    """The name to report it under if reading it fails before its own name is known."""
    recipe: tuple[str, ...] = ()
    """Tree paths the reader needs besides `path` (e.g. the conda file of a plain folder)."""
    error: SpecError | None = None
    """Refused by discovery itself: the environment is not read."""


@dataclass(frozen=True, slots=True)
class Note:
    """A file discovery looked at and skipped, with why: never an error."""

    path: str
    text: str


@dataclass(frozen=True, slots=True)
class Unparsed:
    """A document that could not be read or parsed: the error, and, told from its text while it
    was at hand, why it is not an environment anyway (None when it may be one)."""

    error: SpecError
    not_environment: str | None = None


@dataclass(slots=True)
class Folder:
    """What a form sees of one folder while detecting."""

    path: str
    names: frozenset[str]
    """Visible file (and symlink) names directly in the folder."""
    docs: Mapping[str, Any]
    """Parsed documents of the folder by tree path: YAML data, a `DockerfileFacts`, or an
    `Unparsed` for a file that could not be read."""
    claimed_files: Collection[str]
    """Files some other document claims (they are not environments of their own)."""
    built: bool
    """Inside a `build` claim: plain forms find nothing here."""
    found: list[Found] = field(default_factory=list)
    """What the forms before this one found in the folder."""
    root: str = ""
    kept: Mapping[str, Found] = field(default_factory=dict)
    """Documents that broke -> what they gave when they last parsed: they keep their place."""

    @property
    def implicit_name(self) -> str:
        """The name of an environment that is the folder itself (`naming.implicit_name`)."""
        return implicit_name(self.path, self.root)


@dataclass(slots=True)
class Detection:
    found: list[Found] = field(default_factory=list)
    notes: list[Note] = field(default_factory=list)
    final: bool = False
    """No later form looks at this folder."""
    owns_subtree: bool = False
    """Everything below the folder belongs to what was found (nothing below is discovered)."""


@dataclass(frozen=True, slots=True)
class ReadSettings:
    """What readers take from the discovery options."""

    default_base_image: str


class Form(Protocol):
    """One way environments are kept in git."""

    kind: Kind

    def documents(self, names: frozenset[str]) -> tuple[tuple[str, ...], bool]:
        """Of a folder holding files `names`: the names this form needs parsed to detect, and
        whether the folder is this form's alone (no later form is asked, nothing else parsed)."""
        ...

    def claims(self, path: str, doc: Any) -> Claims:
        """What the document at `path` claims elsewhere (most forms: nothing)."""
        ...

    def detect(self, folder: Folder) -> Detection | None:
        """What this form finds in `folder`; None when it finds nothing."""
        ...

    def read(self, view: TreeView, found: Found, settings: ReadSettings) -> Environment:
        """The environment `found`, read through `view` (`view.parsed_yaml(path)` gives the
        documents discovery parsed). Raises `SpecError` for a spec that cannot be built."""
        ...
