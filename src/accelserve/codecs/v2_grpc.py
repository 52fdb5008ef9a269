"""KServe V2 gRPC messages (``ModelInferRequest``/``ModelInferResponse``) <-> NumPy.

An input's data comes either typed, in ``contents`` (one repeated field per datatype family),
or raw, in ``raw_input_contents`` (one entry per input, in input order, with the same byte
layout as the HTTP binary extension: little-endian, unpadded, BOOL one byte, BYTES elements a
4-byte little-endian length then the bytes). A request uses one or the other for all inputs.
Responses are always raw, as Triton's are; ``tritonclient.grpc`` reads both.

The wire-level checks (datatype, shape, element count, byte sizes, BYTES length prefixes) and
their error texts are shared with the HTTP codec (``codecs.v2``), so a bad tensor gets the
same answer over either protocol. What the model expects (names, datatypes, dims, batch size)
is checked once, by the data plane.

Speed: a raw input becomes a zero-copy read-only array over the message's bytes; a raw output
is one ``tobytes`` copy. Only BYTES tensors loop per element.
"""

from __future__ import annotations

from collections.abc import Sequence
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
    output_bytes,
    output_tensor,
    uint_parameter,
)
from accelserve.codecs.v2_shared_memory import (
    SharedInput,
    shared_memory_ref,
    shared_output_parameters,
)
from accelserve.errors import InvalidArgumentError
from accelserve.protocol.grpc_service_pb2 import (
    InferParameter,
    ModelInferRequest,
    ModelInferResponse,
)
from accelserve.shared_memory import SharedMemoryRef
from accelserve.types import V2_TO_NUMPY

# Which InferTensorContents field carries each datatype (FP16 and BF16 have none: raw only).
CONTENTS_FIELD: dict[str, str] = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
# Datatypes narrower than the protobuf field that carries them: values are range-checked.
_NARROW = frozenset({"INT8", "INT16", "UINT8", "UINT16"})


def decode_infer_request(
    message: ModelInferRequest, max_elements: int = DEFAULT_MAX_ELEMENTS
) -> DecodedRequest:
    """A parsed ``ModelInferRequest`` -> ``DecodedRequest``; malformed parts raise
    ``InvalidArgumentError`` naming the field, the expected and the received value."""
    raw = message.raw_input_contents
    inputs = message.inputs
    refs = [_input_ref(tensor) for tensor in inputs]
    in_body = sum(ref is None for ref in refs)  # inputs not in shared memory
    if raw and len(raw) != in_body:
        raise InvalidArgumentError(
            f"raw_input_contents: expected one entry per input not in shared memory "
            f"({in_body}); received {len(raw)}"
        )
    arrays: dict[str, np.ndarray] = {}
    shared: dict[str, SharedInput] = {}
    raw_index = 0
    for index, tensor in enumerate(inputs):
        name = tensor.name
        if not name:
            raise InvalidArgumentError(
                f"inputs[{index}] 'name': expected a non-empty string; received ''"
            )
        if name in arrays or name in shared:
            raise InvalidArgumentError(f"input '{name}' appears more than once in 'inputs'")
        datatype = tensor.datatype
        if datatype not in V2_TO_NUMPY:
            raise InvalidArgumentError(
                f"input '{name}' 'datatype': expected one of {VALID_DATATYPES}; received "
                f"{describe(datatype) if datatype else 'nothing'}"
            )
        shape = list(tensor.shape)
        count = element_count(name, shape, max_elements)
        ref = refs[index]
        if ref is not None:
            if tensor.HasField("contents"):
                raise InvalidArgumentError(
                    f"input '{name}': expected its data in shared memory (parameters."
                    f"shared_memory_region) or in 'contents'; received both"
                )
            shared[name] = SharedInput(datatype, shape, count, ref)
        elif raw:
            if tensor.HasField("contents"):
                raise InvalidArgumentError(
                    f"input '{name}': expected its data in raw_input_contents (the request "
                    f"uses them) or in 'contents'; received both"
                )
            arrays[name] = _raw_tensor(name, datatype, shape, count, raw[raw_index])
            raw_index += 1
        else:
            arrays[name] = _typed_tensor(name, datatype, shape, count, tensor)
    outputs = _requested_outputs(message) if message.outputs else []
    params = message.parameters
    if not params:  # tritonclient's default: no request parameters
        return DecodedRequest(arrays, outputs, message.id, shared_inputs=shared)
    parameters = parameters_dict(params)
    return DecodedRequest(
        inputs=arrays,
        outputs=outputs,
        id=message.id,
        priority=uint_parameter(parameters, "priority"),
        timeout_us=uint_parameter(parameters, "timeout"),
        parameters=parameters,
        shared_inputs=shared,
    )


def _input_ref(tensor: Any) -> SharedMemoryRef | None:
    if not tensor.parameters:
        return None
    return shared_memory_ref(f"input '{tensor.name}'", parameters_dict(tensor.parameters))


def _raw_tensor(name: str, datatype: str, shape: list[int], count: int, data: bytes) -> np.ndarray:
    if datatype == "BYTES":
        return bytes_elements(name, shape, count, data, 0, len(data))
    wire = WIRE[datatype]
    expected = count * wire.itemsize
    if len(data) != expected:
        raise InvalidArgumentError(
            f"input '{name}' raw_input_contents: expected {expected} bytes ({count} {datatype} "
            f"elements of {wire.itemsize} bytes for shape {shape}); received {len(data)}"
        )
    array = np.ndarray(shape, wire, data)  # read-only view of the message's bytes: no copy
    if datatype == "BOOL":
        check_bool_bytes(name, array, "raw")
    return array


def _typed_tensor(
    name: str, datatype: str, shape: list[int], count: int, tensor: Any
) -> np.ndarray:
    field = CONTENTS_FIELD.get(datatype)
    if not tensor.HasField("contents"):
        if count == 0:
            return np.empty(shape, V2_TO_NUMPY[datatype])
        raise InvalidArgumentError(
            f"input '{name}': expected its data in 'contents' or raw_input_contents; "
            f"received neither"
        )
    used = [f.name for f, _ in tensor.contents.ListFields()]
    if field is None:
        raise InvalidArgumentError(
            f"input '{name}': {datatype} has no typed field in InferTensorContents; expected "
            f"its data in raw_input_contents; received contents.{', contents.'.join(used)}"
        )
    if used and used != [field]:
        raise InvalidArgumentError(
            f"input '{name}': {datatype} data must be in contents.{field}; received "
            f"contents.{', contents.'.join(used)}"
        )
    values = getattr(tensor.contents, field)
    if len(values) != count:
        raise InvalidArgumentError(
            f"input '{name}': data does not fill shape {shape}: expected {count} elements, "
            f"received {len(values)}"
        )
    if datatype == "BYTES":
        array = np.empty(count, dtype=object)
        array[:] = list(values)
        return array.reshape(shape)
    dtype = V2_TO_NUMPY[datatype]
    if datatype in _NARROW:
        wide = np.asarray(values, dtype=np.int64)
        info = np.iinfo(dtype)
        outside = (wide < info.min) | (wide > info.max)
        if outside.any():
            index = int(np.argmax(outside))
            raise InvalidArgumentError(
                f"input '{name}': {datatype} values must lie in [{info.min}, {info.max}]; "
                f"received {int(wide[index])} at element {index}"
            )
        return wide.astype(dtype).reshape(shape)
    return np.asarray(values, dtype=dtype).reshape(shape)


def _requested_outputs(message: ModelInferRequest) -> list[RequestedOutput]:
    names: list[RequestedOutput] = []
    for index, output in enumerate(message.outputs):
        name = output.name
        if not name:
            raise InvalidArgumentError(
                f"outputs[{index}] 'name': expected a non-empty string; received ''"
            )
        if name in names:
            raise InvalidArgumentError(f"output '{name}' is requested more than once in 'outputs'")
        params = parameters_dict(output.parameters) if output.parameters else {}
        shared = shared_memory_ref(f"output '{name}'", params) if params else None
        classes = 0
        if "classification" in params:
            classes = classification_count(f"output '{name}'", params["classification"])
        names.append(RequestedOutput(name, shared=shared, classification=classes))
    return names


def parameter_value(parameter: InferParameter) -> bool | int | str | float | None:
    choice = parameter.WhichOneof("parameter_choice")
    return None if choice is None else getattr(parameter, choice)


def parameters_dict(params: Any) -> dict[str, object]:
    return {key: parameter_value(value) for key, value in params.items()}


# ------------------------------------------------------------------------------ response


def encode_infer_response(
    model_name: str,
    model_version: str,
    request_id: str,
    outputs: dict[str, np.ndarray],
    requested: Sequence[str] = (),
) -> ModelInferResponse:
    """Render outputs (those ``requested``, in that order, or all) as raw contents."""
    response = ModelInferResponse(model_name=model_name, model_version=model_version, id=request_id)
    tensors = response.outputs
    raws: list[bytes] = []
    in_body = False  # any output carries data: then every output has a raw entry
    for name in requested or outputs:
        array, datatype = output_tensor(model_name, name, outputs)
        tensor = tensors.add(name=name, datatype=datatype, shape=array.shape)
        if isinstance(name, RequestedOutput) and name.shared is not None:
            # written into the region: an empty raw entry keeps the others' indices
            params = shared_output_parameters(name, array, datatype)
            for key, value in params.items():
                if type(value) is str:
                    tensor.parameters[key].string_param = value
                else:
                    tensor.parameters[key].int64_param = value
            raws.append(b"")
            continue
        in_body = True
        data = output_bytes(model_name, name, array, datatype)
        raws.append(data if type(data) is bytes else data.tobytes())
    if in_body:
        response.raw_output_contents.extend(raws)
    return response
