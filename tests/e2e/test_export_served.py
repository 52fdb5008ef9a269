"""Models exported with accelserve.export (torch.export, ONNX from torch, JAX), served by a
real ``accelserve serve`` process from the repository the exports wrote, called with
tritonclient: the config each export wrote is what the server reports, and its answers are the
original models' (a batch larger than the examples included)."""

from __future__ import annotations

from collections.abc import Iterator

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import tritonclient.http as httpclient

import accelserve
from tests.conftest import ServerProcess

RNG = np.random.default_rng(11)
W = RNG.standard_normal((4, 3)).astype(np.float32)


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.from_numpy(W))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x @ self.weight)


def jax_net(params: dict[str, np.ndarray], x: jnp.ndarray) -> jnp.ndarray:
    return jnp.tanh(x @ params["w"])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    repository = tmp_path_factory.mktemp("exported") / "models"
    x = RNG.standard_normal((2, 4)).astype(np.float32)
    common = {"example_inputs": (x,), "max_batch_size": 8, "progress": False}
    accelserve.export(Net().eval(), repository / "net_pt2", output_names=["y"], **common)
    accelserve.export(
        Net().eval(), repository / "net_onnx", format="onnx", output_names=["y"], **common
    )
    accelserve.export(
        jax_net,
        repository / "net_jax",
        params={"w": W},
        input_names=["x"],
        output_names=["y"],
        platforms=["cpu"],
        **common,
    )
    process = ServerProcess(repository)
    yield process
    process.stop()


@pytest.mark.parametrize("model", ["net_pt2", "net_onnx", "net_jax"])
def test_exported_model_is_served_as_its_config_says(server: ServerProcess, model: str) -> None:
    client = httpclient.InferenceServerClient(server.url)
    config = client.get_model_config(model)
    assert config["max_batch_size"] == 8 and "dynamic_batching" in config
    assert [(i["name"], i["data_type"], i["dims"]) for i in config["input"]] == [
        ("x", "TYPE_FP32", [4])
    ]
    assert [(o["name"], o["dims"]) for o in config["output"]] == [("y", [3])]
    x = RNG.standard_normal((5, 4)).astype(np.float32)
    request = httpclient.InferInput("x", list(x.shape), "FP32")
    request.set_data_from_numpy(x)
    y = client.infer(model, [request]).as_numpy("y")
    np.testing.assert_allclose(y, np.tanh(x @ W), rtol=1e-5, atol=1e-6)
