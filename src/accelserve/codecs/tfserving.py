"""What TF Serving's REST and gRPC codecs share: its datatype names, the one signature every
model offers, model status, and the version and signature checks.

TF Serving serves SavedModel signatures; accelserve serves every model of its repository, so
each model gets one signature, ``serving_default`` (method ``tensorflow/serving/predict``),
built from the model's config: its inputs and outputs with their datatypes as ``DT_*`` names and
their shapes, the batch dimension as -1. Both wires build the same protobuf messages here; the
REST frontend renders them as TF Serving's JSON (proto3 JSON with TF Serving's field names).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from google.protobuf import json_format

from accelserve.errors import InvalidArgumentError, ModelNotFoundError
from accelserve.protocol.tf_framework_pb2 import ErrorCode, SignatureDef, TensorInfo
from accelserve.protocol.tfserving_apis_pb2 import (
    GetModelStatusResponse,
    ModelSpec,
    ModelVersionStatus,
    SignatureDefMap,
)
from accelserve.types import TensorSpec

DEFAULT_SIGNATURE = "serving_default"
PREDICT_METHOD = "tensorflow/serving/predict"
SIGNATURE_DEF_MAP_URL = "type.googleapis.com/tensorflow.serving.SignatureDefMap"

# V2 datatype -> TensorFlow DataType name (tensorflow/core/framework/types.proto).
V2_TO_TF: dict[str, str] = {
    "BOOL": "DT_BOOL",
    "UINT8": "DT_UINT8",
    "UINT16": "DT_UINT16",
    "UINT32": "DT_UINT32",
    "UINT64": "DT_UINT64",
    "INT8": "DT_INT8",
    "INT16": "DT_INT16",
    "INT32": "DT_INT32",
    "INT64": "DT_INT64",
    "FP16": "DT_HALF",
    "FP32": "DT_FLOAT",
    "FP64": "DT_DOUBLE",
    "BF16": "DT_BFLOAT16",
    "BYTES": "DT_STRING",
}
TF_TO_V2: dict[str, str] = {tf: v2 for v2, tf in V2_TO_TF.items()}

# accelserve's model states -> TF Serving's ModelVersionStatus.State.
_STATES = {"READY": "AVAILABLE", "LOADING": "LOADING", "UNLOADING": "UNLOADING"}
_ENDED_CLEANLY = ("", "unloaded", "not loaded")


def parse_version(text: str) -> str:
    """A version from a URL or a ModelSpec, as accelserve names it (``"007"`` is ``"7"``)."""
    try:
        number = int(text)
    except ValueError:
        raise InvalidArgumentError(f"Failed to convert version: {text} to numeric.") from None
    if number < 0:
        raise InvalidArgumentError(f"version: expected a non-negative integer; received {text}")
    return str(number)


def no_labels(model: str, label: str) -> ModelNotFoundError:
    return ModelNotFoundError(
        f"model '{model}' has no version label '{label}': accelserve serves versions by "
        f"number (/versions/N); labels are not supported"
    )


def check_signature(name: str) -> None:
    """Every model has one signature, ``serving_default``; "" means it too."""
    if name and name != DEFAULT_SIGNATURE:
        raise InvalidArgumentError(
            f'Serving signature name: "{name}" not found in signature def; the only '
            f'signature is "{DEFAULT_SIGNATURE}"'
        )


def no_signature_for(model: str, method: str) -> InvalidArgumentError:
    """What ``:classify`` and ``:regress`` answer: only a SavedModel's classify or regress
    signature (tf.Example in, classes/scores or one value out) can run them."""
    return InvalidArgumentError(
        f"model '{model}' has no {method} signature: its only signature, "
        f'"{DEFAULT_SIGNATURE}", has method_name {PREDICT_METHOD}; send the inputs to :predict'
    )


def model_spec(name: str, version: str, signature: str = "") -> ModelSpec:
    spec = ModelSpec(name=name, signature_name=signature)
    if version:
        spec.version.value = int(version)
    return spec


def signature_def_map(
    inputs: Iterable[TensorSpec], outputs: Iterable[TensorSpec], max_batch_size: int
) -> SignatureDefMap:
    signature = SignatureDef(method_name=PREDICT_METHOD)
    for target, specs in ((signature.inputs, inputs), (signature.outputs, outputs)):
        for spec in specs:
            target[spec.name].CopyFrom(_tensor_info(spec, max_batch_size))
    result = SignatureDefMap()
    result.signature_def[DEFAULT_SIGNATURE].CopyFrom(signature)
    return result


def _tensor_info(spec: TensorSpec, max_batch_size: int) -> TensorInfo:
    info = TensorInfo(name=spec.name, dtype=V2_TO_TF[spec.datatype])
    dims = [-1, *spec.dims] if max_batch_size > 0 else list(spec.dims)
    for size in dims:
        info.tensor_shape.dim.add(size=size)
    return info


def model_status(rows: list[dict[str, str]], name: str, version: str) -> GetModelStatusResponse:
    """TF Serving's status from the data plane's repository index rows: READY is AVAILABLE, a
    model being loaded or unloaded is LOADING or UNLOADING, and one that is not loaded is END,
    with the reason as an error when its load failed. A model whose load failed before any
    version was read reports version 0."""
    mine = [row for row in rows if row["name"] == name]
    if not mine:
        raise ModelNotFoundError(f"Could not find any versions of model {name}")
    if version:
        mine = [row for row in mine if row.get("version") == version]
        if not mine:
            raise ModelNotFoundError(f"Could not find version {version} of model {name}")
    response = GetModelStatusResponse()
    for row in mine:
        status = response.model_version_status.add(version=int(row.get("version") or 0))
        state = _STATES.get(row["state"], "END")
        status.state = ModelVersionStatus.State.Value(state)
        status.status.SetInParent()  # TF Serving prints {"error_code": "OK", ...} too
        reason = row.get("reason", "")
        if state == "END" and reason not in _ENDED_CLEANLY:
            status.status.error_code = ErrorCode.UNKNOWN
            status.status.error_message = reason
    return response


def as_json(message: Any) -> dict[str, Any]:
    """A message as TF Serving's REST API prints it: proto field names, every field (zeros
    and empty strings included), enums by name, int64 as strings."""
    data: dict[str, Any] = json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    return data
