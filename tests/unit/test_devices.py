from __future__ import annotations

import pytest

from accelserve.devices import Device, discover, host_device_count, parse_device, resolve_device
from accelserve.errors import DeviceError


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("cpu", Device("cpu", 0)),
        ("CPU:0", Device("cpu", 0)),
        ("cuda", Device("cuda", 0)),
        ("cuda:3", Device("cuda", 3)),
        ("gpu:1", Device("cuda", 1)),
        ("tpu:2", Device("tpu", 2)),
        ("/device:CPU:0", Device("cpu", 0)),
        ("/device:GPU:1", Device("cuda", 1)),
        ("/device:gpu:0", Device("cuda", 0)),
        ("/device:TPU:3", Device("tpu", 3)),
        (" Cuda:2 ", Device("cuda", 2)),
        ("cpu:3", Device("cpu", 3)),
        ("/device:CPU:1", Device("cpu", 1)),
    ],
)
def test_parse(spec: str, expected: Device) -> None:
    assert parse_device(spec) == expected


@pytest.mark.parametrize(
    "spec", ["", "gpu0", "cuda:-1", "/device:XPU:0", "cpu:-1", "tpu:x", "cuda:1:2"]
)
def test_parse_rejects(spec: str) -> None:
    with pytest.raises(DeviceError, match="device"):
        parse_device(spec)


def test_auto_resolves_to_a_present_device() -> None:
    assert resolve_device("auto") in {Device("cpu", 0), Device("cuda", 0), Device("tpu", 0)}


def test_absent_device_lists_present_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(DeviceError) as info:
        resolve_device("cuda:7")
    message = str(info.value)
    assert "cuda:7" in message and "cpu:0" in message and "present" in message


def test_tensorflow_name_round_trip() -> None:
    assert Device("cuda", 1).tensorflow_name == "/device:GPU:1"
    assert parse_device(Device("tpu", 2).tensorflow_name) == Device("tpu", 2)


HOST_FLAG = "--xla_force_host_platform_device_count"


def test_one_host_device_without_the_xla_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    assert host_device_count() == 1
    assert [i.device for i in discover() if i.device.kind == "cpu"] == [Device("cpu", 0)]
    assert resolve_device("cpu:0") == Device("cpu", 0)
    with pytest.raises(DeviceError) as info:
        resolve_device("cpu:3")
    message = str(info.value)
    assert "cpu:3 is not present on this host; present: cpu:0" in message
    assert f"XLA_FLAGS={HOST_FLAG}=K" in message


def test_virtual_host_devices_from_the_xla_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XLA_FLAGS", f"--xla_cpu_enable_fast_math=false {HOST_FLAG}=4")
    assert host_device_count() == 4
    hosts = [i for i in discover() if i.device.kind == "cpu"]
    assert [str(i.device) for i in hosts] == ["cpu:0", "cpu:1", "cpu:2", "cpu:3"]
    assert all("virtual host device" in i.name and "sharing" in i.name for i in hosts)
    assert resolve_device("/device:CPU:3") == Device("cpu", 3)
    with pytest.raises(DeviceError, match=r"cpu:4 is not present .*present: cpu:0, cpu:1, cpu:2"):
        resolve_device("cpu:4")


def test_the_last_xla_flag_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XLA_FLAGS", f"{HOST_FLAG}=8 {HOST_FLAG}=2")
    assert host_device_count() == 2
