from __future__ import annotations

import pytest

from accelserve.devices import Device, parse_device, resolve_device
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
    ],
)
def test_parse(spec: str, expected: Device) -> None:
    assert parse_device(spec) == expected


@pytest.mark.parametrize(
    "spec", ["", "gpu0", "cuda:-1", "/device:XPU:0", "cpu:1", "tpu:x", "cuda:1:2"]
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
