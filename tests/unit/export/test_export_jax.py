"""accelserve.export on JAX functions with their parameters (jax.export -> model.jax)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import accelserve
from accelserve.errors import InvalidArgumentError
from accelserve.tools.export.check import ExportMismatchError

RNG = np.random.default_rng(5)
PARAMS = {
    "w": RNG.standard_normal((4, 3)).astype(np.float32),
    "b": RNG.standard_normal(3).astype(np.float32),
}


def dense(params: dict[str, Any], x: jax.Array, scale: jax.Array) -> dict[str, jax.Array]:
    y = jnp.tanh(x @ params["w"] + params["b"])
    return {"y": y * scale, "norm": jnp.sum(y * y, axis=-1)}


def test_round_trip_with_params_batches_and_serves_on_any_platform(tmp_path: Path) -> None:
    x = RNG.standard_normal((2, 4)).astype(np.float32)
    scale = np.full((2, 1), 3.0, np.float32)
    result = accelserve.export(
        dense,
        tmp_path / "repo" / "dense",
        example_inputs=(x, scale),
        params=PARAMS,
        input_names=["x", "scale"],
        max_batch_size=4,
        progress=False,
    )
    assert result.platform == "jax" and (tmp_path / "repo/dense/1/model.jax").is_file()
    outputs = {o.name: list(o.dims) for o in result.config.output}
    assert outputs == {"norm": [], "y": [3]}  # JAX's leaf order: sorted keys
    exported = jax.export.deserialize(bytearray((tmp_path / "repo/dense/1/model.jax").read_bytes()))
    assert set(exported.platforms) == {"cpu", "cuda", "tpu"}
    x3 = RNG.standard_normal((3, 4)).astype(np.float32)
    s3 = np.ones((3, 1), np.float32)
    with accelserve.load(str(tmp_path / "repo/dense")) as loaded:
        got = loaded.infer({"x": x3, "scale": s3})
    want = dense(PARAMS, x3, s3)
    np.testing.assert_allclose(got["y"], np.asarray(want["y"]), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["norm"], np.asarray(want["norm"]), rtol=1e-5, atol=1e-6)


def test_python_side_effects_frozen_at_trace_time_are_a_mismatch(tmp_path: Path) -> None:
    calls = []

    def counting(x: jax.Array) -> jax.Array:
        calls.append(1)  # Python state: the traced program keeps the count it saw
        return x * len(calls)

    with pytest.raises(ExportMismatchError, match=r"model 'count' output 'out0'"):
        accelserve.export(
            counting,
            tmp_path / "r" / "count",
            example_inputs=np.ones((1, 2), np.float32),
            platforms=["cpu"],
            progress=False,
        )
    assert not (tmp_path / "r").exists()


def test_64_bit_examples_are_refused_when_jax_runs_32_bit(tmp_path: Path) -> None:
    with pytest.raises(
        InvalidArgumentError, match=r"example_inputs\[0\].*float32.*received float64"
    ):
        accelserve.export(
            lambda x: x + 1, tmp_path / "r" / "m", example_inputs=np.ones((1, 2)), progress=False
        )
