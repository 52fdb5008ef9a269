"""TensorFlow Serving's gRPC API beside KServe V2 on the gRPC port, for every model.

``tensorflow.serving.PredictionService``: ``Predict`` (``codecs.tfserving_tensor``) and
``GetModelMetadata`` (the ``serving_default`` signature, packed in an ``Any`` under TF
Serving's type URL); ``Classify`` and ``Regress`` answer INVALID_ARGUMENT (no model here has a
classify or regress signature; an unknown model is still NOT_FOUND); ``MultiInference`` is not
registered (UNIMPLEMENTED). ``tensorflow.serving.ModelService``: ``GetModelStatus``.

The handlers are registered by ``frontends.grpc`` under TF Serving's service names with the
same raw-bytes pattern as the V2 methods: a malformed message is INVALID_ARGUMENT, and errors
carry their ``AccelServeError`` text and status.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import Message

from accelserve.codecs.tfserving import (
    DEFAULT_SIGNATURE,
    SIGNATURE_DEF_MAP_URL,
    check_signature,
    model_spec,
    model_status,
    no_labels,
    no_signature_for,
    parse_version,
    signature_def_map,
)
from accelserve.codecs.tfserving_tensor import decode_tensor, encode_tensor
from accelserve.codecs.v2 import output_datatype
from accelserve.dataplane import DataPlane
from accelserve.errors import InvalidArgumentError
from accelserve.protocol import tfserving_apis_pb2 as pb
from accelserve.types import InferRequest

PREDICTION_SERVICE = "tensorflow.serving.PredictionService"
MODEL_SERVICE = "tensorflow.serving.ModelService"
SIGNATURE_DEF = "signature_def"

Handler = Callable[[Any, Any], Awaitable[Message]]
Wrap = Callable[[type[Message], Handler], grpc.RpcMethodHandler]


class TFServingGrpc:
    def __init__(self, dataplane: DataPlane) -> None:
        self.dataplane = dataplane

    def services(self, wrap: Wrap) -> dict[str, dict[str, grpc.RpcMethodHandler]]:
        """Service name -> method handlers, each made by ``wrap`` (the V2 frontend's parse,
        run and error mapping)."""
        return {
            PREDICTION_SERVICE: {
                "Predict": wrap(pb.PredictRequest, self.predict),
                "GetModelMetadata": wrap(pb.GetModelMetadataRequest, self.get_model_metadata),
                "Classify": wrap(pb.ClassificationRequest, self.classify),
                "Regress": wrap(pb.RegressionRequest, self.regress),
            },
            MODEL_SERVICE: {"GetModelStatus": wrap(pb.GetModelStatusRequest, self.model_status)},
        }

    async def predict(self, request: pb.PredictRequest, context: Any) -> Message:
        name, version = _model(request.model_spec)
        check_signature(request.model_spec.signature_name)
        model = self.dataplane.model(name, version)
        inputs = {key: decode_tensor(key, tensor) for key, tensor in request.inputs.items()}
        wanted = list(request.output_filter)
        for output in wanted:
            if output not in model.outputs:
                raise InvalidArgumentError(
                    f"output_filter: unknown output '{output}'; the model's outputs are "
                    f"{', '.join(model.outputs)}"
                )
        answer = await self.dataplane.infer(name, version, InferRequest(inputs, wanted))
        response = pb.PredictResponse(
            model_spec=model_spec(name, answer.model_version, DEFAULT_SIGNATURE)
        )
        for key, array in answer.outputs.items():
            datatype = output_datatype(name, key, array)
            response.outputs[key].CopyFrom(encode_tensor(array, datatype))
        return response

    async def get_model_metadata(
        self, request: pb.GetModelMetadataRequest, context: Any
    ) -> Message:
        name, version = _model(request.model_spec)
        fields = list(request.metadata_field)
        if fields != [SIGNATURE_DEF]:
            raise InvalidArgumentError(
                f"metadata_field: expected ['{SIGNATURE_DEF}'] (the only metadata served); "
                f"received {fields}"
            )
        model = self.dataplane.model(name, version)
        signatures = signature_def_map(
            model.inputs.values(), model.outputs.values(), model.config.max_batch_size
        )
        response = pb.GetModelMetadataResponse(model_spec=model_spec(name, model.version))
        packed = response.metadata[SIGNATURE_DEF]
        packed.type_url = SIGNATURE_DEF_MAP_URL  # TF Serving's message name, not ours
        packed.value = signatures.SerializeToString()
        return response

    async def classify(self, request: pb.ClassificationRequest, context: Any) -> Message:
        name, version = _model(request.model_spec)
        self.dataplane.model(name, version)
        raise no_signature_for(name, "classify")

    async def regress(self, request: pb.RegressionRequest, context: Any) -> Message:
        name, version = _model(request.model_spec)
        self.dataplane.model(name, version)
        raise no_signature_for(name, "regress")

    async def model_status(self, request: pb.GetModelStatusRequest, context: Any) -> Message:
        name, version = _model(request.model_spec)
        return model_status(self.dataplane.repository_index(), name, version)


def _model(spec: pb.ModelSpec) -> tuple[str, str]:
    """(name, version) of a ModelSpec; "" for the latest version."""
    if not spec.name:
        raise InvalidArgumentError("model_spec.name: expected the name of a model; received ''")
    choice = spec.WhichOneof("version_choice")
    if choice == "version_label":
        raise no_labels(spec.name, spec.version_label)
    return spec.name, parse_version(str(spec.version.value)) if choice == "version" else ""
