"""The layout of a repository: which folder gives which environments, and why.

Discovery lays a tree out in three passes over the visible folders below the root:
1. list each folder and parse the documents its forms ask for (`Form.documents`): YAML files,
   Dockerfiles;
2. count what the documents claim elsewhere (`Form.claims`: a v2 `conda_file`, a `build.path`);
3. decide each folder, parents first: its state (inside another spec's build context? inside a
   v2 build folder?) comes from its parent and the claims on it; then the forms, in order, say
   what they find there (`Form.detect`).

A `Layout` keeps all three, so that a tree that differs from the last one in a few paths is laid
out again only where the change reaches (`Layout.update`): the folders whose files or documents
changed, the folders whose claims moved, and every folder below one whose state changed. That
gives what laying the new tree out from scratch gives (the tests check it on random histories).

A document that breaks keeps its place (given `Places`, the memory of what each v2 document
gave when it last parsed): a v2 environment YAML that stops parsing keeps its claims and its
name, so the folders it claimed do not turn into environments of their own, and it is reported
under its name until it is fixed.
"""

from __future__ import annotations

import heapq
import posixpath
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from controller.core.specs import CLAIMING, FORMS
from controller.core.specs.base import ClaimKind, Claims, Folder, Found, Note, Unparsed
from controller.core.tree import TreeView, parent, within

if TYPE_CHECKING:
    import pathspec

REPOSITORY_FILE = "envship.yaml"


@dataclass(frozen=True, slots=True)
class Decision:
    """What one folder gives."""

    found: tuple[Found, ...] = ()
    notes: tuple[Note, ...] = ()
    owns_subtree: bool = False
    """Everything below belongs to what was found (a build context, an asset)."""


SKIPPED = Decision()
"""A folder inside another spec's build context: nothing is looked for there."""

Parser = Callable[[list[str]], list[Any]]
"""Parses documents by tree path (with a cache, only those whose blob changed)."""


@dataclass(slots=True)
class Places:
    """What each v2 environment document gave, and claimed, when it last parsed: when it
    breaks, it keeps that place (the controller keeps one `Places` across revisions)."""

    by_path: dict[str, tuple[Found, Claims]] = field(default_factory=dict)

    def record(self, layout: Layout) -> None:
        """Remember what the documents the layout parsed last gave as v2 environments; forget
        documents that are gone."""
        for path in [p for p in self.by_path if p not in layout.docs]:
            del self.by_path[path]
        for path in layout.stored:
            doc = layout.docs.get(path)
            if isinstance(doc, Unparsed):
                continue  # a broken one keeps what it had
            found = next(
                (f for f in layout.decisions.get(parent(path), SKIPPED).found if f.path == path),
                None,
            )
            if found is not None and found.kind == "aml-v2" and found.error is None:
                self.by_path[path] = (found, layout.claims.get(path, Claims()))
            else:
                self.by_path.pop(path, None)


@dataclass(slots=True)
class Layout:
    root: str
    ignore: tuple[str, ...]
    tree_id: str | None = None
    names: dict[str, frozenset[str]] = field(default_factory=dict)
    """Every visible folder below the root -> the names of its visible files."""
    docs_in: dict[str, tuple[str, ...]] = field(default_factory=dict)
    docs: dict[str, Any] = field(default_factory=dict)
    """Document path -> YAML data, `DockerfileFacts` or `Unparsed`."""
    linked: set[str] = field(default_factory=set)
    """Documents that are symlinks: their blob says nothing of the content they lead to."""
    claims: dict[str, Claims] = field(default_factory=dict)
    claimed_files: Counter[str] = field(default_factory=Counter)
    claimed_folders: Counter[tuple[str, ClaimKind]] = field(default_factory=Counter)
    state: dict[str, tuple[bool, bool]] = field(default_factory=dict)
    """Folder -> (skipped: inside a build context, built: inside a v2 build folder)."""
    decisions: dict[str, Decision] = field(default_factory=dict)
    kept: dict[str, Found] = field(default_factory=dict)
    """Broken v2 documents -> what they gave when they last parsed (their place is kept)."""
    stored: list[str] = field(default_factory=list)
    """The documents parsed by the last `lay_out` or `update`."""

    # -- reading the tree ------------------------------------------------------------------------

    def _matcher(self) -> pathspec.GitIgnoreSpec | None:
        if not self.ignore:
            return None
        import pathspec  # noqa: PLC0415 - a tenth of start-up; only ignore patterns need it

        return pathspec.GitIgnoreSpec.from_lines(self.ignore)

    def visible(self, path: str, matcher: pathspec.GitIgnoreSpec | None) -> bool:
        """Not hidden, not ignored (only the last part is checked: parents were)."""
        relative = path[len(self.root) + 1 :] if self.root else path
        if not relative:
            return True
        if relative.rpartition("/")[2].startswith("."):
            return False
        if path == REPOSITORY_FILE:
            return False
        return not (matcher is not None and matcher.match_file(relative))

    def visible_folder(self, folder: str, matcher: pathspec.GitIgnoreSpec | None) -> bool:
        """`folder` and each folder between it and the root are visible."""
        while folder != self.root:
            if not self.visible(folder, matcher):
                return False
            folder = parent(folder)
        return True

    def walk(self, view: TreeView, matcher: pathspec.GitIgnoreSpec | None) -> Iterator[str]:
        """Visible folders below the root, parents before children, in path order."""
        children = view.children()
        entries = view.entries
        stack = [self.root]
        while stack:
            folder = stack.pop()
            yield folder
            subfolders = [p for p in children.get(folder, ()) if p not in entries]
            stack.extend(sorted((p for p in subfolders if self.visible(p, matcher)), reverse=True))

    def list_folder(
        self, view: TreeView, folder: str, matcher: pathspec.GitIgnoreSpec | None
    ) -> list[str]:
        """Record the folder's visible file names; returns the documents its forms ask for."""
        entries = view.entries
        names = frozenset(
            posixpath.basename(p)
            for p in view.children().get(folder, ())
            if p in entries and self.visible(p, matcher)
        )
        self.names[folder] = names
        wanted: list[str] = []
        for form in FORMS:
            documents, alone = form.documents(names)
            wanted.extend(documents)
            if alone:
                break
        paths = tuple(sorted({f"{folder}/{n}" if folder else n for n in wanted}))
        self.docs_in[folder] = paths
        return list(paths)

    def store(
        self, view: TreeView, paths: list[str], docs: list[Any], places: Places | None
    ) -> None:
        """Keep parsed documents and count their claims; a v2 document that broke keeps the
        place `places` remembers for it."""
        entries = view.entries
        self.stored = paths
        for path, doc in zip(paths, docs, strict=True):
            self.drop(path)
            self.docs[path] = doc
            if entries[path].kind != "file":
                self.linked.add(path)
            claims = self._claims(path, doc)
            kept = places.by_path.get(path) if places is not None else None
            if kept is not None and isinstance(doc, Unparsed):
                self.kept[path], claims = kept
            if claims:
                self.claims[path] = claims
                self.count(claims, +1)

    @staticmethod
    def _claims(path: str, doc: Any) -> Claims:
        if not isinstance(doc, dict):
            return Claims()
        for form in CLAIMING:
            found = form.claims(path, doc)
            if found:
                return found
        return Claims()

    def drop(self, path: str) -> None:
        self.docs.pop(path, None)
        self.linked.discard(path)
        self.kept.pop(path, None)
        claims = self.claims.pop(path, None)
        if claims is not None:
            self.count(claims, -1)

    def count(self, claims: Claims, step: int) -> None:
        for file in claims.files:
            self.claimed_files[file] += step
            if self.claimed_files[file] <= 0:
                del self.claimed_files[file]
        for claim in claims.folders:
            self.claimed_folders[claim] += step
            if self.claimed_folders[claim] <= 0:
                del self.claimed_folders[claim]

    # -- deciding --------------------------------------------------------------------------------

    def claimed_above(self, kind: ClaimKind) -> set[str]:
        return {folder for folder, claim in self.claimed_folders if claim == kind}

    def inherited(self, folder: str, above: dict[ClaimKind, set[str]]) -> tuple[bool, bool]:
        if folder == self.root:
            return within(folder, above["context"]), within(folder, above["build"])
        up = parent(folder)
        skipped, built = self.state[up]
        owned = self.decisions[up].owns_subtree
        return (
            skipped or owned or (folder, "context") in self.claimed_folders,
            built or (folder, "build") in self.claimed_folders,
        )

    def decide(self, folder: str, above: dict[ClaimKind, set[str]]) -> None:
        skipped, built = self.inherited(folder, above)
        self.state[folder] = (skipped, built)
        if skipped:
            self.decisions[folder] = SKIPPED
            return
        found: list[Found] = []
        notes: list[Note] = []
        owns = False
        context = Folder(
            path=folder,
            names=self.names[folder],
            docs={path: self.docs[path] for path in self.docs_in[folder]},
            claimed_files=self.claimed_files,
            built=built,
            found=found,
            root=self.root,
            kept=self.kept,
        )
        for form in FORMS:
            detection = form.detect(context)
            if detection is None:
                continue
            found.extend(detection.found)
            notes.extend(detection.notes)
            owns = owns or detection.owns_subtree
            if detection.final:
                break
        self.decisions[folder] = Decision(tuple(found), tuple(notes), owns)

    def _above(self) -> dict[ClaimKind, set[str]]:
        return {"context": self.claimed_above("context"), "build": self.claimed_above("build")}

    # -- the whole tree --------------------------------------------------------------------------

    def lay_out(self, view: TreeView, parse: Parser, places: Places | None) -> None:
        matcher = self._matcher()
        folders = list(self.walk(view, matcher))
        paths: list[str] = []
        for folder in folders:
            paths.extend(self.list_folder(view, folder, matcher))
        self.store(view, paths, parse(paths), places)
        above = self._above()
        for folder in folders:
            self.decide(folder, above)

    # -- a tree that changed in a few places -----------------------------------------------------

    def update(
        self, view: TreeView, changes: dict[str, bool], parse: Parser, places: Places | None
    ) -> None:
        """Lay out `view`, a tree that differs from the last one by `changes` (path -> changed
        in place), again only where the changes reach."""
        matcher = self._matcher()
        files_before = set(self.claimed_files)
        folders_before = set(self.claimed_folders)
        relist: set[str] = set()
        fresh: set[str] = set()
        gone: set[str] = set()
        for path, in_place in changes.items():
            if not in_place:
                self._touch(view, path, matcher, relist, fresh, gone)
        for folder in gone:
            self._forget(folder)
        relist -= gone
        dirty = relist | fresh
        reparse = {p for p, in_place in changes.items() if in_place and p in self.docs}
        reparse |= {p for p in self.linked if parent(p) in self.names}
        paths: list[str] = []
        for folder in sorted(dirty):
            for path in self.docs_in.get(folder, ()):
                self.drop(path)
            paths.extend(self.list_folder(view, folder, matcher))
        paths.extend(sorted(p for p in reparse if parent(p) not in dirty))
        dirty.update(parent(p) for p in reparse)
        self.store(view, paths, parse(paths), places)
        for file in files_before ^ set(self.claimed_files):
            if parent(file) in self.names:
                dirty.add(parent(file))
        for folder, _kind in folders_before ^ set(self.claimed_folders):
            if folder in self.names:
                dirty.add(folder)
            elif within(self.root, {folder}):
                dirty.add(self.root)
        self._decide_again(dirty)

    def _is_folder(self, view: TreeView, folder: str) -> bool:
        return folder == "" or (folder in view.children() and folder not in view.entries)

    def _touch(
        self,
        view: TreeView,
        path: str,
        matcher: pathspec.GitIgnoreSpec | None,
        relist: set[str],
        fresh: set[str],
        gone: set[str],
    ) -> None:
        """`path` was added or removed (or changed kind): the nearest folder that is still there
        lists its files again; folders that appeared on the way are new, those that went are
        gone."""
        folder = parent(path)
        while not self.root or folder == self.root or folder.startswith(self.root + "/"):
            exists = self._is_folder(view, folder)
            if folder in self.names:
                if exists:
                    relist.add(folder)
                    return
                gone.add(folder)
            elif exists and self.visible_folder(folder, matcher):
                fresh.add(folder)
            if folder == self.root:
                return
            folder = parent(folder)

    def _forget(self, folder: str) -> None:
        for path in self.docs_in.pop(folder, ()):
            self.drop(path)
        self.names.pop(folder, None)
        self.state.pop(folder, None)
        self.decisions.pop(folder, None)

    def below(self, folder: str) -> Iterable[str]:
        prefix = folder + "/" if folder else ""
        return [f for f in self.names if f.startswith(prefix) and f != folder]

    def _decide_again(self, dirty: set[str]) -> None:
        """Decide `dirty` folders again, parents first; a folder whose state or ownership of
        its subtree changes makes every folder below it dirty too."""
        above = self._above()
        heap = sorted(f for f in dirty if f in self.names)
        done: set[str] = set()
        while heap:
            folder = heapq.heappop(heap)
            if folder in done or folder not in self.names:
                continue
            done.add(folder)
            was = (self.state.get(folder), self.decisions.get(folder, SKIPPED).owns_subtree)
            self.decide(folder, above)
            if (self.state[folder], self.decisions[folder].owns_subtree) != was:
                for below in self.below(folder):
                    if below not in done:
                        heapq.heappush(heap, below)

    # -- results ---------------------------------------------------------------------------------

    def found(self) -> list[Found]:
        return [f for folder in sorted(self.decisions) for f in self.decisions[folder].found]

    def notes(self) -> list[Note]:
        return [n for folder in sorted(self.decisions) for n in self.decisions[folder].notes]
