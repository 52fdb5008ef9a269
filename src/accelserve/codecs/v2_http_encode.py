"""KServe V2 REST response bodies: outputs as JSON data, or as binary tensor data after the JSON
(Triton's extension: ``binary_data`` per output, ``binary_data_output`` for the whole request).
A binary output is a flat view of the array, joined into the body without an extra copy.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from accelserve.codecs.v2 import RequestedOutput, output_bytes, output_tensor
from accelserve.codecs.v2_http_json import encode_json
from accelserve.codecs.v2_shared_memory import shared_output_parameters
from accelserve.errors import InvalidArgumentError, ModelExecutionError


def encode_infer_response(
    model_name: str,
    model_version: str,
    request_id: str,
    outputs: dict[str, np.ndarray],
    requested: list[RequestedOutput],
    binary_data_output: bool,
) -> tuple[bytes, int | None]:
    """Render a response; returns (body, JSON header length, or None when all is JSON)."""
    if requested:
        selection = [(r, binary_data_output if r.binary is None else r.binary) for r in requested]
    else:
        selection = [(RequestedOutput(name), binary_data_output) for name in outputs]
    entries: list[dict[str, Any]] = []
    buffers: list[Any] = []
    for output, binary in selection:
        name = output.name
        array, datatype = output_tensor(model_name, name, outputs)
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
        if output.shared is not None:  # written into the region: no data here
            entry["parameters"] = shared_output_parameters(output, array, datatype)
        elif binary:
            raw = output_bytes(model_name, name, array, datatype)
            entry["parameters"] = {
                "binary_data_size": len(raw) if type(raw) is bytes else raw.nbytes
            }
            buffers.append(raw)
        else:
            entry["data"] = _output_json(model_name, name, array, datatype)
        entries.append(entry)
    response: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request_id:
        response["id"] = request_id
    response["outputs"] = entries
    header = encode_json(response)
    if not buffers:
        return header, None
    return b"".join([header, *buffers]), len(header)


def _output_json(model_name: str, name: str, array: np.ndarray, datatype: str) -> Any:
    if datatype == "BYTES":
        return [_as_text(model_name, name, i, e) for i, e in enumerate(array.ravel().tolist())]
    if datatype == "BF16":  # orjson renders no bfloat16; float32 holds every value exactly
        return array.astype(np.float32).ravel()
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    return array.ravel()  # contiguous (a copy if it was not): what orjson needs


def _as_text(model_name: str, name: str, index: int, element: Any) -> str:
    if isinstance(element, str):
        return element
    if isinstance(element, bytes):
        try:
            return element.decode()
        except UnicodeDecodeError:
            raise InvalidArgumentError(
                f"output '{name}' of model '{model_name}': element {index} is not valid UTF-8, "
                f"so it cannot be returned as JSON; request the output with binary_data true"
            ) from None
    raise ModelExecutionError(
        f"output '{name}' of model '{model_name}' is BYTES but element {index} is a "
        f"{type(element).__name__}; expected bytes or str"
    )
