"""The envship command as users run it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click
import pytest

from controller.cli.options import BuildArgs
from tests.support.paths import ROOT


def envship(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "controller.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        check=False,
    )


def test_plan_json_lists_every_example(tmp_path: Path):
    result = envship("plan", "specs", "--output", "json")
    assert result.returncode == 0, result.stderr
    items = json.loads(result.stdout)
    assert {i["kind"] for i in items} == {"aml-v1", "aml-v2", "conda", "pip", "dockerfile"}
    for item in items:
        assert set(item) >= {"name", "path", "kind", "hash", "image", "error"}
        assert item["error"] is None
        assert item["image"].endswith(":" + item["hash"][7:39])
    v2 = next(i for i in items if i["name"] == "v2-build-context")
    assert v2["path"] == "v2/build-context.yml"


def test_plan_table_and_refusals_set_the_exit_status(tmp_path: Path):
    (tmp_path / "good").mkdir()
    (tmp_path / "good" / "requirements.txt").write_text("numpy\n")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "azureml_environment.json").write_text("{not json")
    result = envship("plan", str(tmp_path))
    assert result.returncode == 1
    assert "good" in result.stdout
    assert "bad/azureml_environment.json: invalid JSON at line 1" in result.stdout
    assert "Traceback" not in result.stderr


def test_render_and_hash_select_by_name_or_path():
    by_name = envship("hash", "v2-build-context", "--path", "specs")
    by_path = envship("hash", "v2/build-context.yml", "--path", "specs")
    assert by_name.returncode == 0
    assert by_name.stdout == by_path.stdout
    assert by_name.stdout.startswith("sha256:")
    rendered = envship("render", "v2/image-plus-conda.yml", "--path", "specs")
    assert rendered.returncode == 0
    assert "conda env create -p /azureml-envs/azureml_" in rendered.stdout
    assert by_name.stdout.strip() in envship("render", "v2-build-context", "--path", "specs").stdout
    missing = envship("render", "nope", "--path", "specs")
    assert missing.returncode == 2
    assert "no environment named 'nope'" in missing.stderr


def test_version():
    result = envship("--version")
    assert result.returncode == 0
    assert "envship" in result.stdout


def test_names_paths_and_messages_never_act_on_the_terminal(tmp_path: Path):
    """Rich markup and control characters in names and paths reach the screen as text."""
    for name in ("[/oops]", "[link=https://evil.example]click[/link]", "ok\u202eevil"):
        folder = tmp_path / f"v2-{abs(hash(name))}"
        folder.mkdir()
        (folder / "env.yml").write_text(json.dumps({"name": name, "image": "busybox:1"}))
    sneaky = tmp_path / "\x1b[2Jforged row\x1b[0m"
    sneaky.mkdir()
    (sneaky / "requirements.txt").write_text("numpy\n")
    result = envship("plan", str(tmp_path), "--no-resolve-base")
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 1  # the three explicit names cannot be repositories
    shown = result.stdout + result.stderr
    assert "\x1b" not in shown
    assert "\u202e" not in shown
    assert "\\x1b[2Jforged row" in shown
    assert "[/oops]" in shown
    assert "[link=https://evil.example]click[/link]" in shown
    assert "\\u202e" in shown


def test_build_secrets_and_the_builder_from_the_flags(tmp_path: Path):
    args = BuildArgs(None, (), False, (), "buildkit", None, ("pip=env:PIP_TOKEN", "b.1=file:/s"))
    assert {k: str(v) for k, v in args.secrets().items()} == {
        "pip": "env:PIP_TOKEN",
        "b.1": "file:/s",
    }
    for wrong in ("no-equals", "a,src=/x=env:X", "ok=plain-literal"):
        with pytest.raises(click.UsageError) as caught:
            BuildArgs(None, (), False, (), "buildkit", None, (wrong,)).secrets()
        assert "plain-literal" not in str(caught.value)
    with pytest.raises(click.UsageError) as reserved:
        BuildArgs(None, (), False, (), "buildkit", None, ("envship-pip-conf=env:X",)).secrets()
    assert "the build secret id envship-pip-conf is envship's own" in str(reserved.value)
    used = envship("sync", str(tmp_path), "--registry", "127.0.0.1:9", "--builder", "kaniko")
    assert used.returncode == 2
    assert "'kaniko' is not one of 'classic', 'buildkit'" in used.stderr
