"""The minilm pipeline over KServe V2 with the real tritonclient: BYTES text in, FP32 [n, 384]
out, equal to sentence-transformers within 1e-4 per element."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as httpclient
from minilm_support import LONG, SENTENCES, assert_close
from tritonclient.utils import InferenceServerException

from tests.conftest import ServerProcess


def _text_input(texts: list[str], binary: bool) -> httpclient.InferInput:
    data = np.array([t.encode() for t in texts], dtype=np.object_).reshape(-1, 1)
    tensor = httpclient.InferInput("text", [len(texts), 1], "BYTES")
    tensor.set_data_from_numpy(data, binary_data=binary)
    return tensor


def _embed(
    client: httpclient.InferenceServerClient, model: str, texts: list[str], binary: bool = True
) -> np.ndarray:
    out = httpclient.InferRequestedOutput("embedding", binary_data=binary)
    result = client.infer(model, [_text_input(texts, binary)], outputs=[out])
    embedding = result.as_numpy("embedding")
    assert embedding is not None
    return embedding


@pytest.fixture()
def client(minilm_server: ServerProcess) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(minilm_server.url)


@pytest.mark.parametrize("model", ["minilm", "minilm_onnx"])
@pytest.mark.parametrize("binary", [True, False])
def test_one_batch_matches_sentence_transformers(
    client: httpclient.InferenceServerClient, reference: dict, model: str, binary: bool
) -> None:
    texts = [*SENTENCES, LONG]  # LONG is truncated at 256 tokens, as sentence-transformers does
    for part in (texts[:40], texts[40:]):
        got = _embed(client, model, part, binary)
        assert got.dtype == np.float32 and got.shape == (len(part), 384)
        assert_close(got, np.stack([reference[t] for t in part]))


def test_concurrent_single_requests_batch_across_lengths(
    client: httpclient.InferenceServerClient, minilm_server: ServerProcess, reference: dict
) -> None:
    """Many clients at once, one sentence each: the steps batch requests of different lengths
    together (padding them), and every answer is still the client's own sentence."""
    before = httpx.get(f"{minilm_server.base}/v2/models/minilm_transformer/stats").json()
    runs_before = before["model_stats"][0]["execution_count"]
    texts = [*SENTENCES, LONG]

    def one(text: str) -> np.ndarray:
        local = httpclient.InferenceServerClient(minilm_server.url)
        return _embed(local, "minilm", [text])[0]

    with ThreadPoolExecutor(16) as pool:
        got = list(pool.map(one, texts))
    assert_close(np.stack(got), np.stack([reference[t] for t in texts]))
    after = httpx.get(f"{minilm_server.base}/v2/models/minilm_transformer/stats").json()
    stats = after["model_stats"][0]
    runs = stats["execution_count"] - runs_before
    assert 0 < runs < len(texts), f"{runs} transformer runs for {len(texts)} requests: no batching"
    assert max(b["batch_size"] for b in stats["batch_stats"]) > 1


def test_pre_tokenized_input_skips_the_tokenizer(
    client: httpclient.InferenceServerClient,
    minilm_server: ServerProcess,
    minilm_repository: Path,
    reference: dict,
) -> None:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(
        str(minilm_repository / "minilm_tokenizer" / "1" / "tokenizer.json")
    )
    texts = SENTENCES[:5]
    encodings = tokenizer.encode_batch(texts)  # the file pads to the longest of the batch
    ids = np.array([e.ids for e in encodings], dtype=np.int64)
    mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
    inputs = []
    for name, array in (("input_ids", ids), ("attention_mask", mask)):
        tensor = httpclient.InferInput(name, list(array.shape), "INT64")
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    stats_url = f"{minilm_server.base}/v2/models/minilm_tokenizer/stats"
    tokenized_before = httpx.get(stats_url).json()["model_stats"][0]["inference_count"]
    result = client.infer("minilm", inputs)
    assert_close(result.as_numpy("embedding"), np.stack([reference[t] for t in texts]))
    assert result.as_numpy("token_count") is None  # only the tokenizer can count from text
    assert httpx.get(stats_url).json()["model_stats"][0]["inference_count"] == tokenized_before


def test_token_count_output(client: httpclient.InferenceServerClient) -> None:
    out = httpclient.InferRequestedOutput("token_count")
    result = client.infer("minilm", [_text_input(["Hello world.", LONG], True)], outputs=[out])
    counts = result.as_numpy("token_count")
    assert counts is not None and counts.shape == (2, 1)
    assert counts[0, 0] == 5  # [CLS] hello world . [SEP]
    assert counts[1, 0] > 256  # the length before truncation


def test_metadata_and_config(client: httpclient.InferenceServerClient) -> None:
    metadata = client.get_model_metadata("minilm")
    assert metadata["platform"] == "ensemble"
    assert {"name": "text", "datatype": "BYTES", "shape": [-1, 1]} in metadata["inputs"]
    assert {"name": "embedding", "datatype": "FP32", "shape": [-1, 384]} in metadata["outputs"]
    config = client.get_model_config("minilm")
    steps = [s["model_name"] for s in config["ensemble_scheduling"]["step"]]
    assert steps == ["minilm_tokenizer", "minilm_transformer", "minilm_head"]
    tokenizer = client.get_model_config("minilm_tokenizer")
    assert tokenizer["parameters"]["max_length"]["string_value"] == "256"
    assert tokenizer["parameters"]["vocab_size"]["string_value"] == "30522"


def test_ensemble_and_step_statistics(client: httpclient.InferenceServerClient) -> None:
    before = client.get_inference_statistics("minilm")["model_stats"][0]
    _embed(client, "minilm", SENTENCES[:3])
    after = client.get_inference_statistics("minilm")["model_stats"][0]
    assert after["inference_count"] - before["inference_count"] == 3
    assert after["execution_count"] - before["execution_count"] == 1
    success = after["inference_stats"]["success"]
    assert success["count"] - before["inference_stats"]["success"]["count"] == 1
    head = client.get_inference_statistics("minilm_head")["model_stats"][0]
    assert head["inference_count"] >= 3


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ([], "output 'embedding' cannot be computed from the inputs given (none)"),
        ([("input_ids", [[101, 102]])], "step 'minilm_tokenizer' needs 'text'"),
    ],
)
def test_missing_inputs_are_named(
    client: httpclient.InferenceServerClient, inputs: list, message: str
) -> None:
    tensors = []
    for name, data in inputs:
        array = np.array(data, dtype=np.int64)
        tensor = httpclient.InferInput(name, list(array.shape), "INT64")
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    with pytest.raises(InferenceServerException) as info:
        client.infer("minilm", tensors)
    assert message in str(info.value)


def test_text_and_ids_together_are_refused(minilm_server: ServerProcess) -> None:
    body = {
        "inputs": [
            {"name": "text", "datatype": "BYTES", "shape": [1, 1], "data": ["hi"]},
            {"name": "input_ids", "datatype": "INT64", "shape": [1, 2], "data": [101, 102]},
            {"name": "attention_mask", "datatype": "INT64", "shape": [1, 2], "data": [1, 1]},
        ]
    }
    response = httpx.post(f"{minilm_server.base}/v2/models/minilm/infer", json=body)
    assert response.status_code == 400
    assert (
        "is also what step 'minilm_tokenizer' computes for this request" in response.json()["error"]
    )


def test_too_many_rows_for_the_ensemble(client: httpclient.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException) as info:
        _embed(client, "minilm", ["a"] * 65)
    assert "batch size 65 is outside 1..64" in str(info.value)


def test_grpc_client(minilm_server: ServerProcess, reference: dict) -> None:
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(f"127.0.0.1:{minilm_server.grpc_port}")
    texts = SENTENCES[:10]
    tensor = grpcclient.InferInput("text", [len(texts), 1], "BYTES")
    tensor.set_data_from_numpy(np.array([t.encode() for t in texts], dtype=object).reshape(-1, 1))
    result = client.infer(
        "minilm", [tensor], outputs=[grpcclient.InferRequestedOutput("embedding")]
    )
    assert_close(result.as_numpy("embedding"), np.stack([reference[t] for t in texts]))
