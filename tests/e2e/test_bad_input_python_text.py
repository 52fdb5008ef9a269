"""A Python text model through the real server: text that is not UTF-8 is a 400 naming the input
and the byte offset (its config declares ``text_inputs``), and a text its ``execute`` cannot take
fails only that request, though it shares a batch with good ones (isolation)."""

from __future__ import annotations

import textwrap
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.conftest import ServerProcess

CONFIG = """
name: "shout"
backend: "python"
max_batch_size: 32
input [ { name: "TEXT" data_type: TYPE_STRING dims: [ 1 ] } ]
output [ { name: "LOUD" data_type: TYPE_STRING dims: [ 1 ] } ]
dynamic_batching { max_queue_delay_microseconds: 500000 }
parameters { key: "text_inputs" value: { string_value: "TEXT" } }
"""

MODEL = textwrap.dedent(
    """
    import numpy as np


    class Model:
        def execute(self, batch):
            texts = [t.decode("utf-8") for t in batch["TEXT"].reshape(-1)]
            if "boom" in texts:
                raise ValueError("cannot shout 'boom'")
            loud = np.array([t.upper().encode() for t in texts], dtype=object)
            return {"LOUD": loud.reshape(-1, 1)}
    """
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    repository = tmp_path_factory.mktemp("text") / "models"
    (repository / "shout" / "1").mkdir(parents=True)
    (repository / "shout" / "config.pbtxt").write_text(CONFIG)
    (repository / "shout" / "1" / "model.py").write_text(MODEL)
    process = ServerProcess(repository)
    yield process
    process.stop()


def _infer(server: ServerProcess, texts: list[bytes]) -> np.ndarray:
    tensor = httpclient.InferInput("TEXT", [len(texts), 1], "BYTES")
    tensor.set_data_from_numpy(np.array(texts, dtype=object).reshape(-1, 1), binary_data=True)
    with httpclient.InferenceServerClient(server.url, network_timeout=60) as client:
        result = client.infer("shout", [tensor]).as_numpy("LOUD")
    assert result is not None
    return result


def test_text_that_is_not_utf8_is_a_400_with_the_byte_offset(server: ServerProcess) -> None:
    assert _infer(server, [b"caf\xc3\xa9"])[0, 0] == "CAFÉ".encode()
    with pytest.raises(InferenceServerException) as info:
        _infer(server, [b"ok", b"\xe2\x82"])  # a cut-off three-byte sequence
    assert info.value.status() == "400"
    assert info.value.message() == (
        "model 'shout' input 'TEXT': element 1 is not UTF-8 text: byte 0xe2 at byte offset 0 "
        "(unexpected end of data); expected UTF-8"
    )


def test_a_text_execute_refuses_fails_only_its_own_request(server: ServerProcess) -> None:
    texts = [f"sentence {i}".encode() for i in range(12)]
    requests = [*texts[:6], b"boom", *texts[6:]]
    barrier = threading.Barrier(len(requests))

    def send(text: bytes) -> object:
        barrier.wait()
        try:
            return _infer(server, [text])[0, 0]
        except InferenceServerException as exc:
            return exc

    with ThreadPoolExecutor(len(requests)) as pool:
        results = list(pool.map(send, requests))
    bad = results.pop(6)
    assert isinstance(bad, InferenceServerException) and bad.status() == "500"
    assert "execute() raised ValueError: cannot shout 'boom'" in str(bad.message())
    assert results == [t.upper() for t in texts]
    stats = httpx.get(f"{server.base}/v2/models/shout/stats").json()["model_stats"][0]
    assert stats["isolation_retry_count"] > 0  # "boom" shared a batch with others
