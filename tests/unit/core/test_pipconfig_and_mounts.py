"""The private indexes' pip configuration (a build secret), and the BuildKit mounts of the
rendered conda step: present for BuildKit, absent for the classic builder, same hash."""

from __future__ import annotations

import configparser

from controller.core.dockerfile import run_mounts
from controller.core.pipconfig import pip_config
from controller.core.render import PIP_CONFIG_SECRET, render
from tests.support.helpers import plan_files

CONDA = {
    "env/conda.yml": (
        "channels: [conda-forge]\n"
        "dependencies:\n  - python=3.11\n  - pip\n  - pip:\n    - requests==2.32.3\n"
    )
}


def test_the_pip_configuration_names_every_index_with_its_hosts_credentials():
    text = pip_config(
        ["https://feed.example.org/simple/", "http://mirror.internal:8080/pypi/simple/"],
        {"feed.example.org": ("reader", "p@ss:w/rd%")},
    )
    parser = configparser.RawConfigParser()  # as pip reads it
    parser.read_string(text)
    assert parser.get("global", "extra-index-url").split() == [
        "https://reader:p%40ss%3Aw%2Frd%25@feed.example.org/simple/",
        "http://mirror.internal:8080/pypi/simple/",
    ]
    assert parser.get("global", "trusted-host").split() == ["mirror.internal:8080"]


def test_an_index_without_credentials_and_no_plain_http_host_adds_no_trust():
    text = pip_config(["https://feed.example.org/simple/"], {})
    assert "trusted-host" not in text
    assert "@" not in text


def test_the_conda_step_mounts_its_caches_and_the_pip_secret_only_for_buildkit():
    item = plan_files(CONDA)["env/conda.yml"]
    assert item.env.build is not None
    assert item.hash is not None
    buildkit = render(item.env.build, item.hash)
    mounts = run_mounts(buildkit.dockerfile)
    assert {(m.type, m.secret_id) for m in mounts} == {
        ("cache", None),
        ("secret", PIP_CONFIG_SECRET),
    }
    assert "conda clean" not in buildkit.dockerfile  # it would empty the package cache mount
    assert "PIP_CACHE_DIR=/var/cache/envship/pip" in buildkit.dockerfile

    classic = render(item.env.build, item.hash, buildkit=False)
    assert run_mounts(classic.dockerfile) == ()
    assert "conda clean -aqy" in classic.dockerfile
    # the same environment either way: the hash label is the same
    assert f'"io.envship.hash"="{item.hash}"' in classic.dockerfile
    assert f'"io.envship.hash"="{item.hash}"' in buildkit.dockerfile
