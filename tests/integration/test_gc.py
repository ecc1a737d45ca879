"""envship gc against a real registry: dry run first, grace period, moving tags protect."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.envship import Envship
from tests.support.helpers import write
from tests.support.infra import Registry


def test_gc_deletes_only_tags_whose_hash_left_the_specs(
    envship: Envship, public_bases: Registry, target: Registry, tmp_path: Path
):
    base = f"{public_bases.host}/base/busybox:1"
    specs = write(
        tmp_path / "specs",
        {
            "keep/Dockerfile": f"FROM {base}\nRUN echo keep > /k\n",
            "change/Dockerfile": f"FROM {base}\nRUN echo v1 > /v\n",
            "tagged/Dockerfile": f"FROM {base}\nRUN echo t1 > /t\n",
            "remove/Dockerfile": f"FROM {base}\nRUN echo bye > /r\n",
        },
    )
    first = envship.sync(specs, "gc1")
    assert set(first.actions().values()) == {"built"}, first.result.stderr
    only_tagged = write(
        tmp_path / "only-tagged", {"tagged/Dockerfile": f"FROM {base}\nRUN echo t1 > /t\n"}
    )
    assert envship.sync(only_tagged, "gc1", "--tag", "latest").actions() == {"tagged": "up-to-date"}
    old_change = str(first.items["change"]["image"]).rsplit(":", 1)[1]
    old_tagged = str(first.items["tagged"]["image"]).rsplit(":", 1)[1]
    old_remove = str(first.items["remove"]["image"]).rsplit(":", 1)[1]

    write(specs, {"change/Dockerfile": f"FROM {base}\nRUN echo v2 > /v\n"})
    write(specs, {"tagged/Dockerfile": f"FROM {base}\nRUN echo t2 > /t\n"})
    (specs / "remove" / "Dockerfile").unlink()
    (specs / "remove").rmdir()
    second = envship.sync(specs, "gc1")  # no --tag: tagged's `latest` stays on its old image
    assert second.actions() == {"keep": "up-to-date", "change": "built", "tagged": "built"}

    def gc(*extra: str) -> list[dict[str, object]]:
        result = envship("gc", str(specs), *envship.target_args("gc1"), "-o", "json", *extra)
        assert result.returncode == 0, result.stdout + result.stderr
        return list(json.loads(result.stdout))

    assert gc("--dry-run") == []  # every image is younger than the default day of grace
    planned = {(row["repository"], row["tag"]) for row in gc("--dry-run", "--grace", "0")}
    assert planned == {("gc1/change", old_change), ("gc1/remove", old_remove)}
    assert target.manifest_digest("gc1/change", old_change) is not None  # dry run deleted nothing

    deleted = {(row["repository"], row["tag"]) for row in gc("--grace", "0")}
    assert deleted == planned
    assert target.manifest_digest("gc1/change", old_change) is None
    assert target.manifest_digest("gc1/remove", old_remove) is None
    # live images and images a moving tag points at stay
    assert target.manifest_digest("gc1/tagged", old_tagged) is not None
    assert target.manifest_digest("gc1/tagged", "latest") is not None
    for name in ("keep", "change", "tagged"):
        repository, tag = str(second.items[name]["image"]).split("/", 1)[1].rsplit(":", 1)
        assert target.manifest_digest(repository, tag) is not None
    assert gc("--grace", "0") == []
