"""One client's bad input fails only its own request, with a 400 naming the input and the value
(real server processes, the real minilm ONNX model).

- With the limits the example configs declare (``token_id_inputs``, ``vocab_size``,
  ``max_sequence_length``; the tokenizer's ``text_inputs``), bad ids and text are refused at
  admission, before they can share a batch.
- Without them (``raw_server``: the same model file, the declarations removed, a long queue delay
  so that the concurrent requests share one batch), the bad request reaches ONNX Runtime inside
  a batch; the batch is run again in parts until only the bad request fails.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.conftest import ServerProcess

BAD_ID = 40000  # the vocabulary has 30522 tokens


def _body(ids: list[int], mask: list[int] | None = None) -> dict[str, object]:
    mask = [1] * len(ids) if mask is None else mask
    return {
        "inputs": [
            {"name": "input_ids", "shape": [1, len(ids)], "datatype": "INT64", "data": ids},
            {"name": "attention_mask", "shape": [1, len(mask)], "datatype": "INT64", "data": mask},
        ]
    }


def _sentences(count: int) -> list[list[int]]:
    rng = np.random.default_rng(7)
    return [
        [101, *rng.integers(1000, 20000, size=int(rng.integers(2, 30))).tolist(), 102]
        for _ in range(count)
    ]


@pytest.fixture(scope="module")
def raw_server(
    minilm_repository: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """``minilm_transformer`` without its declared limits, batching for up to a second."""
    source = minilm_repository / "minilm_transformer"
    repository = tmp_path_factory.mktemp("raw") / "models"
    (repository / "minilm_transformer" / "1").mkdir(parents=True)
    (repository / "minilm_transformer" / "1" / "model.onnx").symlink_to(source / "1" / "model.onnx")
    dropped = ("token_id_inputs", "vocab_size", "max_sequence_length", "max_batch_tokens")
    lines = [
        line
        for line in (source / "config.pbtxt").read_text().splitlines()
        if not any(f'"{key}"' in line for key in (*dropped, "chunk_overhead_tokens"))
    ]
    text = "\n".join(lines).replace(
        "dynamic_batching { }", "dynamic_batching { max_queue_delay_microseconds: 1000000 }"
    )
    assert "max_queue_delay_microseconds" in text and "token_id_inputs" not in text
    (repository / "minilm_transformer" / "config.pbtxt").write_text(text + "\n")
    process = ServerProcess(repository)
    yield process
    process.stop()


def _stats(server: ServerProcess) -> dict[str, object]:
    url = f"{server.base}/v2/models/minilm_transformer/stats"
    stats: dict[str, object] = httpx.get(url).json()["model_stats"][0]
    return stats


def test_one_bad_request_among_many_fails_alone(
    minilm_server: ServerProcess, raw_server: ServerProcess
) -> None:
    goods = _sentences(40)
    with httpx.Client(timeout=60) as client:  # each good request served alone
        url = f"{minilm_server.base}/v2/models/minilm_transformer/infer"
        alone = [client.post(url, json=_body(ids)).json()["outputs"][0] for ids in goods]
    retries_before = _stats(raw_server)["isolation_retry_count"]
    requests = [*goods[:20], [101, 2023, BAD_ID, 102], *goods[20:]]
    barrier = threading.Barrier(len(requests))

    def send(ids: list[int]) -> httpx.Response:
        with httpx.Client(timeout=120) as client:
            barrier.wait()
            return client.post(
                f"{raw_server.base}/v2/models/minilm_transformer/infer", json=_body(ids)
            )

    with ThreadPoolExecutor(len(requests)) as pool:
        responses = list(pool.map(send, requests))
    bad = responses.pop(20)
    assert bad.status_code == 400, bad.text
    assert bad.json()["error"] == (
        f"model 'minilm_transformer': input 'input_ids' holds the value {BAD_ID}, outside the "
        "range -30522..30521 that the model's Gather node "
        "'/model/embeddings/word_embeddings/Gather' accepts as an index"
    )
    for ids, response, want in zip(goods, responses, alone, strict=True):
        assert response.status_code == 200, response.text
        got = response.json()["outputs"][0]
        assert got["shape"] == want["shape"] == [1, len(ids), 384]
        np.testing.assert_allclose(got["data"], want["data"], atol=1e-4)
    stats = _stats(raw_server)
    assert stats["isolation_retry_count"] > retries_before  # the bad one shared a batch
    metrics = httpx.get(f"http://127.0.0.1:{raw_server.metrics_port}/metrics").text
    found = re.search(
        r'^accelserve_inference_isolation_retry_count\{model="minilm_transformer",version="1"\} (\d+)',
        metrics,
        re.MULTILINE,
    )
    assert found is not None and int(found[1]) == stats["isolation_retry_count"]


def test_a_bad_id_the_model_finds_is_grpc_invalid_argument(raw_server: ServerProcess) -> None:
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{raw_server.grpc_port}")
    with client, pytest.raises(InferenceServerException) as info:
        client.infer("minilm_transformer", _grpc_inputs([101, BAD_ID, 102]))
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert f"input 'input_ids' holds the value {BAD_ID}" in info.value.message()


def _grpc_inputs(ids: list[int]) -> list[grpcclient.InferInput]:
    inputs = []
    for name, array in (
        ("input_ids", np.array([ids], dtype=np.int64)),
        ("attention_mask", np.ones((1, len(ids)), dtype=np.int64)),
    ):
        tensor = grpcclient.InferInput(name, list(array.shape), "INT64")
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return inputs


@pytest.mark.parametrize("model", ["minilm_transformer", "minilm"])
@pytest.mark.parametrize(
    ("ids", "mask", "message"),
    [
        (
            [101, BAD_ID, 102],
            None,
            f"model 'minilm_transformer' input 'input_ids': token id {BAD_ID} at [0, 1] is out of "
            "range; expected token ids 0..30521 (the model's vocabulary)",
        ),
        (
            [101, -5, 102],
            None,
            "model 'minilm_transformer' input 'input_ids': token id -5 at [0, 1] is out of range",
        ),
        (
            [101, 7592, 2088, 999, 2003, 2307, 1012, 102],
            [1, 1, 1, 1, 1],
            "model 'minilm_transformer': input 'input_ids' has 8 tokens and 'attention_mask' "
            "(its mask) 5: expected the mask to cover every token",
        ),
        (
            [101, *[1000] * 511, 102],
            None,
            "model 'minilm_transformer' input 'input_ids': 513 tokens; expected at most 512 (the "
            "model's max_sequence_length)",
        ),
    ],
)
def test_ids_the_model_cannot_mean_are_a_400(
    minilm_server: ServerProcess, model: str, ids: list[int], mask: list[int] | None, message: str
) -> None:
    response = httpx.post(
        f"{minilm_server.base}/v2/models/{model}/infer", json=_body(ids, mask), timeout=60
    )
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]


def test_declared_limits_are_grpc_invalid_argument(minilm_server: ServerProcess) -> None:
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{minilm_server.grpc_port}")
    with client, pytest.raises(InferenceServerException) as info:
        client.infer("minilm_transformer", _grpc_inputs([101, -5, 102]))
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "input 'input_ids': token id -5 at [0, 1] is out of range" in info.value.message()


@pytest.mark.parametrize("model", ["minilm", "minilm_tokenizer"])
def test_text_that_is_not_utf8_is_a_400_with_the_byte_offset(
    minilm_server: ServerProcess, model: str
) -> None:
    texts = np.array([b"fine", b"ab\xffcd"], dtype=object).reshape(-1, 1)
    tensor = httpclient.InferInput("text", [2, 1], "BYTES")
    tensor.set_data_from_numpy(texts, binary_data=True)
    client = httpclient.InferenceServerClient(minilm_server.url)
    with client, pytest.raises(InferenceServerException) as info:
        client.infer(model, [tensor])
    assert info.value.status() == "400"
    assert info.value.message() == (
        "model 'minilm_tokenizer' input 'text': element 1 is not UTF-8 text: byte 0xff at byte "
        "offset 2 (invalid start byte); expected UTF-8"
    )
