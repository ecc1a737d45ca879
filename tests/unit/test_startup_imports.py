"""Start-up: each command imports only what it uses (`bench/bench_startup.py` times it).

Each case runs the `envship` command in a fresh interpreter, as its script does, and lists the
modules loaded by its exit: `--version` and `--help` load click and the command group alone; a
plan of one environment without registries loads none of the libraries of registries, builds,
git, HTTP, Kubernetes or the controller's configuration; a command's `--help` loads none of
its work's libraries.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from pathlib import Path

import click
import pytest

from controller.cli.main import main
from tests.support.paths import ROOT

PROBE = """
import atexit, json, sys
listing = sys.argv[1]

def dump():
    with open(listing, "w") as out:
        json.dump(sorted(sys.modules), out)

atexit.register(dump)
sys.argv = ["envship", *sys.argv[2:]]
from controller.cli.main import main
if sys.argv[1:] == ["-"]:
    import click
    context = click.Context(main, info_name="envship")
    for name in main.list_commands(context):
        assert main.get_command(context, name) is not None, name
    sys.exit(0)
main()
"""
"""The `envship` script's own start (`main()` ends the process), listing `sys.modules` at exit;
`envship -` loads every command instead (what running or asking the help of each would load)."""

WORK_LIBRARIES = frozenset(
    {
        # registries and package indexes
        "requests", "urllib3", "charset_normalizer", "idna", "certifi", "dxf",
        "www_authenticate", "pypi_simple", "azure", "msal",
        # builds, git, file watching
        "docker", "pygit2", "watchdog",
        # the controller: HTTP, scheduling, configuration, metrics, leader election
        "aiohttp", "multidict", "yarl", "apscheduler", "pydantic", "pydantic_core",
        "pydantic_settings", "prometheus_client", "kubernetes",
    }
)  # fmt: skip
"""Libraries only the work of some commands needs: none loads for `--help` or a plan
without registries."""

PLAN_UNUSED = WORK_LIBRARIES | {"pathspec", "asyncio", "ssl", "http", "email", "tarfile"}
"""...nor these for a plan without registries and ignore patterns."""


def packages(*args: str, tmp_path: Path) -> tuple[set[str], subprocess.CompletedProcess[str]]:
    """The top-level packages `envship ARGS` has loaded when it exits, and how it ran."""
    listing = tmp_path / "modules.json"
    result = subprocess.run(
        [sys.executable, "-c", PROBE, str(listing), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert listing.exists(), result.stderr
    modules = json.loads(listing.read_text())
    return {name.partition(".")[0] for name in modules}, result


@functools.cache
def bare_packages() -> frozenset[str]:
    code = "import json, sys; print(json.dumps(sorted(sys.modules)))"
    command = [sys.executable, "-c", code]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return frozenset(name.partition(".")[0] for name in json.loads(result.stdout))


def third_party(names: set[str]) -> set[str]:
    return {n for n in names - bare_packages() if n not in sys.stdlib_module_names}


def one_environment(tmp_path: Path) -> Path:
    folder = tmp_path / "specs"
    (folder / "one").mkdir(parents=True)
    (folder / "one" / "requirements.txt").write_text("scikit-learn==1.5.2\n")
    return folder


@pytest.mark.parametrize("flag", ["--version", "--help"])
def test_version_and_help_load_click_alone(flag: str, tmp_path: Path) -> None:
    loaded, result = packages(flag, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert ("envship, version" if flag == "--version" else "Commands:") in result.stdout
    assert third_party(loaded) == {"click", "controller"}
    listing = json.loads((tmp_path / "modules.json").read_text())
    assert sorted(m for m in listing if m.startswith("controller")) == [
        "controller",
        "controller.cli",
        "controller.cli.main",
    ]


@pytest.mark.parametrize("output", ["json", "table"])
def test_plan_of_one_environment_loads_no_registry_build_or_controller_library(
    output: str, tmp_path: Path
) -> None:
    folder = one_environment(tmp_path)
    loaded, result = packages(
        "plan", str(folder), "--no-resolve-base", "-o", output, tmp_path=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert "one" in result.stdout
    unused = PLAN_UNUSED | ({"rich"} if output == "json" else set())
    assert sorted(loaded & unused) == []


def test_the_commands_load_none_of_their_work_s_libraries_until_they_run(tmp_path: Path) -> None:
    """Every command's module loaded (as for its `--help`): the libraries of its work load
    in the code that does it."""
    loaded, result = packages("-", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    listing = json.loads((tmp_path / "modules.json").read_text())
    assert {"controller.cli.commands", "controller.cli.run", "controller.cli.watch"} <= set(listing)
    assert sorted(loaded & WORK_LIBRARIES) == []


def test_a_command_s_help_is_its_own(tmp_path: Path) -> None:
    loaded, result = packages("status", "--help", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Usage: envship status [OPTIONS]")
    assert "requests" not in loaded


def test_the_table_names_each_command_with_its_own_help() -> None:
    """`envship --help` lists the commands from the table: it says what each command's help
    says, so the listing is click's own."""
    from controller.cli.main import COMMANDS, load  # noqa: PLC0415 - the lazy group's own

    for name, (where, summary) in COMMANDS.items():
        command = load(where)
        assert command.name == name
        assert command.help is not None
        assert " ".join(command.help.partition("\n\n")[0].split()) == summary, name
    eager = click.Group(
        "envship",
        commands={name: load(where) for name, (where, _) in COMMANDS.items()},
        params=main.params,
        help=main.help,
        context_settings=main.context_settings,
    )

    def help_text(group: click.Group, width: int) -> str:
        # The group's settings (-h, --help) as `envship` runs it: click keeps the help option
        # it made first, so a context without them would depend on the tests run before.
        settings = main.context_settings
        context = click.Context(group, info_name="envship", terminal_width=width, **settings)
        return group.get_help(context)

    for width in (40, 80, 120, 200):
        assert help_text(main, width) == help_text(eager, width)


def test_an_unknown_command_is_told_the_close_names() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "controller.cli", "pla"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 2
    assert "No such command 'pla'. (Did you mean one of: 'explain', 'plan'?)" in result.stderr
