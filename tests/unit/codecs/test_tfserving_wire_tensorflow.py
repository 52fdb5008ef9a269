"""accelserve's TF Serving messages against TensorFlow's own definitions, in one process: the
tensors and signatures it writes parse with TensorFlow's classes to the same values, and what
``tf.make_tensor_proto`` writes parses here (importing TensorFlow beside accelserve's messages
also checks that the two sets of definitions coexist in one protobuf pool)."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

from accelserve.codecs.tfserving import signature_def_map
from accelserve.codecs.tfserving_tensor import decode_tensor, encode_tensor
from accelserve.codecs.v2 import output_datatype
from accelserve.protocol.tf_framework_pb2 import TensorProto
from accelserve.types import TensorSpec

tf = pytest.importorskip("tensorflow")

ARRAYS = [
    np.arange(6, dtype=np.float32).reshape(2, 3),
    np.array([[1, -2]], np.int64),
    np.array([3, 250], np.uint8),
    np.array([True, False]),
    np.array([1.5, -2.25], np.float16),
    np.array([1.5, -2.0], ml_dtypes.bfloat16),
    np.array([b"a", b"\xff\x00"], dtype=object),
]


@pytest.mark.parametrize("array", ARRAYS, ids=lambda a: str(a.dtype))
def test_tensorflow_reads_what_accelserve_writes(array: np.ndarray) -> None:
    from tensorflow.core.framework import tensor_pb2

    ours = encode_tensor(array, output_datatype("m", "y", array)).SerializeToString()
    theirs = tf.make_ndarray(tensor_pb2.TensorProto.FromString(ours))
    if array.dtype == object:
        assert theirs.tolist() == array.tolist()
    else:
        np.testing.assert_array_equal(theirs.astype(array.dtype), array)


@pytest.mark.parametrize("array", ARRAYS, ids=lambda a: str(a.dtype))
def test_accelserve_reads_what_tensorflow_writes(array: np.ndarray) -> None:
    value = tf.constant(array.tolist() if array.dtype == object else array)
    proto = tf.make_tensor_proto(value).SerializeToString()
    decoded = decode_tensor("x", TensorProto.FromString(proto))
    assert decoded.tolist() == array.tolist()
    repeated = tf.make_tensor_proto(7, dtype=tf.int32, shape=[2, 2]).SerializeToString()
    assert decode_tensor("x", TensorProto.FromString(repeated)).tolist() == [[7, 7], [7, 7]]


def test_signature_parses_as_tensorflows() -> None:
    from tensorflow.core.protobuf import meta_graph_pb2

    specs = [TensorSpec("x", "FP32", (4,)), TensorSpec("s", "BYTES", ())]
    ours = signature_def_map(specs, specs[:1], 8).signature_def["serving_default"]
    theirs = meta_graph_pb2.SignatureDef.FromString(ours.SerializeToString())
    assert theirs.method_name == "tensorflow/serving/predict"
    assert theirs.inputs["x"].dtype == tf.float32.as_datatype_enum
    assert theirs.inputs["s"].dtype == tf.string.as_datatype_enum
    assert [d.size for d in theirs.inputs["x"].tensor_shape.dim] == [-1, 4]
