"""Provider records: validated at construction, and the dispatch tables derived from them."""

from __future__ import annotations

import dataclasses

import pytest

from accelserve.kernels import _registry
from accelserve.kernels._registry import Provider


def _record(**changes: object) -> Provider:
    fields: dict[str, object] = {
        "name": "fast",
        "library": "numpy",
        "needs": (),
        "dtypes": frozenset({"float32"}),
        "devices": ("cpu",),
    }
    return Provider(**(fields | changes))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"name": "no-dash"},
            "name: expected a Python identifier (the provider's package); received 'no-dash'",
        ),
        (
            {"library": "cupy"},
            "provider 'fast' library: expected one of numpy, torch, jax; received 'cupy'",
        ),
        (
            {"devices": ("gpu",)},
            "provider 'fast' devices: expected one of cpu, cuda, tpu; received 'gpu'",
        ),
        ({"emulated": ("cpu",)}, "provider 'fast' emulated: expected none of devices ['cpu']"),
        (
            {"dtypes": frozenset({"int8"})},
            "provider 'fast' dtypes: expected one of float16, "
            "bfloat16, float32, float64; received 'int8'",
        ),
        ({"ops": ("conv",)}, "provider 'fast' ops: expected one of matmul, add"),
        (
            {"devices": ()},
            "provider 'fast' devices: expected at least one device kind; received ()",
        ),
    ],
)
def test_a_bad_record_names_the_field_the_valid_values_and_what_it_received(
    changes: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError) as info:
        _record(**changes)
    assert message in str(info.value)


def test_a_record_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        _record().name = "other"  # type: ignore[misc]


def test_the_tables_are_derived_from_the_records() -> None:
    assert set(_registry.BY_NAME) == {p.name for p in _registry.PROVIDERS}
    for (op, kind), row in _registry.REGISTRY.items():
        records = [_registry.BY_NAME[name] for name in row]
        assert all(op in p.ops and kind in (*p.devices, *p.emulated) for p in records)
        native = [p.name for p in records if kind in p.devices]
        assert list(row[: len(native)]) == native  # the default candidates come first
    for p in _registry.PROVIDERS:
        for op in p.ops:
            for kind in (*p.devices, *p.emulated):
                assert p.name in _registry.REGISTRY[(op, kind)]


def test_a_new_record_gets_its_rows() -> None:
    extra = _record(devices=("cuda",), emulated=("cpu",), ops=("add",))
    rows = _registry._rows((*_registry.PROVIDERS, extra))
    assert rows[("add", "cuda")] == ("triton", "reference", "fast")
    assert rows[("add", "cpu")] == ("cpu", "reference", "triton", "pallas", "fast")
    assert "fast" not in rows[("matmul", "cuda")]
