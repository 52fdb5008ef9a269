"""Triton-style Python models as a platform: each instance is a worker process, and the runner
hands ``execute`` whole requests, not a merged batch (Triton's semantics: each request is its
own; with dynamic batching one ``execute`` receives several). Every request gets a stream of
responses (``infer_stream``): one final response for an ordinary model, zero or more then the
final flag for a decoupled one (``model_transaction_policy { decoupled: true }``).

A client that goes away (its stream cancelled) is told to the model: ``is_cancelled()`` turns
True. A worker that exits fails the requests it held and is started again. Calls the model makes
to other models (BLS) go through the server's data plane (``ModelCaller``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from accelserve.backends.triton_python.process import WorkerProcess
from accelserve.errors import (
    AccelServeError,
    InvalidArgumentError,
    ModelExecutionError,
    ModelInputError,
    ServerFaultError,
    UnavailableError,
)
from accelserve.model import ModelCaller
from accelserve.protocol.model_config_pb2 import ModelConfig
from accelserve.stats import ModelStats, failure_reason
from accelserve.types import InferRequest, StreamResponse

log = logging.getLogger("accelserve.triton_python")
_NS = time.perf_counter_ns
_INVALID_ARG = 3  # pb_utils.TritonError.INVALID_ARG: the client's fault

Spawn = Callable[[int], WorkerProcess]  # instance index -> a started, initialized worker


@dataclass(eq=False)
class _Pending:
    tag: int
    request: InferRequest
    arrival_ns: int
    parts: asyncio.Queue[StreamResponse] = field(default_factory=asyncio.Queue)
    slot: _Slot | None = None
    finished: bool = False
    abandoned: bool = False  # the client went away: parts are dropped
    failed: bool = False


@dataclass(eq=False)
class _Slot:
    index: int
    worker: WorkerProcess | None
    running: list[_Pending] = field(default_factory=list)  # the batch execute() has now
    open: set[_Pending] = field(default_factory=set)  # sent to this worker, not yet final
    start_ns: int = 0


class TritonPythonRunner:
    def __init__(
        self,
        config: ModelConfig,
        version: str,
        workers: list[WorkerProcess],
        spawn: Spawn,
        stats: ModelStats,
        caller: Callable[[], ModelCaller | None],
    ) -> None:
        self.name, self.version, self.config = config.name, version, config
        self.decoupled = config.model_transaction_policy.decoupled
        batching = config.HasField("dynamic_batching") and config.max_batch_size > 0
        self._max_rows = config.max_batch_size if batching else 0
        self._outputs = {o.name for o in config.output}
        self._spawn, self._stats, self._caller = spawn, stats, caller
        self._slots = [_Slot(i, w) for i, w in enumerate(workers)]
        self._idle: list[_Slot] = list(reversed(self._slots))
        self._queue: deque[_Pending] = deque()
        self._tags: dict[int, _Pending] = {}
        self._next_tag = itertools.count()
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._loop = asyncio.get_running_loop()
        for slot in self._slots:
            self._listen(slot)

    # -- requests -------------------------------------------------------------------------------

    async def infer(self, request: InferRequest) -> dict[str, np.ndarray]:
        """The one response of a request; a decoupled model must send exactly one here."""
        responses = [p async for p in self.infer_stream(request) if not _flag_only(p)]
        if len(responses) == 1:
            if responses[0].error is not None:
                raise responses[0].error
            assert responses[0].outputs is not None
            return responses[0].outputs
        raise InvalidArgumentError(
            f"model '{self.name}' is decoupled and sent {len(responses)} responses to this "
            "request; a plain infer call takes exactly one: use gRPC ModelStreamInfer or "
            f"POST /v2/models/{self.name}/generate_stream"
        )

    async def infer_stream(self, request: InferRequest) -> AsyncIterator[StreamResponse]:
        if self._stopping:
            raise UnavailableError(f"model '{self.name}' is unloading")
        if not any(slot.worker is not None for slot in self._slots) and not self._tasks:
            raise UnavailableError(f"model '{self.name}' has no running instance")
        pending = _Pending(next(self._next_tag), request, _NS())
        self._tags[pending.tag] = pending
        self._queue.append(pending)
        self._stats.pending += 1
        self._kick()
        try:
            while True:
                part = await pending.parts.get()
                yield part
                if part.final:
                    return
        finally:
            if not pending.finished:
                self._abandon(pending)

    def _abandon(self, pending: _Pending) -> None:
        pending.abandoned = True
        if pending.slot is None:  # still queued: never runs
            self._queue.remove(pending)
            self._finish(pending, "CANCELED")
        elif pending.slot.worker is not None:
            pending.slot.worker.try_send("cancel", pending.tag)

    # -- dispatch -------------------------------------------------------------------------------

    def _kick(self) -> None:
        while self._idle and self._queue:
            slot = self._idle.pop()
            batch = self._take()
            slot.running, slot.start_ns = batch, _NS()
            for pending in batch:
                pending.slot = slot
                slot.open.add(pending)
                self._stats.queue.add(slot.start_ns - pending.arrival_ns)
            assert slot.worker is not None
            slot.worker.try_send("execute", [self._message(p) for p in batch])

    def _take(self) -> list[_Pending]:
        batch = [self._queue.popleft()]
        rows = _rows(batch[0].request)
        while self._queue and rows + _rows(self._queue[0].request) <= self._max_rows:
            rows += _rows(self._queue[0].request)
            batch.append(self._queue.popleft())
        return batch

    def _message(self, pending: _Pending) -> dict[str, Any]:
        request = pending.request
        params = request.parameters
        flags = (1 if params.get("sequence_start") else 0) | (
            2 if params.get("sequence_end") else 0
        )
        return {
            "tag": pending.tag,
            "inputs": request.inputs,
            "outputs": [str(name) for name in request.outputs],
            "id": request.id,
            "correlation_id": params.get("sequence_id", 0),
            "flags": flags,
            "parameters": json.dumps(params, default=str),
        }

    # -- messages from a worker (on the loop) -------------------------------------------------

    def _listen(self, slot: _Slot) -> None:
        assert slot.worker is not None
        slot.worker.listen(
            self._loop,
            lambda kind, payload: self._on_message(slot, kind, payload),
            lambda reason: self._on_exit(slot, reason),
        )

    def _on_message(self, slot: _Slot, kind: str, payload: Any) -> None:
        if kind == "response":
            self._deliver(*payload)
        elif kind == "done":
            self._done(slot, payload)
        elif kind == "metric":
            self._metric(*payload)
        elif kind == "call":
            task = asyncio.create_task(self._call(slot, *payload))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _metric(
        self, name: str, kind: str, description: str, labels: dict[str, str], value: float
    ) -> None:
        family = self._stats.custom.get(name)
        if family is None or family[0] != kind:
            family = self._stats.custom[name] = (kind, description, {})
        family[2][tuple(sorted(labels.items()))] = value

    def _deliver(self, tag: int, outputs: Any, error: Any, final: bool) -> None:
        pending = self._tags.get(tag)
        if pending is None:
            return
        failure: AccelServeError | None = None
        if error is not None:
            code, message = error
            kind = ModelInputError if code == _INVALID_ARG else ModelExecutionError
            failure = kind(f"model '{self.name}': {message}")
        elif outputs is not None:
            failure = self._check_outputs(pending.request, outputs)
            if failure is None and pending.request.outputs:
                outputs = {n: outputs[n] for n in pending.request.outputs}
        if failure is not None:
            outputs, pending.failed = None, True
        if not pending.abandoned:
            part = StreamResponse(self.name, self.version, pending.request.id, outputs, final)
            part.error = failure
            pending.parts.put_nowait(part)
        if final:
            self._finish(pending, "BACKEND" if pending.failed else None)

    def _check_outputs(
        self, request: InferRequest, outputs: dict[str, Any]
    ) -> AccelServeError | None:
        unknown = sorted(set(outputs) - self._outputs)
        if unknown:
            return ModelExecutionError(
                f"model '{self.name}': the model returned outputs {unknown} that its config "
                f"does not declare (declared: {sorted(self._outputs)})"
            )
        missing = [n for n in request.outputs if n not in outputs]
        if missing:
            return ModelExecutionError(
                f"model '{self.name}': the response lacks the requested outputs {missing}"
            )
        return None

    def _done(self, slot: _Slot, error: Any) -> None:
        batch, slot.running = slot.running, []
        infer_ns = _NS() - slot.start_ns
        rows = sum(self._rows(p.request) for p in batch)
        self._stats.record_batch(rows, 0, infer_ns, 0)
        self._stats.last_inference_ms = time.time_ns() // 1_000_000
        for pending in batch:
            self._stats.compute_infer.add(infer_ns)
            if error is not None:
                type_name, message = error
                text = f"{type_name}: {message}" if message else type_name
                self._fail(
                    pending, ModelExecutionError(f"model '{self.name}': execute() raised {text}")
                )
            elif not self.decoupled and not pending.finished:
                self._fail(
                    pending,
                    ModelExecutionError(
                        f"model '{self.name}': execute() returned without a response to this "
                        "request (return one InferenceResponse per request, or send it with the "
                        "request's response sender and the final flag)"
                    ),
                )
        if slot.worker is not None:
            self._idle.append(slot)
        self._kick()

    def _fail(self, pending: _Pending, error: AccelServeError) -> None:
        if pending.finished:
            return
        if not pending.abandoned:
            pending.parts.put_nowait(
                StreamResponse(self.name, self.version, pending.request.id, None, True, error)
            )
        self._finish(pending, failure_reason(error))

    def _finish(self, pending: _Pending, failure: str | None) -> None:
        pending.finished = True
        self._tags.pop(pending.tag, None)
        if pending.slot is not None:
            pending.slot.open.discard(pending)
        self._stats.pending -= 1
        elapsed = _NS() - pending.arrival_ns
        if failure is None:
            self._stats.success.add(elapsed)
            self._stats.inference_count += self._rows(pending.request)
        else:
            self._stats.record_failure(failure, elapsed)

    def _on_exit(self, slot: _Slot, reason: str) -> None:
        if slot.worker is None:
            return
        slot.worker.kill()
        slot.worker = None
        error = ServerFaultError(
            f"model '{self.name}': its worker process ended ({reason}); it is restarted"
        )
        for pending in list(slot.open):
            self._fail(pending, error)
        slot.running = []
        if slot in self._idle:
            self._idle.remove(slot)
        if not self._stopping:
            log.error("model '%s' instance %d: worker ended (%s)", self.name, slot.index, reason)
            task = asyncio.create_task(self._restart(slot))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _restart(self, slot: _Slot) -> None:
        try:
            worker = await asyncio.to_thread(self._spawn, slot.index)
        except Exception as exc:
            log.error("model '%s' instance %d failed to restart: %s", self.name, slot.index, exc)
            if not any(s.worker is not None for s in self._slots):
                error = UnavailableError(f"model '{self.name}' has no running instance: {exc}")
                while self._queue:
                    self._fail(self._queue.popleft(), error)
            return
        if self._stopping:
            worker.kill()
            return
        slot.worker = worker
        self._listen(slot)
        self._idle.append(slot)
        self._kick()

    # -- business logic scripting ----------------------------------------------------------------

    async def _call(self, slot: _Slot, call_id: int, spec: dict[str, Any], decoupled: bool) -> None:
        """One call the model makes to another model: each response goes back to the worker as
        it comes (a decoupled model's many), then word that the call is complete. A failure is
        a response with an error, as in Triton."""
        request = InferRequest(
            inputs=spec["inputs"],
            outputs=spec["outputs"],
            id=spec["id"],
            parameters=spec["parameters"],
        )
        name, version = spec["model_name"], spec["model_version"]

        def reply(outputs: Any, error: str | None, complete: bool) -> None:
            if slot.worker is not None:
                answers = [] if outputs is None and error is None else [(outputs, error)]
                slot.worker.try_send("reply", (call_id, answers, complete))

        try:
            caller = self._caller()
            if caller is None:
                raise UnavailableError("calling another model needs the server")
            if decoupled:
                async for part in caller.infer_stream(name, version, request):
                    if part.error is not None:
                        reply(None, _message(part.error), False)
                    elif part.outputs is not None:
                        reply(part.outputs, None, False)
                reply(None, None, True)
            else:
                response = await caller.infer(name, version, request)
                reply(response.outputs, None, True)
        except AccelServeError as exc:
            reply(None, exc.message, True)
        except Exception:
            log.exception("model '%s': a call to model '%s' failed", self.name, name)
            reply(None, "internal server error", True)

    def _rows(self, request: InferRequest) -> int:
        return _rows(request, self.config.max_batch_size > 0)

    # -- unload --------------------------------------------------------------------------------

    async def stop(self) -> None:
        self._stopping = True
        error = UnavailableError(f"model '{self.name}' was unloaded")
        while self._queue:
            self._fail(self._queue.popleft(), error)
        for slot in self._slots:
            worker, slot.worker = slot.worker, None
            if worker is None:
                continue
            worker.try_send("finalize", None)
            with contextlib.suppress(Exception):  # a finalize() that hangs: killed below
                await asyncio.to_thread(worker.process.wait, FINALIZE_TIMEOUT_S)
            worker.kill()
            for pending in list(slot.open):
                self._fail(pending, error)


FINALIZE_TIMEOUT_S = 10.0


def _rows(request: InferRequest, batching: bool = True) -> int:
    """The request's batch size: its first input's first dim when the model batches, else 1."""
    first = next(iter(request.inputs.values()), None) if batching else None
    return int(first.shape[0]) if first is not None and first.ndim else 1


def _flag_only(part: StreamResponse) -> bool:
    return part.outputs is None and part.error is None


def _message(error: Exception) -> str:
    return error.message if isinstance(error, AccelServeError) else str(error)
