"""Fixtures for the load generator tests (the toy server is in loadgen_toy_server.py)."""

from __future__ import annotations

import pytest
from loadgen_toy_server import ToyServer


@pytest.fixture
def toy_server_factory():
    """Returns an async context helper: ``async with serve(...) as server``."""

    class _Serve:
        def __init__(self, **kwargs: object) -> None:
            self.server = ToyServer(**kwargs)  # type: ignore[arg-type]

        async def __aenter__(self) -> ToyServer:
            await self.server.start()
            return self.server

        async def __aexit__(self, *exc: object) -> None:
            await self.server.stop()

    return _Serve
