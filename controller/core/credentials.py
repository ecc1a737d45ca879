"""Credentials a spec must never carry, looked for in every string it can send into an image or
an output: one check, applied to every environment once its form has read it. The same pass
refuses control characters in those strings (a line break in `interpreterPath` would be a
Dockerfile instruction of its own; an escape sequence would reach a terminal).

What counts as a credential:
- a URL with user-info (`https://user:secret@host`, `https://TOKEN@host`; `git@` is not one);
- a token in a URL's query (`?private_token=`, `access_token`, `sig` of an Azure SAS, ...);
- an anaconda.org channel token (`https://conda.anaconda.org/t/TOKEN/channel`);
- a string of a known token shape (GitHub, GitLab, Hugging Face, npm, Slack, AWS access keys,
  Azure storage account keys, JSON web tokens, private keys);
- an environment variable whose name says it holds a secret (`*_PASSWORD`, `*_TOKEN`,
  `*_SECRET`, `*_API_KEY`, ...) with a value.

Where it is looked for: every string of the environment's hash input (base images, every image
a Dockerfile pulls, environment and conda variables, conda channels and packages, pip lines,
looked-up values), its name and version, and the instructions of its Dockerfile and the
package-manager files of its build context (requirements, conda files, pip.conf, .npmrc,
.pypirc). A hit refuses the environment without echoing the value: the message names the file
and what holds the credential.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import replace

from controller.core.dockerfile import instructions
from controller.core.errors import SpecError
from controller.core.model import Environment

_USERINFO = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://([^/@\s?#]*)@")
_QUERY = re.compile(
    r"[?&;](private[_-]?token|access[_-]?token|auth[_-]?token|token|api[_-]?key|apikey|"
    r"password|passwd|pwd|secret|client[_-]?secret|sig|signature|x-amz-signature|"
    r"x-goog-signature|code)=([^&#\s\"']+)",
    re.IGNORECASE,
)
_CONDA_TOKEN = re.compile(r"/t/[A-Za-z0-9._-]{6,}/")
_SHAPES = (
    ("a GitHub token", re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_\w{30,})")),
    ("a GitLab token", re.compile(r"\bglpat-[A-Za-z0-9_-]{20,}")),
    ("a Hugging Face token", re.compile(r"\bhf_[A-Za-z0-9]{30,}")),
    ("an npm token", re.compile(r"\bnpm_[A-Za-z0-9]{36}\b")),
    ("a Slack token", re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}")),
    ("an AWS access key", re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")),
    ("an Azure storage account key", re.compile(r"AccountKey=[A-Za-z0-9+/]{40,}={0,2}")),
    ("a private key", re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")),
    (
        "a JSON web token",
        re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),
    ),
)
_SECRET_NAME = re.compile(
    r"(?:^|_)(?:PASSWORD|PASSWD|PWD|SECRET|CLIENT_SECRET|TOKEN|AUTH_TOKEN|ACCESS_TOKEN|API_?KEY|"
    r"ACCESS_KEY|SECRET_KEY|PRIVATE_KEY|CONNECTION_STRING|SAS)$",
    re.IGNORECASE,
)
_CONTEXT_FILES = re.compile(
    r"(?:^|/)(?:requirements[^/]*\.txt|[^/]*\.ya?ml|pip\.conf|pip\.ini|\.npmrc|\.pypirc|"
    r"\.condarc|environment\.txt)$",
    re.IGNORECASE,
)
"""Build-context files, besides the Dockerfile, where package managers read index URLs."""
MAX_SCANNED = 1024 * 1024
_CONTROL = re.compile(
    r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]"
)
"""Characters that would start a new Dockerfile line or a terminal escape sequence, or reorder
what a terminal shows (bidirectional overrides); tabs pass."""
CONTROL_KINDS = "a line break, an escape sequence or a bidirectional override"


def credential_in(text: str) -> str | None:
    """What kind of credential `text` holds, or None."""
    if "://" in text:
        for match in _USERINFO.finditer(text):
            userinfo = match.group(1)
            if ":" in userinfo or (userinfo and userinfo != "git"):
                return "a URL with a user name and password or token"
        if _QUERY.search(text):
            return "a token in a URL's query"
        if _CONDA_TOKEN.search(text):
            return "an anaconda.org channel token (/t/...)"
    for kind, shape in _SHAPES:
        if shape.search(text):
            return kind
    return None


_SCP = re.compile(r"^(?P<user>[^@/:\s]+)(?P<password>:[^@/\s]*)?@[^:/\s]+:")


def url_credential(url: str, *, user_allowed: bool = False) -> str | None:
    """What kind of credential a configured URL (git, registry) holds, or None. With
    `user_allowed`, a plain user name is fine (`https://org@dev.azure.com/...`, `git@host:`);
    a password, a token-shaped user name or a token in the query never are."""
    text = url.strip()
    scp = _SCP.match(text) if "://" not in text else None
    if scp is not None:
        if scp.group("password"):
            return "a password (user:password@host:path)"
        return _known_shape(scp.group("user"))
    if "://" in text:
        for match in _USERINFO.finditer(text):
            userinfo = match.group(1)
            if ":" in userinfo:
                return "a user name and password"
            if userinfo and not user_allowed and userinfo != "git":
                return "user-info (a token?)"
            if (shape := _known_shape(userinfo)) is not None:
                return shape
    if _QUERY.search(text):
        return "a token in the query"
    return _known_shape(text)


def _known_shape(text: str) -> str | None:
    return next((kind for kind, shape in _SHAPES if shape.search(text)), None)


def secret_named(name: str, value: str) -> bool:
    """An environment variable whose name says it holds a secret, and which has a value."""
    return bool(value.strip()) and _SECRET_NAME.search(name) is not None


def _strings(env: Environment) -> Iterator[tuple[str, str]]:
    """(what, text) of every string the environment sends into its image or an output."""
    build = env.build
    yield "the folder's path", env.path
    yield "the name", env.name
    if env.version:
        yield "the version", env.version
    if build is None:
        return
    if build.base_image:
        yield "the base image reference", build.base_image
    for name, value in build.environment:
        yield f"environment variable {name}", f"{name}={value}"
    python = build.python
    yield "python.interpreterPath", python.interpreter
    conda = python.conda
    if conda is not None:
        for channel in conda.channels:
            yield "a conda channel", channel
        for package in conda.dependencies:
            yield "a conda package", package
        for line in conda.pip:
            yield "a pip line", line
        for name, value in conda.variables:
            yield f"conda variable {name}", f"{name}={value}"
    for text, value in build.filled:
        yield "a looked-up value", f"{text} {value}"


def check(env: Environment) -> Environment:
    """`env`, or `env` refused when any string it sends into an image or an output carries a
    credential (the value is never repeated)."""
    if env.error is not None or env.build is None:
        return env
    origin = env.files[0] if env.files else env.path
    try:
        for what, text in _strings(env):
            if _CONTROL.search(text):
                raise SpecError(origin, f"{what} holds a control character ({CONTROL_KINDS})")
            if (kind := credential_in(text)) is not None:
                raise SpecError(origin, f"{what} carries {kind}; {_FIX}")
        for name, value in (*env.build.environment, *_conda_variables(env)):
            if secret_named(name, value):
                raise SpecError(origin, f"variable {name} holds a secret by its name; {_FIX}")
        _check_context(env, origin)
    except SpecError as exc:
        exc.env_name = env.name
        return replace(env, error=exc)
    return env


def _conda_variables(env: Environment) -> tuple[tuple[str, str], ...]:
    conda = env.build.python.conda if env.build is not None else None
    return conda.variables if conda is not None else ()


_FIX = "keep secrets out of git and give them to envship as secret references"


def _check_context(env: Environment, origin: str) -> None:
    build = env.build
    if build is None:
        return
    for item in build.context:
        if item.link_target is not None or len(item.data) > MAX_SCANNED:
            continue
        path = _repository_path(env, item.path, origin)
        if item.path == build.dockerfile_path:
            _check_dockerfile(item.data.decode("utf-8", errors="replace"), path)
        elif _CONTEXT_FILES.search(item.path):
            kind = credential_in(item.data.decode("utf-8", errors="replace"))
            if kind is not None:
                raise SpecError(path, f"this build-context file carries {kind}; {_FIX}")


def _check_dockerfile(text: str, path: str) -> None:
    """Every instruction (continuations joined), then every physical line: heredoc bodies and
    comments hold what a joined instruction may not."""
    keyword_of: dict[int, str] = {}
    for instruction in instructions(text):
        kind = credential_in(instruction.arguments)
        if kind is None and instruction.keyword in ("ENV", "ARG"):
            kind = _secret_assignment(instruction.arguments)
        if kind is not None:
            first = instruction.first + 1
            raise SpecError(path, f"{instruction.keyword} on line {first} carries {kind}; {_FIX}")
        for number in range(instruction.first, instruction.last + 1):
            keyword_of[number] = instruction.keyword
    for number, line in enumerate(text.removeprefix("\ufeff").split("\n")):
        kind = credential_in(line)
        if kind is not None:
            where = f"{keyword_of[number]} on line" if number in keyword_of else "line"
            raise SpecError(path, f"{where} {number + 1} carries {kind}; {_FIX}")


def _secret_assignment(arguments: str) -> str | None:
    """`NAME=value` pairs of an ENV or ARG whose name says it holds a secret."""
    for word in arguments.split():
        name, sep, value = word.partition("=")
        if sep and secret_named(name, value.strip("\"'")):
            return f"a value for {name}, which holds a secret by its name"
    return None


def _repository_path(env: Environment, context_path: str, origin: str) -> str:
    """The repository path of a build-context file (a v1 `BaseDockerfile` is the Dockerfile)."""
    for path in env.files:
        if path == context_path or path.endswith("/" + context_path):
            return path
    if env.build is not None and context_path == env.build.dockerfile_path:
        return next((p for p in env.files if p.endswith("BaseDockerfile")), origin)
    return origin
