"""Tensors in shared memory (Triton's shared-memory extension), for both V2 wires.

An input or requested output whose parameters carry ``shared_memory_region`` and
``shared_memory_byte_size`` (and optionally ``shared_memory_offset``, 0 by default) names a
window of a registered region instead of carrying data. The decoders read the parameters
(``shared_memory_ref``) and leave such inputs in ``DecodedRequest.shared_inputs``; the frontend
then reads them from the regions (``read_shared_inputs``) before inference and writes the
outputs asked for in shared memory (``write_shared_outputs``) after it. The bytes in a region
have the binary tensor layout (``codecs.v2``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from accelserve.codecs.v2 import (
    WIRE,
    DecodedRequest,
    RequestedOutput,
    bytes_elements,
    check_bool_bytes,
    describe,
    output_bytes,
    output_tensor,
)
from accelserve.errors import InvalidArgumentError
from accelserve.shared_memory import SharedMemoryRef, SharedMemoryRegistry

REGION = "shared_memory_region"
OFFSET = "shared_memory_offset"
BYTE_SIZE = "shared_memory_byte_size"


@dataclass(frozen=True, slots=True)
class SharedInput:
    """An input whose data is in a region: what the request said of it."""

    datatype: str
    shape: list[int]
    count: int
    ref: SharedMemoryRef


def shared_memory_ref(owner: str, params: Mapping[str, object]) -> SharedMemoryRef | None:
    """The region a tensor's parameters name, or None when they name none; ``owner`` is
    "input 'X'" or "output 'Y'" for the error texts."""
    if REGION not in params and BYTE_SIZE not in params and OFFSET not in params:
        return None
    region = params.get(REGION)
    if type(region) is not str or not region:
        received = "nothing" if region is None else describe(region)
        raise InvalidArgumentError(
            f"{owner} parameter '{REGION}': expected the name of a registered region (with "
            f"'{BYTE_SIZE}'); received {received}"
        )
    values = []
    for key, required in ((BYTE_SIZE, True), (OFFSET, False)):
        value = params.get(key)
        if value is None and not required:
            value = 0
        if type(value) is not int or value < 0:
            received = "nothing" if value is None else describe(value)
            raise InvalidArgumentError(
                f"{owner} parameter '{key}': expected a non-negative integer; received {received}"
            )
        values.append(value)
    byte_size, offset = values
    return SharedMemoryRef(region, offset, byte_size)


def read_shared_inputs(request: DecodedRequest, registry: SharedMemoryRegistry) -> None:
    """Put the request's shared-memory inputs into ``request.inputs``: read-only arrays over
    system regions, host copies of CUDA regions (BYTES elements are copied out, being
    variable-length)."""
    for name, shared in request.shared_inputs.items():
        owner = f"input '{name}'"
        ref = shared.ref
        mapping, start = registry.read(owner, ref)
        if shared.datatype == "BYTES":
            array = bytes_elements(
                name, shared.shape, shared.count, memoryview(mapping), start, start + ref.byte_size
            )
        else:
            wire = WIRE[shared.datatype]
            expected = shared.count * wire.itemsize
            if ref.byte_size != expected:
                raise InvalidArgumentError(
                    f"{owner} '{BYTE_SIZE}': expected {expected} bytes ({shared.count} "
                    f"{shared.datatype} elements of {wire.itemsize} bytes for shape "
                    f"{shared.shape}); received {ref.byte_size}"
                )
            array = np.frombuffer(mapping, wire, shared.count, start).reshape(shared.shape)
            array.flags.writeable = False  # the client's memory: a model must not write into it
            if shared.datatype == "BOOL":
                check_bool_bytes(name, array, "shared memory")
        request.inputs[name] = array


def write_shared_outputs(
    model_name: str,
    outputs: Mapping[str, np.ndarray],
    requested: list[RequestedOutput],
    registry: SharedMemoryRegistry,
) -> None:
    """Copy each output asked for in shared memory into its region."""
    for output in requested:
        ref = output.shared
        if ref is None:
            continue
        owner = f"output '{output.name}'"
        array, datatype = output_tensor(model_name, output.name, dict(outputs))
        data = output_bytes(model_name, output.name, array, datatype)
        size = len(data)
        if size > ref.byte_size:
            raise InvalidArgumentError(
                f"{owner} '{BYTE_SIZE}': expected at least {size} bytes to hold the result "
                f"({datatype}, shape {list(array.shape)}); received {ref.byte_size}"
            )
        registry.write(owner, ref, data)


def shared_output_parameters(
    output: RequestedOutput, array: np.ndarray, datatype: str
) -> dict[str, object]:
    """The parameters a response gives an output written to shared memory (it has no data)."""
    assert output.shared is not None
    size = (
        array.nbytes if datatype != "BYTES" else len(output_bytes("", output.name, array, datatype))
    )
    parameters: dict[str, object] = {REGION: output.shared.region, BYTE_SIZE: size}
    if output.shared.offset:
        parameters[OFFSET] = output.shared.offset
    return parameters
