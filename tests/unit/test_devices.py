from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from accelserve import devices
from accelserve.devices import (
    Device,
    DeviceInfo,
    DriverGpu,
    discover,
    host_device_count,
    parse_device,
    proc_gpus,
    resolve_device,
    visible_gpu_ordinals,
    visible_nvml_handles,
)
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


# ------------------------------------------------------------------------------ GPUs, CUDA_VISIBLE_DEVICES

UUIDS = ["GPU-aaaa-0000", "GPU-bbbb-1111", "GPU-bbcc-2222", "GPU-dddd-3333"]


@pytest.mark.parametrize(
    ("visible", "expected"),
    [
        (None, [0, 1, 2, 3]),  # unset: every GPU
        ("", []),  # set but empty: none, as CUDA
        ("2", [2]),
        ("3,0", [3, 0]),  # the order given is the cuda:N order
        (" 1 , 2 ", [1, 2]),
        ("0,7,1", [0]),  # the list ends at the first GPU that does not exist
        ("0,x,1", [0]),
        ("-1", []),
        ("1x,0", [1, 0]),  # read like strtoul
        ("1,1", []),  # a repeated GPU: none at all
        ("GPU-dddd-3333", [3]),
        ("GPU-dd,GPU-aa", [3, 0]),  # unique uuid prefixes
        ("GPU-bb,0", []),  # an ambiguous prefix names no GPU
        ("GPU-bbbb-1111,GPU-bbbb", []),  # the same GPU twice
        ("GPU-aaaa-0000,2", [0, 2]),
        ("MIG-1234", []),  # MIG instances are not listed
    ],
)
def test_visible_gpu_ordinals(visible: str | None, expected: list[int]) -> None:
    assert visible_gpu_ordinals(visible, UUIDS) == expected


class FakeNvml:
    """nvidia-ml-py's calls that discovery makes, over a fixed listing of the node's GPUs."""

    class NVMLError(Exception):
        pass

    def __init__(self, gpus: list[tuple[str, str, int]]) -> None:
        self.gpus = gpus

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetUUID(self, handle: int) -> bytes:
        return self.gpus[handle][0].encode()  # older nvidia-ml-py returns bytes

    def nvmlDeviceGetName(self, handle: int) -> str:
        return self.gpus[handle][1]

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> SimpleNamespace:
        return SimpleNamespace(total=self.gpus[handle][2])


NODE = [
    ("GPU-aaaa-0000", "NVIDIA H100 80GB HBM3", 80 << 30),
    ("GPU-bbbb-1111", "NVIDIA H100 80GB HBM3", 80 << 30),
    ("GPU-cccc-2222", "NVIDIA L4", 24 << 30),
]


@pytest.fixture
def fresh_discovery(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("ACCELSERVE_DISABLE_CUDA", raising=False)
    monkeypatch.setattr(devices, "_tpu_infos", list)
    devices._accelerator_infos.cache_clear()
    yield
    devices._accelerator_infos.cache_clear()


def cuda_devices() -> list[DeviceInfo]:
    return [info for info in discover() if info.device.kind == "cuda"]


@pytest.mark.usefixtures("fresh_discovery")
def test_nvml_gpus_are_numbered_as_cuda_visible_devices_orders_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(devices, "nvml", lambda: FakeNvml(NODE))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-cccc-2222")
    (only,) = cuda_devices()
    assert (only.device, only.name, only.memory_bytes) == (Device("cuda", 0), "NVIDIA L4", 24 << 30)
    assert only.peak_flops == 121e12

    devices._accelerator_infos.cache_clear()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,0")
    assert [(str(i.device), i.name) for i in cuda_devices()] == [
        ("cuda:0", "NVIDIA L4"),
        ("cuda:1", "NVIDIA H100 80GB HBM3"),
    ]
    assert resolve_device("cuda:1") == Device("cuda", 1)
    with pytest.raises(DeviceError, match="cuda:2 is not present"):
        resolve_device("cuda:2")
    assert [uuid for uuid, _ in visible_nvml_handles()] == ["GPU-cccc-2222", "GPU-aaaa-0000"]


@pytest.mark.usefixtures("fresh_discovery")
def test_no_visible_gpu_means_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(devices, "nvml", lambda: FakeNvml(NODE))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert cuda_devices() == []
    assert visible_nvml_handles() == []
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    devices._accelerator_infos.cache_clear()
    assert len(cuda_devices()) == 3


def write_proc_gpu(root: Path, bus_id: str, model: str, uuid: str) -> None:
    (root / bus_id).mkdir(parents=True)
    (root / bus_id / "information").write_text(
        f"Model: \t\t {model}\nIRQ:   \t\t 16\nGPU UUID: \t {uuid}\n"
        f"Video BIOS: \t 96.00.5e.00.01\nBus Location: \t {bus_id}\n"
    )


def test_the_driver_files_list_gpus_in_bus_order(tmp_path: Path) -> None:
    write_proc_gpu(tmp_path, "0000:b1:00.0", "NVIDIA H200", "GPU-2222")
    write_proc_gpu(tmp_path, "0000:17:00.0", "NVIDIA H200", "GPU-1111")
    (tmp_path / "0000:c1:00.0").mkdir()  # a folder without its information file is skipped
    assert proc_gpus(tmp_path) == [
        DriverGpu("GPU-1111", "NVIDIA H200"),
        DriverGpu("GPU-2222", "NVIDIA H200"),
    ]
    assert proc_gpus(tmp_path / "absent") == []


@pytest.mark.usefixtures("fresh_discovery")
def test_without_nvml_the_driver_files_are_read(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    write_proc_gpu(tmp_path, "0000:17:00.0", "NVIDIA H200", "GPU-1111")
    write_proc_gpu(tmp_path, "0000:b1:00.0", "NVIDIA H200", "GPU-2222")
    monkeypatch.setattr(devices, "nvml", lambda: None)
    monkeypatch.setattr(devices, "proc_gpus", lambda: proc_gpus(tmp_path))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    (only,) = cuda_devices()
    assert (only.device, only.name, only.memory_bytes) == (Device("cuda", 0), "NVIDIA H200", None)


def test_discovery_imports_no_framework() -> None:
    code = (
        "import sys; from accelserve.devices import discover; discover(); "
        "print(sorted(m for m in ('torch', 'jax', 'tensorflow') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
