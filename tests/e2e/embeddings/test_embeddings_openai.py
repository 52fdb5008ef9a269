"""The official openai client against POST /v1/embeddings and GET /v1/models, and every bad
input answered with a 400 in OpenAI's error shape."""

from __future__ import annotations

import base64
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
from minilm_support import API_KEY, LONG, SENTENCES, assert_close

from tests.conftest import ServerProcess


@pytest.fixture()
def client(minilm_server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{minilm_server.base}/v1", api_key=API_KEY, max_retries=0)


def _vectors(response: openai.types.CreateEmbeddingResponse) -> np.ndarray:
    assert [d.index for d in response.data] == list(range(len(response.data)))
    return np.array([d.embedding for d in response.data], dtype=np.float32)


def test_models_lists_the_embedding_pipelines(client: openai.OpenAI) -> None:
    ids = sorted(m.id for m in client.models.list())
    assert ids == ["minilm", "minilm_onnx"]  # not the steps, which take no text
    model = client.models.retrieve("minilm")
    assert model.id == "minilm" and model.owned_by == "accelserve"


def test_model_route_shared_with_tf_serving(minilm_server: ServerProcess) -> None:
    # GET /v1/models/{m} is TF Serving's status route too: one body carries both answers.
    headers = {"Authorization": f"Bearer {API_KEY}"}
    body = httpx.get(f"{minilm_server.base}/v1/models/minilm", headers=headers).json()
    assert body["id"] == "minilm" and body["object"] == "model"
    assert body["model_version_status"][0]["state"] == "AVAILABLE"
    # Without the key, TF Serving clients still get the status (and no OpenAI fields).
    bare = httpx.get(f"{minilm_server.base}/v1/models/minilm").json()
    assert "id" not in bare and bare["model_version_status"][0]["version"] == "1"


@pytest.mark.parametrize("model", ["minilm", "minilm_onnx"])
def test_float_and_base64_match_sentence_transformers(
    client: openai.OpenAI, reference: dict, model: str
) -> None:
    want = np.stack([reference[t] for t in SENTENCES])
    floats = client.embeddings.create(model=model, input=SENTENCES, encoding_format="float")
    assert floats.object == "list" and floats.model == model
    assert all(d.object == "embedding" for d in floats.data)
    assert_close(_vectors(floats), want)
    # The client asks for base64 by default and decodes it itself.
    default = client.embeddings.create(model=model, input=SENTENCES)
    np.testing.assert_array_equal(_vectors(default), _vectors(floats))
    assert floats.usage.prompt_tokens == floats.usage.total_tokens > len(SENTENCES) * 2


def test_base64_is_little_endian_float32(minilm_server: ServerProcess, reference: dict) -> None:
    body = {"model": "minilm", "input": SENTENCES[:2], "encoding_format": "base64"}
    headers = {"Authorization": f"Bearer {API_KEY}"}
    data = httpx.post(f"{minilm_server.base}/v1/embeddings", json=body, headers=headers).json()
    for item, text in zip(data["data"], SENTENCES[:2], strict=True):
        vector = np.frombuffer(base64.b64decode(item["embedding"]), dtype="<f4")
        assert_close(vector, reference[text])


def test_single_string_input(client: openai.OpenAI, reference: dict) -> None:
    response = client.embeddings.create(model="minilm", input=SENTENCES[1])
    assert_close(_vectors(response)[0], reference[SENTENCES[1]])
    assert response.usage.prompt_tokens == 12


@pytest.mark.parametrize("dimensions", [1, 64, 383, 384])
def test_dimensions_truncates_then_renormalizes(
    client: openai.OpenAI, reference: dict, dimensions: int
) -> None:
    texts = SENTENCES[:4]
    got = _vectors(client.embeddings.create(model="minilm", input=texts, dimensions=dimensions))
    full = np.stack([reference[t] for t in texts])[:, :dimensions]
    assert_close(got, full / np.linalg.norm(full, axis=1, keepdims=True))


def test_token_ids_give_the_same_embeddings_as_text(
    client: openai.OpenAI, minilm_repository: Path, reference: dict
) -> None:
    from tokenizers import Tokenizer

    path = minilm_repository / "minilm_tokenizer" / "1" / "tokenizer.json"
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.no_padding()
    texts = SENTENCES[:6]
    lists = [tokenizer.encode(t).ids for t in texts]
    many = client.embeddings.create(model="minilm", input=lists, encoding_format="float")
    assert_close(_vectors(many), np.stack([reference[t] for t in texts]))
    assert many.usage.prompt_tokens == sum(len(x) for x in lists)
    one = client.embeddings.create(model="minilm", input=lists[0], encoding_format="float")
    assert_close(_vectors(one)[0], reference[texts[0]])


def test_2048_inputs_are_accepted(client: openai.OpenAI) -> None:
    texts = [f"item {i}" for i in range(2048)]
    response = client.embeddings.create(model="minilm", input=texts, dimensions=8)
    vectors = _vectors(response)
    assert vectors.shape == (2048, 8)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


BAD_INPUTS = [
    ({"input": ""}, "input[0] is an empty string", "input"),
    ({"input": ["fine", ""]}, "input[1] is an empty string", "input"),
    ({"input": []}, "received an empty list", "input"),
    ({"input": [[]]}, "input[0] is an empty list of token ids", "input"),
    ({"input": ["x"] * 2049}, "at most 2048 inputs per request; received 2049", "input"),
    ({"input": LONG}, "accepts at most 256 tokens per input", "input"),
    ({"input": [101] * 257}, "is 257 tokens long; model 'minilm' accepts at most 256", "input"),
    ({"input": [[101, 30522]]}, "token id 30522 is outside 0..30521", "input"),
    ({"input": [-1]}, "token id -1 is outside 0..30521", "input"),
    ({"input": [1.5]}, "input[0] is a number", "input"),
    ({"input": [True]}, "input[0] is a boolean", "input"),
    (
        {"input": ["a", 1]},
        "input[1]: expected a string like input[0]; received an integer",
        "input",
    ),
    ({"input": [[1, 2], 3]}, "input[1]: expected a list of token ids", "input"),
    ({"input": [[101, "a"]]}, "input[0][1]: expected a token id (an integer)", "input"),
    ({"input": {"text": "a"}}, "received an object", "input"),
    ({}, "'input' is required", "input"),
    ({"input": "a", "model": None}, "'model' is required", "model"),
    (
        {"input": "a", "encoding_format": "binary"},
        "expected 'float' or 'base64'",
        "encoding_format",
    ),
    ({"input": "a", "dimensions": 0}, "expected an integer from 1 to 384", "dimensions"),
    ({"input": "a", "dimensions": 385}, "received 385", "dimensions"),
    ({"input": "a", "dimensions": "8"}, "received '8'", "dimensions"),
]


@pytest.mark.parametrize(("fields", "message", "param"), BAD_INPUTS)
def test_bad_input_is_a_clear_400(
    minilm_server: ServerProcess, fields: dict, message: str, param: str
) -> None:
    body = {"model": "minilm", **fields}
    headers = {"Authorization": f"Bearer {API_KEY}"}
    response = httpx.post(f"{minilm_server.base}/v1/embeddings", json=body, headers=headers)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert message in error["message"]
    assert error["param"] == param


def test_bad_input_through_the_openai_client(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(model="minilm", input=["ok", ""])
    assert "input[1] is an empty string" in str(info.value)


def test_unknown_model_is_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.embeddings.create(model="nope", input="a")
    assert info.value.body["code"] == "model_not_found"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="minilm_transformer", input="a")  # takes ids, not text


def test_not_json_body(minilm_server: ServerProcess) -> None:
    headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    response = httpx.post(f"{minilm_server.base}/v1/embeddings", content=b"{nope", headers=headers)
    assert response.status_code == 400
    assert "not valid JSON" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("headers", "code"),
    [({}, "missing_api_key"), ({"Authorization": "Bearer wrong"}, "invalid_api_key")],
)
def test_api_key_is_required(minilm_server: ServerProcess, headers: dict, code: str) -> None:
    for method, path in (("POST", "/v1/embeddings"), ("GET", "/v1/models")):
        response = httpx.request(
            method,
            f"{minilm_server.base}{path}",
            json={"model": "minilm", "input": "a"},
            headers=headers,
        )
        assert response.status_code == 401
        assert response.json()["error"]["code"] == code


def test_wrong_client_key(minilm_server: ServerProcess) -> None:
    wrong = openai.OpenAI(base_url=f"{minilm_server.base}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.embeddings.create(model="minilm", input="a")


def test_unknown_route_and_method(minilm_server: ServerProcess) -> None:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    missing = httpx.get(f"{minilm_server.base}/v1/chat/completions", headers=headers)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "unknown_url"
    wrong = httpx.get(f"{minilm_server.base}/v1/embeddings", headers=headers)
    assert wrong.status_code == 405
    assert "expected POST" in wrong.json()["error"]["message"]
    assert wrong.json()["error"]["code"] == "method_not_allowed"
