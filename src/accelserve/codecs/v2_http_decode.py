"""KServe V2 (Open Inference Protocol) REST request bodies, with Triton's binary tensor data
extension.

A request body is a JSON object, optionally followed by raw tensor bytes: when the
``Inference-Header-Content-Length`` HTTP header gives the JSON's length, every input whose
parameters carry ``binary_data_size`` takes that many bytes after the JSON, in input order, in
the layout ``codecs.v2`` describes. Binary inputs are zero-copy arrays over the body's buffer;
only BYTES loops per element. JSON (parsing, nesting guard, JSON tensor data) is
``codecs.v2_http_json``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from accelserve.codecs.v2 import (
    DEFAULT_MAX_ELEMENTS,
    VALID_DATATYPES,
    WIRE,
    DecodedRequest,
    RequestedOutput,
    bytes_elements,
    check_bool_bytes,
    classification_count,
    describe,
    element_count,
    uint_parameter,
)
from accelserve.codecs.v2_http_json import (
    check_unknown,
    check_values,
    json_tensor,
    loads,
)
from accelserve.codecs.v2_shared_memory import SharedInput, shared_memory_ref
from accelserve.errors import InvalidArgumentError
from accelserve.types import V2_TO_NUMPY


def decode_infer_request(
    body: bytes | bytearray | memoryview,
    header_length: int | None,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
) -> DecodedRequest:
    """Decode a V2 infer request body; every malformed part raises InvalidArgumentError."""
    if isinstance(body, memoryview) and (body.ndim != 1 or body.itemsize != 1):
        body = body.cast("B")
    size = len(body)
    if header_length is None:
        obj = loads(body, "request body")
        json_end = size
    else:
        if type(header_length) is not int or header_length < 0:
            raise InvalidArgumentError(
                f"Inference-Header-Content-Length: expected a non-negative integer; "
                f"received {header_length!r}"
            )
        if header_length > size:
            raise InvalidArgumentError(
                f"Inference-Header-Content-Length is {header_length} bytes, past the end of "
                f"the request body, which has {size} bytes"
            )
        obj = loads(body[:header_length], f"request JSON header (first {header_length} bytes)")
        json_end = header_length
    if type(obj) is not dict:
        raise InvalidArgumentError(
            f"request body: expected a JSON object with 'inputs'; received {describe(obj)}"
        )

    request_id = obj.get("id", "")
    if type(request_id) is not str:
        raise InvalidArgumentError(
            f"request 'id': expected a string; received {describe(request_id)}"
        )
    parameters = obj.get("parameters")
    if parameters is None:
        parameters = {}
    elif type(parameters) is not dict:
        raise InvalidArgumentError(
            f"request 'parameters': expected an object; received {describe(parameters)}"
        )
    else:
        check_values(parameters, 2, "request")
    binary_output = parameters.get("binary_data_output", False)
    if type(binary_output) is not bool:
        raise InvalidArgumentError(
            f"request parameter 'binary_data_output': expected true or false; "
            f"received {describe(binary_output)}"
        )
    outputs = obj.get("outputs")
    requested = [] if outputs is None else _requested_outputs(outputs)
    inputs = obj.get("inputs")
    if type(inputs) is not list:
        received = "nothing" if inputs is None else describe(inputs)
        raise InvalidArgumentError(
            f"request 'inputs': expected a list of input objects; received {received}"
        )
    known = 1 + ("id" in obj) + ("parameters" in obj) + ("outputs" in obj)
    if len(obj) > known:  # unknown keys are ignored, but not allowed to nest without bound
        check_unknown(obj, ("id", "parameters", "outputs", "inputs"), 1, "request")

    arrays: dict[str, np.ndarray] = {}
    shared: dict[str, SharedInput] = {}
    offset = json_end
    for index, spec in enumerate(inputs):
        name, tensor, binary_size = _decode_input(
            index, spec, body, offset, header_length, max_elements
        )
        if name in arrays or name in shared:
            raise InvalidArgumentError(f"input '{name}' appears more than once in 'inputs'")
        if isinstance(tensor, SharedInput):
            shared[name] = tensor
        else:
            arrays[name] = tensor
        offset += binary_size
    if offset != size:
        raise InvalidArgumentError(
            f"request body has {size - json_end} bytes after the JSON header but the inputs' "
            f"binary_data_size values add up to {offset - json_end}"
        )
    return DecodedRequest(
        inputs=arrays,
        outputs=requested,
        id=request_id,
        priority=uint_parameter(parameters, "priority"),
        timeout_us=uint_parameter(parameters, "timeout"),
        parameters=parameters,
        binary_data_output=binary_output,
        shared_inputs=shared,
    )


_INPUT_KEYS = ("name", "datatype", "shape", "data", "parameters")


def _decode_input(
    index: int,
    spec: Any,
    body: bytes | bytearray | memoryview,
    offset: int,
    header_length: int | None,
    max_elements: int,
) -> tuple[str, np.ndarray | SharedInput, int]:
    """One entry of 'inputs' -> (name, array or its shared memory, bytes of binary data it
    used)."""
    if type(spec) is not dict:
        raise InvalidArgumentError(
            f"inputs[{index}]: expected an object with name, datatype, shape and data; "
            f"received {describe(spec)}"
        )
    name = spec.get("name")
    if type(name) is not str or not name:
        raise InvalidArgumentError(
            f"inputs[{index}] 'name': expected a non-empty string; received {describe(name)}"
        )
    datatype = spec.get("datatype")
    if type(datatype) is not str or datatype not in V2_TO_NUMPY:
        received = "nothing" if datatype is None else describe(datatype)
        raise InvalidArgumentError(
            f"input '{name}' 'datatype': expected one of {VALID_DATATYPES}; received {received}"
        )
    shape: Any = spec.get("shape")
    count = element_count(name, shape, max_elements)
    params = spec.get("parameters")
    binary_size = None if params is None else _input_parameters(name, params)
    has_data = "data" in spec
    if len(spec) > 3 + has_data + (params is not None):
        check_unknown(spec, _INPUT_KEYS, 3, f"input '{name}'")
    ref = None if params is None else shared_memory_ref(f"input '{name}'", params)
    if ref is not None:
        if has_data or binary_size is not None:
            raise InvalidArgumentError(
                f"input '{name}': expected its data in shared memory (parameters."
                f"shared_memory_region) or in the body; received both"
            )
        return name, SharedInput(datatype, shape, count, ref), 0
    if binary_size is None:
        if not has_data:
            raise InvalidArgumentError(
                f"input '{name}': expected 'data' or parameters.binary_data_size; received neither"
            )
        return name, json_tensor(name, datatype, shape, count, spec["data"]), 0
    if has_data:
        raise InvalidArgumentError(
            f"input '{name}': expected either 'data' or parameters.binary_data_size; received both"
        )
    if header_length is None:
        raise InvalidArgumentError(
            f"input '{name}' has binary_data_size {binary_size} but the request has no "
            f"Inference-Header-Content-Length header, so the whole body was read as JSON"
        )
    array = _binary_tensor(name, datatype, shape, count, body, offset, binary_size)
    return name, array, binary_size


def _input_parameters(name: str, params: Any) -> int | None:
    if type(params) is not dict:
        raise InvalidArgumentError(
            f"input '{name}' 'parameters': expected an object; received {describe(params)}"
        )
    check_values(params, 4, "input '" + name + "'")
    size = params.get("binary_data_size")
    if size is not None and (type(size) is not int or size < 0):
        raise InvalidArgumentError(
            f"input '{name}' parameter 'binary_data_size': expected a non-negative integer; "
            f"received {describe(size)}"
        )
    return size


def _requested_outputs(outputs: Any) -> list[RequestedOutput]:
    if type(outputs) is not list:
        raise InvalidArgumentError(
            f"request 'outputs': expected a list of output objects; received {describe(outputs)}"
        )
    requested: list[RequestedOutput] = []
    seen: set[str] = set()
    for index, spec in enumerate(outputs):
        if type(spec) is not dict:
            raise InvalidArgumentError(
                f"outputs[{index}]: expected an object with a name; received {describe(spec)}"
            )
        name = spec.get("name")
        if type(name) is not str or not name:
            raise InvalidArgumentError(
                f"outputs[{index}] 'name': expected a non-empty string; received {describe(name)}"
            )
        if name in seen:
            raise InvalidArgumentError(f"output '{name}' is requested more than once in 'outputs'")
        seen.add(name)
        binary = shared = None
        classes = 0
        params = spec.get("parameters")
        if params is not None:
            binary = _output_parameters(name, params)
            shared = shared_memory_ref(f"output '{name}'", params)
            if "classification" in params:
                classes = classification_count(f"output '{name}'", params["classification"])
        if len(spec) > 1 + ("parameters" in spec):
            check_unknown(spec, ("name", "parameters"), 3, f"output '{name}'")
        requested.append(RequestedOutput(name, binary, shared, classes))
    return requested


def _output_parameters(name: str, params: Any) -> bool | None:
    if type(params) is not dict:
        raise InvalidArgumentError(
            f"output '{name}' 'parameters': expected an object; received {describe(params)}"
        )
    check_values(params, 4, "output '" + name + "'")
    binary = params.get("binary_data")
    if binary is not None and type(binary) is not bool:
        raise InvalidArgumentError(
            f"output '{name}' parameter 'binary_data': expected true or false; "
            f"received {describe(binary)}"
        )
    return binary


def _binary_tensor(
    name: str,
    datatype: str,
    shape: list[int],
    count: int,
    body: bytes | bytearray | memoryview,
    offset: int,
    nbytes: int,
) -> np.ndarray:
    end = offset + nbytes
    if datatype != "BYTES":
        itemsize = V2_TO_NUMPY[datatype].itemsize
        if nbytes != count * itemsize:
            raise InvalidArgumentError(
                f"input '{name}' binary_data_size: expected {count * itemsize} bytes "
                f"({count} {datatype} elements of {itemsize} bytes for shape {shape}); "
                f"received {nbytes}"
            )
    if end > len(body):
        raise InvalidArgumentError(
            f"input '{name}' binary_data_size {nbytes} runs past the end of the body: its "
            f"data would end at byte {end} but the body has {len(body)} bytes"
        )
    if datatype == "BYTES":
        return bytes_elements(name, shape, count, body, offset, end)
    # A read-only (for bytes bodies) view of the body: no copy.
    array = np.ndarray(shape, WIRE[datatype], body, offset)
    if datatype == "BOOL":
        check_bool_bytes(name, array, "binary")
    return array
