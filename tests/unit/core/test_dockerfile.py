"""Dockerfiles read as BuildKit reads them: every image a build pulls is found and pinned, and
a Dockerfile that cannot be built as written is refused with its file and line."""

from __future__ import annotations

from dataclasses import replace

import pytest

from controller.core.dockerfile import from_references, instructions, pin, read_dockerfile
from controller.core.hashing import content_hash
from controller.core.model import BuildSpec, ContextFile, PythonSetup, base_references
from tests.support.helpers import plan_files

DIGEST = "sha256:" + "a" * 64
OTHER = "sha256:" + "b" * 64


def test_every_image_a_build_pulls_is_found_and_stages_are_not():
    text = (
        "# syntax=docker/dockerfile:1\n"
        "ARG BASE=python:3.11-slim\n"
        "ARG TAG\n"
        "FROM ${BASE} AS build\n"
        "COPY --from=ghcr.io/astral-sh/uv:0.5 /uv /bin/uv\n"
        "RUN --mount=type=cache,target=/root/.cache \\\n"
        "    --mount=type=bind,from=registry.example.org/data:1,target=/data \\\n"
        "    echo building\n"
        "FROM scratch AS empty\n"
        "FROM build\n"
        "COPY --from=build /app /app\n"
        "COPY --from=0 /app /again\n"
        "FROM busybox:${TAG:-1.36}\n"
    )
    assert from_references(text) == [
        "python:3.11-slim",
        "ghcr.io/astral-sh/uv:0.5",
        "registry.example.org/data:1",
        "busybox:1.36",
    ]
    assert read_dockerfile(text).problem is None


def test_pinning_writes_the_digest_where_each_image_is_named():
    text = (
        "ARG BASE=python:3.11\n"
        "FROM $BASE AS b\n"
        "COPY --from=alpine:3 /x /y\n"
        "RUN --mount=type=cache,from=img:1,target=/c \\\n"
        "  echo run img:1\n"
    )
    pinned = pin(text, {"python:3.11": DIGEST, "alpine:3": DIGEST, "img:1": DIGEST})
    assert pinned.splitlines() == [
        "ARG BASE=python:3.11",
        f"FROM python:3.11@{DIGEST} AS b",
        f"COPY --from=alpine:3@{DIGEST} /x /y",
        f"RUN --mount=type=cache,from=img:1@{DIGEST},target=/c \\",
        "  echo run img:1",
    ]


def test_directives_escape_bom_comments_in_continuations_and_heredocs():
    text = (
        "\ufeff# escape=`\n"
        "FROM mcr.microsoft.com/windows/base:1 `\n"
        "# a comment inside the continuation\n"
        "\n"
        "  AS first\n"
        "RUN <<EOF\n"
        "FROM this-is-not-an-instruction\n"
        "EOF\n"
        "FROM busybox:1\n"
    )
    keywords = [ins.keyword for ins in instructions(text)]
    assert keywords == ["FROM", "RUN", "FROM"]
    assert from_references(text) == ["mcr.microsoft.com/windows/base:1", "busybox:1"]
    assert pin(text, {"busybox:1": DIGEST}).endswith(f"FROM busybox:1@{DIGEST}\n")


def test_platform_args_are_known_in_from():
    text = "FROM --platform=$BUILDPLATFORM example.org/tool:${TARGETARCH}\n"
    assert from_references(text, "linux/arm64") == ["example.org/tool:arm64"]


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("RUN echo no base\n", "has no FROM instruction"),
        ("ARG BASE\nFROM $BASE\n", "FROM on line 2 uses ARG BASE, which has no default"),
        ("FROM BusyBox:latest\n", "base image 'BusyBox:latest' is not a valid image reference"),
        ("FROM user:pw-7f3a@example.org/img:1\n", "carries credentials"),
        ("FROM busybox:1\nCOPY --from=Bad:Ref /a /b\n", "'Bad:Ref' is not a valid image"),
        ("FROM\n", "FROM on line 1 names no image"),
    ],
)
def test_a_dockerfile_that_cannot_be_built_as_written_is_refused(text: str, words: str):
    items = plan_files({"ctx/Dockerfile": text, "ctx/conda.yml": "dependencies: [python=3.11]\n"})
    item = items["ctx"]
    assert item.action == "refused"
    assert item.error is not None
    assert item.error.startswith("ctx/Dockerfile: ")
    assert words in item.error
    assert "pw-7f3a" not in item.error


def test_a_dockerfile_without_from_does_not_swallow_its_folder():
    items = plan_files(
        {
            "extra/Dockerfile": "RUN apt-get install -y curl\n",
            "extra/conda.yml": "dependencies: [python=3.11]\n",
            "extra/sub/requirements.txt": "numpy\n",
        }
    )
    assert items["extra"].action == "refused"
    assert items["extra/conda.yml"].action == "build"
    assert items["extra/sub"].action == "build"


def test_images_named_by_copy_from_are_hashed_like_bases():
    context = "FROM busybox:1\nCOPY --from=example.org/tool:2 /t /t\n"
    build = BuildSpec(
        python=PythonSetup("user"),
        dockerfile_path="Dockerfile",
        context=(ContextFile("Dockerfile", context.encode()),),
    )
    assert base_references(build) == ["busybox:1", "example.org/tool:2"]
    one = replace(build, base_digests=(("busybox:1", DIGEST), ("example.org/tool:2", DIGEST)))
    moved = replace(one, base_digests=(("busybox:1", DIGEST), ("example.org/tool:2", OTHER)))
    assert content_hash(one) != content_hash(moved)
