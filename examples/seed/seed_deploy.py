"""The seed's TensorFlow model, deployed with accelserve from start to finish.

    python examples/seed/seed_deploy.py [--repository DIR] [--device /device:GPU:0]

1. build the linear model y = x @ W + b (W 2x2 random, b zeros) in TensorFlow;
2. export it with one call, accelserve.export: a SavedModel in a Triton-layout repository, its
   config.pbtxt, and a check that the exported model answers as TensorFlow does;
3. load it in this process with accelserve.load on the GPU (the CPU when there is none, saying
   so) and compare with TensorFlow on a 100x2 random input;
4. serve the repository with `accelserve serve` and call the model with tritonclient (KServe V2)
   and with a TensorFlow Serving REST request.

Needs accelserve[tf] and tritonclient[http]. Exits 1 when any answer differs from TensorFlow's.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

MODEL = "seed"
ROWS = 100
TOLERANCE = 1e-5
MAX_BATCH = 128


# -- 1. the model, as the seed defines it ------------------------------------------------------


def build_model(tf: Any, seed: int = 0) -> Any:
    """y = x @ W + b with W 2x2 drawn from a normal distribution and b zeros. Unlike a plain
    function that creates its variables on every call, a tf.Module holds them once, so the same
    weights are exported, served and compared."""
    tf.random.set_seed(seed)

    class Linear(tf.Module):
        def __init__(self) -> None:
            super().__init__(name="seed_linear")
            self.W = tf.Variable(tf.random.normal([2, 2]), name="W")
            self.b = tf.Variable(tf.zeros([2]), name="b")

        def __call__(self, x: Any) -> Any:
            return tf.matmul(x, self.W) + self.b

    return Linear()


# -- 2. export into a model repository ---------------------------------------------------------


def export(module: Any, x: np.ndarray, repository: Path) -> Path:
    """<repository>/seed/<next version>/model.savedmodel/ and <repository>/seed/config.pbtxt,
    written by accelserve.export: input "x" from the example's key, output "y", the first
    dimension the batch (up to MAX_BATCH, with dynamic batching). The export loads what it
    wrote and compares it with ``module`` on ``x`` (and a larger batch), raising if they differ."""
    import accelserve

    result = accelserve.export(
        module,
        repository / MODEL,
        example_inputs={"x": x},
        output_names=["y"],
        max_batch_size=MAX_BATCH,
    )
    print(
        f"[2] exported version {result.version} ({result.platform}) and its config to "
        f"{result.model_dir}; checked against TensorFlow: max |difference| "
        f"{result.max_difference:.2e}"
    )
    return result.model_dir


# -- 3. load it on the accelerator, in this process --------------------------------------------


def load_on_device(model_dir: Path, device: str) -> tuple[Any, str]:
    """accelserve.load on ``device``; on the CPU, with a message, when the device is absent
    here (or invisible to the installed TensorFlow, e.g. tensorflow-cpu on a GPU host)."""
    import accelserve
    from accelserve.errors import DeviceError

    try:
        return accelserve.load(str(model_dir), device=device), device
    except DeviceError as exc:
        print(f"[3] {device} is not available ({exc}); running on the CPU instead")
        return accelserve.load(str(model_dir), device="cpu"), "cpu"


# -- 4. serve it and call it over the network --------------------------------------------------


@contextmanager
def serving(repository: Path, device: str) -> Iterator[tuple[int, int]]:
    """`accelserve serve` on free local ports until the block ends; yields (http, grpc) ports."""
    http, grpc, metrics = (_free_port() for _ in range(3))
    command = [
        *(sys.executable, "-m", "accelserve.cli", "serve"),
        *("--model-repository", str(repository), "--device", device),
        *("--http-port", str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics)),
        *("--log-level", "warning"),
    ]
    process = subprocess.Popen(command)
    try:
        _wait_ready(process, f"http://127.0.0.1:{http}/v2/health/ready")
        yield http, grpc
    finally:
        process.terminate()
        process.wait(30)


def call_with_tritonclient(http_port: int, x: np.ndarray) -> np.ndarray:
    """KServe V2 inference with Triton's own client (binary tensors)."""
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(f"127.0.0.1:{http_port}")
    tensor = httpclient.InferInput("x", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    result = client.infer(MODEL, [tensor]).as_numpy("y")
    assert result is not None
    return result


def call_tf_serving_rest(http_port: int, x: np.ndarray) -> np.ndarray:
    """TensorFlow Serving's row format: POST /v1/models/seed:predict {"instances": [...]},
    answered with {"predictions": [...]}, as a TF Serving client sends it. A refusal raises
    RuntimeError with the status and TF Serving's {"error": ...} message."""
    url = f"http://127.0.0.1:{http_port}/v1/models/{MODEL}:predict"
    body = json.dumps({"instances": x.tolist()}).encode()
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return np.asarray(json.loads(response.read())["predictions"], np.float32)
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:500]
        raise RuntimeError(f"POST {url} answered {exc.code}: {detail}") from None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_ready(process: subprocess.Popen[bytes], url: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"accelserve serve exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"accelserve serve was not ready after {timeout:.0f} s")


def _compare(what: str, result: np.ndarray, expected: np.ndarray) -> bool:
    difference = float(np.max(np.abs(result - expected)))
    ok = result.shape == expected.shape and difference <= TOLERANCE
    print(f"{what}: shape {list(result.shape)}, max |difference| vs TensorFlow {difference:.2e}")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repository", type=Path, help="where to write (default: a temp dir)")
    parser.add_argument("--device", default="/device:GPU:0", help="device string to load on")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    if args.repository is not None:
        return run(tf, args.repository, args.device)
    with tempfile.TemporaryDirectory(prefix="seed-repo-") as folder:
        return run(tf, Path(folder), args.device)


def run(tf: Any, repository: Path, device: str) -> int:
    module = build_model(tf)
    x = tf.random.normal([ROWS, 2], seed=1).numpy()
    expected = module(tf.constant(x)).numpy()  # TensorFlow's own answer
    model_dir = export(module, x, repository)

    model, device = load_on_device(model_dir, device)
    try:
        print(f"[3] loaded with accelserve.load on {device}")
        ok = _compare("[3] in process", model.infer({"x": x})["y"], expected)
    finally:
        model.close()

    with serving(repository, device) as (http_port, _grpc_port):
        print(f"[4] serving {repository} on 127.0.0.1:{http_port}")
        ok &= _compare(
            "[4] tritonclient (KServe V2)", call_with_tritonclient(http_port, x), expected
        )
        try:
            ok &= _compare("[4] TF Serving REST", call_tf_serving_rest(http_port, x), expected)
        except RuntimeError as exc:
            print(f"[4] TF Serving REST request FAILED: {exc}")
            ok = False
    print("all answers agree with TensorFlow" if ok else "an answer DIFFERS from TensorFlow")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
