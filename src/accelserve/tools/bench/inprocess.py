"""A load-generator transport without a socket: sessions call a ``DataPlane`` directly.

The bench ``Runner`` drives it like the HTTP or gRPC transports, so an in-process measurement
(``accelserve advise``) counts and times requests the same way ``accelserve bench`` does, and
reads the same statistics (``DataPlane.statistics``) for the server-side breakdown. What it
leaves out is the wire: no encoding, no connection, no frontend.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from accelserve.dataplane import DataPlane
from accelserve.errors import AccelServeError
from accelserve.tools.bench.inputs import ModelInfo
from accelserve.types import InferRequest

ERROR_TEXT_LIMIT = 200  # keep error keys short: they are counted by text


class InProcessSession:
    __slots__ = ("_name", "_plane", "_tensors")

    def __init__(self, plane: DataPlane, name: str, tensors: list[dict[str, np.ndarray]]) -> None:
        self._plane, self._name, self._tensors = plane, name, tensors

    async def infer(self, index: int) -> str | None:
        try:
            # A fresh request and dict each time: the data plane may reshape inputs in place.
            await self._plane.infer(self._name, "", InferRequest(dict(self._tensors[index])))
        except AccelServeError as exc:
            return f"{exc.code}: {exc.message}"[:ERROR_TEXT_LIMIT]
        except Exception as exc:  # a backend bug is counted as a failure, not a crash
            return f"{type(exc).__name__}: {exc}"[:ERROR_TEXT_LIMIT]
        return None

    def close(self) -> None:
        pass


class InProcessTransport:
    """Requests to model ``name`` (its default version) of a data plane in this process."""

    def __init__(self, plane: DataPlane, name: str) -> None:
        self.plane, self.name = plane, name
        self.description = f"in process: {name}"
        self.tensors: list[dict[str, np.ndarray]] = []

    async def open(self) -> None:
        pass

    async def metadata(self) -> dict[str, Any]:
        return self.plane.model_metadata(self.name)

    async def config(self) -> dict[str, Any] | None:
        return self.plane.model_config(self.name)

    async def stats(self) -> dict[str, Any] | None:
        return self.plane.statistics(self.name)

    def prepare(self, info: ModelInfo, tensors: Sequence[Mapping[str, np.ndarray]]) -> None:
        self.tensors = [dict(t) for t in tensors]

    async def probe(self) -> None:
        """Send input set 0 once; ValueError with the model's answer when it is rejected."""
        error = await self.session().infer(0)
        if error is not None:
            raise ValueError(f"model {self.name!r} rejects the synthetic inputs: {error}")

    def session(self) -> InProcessSession:
        return InProcessSession(self.plane, self.name, self.tensors)

    async def close(self) -> None:
        pass
