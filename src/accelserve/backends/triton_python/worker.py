"""The worker process of a Triton-style Python model (``class TritonPythonModel``).

``python -m accelserve.backends.triton_python.worker FD`` serves one model instance over the
socket ``FD`` with the framing of ``backends/python_worker.py``. Unlike that worker's strict
request/reply, messages here flow both ways at any time: responses leave whenever the model
sends them (from ``execute`` or from its own threads, for decoupled models), and calls to other
models (BLS) wait for the server's reply while ``execute`` runs. A reader thread receives; the
main thread runs ``initialize``/``execute``/``finalize`` in order.

Server -> worker: ``init`` (import, auto-complete), ``initialize`` (Triton's args dict),
``execute`` (a list of requests, each with its ``tag``), ``cancel`` (tag), ``reply`` (a BLS
call's responses), ``finalize``. Worker -> server: ``config``, ``ready``, ``init_error``,
``response`` (tag, outputs or error, final flag), ``done`` (an execute call returned or
raised), ``call`` (BLS), ``finalized``.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import json
import queue
import sys
import threading
import traceback
from collections.abc import Iterator
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from accelserve.backends import python_worker
from accelserve.backends.triton_python import triton_python_backend_utils as pb

MODULE_NAME = "triton_python_backend_utils"


class _Runtime:
    """The worker's side of the connection, as ``triton_python_backend_utils`` sees it."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._send_lock = threading.Lock()
        self._cancelled: set[int] = set()
        self._calls: dict[int, queue.Queue[Any]] = {}  # a BLS call's responses, then None
        self._call_ids = itertools.count()
        self.work: queue.Queue[tuple[str, Any]] = queue.Queue()

    def post(self, kind: str, payload: Any) -> None:
        with self._send_lock:
            python_worker.send(self.conn, kind, payload)

    # -- triton_python_backend_utils.Runtime ----------------------------------------------------

    def send(self, tag: int, response: pb.InferenceResponse | None, flags: int) -> None:
        final = bool(flags & pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        self.post("response", (tag, *_encode_response(response), final))
        if final:
            self._cancelled.discard(tag)

    def cancelled(self, tag: int) -> bool:
        return tag in self._cancelled

    def metric(self, family: pb.MetricFamily, labels: dict[str, str], value: float) -> None:
        kind = "counter" if family.kind == pb.MetricFamily.COUNTER else "gauge"
        self.post("metric", (family.name, kind, family.description, labels, value))

    def call(self, request: pb.InferenceRequest, decoupled: bool) -> Iterator[pb.InferenceResponse]:
        """Send the call now; its responses arrive as the called model sends them."""
        if not request.model_name():
            raise pb.TritonModelException("InferenceRequest needs a model_name to be executed")
        call_id = next(self._call_ids)
        answers: queue.Queue[Any] = queue.Queue()
        self._calls[call_id] = answers
        spec = {
            "model_name": request.model_name(),
            "model_version": "" if request.model_version() < 0 else str(request.model_version()),
            "inputs": {t.name(): t.as_numpy() for t in request.inputs()},
            "outputs": request.requested_output_names(),
            "id": request.request_id(),
            "parameters": json.loads(request.parameters() or "{}"),
        }
        self.post("call", (call_id, spec, decoupled))
        return self._answers(call_id, answers)

    def _answers(self, call_id: int, answers: queue.Queue[Any]) -> Iterator[pb.InferenceResponse]:
        while True:
            answer = answers.get()
            if answer is None:  # the call is complete
                del self._calls[call_id]
                return
            yield _decode_response(*answer)

    # -- the reader thread ------------------------------------------------------------------------

    def read(self) -> None:
        while True:
            try:
                kind, payload = python_worker.recv(self.conn)
            except (EOFError, OSError):  # the server is gone
                self.work.put(("exit", None))
                return
            if kind == "cancel":
                self._cancelled.add(payload)
            elif kind == "reply":  # some responses of a call, and whether it is complete
                call_id, responses, complete = payload
                answers = self._calls[call_id]
                for response in responses:
                    answers.put(response)
                if complete:
                    answers.put(None)
            else:
                self.work.put((kind, payload))


def _encode_response(response: pb.InferenceResponse | None) -> tuple[Any, Any]:
    if response is None:
        return None, None
    error = response.error()
    if error is not None:
        return None, (error.code(), error.message())
    return {t.name(): t.as_numpy() for t in response.output_tensors()}, None


def _decode_response(outputs: dict[str, np.ndarray] | None, error: str | None) -> Any:
    if error is not None:
        return pb.InferenceResponse(error=pb.TritonError(error))
    tensors = [pb.Tensor(name, array) for name, array in (outputs or {}).items()]
    return pb.InferenceResponse(output_tensors=tensors)


def _requests(batch: list[dict[str, Any]]) -> list[pb.InferenceRequest]:
    requests = []
    for item in batch:
        request = pb.InferenceRequest(
            inputs=[pb.Tensor(name, array) for name, array in item["inputs"].items()],
            requested_output_names=item["outputs"],
            request_id=item["id"],
            correlation_id=item["correlation_id"],
            flags=item["flags"],
            parameters=item["parameters"],
        )
        request._tag = item["tag"]
        requests.append(request)
    return requests


def _load(path: str) -> Any:
    model_class = python_worker.load_model_class(path, "TritonPythonModel")
    return model_class


def _execute(runtime: _Runtime, model: Any, batch: list[dict[str, Any]], decoupled: bool) -> None:
    requests = _requests(batch)
    result = model.execute(requests)
    if inspect.iscoroutine(result):  # `async def execute`, as Triton allows (for async_exec)
        result = asyncio.run(result)
    if decoupled or result is None:
        # Responses go out through each request's sender (a model that is not decoupled may
        # answer that way too; the server fails any request left without a response).
        return
    if not isinstance(result, list | tuple) or len(result) != len(requests):
        got = f"{len(result)} responses" if isinstance(result, list | tuple) else repr(result)
        raise TypeError(
            f"execute() must return a list of one InferenceResponse per request "
            f"({len(requests)}); it returned {got[:100]}"
        )
    for request, response in zip(requests, result, strict=True):
        if not isinstance(response, pb.InferenceResponse):
            raise TypeError(
                f"execute() returned {type(response).__name__} where an InferenceResponse belongs"
            )
        runtime.send(request._tag, response, pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL)


def main(fd: int) -> None:
    sys.modules[MODULE_NAME] = pb  # `import triton_python_backend_utils` in model.py
    runtime = _Runtime(Connection(fd))
    pb._RUNTIME = runtime
    python_worker.watch_parent()
    threading.Thread(target=runtime.read, daemon=True).start()
    model: Any = None
    decoupled = False
    while True:
        kind, payload = runtime.work.get()
        try:
            if kind == "exit":
                return
            if kind == "init":
                model_class = _load(payload["path"])
                config = payload["config"]
                complete = getattr(model_class, "auto_complete_config", None)
                if callable(complete):
                    complete(pb.ModelConfig(config))
                runtime.post("config", config)
            elif kind == "initialize":
                decoupled = pb.using_decoupled_model_transaction_policy(
                    json.loads(payload["model_config"])
                )
                model = model_class()
                if callable(getattr(model, "initialize", None)):
                    model.initialize(payload)
                runtime.post("ready", None)
            elif kind == "execute":
                try:
                    _execute(runtime, model, payload, decoupled)
                except Exception as exc:
                    traceback.print_exc()
                    runtime.post("done", python_worker.describe(exc))
                else:
                    runtime.post("done", None)
            elif kind == "finalize":
                if model is not None and callable(getattr(model, "finalize", None)):
                    model.finalize()
                runtime.post("finalized", None)
                return
        except Exception as exc:  # init, initialize or finalize failed
            traceback.print_exc()
            runtime.post("init_error", python_worker.describe(exc))
            if kind != "finalize":
                continue
            return


if __name__ == "__main__":
    from accelserve.backends.triton_python.worker import main as worker_main

    worker_main(int(sys.argv[1]))
