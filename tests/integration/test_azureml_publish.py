"""`envship sync --publish-workspace`: each verified image registered as an Azure ML environment
version by digest, through the real azure-ai-ml client against a stand-in that speaks Azure ML's
REST protocol for environment versions (tests/support/azureml_standin.py). Builds run on the real
engine and push to the real TLS + basic-auth registry; envship signs in through the Azure CLI
stand-in, as on a laptop."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.azure_cli import AzureCli
from tests.support.azureml_standin import AzureMLStandIn
from tests.support.controller_process import Launcher, wait_until
from tests.support.envship import Envship, Run
from tests.support.helpers import write
from tests.support.identity import EntraIssuer
from tests.support.infra import Certs, Registry


@pytest.fixture
def aml(certs: Certs, entra: EntraIssuer) -> Iterator[AzureMLStandIn]:
    standin = AzureMLStandIn(certs, entra).start()
    yield standin
    standin.stop()


def sync(
    envship: Envship, specs: Path, prefix: str, aml: AzureMLStandIn, az: AzureCli, certs: Certs,
    *extra: str,
) -> Run:  # fmt: skip
    args = ["--publish-workspace", aml.workspace_arg, "--publish-endpoint", aml.endpoint, *extra]
    return envship.sync(specs, prefix, *args, env=envship.env(**az.env(certs.ca_file)))


def specs_on(folder: Path, base: str, marker: str = "one") -> Path:
    return write(
        folder,
        {
            "sklearn.yml": (
                "name: sklearn-env\nversion: '3'\nbuild:\n  path: ctx\n"
                "description: Scikit-learn for training\ntags: {team: ml}\n"
            ),
            "ctx/Dockerfile": f"FROM {base}\nRUN echo {marker} > /marker\n",
            "plain/Dockerfile": f"FROM {base}\nRUN echo plain > /plain\n",
        },
    )


def test_verified_images_are_registered_once_by_digest_with_the_spec_s_mapping(
    envship: Envship, aml: AzureMLStandIn, az: AzureCli, certs: Certs,
    public_bases: Registry, target: Registry, tmp_path: Path,
):  # fmt: skip
    specs = specs_on(tmp_path / "specs", f"{public_bases.host}/base/busybox:1")
    first = sync(envship, specs, "aml1", aml, az, certs)
    assert first.result.returncode == 0, first.result.stderr
    items = first.items
    assert {n: i["action"] for n, i in items.items()} == {"sklearn-env": "built", "plain": "built"}
    assert aml.requests["put"] == 2
    sklearn, plain = items["sklearn-env"], items["plain"]
    stored = aml.versions[("sklearn-env", "3")]
    image = str(sklearn["image"]).rsplit(":", 1)[0]
    assert stored["image"] == f"{image}@{sklearn['digest']}"  # by digest, never a tag
    assert stored["description"] == "Scikit-learn for training"
    assert stored["tags"]["team"] == "ml"
    assert stored["tags"]["envship.hash"] == sklearn["hash"]
    assert "condaFile" not in stored  # Azure ML has nothing to build
    derived = "h" + str(plain["hash"]).removeprefix("sha256:")[:12]
    assert ("plain", derived) in aml.versions
    assert sklearn["azureml"] == (
        f"azureml://subscriptions/{aml.subscription}/resourcegroups/{aml.resource_group}"
        f"/workspaces/{aml.workspace}/environments/sklearn-env/versions/3"
    )
    assert "[sklearn-env] published as azureml:sklearn-env:3" in first.result.stderr

    again = sync(envship, specs, "aml1", aml, az, certs)
    assert again.result.returncode == 0, again.result.stderr
    assert set(again.actions().values()) == {"up-to-date"}
    assert aml.requests["put"] == 2  # a re-run registers nothing
    assert "[plain] already published as azureml:plain:" in again.result.stderr
    assert again.items["plain"]["azureml"] == plain["azureml"]


def test_a_version_registered_with_another_image_is_never_overwritten(
    envship: Envship, aml: AzureMLStandIn, az: AzureCli, certs: Certs,
    public_bases: Registry, tmp_path: Path,
):  # fmt: skip
    base = f"{public_bases.host}/base/busybox:1"
    specs = specs_on(tmp_path / "specs", base)
    assert sync(envship, specs, "aml2", aml, az, certs).result.returncode == 0
    before = dict(aml.versions[("sklearn-env", "3")])
    specs_on(specs, base, marker="changed")  # new content, same version '3'
    run = sync(envship, specs, "aml2", aml, az, certs)
    assert run.result.returncode == 1
    item = run.items["sklearn-env"]
    assert item["action"] == "failed"
    assert item["next"] == "fix the spec"
    assert "versions are immutable: bump the spec's version" in str(item["error"])
    assert aml.versions[("sklearn-env", "3")] == before
    assert run.items["plain"]["action"] == "up-to-date"  # the others carry on


@pytest.mark.parametrize(
    ("faults", "policy", "words"),
    [
        ([401], "operator must act", "Azure ML refused envship's identity"),
        ([403], "operator must act", "may not register environments"),
        ([429, 429, 429], "retry later", "Azure ML failed"),
        ([500, 503, 502], "retry later", "Azure ML failed"),
    ],
)
def test_service_failures_fail_the_environment_and_the_next_sync_publishes_once(
    envship: Envship, aml: AzureMLStandIn, az: AzureCli, certs: Certs,
    public_bases: Registry, tmp_path: Path, faults: list[int], policy: str, words: str,
):  # fmt: skip
    specs = write(
        tmp_path / "specs", {"app/Dockerfile": f"FROM {public_bases.host}/base/busybox:1\n"}
    )
    prefix = f"aml3{faults[0]}"
    aml.fail_next = list(faults)
    failed = sync(envship, specs, prefix, aml, az, certs)
    assert failed.result.returncode == 1
    item = failed.items["app"]
    assert item["action"] == "failed"
    assert item["next"] == policy
    assert words in str(item["error"])
    assert item["digest"]  # the image was pushed and verified; only publishing failed
    assert aml.versions == {}

    # pushed, not published (as when the controller dies in between): the next sync publishes
    again = sync(envship, specs, prefix, aml, az, certs)
    assert again.result.returncode == 0, again.result.stderr
    assert again.items["app"]["action"] == "up-to-date"
    assert aml.requests["put"] == 1
    assert len(aml.versions) == 1


def test_a_dry_run_lists_what_would_be_registered_and_registers_nothing(
    envship: Envship, aml: AzureMLStandIn, az: AzureCli, certs: Certs,
    public_bases: Registry, tmp_path: Path,
):  # fmt: skip
    specs = specs_on(tmp_path / "specs", f"{public_bases.host}/base/busybox:1")
    run = sync(envship, specs, "aml4", aml, az, certs, "--dry-run")
    assert run.result.returncode == 0, run.result.stderr
    assert "[sklearn-env] would publish as azureml:sklearn-env:3" in run.result.stderr
    assert "[plain] would publish as azureml:plain:h" in run.result.stderr
    assert sum(aml.requests.values()) == 0


def test_the_controller_publishes_what_it_pushed_once_the_service_answers_again(
    launch: Launcher, aml: AzureMLStandIn, az: AzureCli, certs: Certs,
):  # fmt: skip
    aml.fail_next = [500, 500, 500]  # the first publish fails after the push: as if killed then
    publish = {
        "azureml": {"subscription": aml.subscription, "resourceGroup": aml.resource_group,
                    "workspace": aml.workspace, "endpoint": aml.endpoint},
    }  # fmt: skip
    controller, _upstream, _secret = launch(
        {"envs/app/Dockerfile": f"FROM {launch.base}\nRUN echo app\n"},
        env=az.env(certs.ca_file),
        extra={"publish": publish},
    )
    wait_until(
        lambda: controller.envs()["app"]["phase"] == "Ready", 180, "app published", controller
    )
    app = controller.envs()["app"]
    derived = "h" + str(app["hash"]).removeprefix("sha256:")[:12]
    assert app["azureml"].endswith(f"/environments/app/versions/{derived}")
    assert aml.requests["failed 500"] == 3
    assert aml.requests["put"] == 1  # published once, on the retry
    image = app["image"].rsplit(":", 1)[0]
    assert aml.versions[("app", derived)]["image"] == f"{image}@{app['digest']}"


def test_gc_keeps_an_image_a_registered_version_names(
    envship: Envship, aml: AzureMLStandIn, az: AzureCli, certs: Certs,
    public_bases: Registry, target: Registry, tmp_path: Path,
):  # fmt: skip
    base = f"{public_bases.host}/base/busybox:1"
    specs = write(tmp_path / "specs", {"app/Dockerfile": f"FROM {base}\nRUN echo v1 > /v\n"})
    first = sync(envship, specs, "aml5", aml, az, certs)
    old_tag = str(first.items["app"]["image"]).rsplit(":", 1)[1]
    write(specs, {"app/Dockerfile": f"FROM {base}\nRUN echo v2 > /v\n"})
    assert sync(envship, specs, "aml5", aml, az, certs).actions() == {"app": "built"}
    assert len(aml.versions) == 2  # both contents are registered versions

    def gc(*extra: str) -> set[str]:
        result = envship(
            "gc", str(specs), *envship.target_args("aml5"), "-o", "json", "--grace", "0", *extra,
            env=envship.env(**az.env(certs.ca_file)),
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        return {str(row["tag"]) for row in json.loads(result.stdout)}

    assert gc("--dry-run") == {old_tag}  # without Azure ML, the old image is garbage
    published = ["--publish-workspace", aml.workspace_arg, "--publish-endpoint", aml.endpoint]
    assert gc(*published) == set()  # a registered version names it: kept
    assert target.manifest_digest("aml5/app", old_tag) is not None
    assert aml.requests["list containers"] == 1


def test_an_azure_ml_registry_gets_the_same_versions_and_the_same_refusal(
    envship: Envship, aml: AzureMLStandIn, az: AzureCli, certs: Certs,
    public_bases: Registry, tmp_path: Path,
):  # fmt: skip
    base = f"{public_bases.host}/base/busybox:1"
    specs = specs_on(tmp_path / "specs", base)
    args = ["--publish-registry", aml.registry, "--publish-endpoint", aml.endpoint]
    env = envship.env(**az.env(certs.ca_file))
    first = envship.sync(specs, "aml6", *args, env=env)
    assert first.result.returncode == 0, first.result.stderr
    assert aml.requests["discovery"] >= 1
    assert first.items["sklearn-env"]["azureml"] == (
        f"azureml://registries/{aml.registry}/environments/sklearn-env/versions/3"
    )
    assert aml.requests["put"] == 2
    again = envship.sync(specs, "aml6", *args, env=env)
    assert again.result.returncode == 0, again.result.stderr
    assert aml.requests["put"] == 2
    specs_on(specs, base, marker="changed")
    conflict = envship.sync(specs, "aml6", *args, env=env)
    item = conflict.items["sklearn-env"]
    assert item["action"] == "failed"
    assert "bump the spec's version" in str(item["error"])


def test_a_controller_killed_between_push_and_publish_publishes_once_after_a_restart(
    launch: Launcher, aml: AzureMLStandIn, az: AzureCli, certs: Certs, target: Registry,
):  # fmt: skip
    aml.read_delay = 30.0  # the first controller is killed while it asks Azure ML
    publish = {
        "azureml": {"subscription": aml.subscription, "resourceGroup": aml.resource_group,
                    "workspace": aml.workspace, "endpoint": aml.endpoint},
    }  # fmt: skip
    files = {"envs/killed/Dockerfile": f"FROM {launch.base}\nRUN echo killed\n"}
    first, _upstream, _secret = launch(files, env=az.env(certs.ca_file), extra={"publish": publish})
    wait_until(lambda: aml.requests["get"] >= 1, 180, "the publish step", first)
    repository = "ctl/killed"
    assert target.tags(repository)  # pushed
    first.process.kill()
    first.process.wait(10)
    assert aml.versions == {}  # and not published

    aml.read_delay = 0.0
    second, _upstream, _secret = launch(
        files, env=az.env(certs.ca_file), extra={"publish": publish}
    )
    wait_until(lambda: second.envs()["killed"]["phase"] == "Ready", 180, "published", second)
    assert aml.requests["put"] == 1  # once
    (stored,) = aml.versions.values()
    env = second.envs()["killed"]
    assert stored["image"] == f"{env['image'].rsplit(':', 1)[0]}@{env['digest']}"
