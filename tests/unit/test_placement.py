"""Instance groups -> devices (repository.instance_devices) and the planned placement."""

from __future__ import annotations

from pathlib import Path

import pytest

from accelserve.config import parse_config
from accelserve.devices import Device
from accelserve.errors import ConfigError, DeviceError
from accelserve.repository import instance_devices, plan_placements

CPU1 = [Device("cpu", 0)]
CPU4 = [Device("cpu", i) for i in range(4)]
GPU2 = [Device("cpu", 0), Device("cuda", 0), Device("cuda", 1)]


def _devices(groups: str, present: list[Device], default: str = "cpu") -> list[str]:
    config = parse_config(f'name: "m"\n{groups}')
    return [str(d) for d in instance_devices(config, default, present)]


def test_no_instance_group_is_one_instance_on_the_default_device() -> None:
    assert _devices("", CPU4) == ["cpu:0"]
    assert _devices("", CPU4, default="cpu:2") == ["cpu:2"]
    assert _devices("", GPU2, default="cuda:1") == ["cuda:1"]


def test_kind_cpu_with_one_host_device_puts_every_instance_on_cpu0() -> None:
    assert _devices("instance_group [{ count: 3 kind: KIND_CPU }]", CPU1) == ["cpu:0"] * 3


def test_kind_cpu_spreads_round_robin_over_host_devices() -> None:
    assert _devices("instance_group [{ count: 4 kind: KIND_CPU }]", CPU4) == [
        "cpu:0",
        "cpu:1",
        "cpu:2",
        "cpu:3",
    ]
    assert _devices("instance_group [{ count: 6 kind: KIND_CPU }]", CPU4) == [
        "cpu:0",
        "cpu:1",
        "cpu:2",
        "cpu:3",
        "cpu:0",
        "cpu:1",
    ]
    # The round-robin goes on across groups.
    two_groups = "instance_group [{ count: 1 kind: KIND_CPU }, { count: 2 kind: KIND_CPU }]"
    assert _devices(two_groups, CPU4) == ["cpu:0", "cpu:1", "cpu:2"]


def test_kind_gpu_places_count_instances_on_each_listed_gpu() -> None:
    groups = "instance_group [{ count: 2 kind: KIND_GPU gpus: [0, 1] }]"
    assert _devices(groups, GPU2) == ["cuda:0", "cuda:0", "cuda:1", "cuda:1"]
    assert _devices("instance_group [{ count: 1 kind: KIND_GPU gpus: [1] }]", GPU2) == ["cuda:1"]
    # No list: every GPU present.
    assert _devices("instance_group [{ count: 1 kind: KIND_GPU }]", GPU2) == ["cuda:0", "cuda:1"]


def test_kind_auto_picks_gpus_when_present_else_host_devices() -> None:
    groups = "instance_group [{ count: 2 kind: KIND_AUTO }]"
    assert _devices(groups, GPU2) == ["cuda:0", "cuda:0", "cuda:1", "cuda:1"]
    assert _devices(groups, CPU4) == ["cpu:0", "cpu:1"]


def test_kind_model_uses_the_default_device() -> None:
    groups = "instance_group [{ count: 2 kind: KIND_MODEL }]"
    assert _devices(groups, GPU2, default="cuda:1") == ["cuda:1", "cuda:1"]


def test_an_absent_gpu_is_a_clear_error() -> None:
    groups = "instance_group [{ count: 2 kind: KIND_GPU gpus: [0, 3] }]"
    with pytest.raises(DeviceError) as info:
        _devices(groups, GPU2)
    assert str(info.value) == (
        "model 'm' instance_group[0] gpus: device: cuda:3 is not present on this host; "
        "present: cpu:0, cuda:0, cuda:1"
    )
    with pytest.raises(DeviceError, match=r"cuda:0 is not present on this host; present: cpu:0$"):
        _devices("instance_group [{ kind: KIND_GPU }]", CPU1)


def test_an_absent_default_device_is_a_clear_error() -> None:
    with pytest.raises(DeviceError, match=r"cpu:7 is not present on this host; present: cpu:0 "):
        _devices("", CPU1, default="cpu:7")


def test_a_negative_count_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"instance_group\[0\] count: expected >= 1; received -2"):
        _devices("instance_group [{ count: -2 kind: KIND_CPU }]", CPU1)


def test_plan_reads_configs_and_reports_errors_per_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
    for name, text in {
        "spread": "instance_group [{ count: 3 kind: KIND_CPU }]",
        "on_gpu": "instance_group [{ count: 1 kind: KIND_GPU gpus: [9] }]",
        "plain": "",
    }.items():
        (tmp_path / name / "1").mkdir(parents=True)
        (tmp_path / name / "config.pbtxt").write_text(f'backend: "python"\n{text}\n')
    rows = {row["model"]: row for row in plan_placements(tmp_path, "cpu")}
    assert rows["spread"]["devices"] == ["cpu:0", "cpu:1", "cpu:0"]
    assert rows["plain"]["devices"] == ["cpu:0"]
    assert "cuda:9 is not present" in str(rows["on_gpu"]["error"])
