"""JAX backend: jax.export artifacts with a symbolic batch dimension, on XLA's CPU devices."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from backend_helpers import ABSENT_TPU, config, version_dir
from jax import export

from accelserve.backends.jax import JaxBackend
from accelserve.config import config_to_json
from accelserve.devices import Device
from accelserve.errors import ConfigError, ModelExecutionError
from accelserve.repository import load_backend
from accelserve.types import TensorSpec

CPU = Device("cpu", 0)
W = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
B = np.linspace(-1, 1, 3, dtype=np.float32)


def dense(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    return jnp.tanh(x @ W + B), jnp.sum(x, axis=1)


def reference(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.tanh(x @ W + B), x.sum(axis=1)


def _save(path: Path, platforms: tuple[str, ...] = ("cpu",), batch: bool = True) -> None:
    shape = (*export.symbolic_shape("b"), 4) if batch else (2, 4)
    arg = jax.ShapeDtypeStruct(shape, jnp.float32)
    exported = export.export(jax.jit(dense), platforms=platforms)(arg)
    path.write_bytes(exported.serialize())


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("jax_models")
    _save(version_dir(root, "dense") / "model.jax")
    _save(version_dir(root, "tpu_only") / "model.jax", platforms=("tpu",))
    _save(version_dir(root, "fixed") / "model.jax", batch=False)
    return root


def test_completes_config_and_matches_numpy(root: Path) -> None:
    cfg = config(name="dense")
    backend = load_backend(root / "dense" / "1", cfg, CPU)
    assert backend.inputs == [TensorSpec("in0", "FP32", (4,))]
    assert backend.outputs == [TensorSpec("out0", "FP32", (3,)), TensorSpec("out1", "FP32", ())]
    assert backend.max_batch_size == -1
    assert config_to_json(cfg)["max_batch_size"] > 0
    for batch in (1, 3, 3, 8):  # a repeated size reuses the compiled program
        x = np.random.default_rng(batch).standard_normal((batch, 4), dtype=np.float32)
        out = backend.infer({"in0": x})
        expected = reference(x)
        np.testing.assert_allclose(out["out0"], expected[0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(out["out1"], expected[1], rtol=1e-5, atol=1e-6)


def test_names_come_from_the_config(root: Path) -> None:
    text = """
    max_batch_size: 16
    input [{ name: "features" data_type: TYPE_FP32 dims: [4] }]
    output [{ name: "scores" data_type: TYPE_FP32 dims: [3] },
            { name: "total" data_type: TYPE_FP32 dims: [] }]
    """
    backend = load_backend(root / "dense" / "1", config(text, "dense"), CPU)
    x = np.ones((2, 4), np.float32)
    out = backend.run_on_device({"features": x})
    assert set(out) == {"scores", "total"}
    assert out["scores"].devices() == {jax.devices("cpu")[0]}
    np.testing.assert_allclose(np.asarray(out["total"]), [4.0, 4.0])


def test_a_non_batching_config_sees_full_shapes(root: Path) -> None:
    text = """
    input [{ name: "x" data_type: TYPE_FP32 dims: [-1, 4] }]
    output [{ name: "y" data_type: TYPE_FP32 dims: [-1, 3] },
            { name: "s" data_type: TYPE_FP32 dims: [-1] }]
    """
    backend = load_backend(root / "dense" / "1", config(text, "dense"), CPU)
    assert backend.max_batch_size == 0
    assert backend.inputs == [TensorSpec("x", "FP32", (-1, 4))]


def test_bad_input_shape_is_an_execution_error(root: Path) -> None:
    backend = JaxBackend()
    backend.load(root / "dense" / "1", config(name="dense"), CPU)
    with pytest.raises(
        ModelExecutionError, match=r"^model 'dense' version 1: JAX failed: "
    ) as info:
        backend.infer({"in0": np.ones((2, 5), np.float32)})
    assert "\n" not in str(info.value)
    backend.unload()
    with pytest.raises(ModelExecutionError, match=r"the model is unloaded$"):
        backend.infer({"in0": np.ones((2, 4), np.float32)})


@pytest.mark.parametrize(
    ("model", "text", "device", "expected"),
    [
        ("missing", "", CPU, r"^model 'missing' version 1: expected file 'model.jax' is missing$"),
        (
            "tpu_only",
            "",
            CPU,
            r"'model.jax' was exported for platforms \['tpu'\]; device cpu:0 needs 'cpu': export "
            r"with jax.export.export\(fn, platforms=\[..., 'cpu'\]\)",
        ),
        ("dense", "", Device("cuda", 0), r"exported for platforms \['cpu'\]; device cuda:0 needs"),
        ("tpu_only", "", ABSENT_TPU, r"device tpu:64 is not available to JAX here"),
        ("dense", "", Device("cpu", 7), r"device cpu:7 is not available to JAX here; it sees 1"),
        (
            "dense",
            'input [{ name: "a" }, { name: "b" }]',
            CPU,
            r"the config declares 2 inputs \(a, b\); the exported program has 1",
        ),
        (
            "fixed",
            "max_batch_size: 4",
            CPU,
            r"max_batch_size is 4 but tensor 'in0' has no symbolic first dimension",
        ),
    ],
)
def test_misconfiguration_is_a_clear_error(
    root: Path, model: str, text: str, device: Device, expected: str
) -> None:
    with pytest.raises(ConfigError, match=expected) as info:
        JaxBackend().load(version_dir(root, model), config(text, model), device)
    assert str(root) not in str(info.value)


def test_a_file_that_is_not_an_export_is_refused(tmp_path: Path) -> None:
    directory = version_dir(tmp_path, "junk")
    (directory / "model.jax").write_bytes(b"\x00garbage")
    with pytest.raises(ConfigError, match=r"'model.jax' is not a jax.export artifact"):
        JaxBackend().load(directory, config(name="junk"), CPU)


PLACEMENT = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    import jax
    import numpy as np
    from accelserve.backends.jax import JaxBackend
    from accelserve.config import parse_config
    from accelserve.devices import Device

    results = []
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    for index in range(4):
        backend = JaxBackend()
        backend.load(Path(sys.argv[1]), parse_config('name: "dense"'), Device("cpu", index))
        out = backend.run_on_device({"in0": x})
        (device,) = out["out0"].devices()
        results.append({"asked": index, "ran_on": device.id, "out1": np.asarray(out["out1"]).tolist()})
    print(json.dumps(results))
    """
)


def test_instances_are_placed_on_distinct_virtual_cpu_devices(root: Path) -> None:
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    done = subprocess.run(
        [sys.executable, "-c", PLACEMENT, str(root / "dense" / "1")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout.strip().splitlines()[-1])
    assert [r["ran_on"] for r in results] == [0, 1, 2, 3]
    for r in results:
        assert r["out1"] == [6.0, 22.0]
