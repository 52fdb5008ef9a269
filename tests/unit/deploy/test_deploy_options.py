"""The options of a Ray deployment and the Serve options they give, without Ray."""

from __future__ import annotations

from pathlib import Path

import pytest

from accelserve.deploy.groups import plan_groups
from accelserve.deploy.ray import (
    DeployOptions,
    deployment_options,
    front_door_binary,
    parse_autoscale,
    serve_config,
)
from accelserve.errors import ConfigError

SIMPLE = (
    'name: "simple"\nplatform: "onnxruntime_onnx"\nmax_batch_size: 8\n'
    "instance_group [{ kind: KIND_CPU count: 2 }]\n"
)


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    (tmp_path / "simple" / "1").mkdir(parents=True)
    (tmp_path / "simple" / "config.pbtxt").write_text(SIMPLE)
    return tmp_path


def test_fixed_replicas(repository):
    options = DeployOptions(str(repository), replicas=3)
    (group,) = plan_groups(repository)
    assert deployment_options(group, options) == {
        "name": "accelserve-default",
        "max_ongoing_requests": 32,
        "ray_actor_options": {"num_cpus": 2.0},
        "num_replicas": 3,
    }


def test_autoscaling_targets_one_full_batch_per_instance(repository):
    options = DeployOptions(str(repository), autoscale=parse_autoscale("1:4"))
    (group,) = plan_groups(repository)
    assert deployment_options(group, options)["autoscaling_config"] == {
        "min_replicas": 1,
        "max_replicas": 4,
        "target_ongoing_requests": 16,
        "policy": {"policy_function": "accelserve.deploy.autoscale:front_door_policy"},
    }


def test_autoscale_settings_reach_serves_autoscaling_config(repository):
    options = DeployOptions(
        str(repository),
        autoscale=[1, 2],
        autoscale_settings={"upscale_delay_s": 0, "downscale_delay_s": "2.5"},
    )
    (group,) = plan_groups(repository)
    config = deployment_options(group, options)["autoscaling_config"]
    assert (config["upscale_delay_s"], config["downscale_delay_s"]) == (0.0, 2.5)
    assert config["target_ongoing_requests"] == 16
    settings = serve_config(options)["applications"][0]["args"]["autoscale_settings"]
    assert settings == {"upscale_delay_s": 0.0, "downscale_delay_s": 2.5}  # for build_app


def test_autoscale_settings_need_autoscale(repository):
    with pytest.raises(
        ConfigError,
        match="--autoscale-setting: expected with --autoscale MIN:MAX; "
        "received upscale_delay_s without it",
    ):
        DeployOptions(str(repository), autoscale_settings={"upscale_delay_s": 1.0})


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"delay": 1}, "expected a KEY among target_ongoing_requests, .*; received 'delay'"),
        ({"upscale_delay_s": -1}, "upscale_delay_s: expected a number >= 0; received -1"),
        ({"look_back_period_s": 0}, "look_back_period_s: expected a number > 0; received 0"),
        ({"downscale_delay_s": "soon"}, "expected a number >= 0; received 'soon'"),
    ],
)
def test_a_bad_autoscale_setting_names_the_field(repository, settings, message):
    with pytest.raises(ConfigError, match=message):
        DeployOptions(str(repository), autoscale=[1, 2], autoscale_settings=settings)


def test_serve_config_names_the_builder_and_an_absolute_repository(repository, monkeypatch):
    monkeypatch.chdir(repository.parent)
    config = serve_config(DeployOptions(repository.name), "0.0.0.0", 9000)
    (app,) = config["applications"]
    assert app["import_path"] == "accelserve.deploy.ray:build_app"
    assert app["args"] == {
        "model_repository": str(repository.resolve()),
        "device": "auto",
        "replicas": 1,
    }
    assert config["http_options"] == {"host": "0.0.0.0", "port": 9000}


@pytest.mark.parametrize("text", ["4", "a:b", "1:", ":3", "1:2:3"])
def test_a_bad_autoscale_names_the_expected_form(text):
    with pytest.raises(ConfigError, match=r"--autoscale: expected MIN:MAX \(e.g. 1:4\)"):
        parse_autoscale(text)


@pytest.mark.parametrize("bounds", [[3, 1], [0, 0]])
def test_autoscale_bounds_must_be_ordered(repository, bounds):
    with pytest.raises(ConfigError, match="autoscale: expected MIN:MAX with 0 <= MIN <= MAX"):
        DeployOptions(str(repository), autoscale=bounds)


@pytest.mark.parametrize("replicas", [0, -1])
def test_replicas_must_be_positive(repository, replicas):
    with pytest.raises(
        ConfigError, match=f"replicas: expected an integer >= 1; received {replicas}"
    ):
        DeployOptions(str(repository), replicas=replicas)


@pytest.mark.parametrize("window", [-1, 2.5, "200"])
def test_busy_polling_must_be_a_whole_number_of_microseconds(repository, window):
    with pytest.raises(
        ConfigError, match=f"busy_poll_us: expected an integer >= 0; received {window!r}"
    ):
        DeployOptions(str(repository), busy_poll_us=window)


def test_the_front_door_is_haproxy_when_found_and_serve_otherwise() -> None:
    assert front_door_binary("auto", lambda: "/bin/haproxy") == "/bin/haproxy"
    assert front_door_binary("haproxy", lambda: "/bin/haproxy") == "/bin/haproxy"
    assert front_door_binary("auto", lambda: None) is None
    assert front_door_binary("serve", lambda: "/bin/haproxy") is None


def test_an_unknown_or_missing_front_door_is_a_clear_error() -> None:
    with pytest.raises(
        ConfigError, match=r"expected one of auto, haproxy, serve; received 'nginx'"
    ):
        front_door_binary("nginx", lambda: "/bin/haproxy")
    with pytest.raises(ConfigError, match="no HAProxy found"):
        front_door_binary("haproxy", lambda: None)
