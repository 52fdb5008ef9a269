"""Triton-style Python models (``class TritonPythonModel``) the e2e tests build: add/sub
(python_backend's add_sub semantics), one that calls others (BLS), a decoupled repeater, one
that raises, one whose sender is used after the final flag, and a dynamic-batching one whose
config ``auto_complete_config`` fills."""

from __future__ import annotations

import textwrap
from pathlib import Path

ADD_SUB_CONFIG = """
name: "{name}"
backend: "python"
input [
  {{ name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ] }},
  {{ name: "INPUT1" data_type: TYPE_FP32 dims: [ 4 ] }}
]
output [
  {{ name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 4 ] }},
  {{ name: "OUTPUT1" data_type: TYPE_FP32 dims: [ 4 ] }}
]
"""

ADD_SUB = """
import json
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.args = args
        config = json.loads(args["model_config"])
        self.out0_dtype = pb_utils.triton_string_to_numpy(
            pb_utils.get_output_config_by_name(config, "OUTPUT0")["data_type"]
        )
        self.out1_dtype = pb_utils.triton_string_to_numpy(
            pb_utils.get_output_config_by_name(config, "OUTPUT1")["data_type"]
        )
        pb_utils.Logger.log_info(f"initialized {args['model_name']}")
        family = pb_utils.MetricFamily(
            "add_sub_requests", "requests add_sub has seen", pb_utils.MetricFamily.COUNTER
        )
        self.requests = family.Metric(labels={"model": args["model_name"]})
        gauge = pb_utils.MetricFamily(
            "add_sub_last_batch", "requests in the last execute()", pb_utils.MetricFamily.GAUGE
        )
        self.last_batch = gauge.Metric(labels={"model": args["model_name"]})

    def execute(self, requests):
        self.requests.increment(len(requests))
        self.last_batch.set(len(requests))
        responses = []
        for request in requests:
            in0 = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            in1 = pb_utils.get_input_tensor_by_name(request, "INPUT1").as_numpy()
            out0 = pb_utils.Tensor("OUTPUT0", (in0 + in1).astype(self.out0_dtype))
            out1 = pb_utils.Tensor("OUTPUT1", (in0 - in1).astype(self.out1_dtype))
            responses.append(pb_utils.InferenceResponse(output_tensors=[out0, out1]))
        return responses

    def finalize(self):
        pb_utils.Logger.log_info("finalized")
"""

ARGS_CONFIG = """
name: "args"
backend: "python"
output [ { name: "ARGS" data_type: TYPE_STRING dims: [ 1 ] } ]
input [ { name: "IN" data_type: TYPE_INT32 dims: [ 1 ] } ]
"""

ARGS = """
import json
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.args = dict(args)

    def execute(self, requests):
        responses = []
        for request in requests:
            seen = dict(self.args)
            seen["parameters"] = json.loads(request.parameters())
            seen["request_id"] = request.request_id()
            seen["requested"] = request.requested_output_names()
            seen["inputs"] = [t.name() for t in request.inputs()]
            value = np.array([json.dumps(seen).encode()], dtype=object)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("ARGS", value)]))
        return responses
"""

BLS_CONFIG = """
name: "bls"
backend: "python"
input [
  { name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ] },
  { name: "INPUT1" data_type: TYPE_FP32 dims: [ 4 ] },
  { name: "MODEL" data_type: TYPE_STRING dims: [ 1 ] }
]
output [
  { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 4 ] },
  { name: "OUTPUT1" data_type: TYPE_FP32 dims: [ 4 ] },
  { name: "REPEATS" data_type: TYPE_INT32 dims: [ -1 ] }
]
"""

# OUTPUT0 from the named model with exec(), OUTPUT1 with async_exec(), REPEATS: the values
# of every response of the decoupled `repeat` model called with n=3.
BLS = """
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    async def execute(self, requests):
        responses = []
        for request in requests:
            model = pb_utils.get_input_tensor_by_name(request, "MODEL").as_numpy()[0].decode()
            inputs = [
                pb_utils.get_input_tensor_by_name(request, "INPUT0"),
                pb_utils.get_input_tensor_by_name(request, "INPUT1"),
            ]
            call = pb_utils.InferenceRequest(
                model_name=model, inputs=inputs, requested_output_names=["OUTPUT0"]
            )
            first = call.exec()
            if first.has_error():
                raise pb_utils.TritonModelException(first.error().message())
            second = await pb_utils.InferenceRequest(
                model_name=model, inputs=inputs, requested_output_names=["OUTPUT1"]
            ).async_exec()
            repeat = pb_utils.InferenceRequest(
                model_name="repeat",
                inputs=[
                    pb_utils.Tensor("IN", np.array([7], dtype=np.int32)),
                    pb_utils.Tensor("N", np.array([3], dtype=np.int32)),
                    pb_utils.Tensor("DELAY", np.array([0.0], dtype=np.float32)),
                ],
                requested_output_names=["IDX"],
            )
            indices = [
                int(pb_utils.get_output_tensor_by_name(r, "IDX").as_numpy()[0])
                for r in repeat.exec(decoupled=True)
                if pb_utils.get_output_tensor_by_name(r, "IDX") is not None
            ]
            responses.append(pb_utils.InferenceResponse([
                pb_utils.get_output_tensor_by_name(first, "OUTPUT0"),
                pb_utils.get_output_tensor_by_name(second, "OUTPUT1"),
                pb_utils.Tensor("REPEATS", np.array(indices, dtype=np.int32)),
            ]))
        return responses
"""

REPEAT_CONFIG = """
name: "repeat"
backend: "python"
model_transaction_policy { decoupled: true }
input [
  { name: "IN" data_type: TYPE_INT32 dims: [ -1 ] },
  { name: "N" data_type: TYPE_INT32 dims: [ 1 ] },
  { name: "DELAY" data_type: TYPE_FP32 dims: [ 1 ] }
]
output [
  { name: "OUT" data_type: TYPE_INT32 dims: [ -1 ] },
  { name: "IDX" data_type: TYPE_INT32 dims: [ 1 ] }
]
"""

# Sends IN back N times from a thread of its own, DELAY seconds apart, then the final flag
# alone; a cancelled request stops early and is written to cancelled.txt in the model's folder.
REPEAT = """
import os
import threading
import time
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = __import__("json").loads(args["model_config"])
        assert pb_utils.using_decoupled_model_transaction_policy(config)
        self.record = os.path.join(args["model_repository"], "cancelled.txt")

    def execute(self, requests):
        for request in requests:
            threading.Thread(target=self.repeat, args=(request,), daemon=True).start()
        return None

    def repeat(self, request):
        sender = request.get_response_sender()
        values = pb_utils.get_input_tensor_by_name(request, "IN").as_numpy()
        n = int(pb_utils.get_input_tensor_by_name(request, "N").as_numpy()[0])
        delay = float(pb_utils.get_input_tensor_by_name(request, "DELAY").as_numpy()[0])
        for i in range(n):
            if request.is_cancelled():
                with open(self.record, "a") as f:
                    f.write(request.request_id() + "\\n")
                break
            out = [pb_utils.Tensor("OUT", values), pb_utils.Tensor("IDX", np.array([i], np.int32))]
            sender.send(pb_utils.InferenceResponse(output_tensors=out))
            time.sleep(delay)
        sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
"""

FAILING_CONFIG = """
name: "failing"
backend: "python"
input [ { name: "IN" data_type: TYPE_FP32 dims: [ 1 ] } ]
output [ { name: "OUT" data_type: TYPE_FP32 dims: [ 1 ] } ]
"""

# IN < 0: raises; IN == 0: an error response (TritonError); IN == 99: the worker exits;
# else returns an undeclared output.
FAILING = """
import os
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            value = float(pb_utils.get_input_tensor_by_name(request, "IN").as_numpy()[0])
            if value < 0:
                raise ValueError(f"negative input {value}")
            if value == 99:
                os._exit(3)
            if value == 0:
                error = pb_utils.TritonError("zero is not allowed", pb_utils.TritonError.INVALID_ARG)
                responses.append(pb_utils.InferenceResponse(error=error))
            else:
                wrong = pb_utils.Tensor("WRONG", np.array([value], np.float32))
                responses.append(pb_utils.InferenceResponse([wrong]))
        return responses
"""

LATE_CONFIG = """
name: "late"
backend: "python"
model_transaction_policy { decoupled: true }
input [ { name: "IN" data_type: TYPE_INT32 dims: [ 1 ] } ]
output [ { name: "ERROR" data_type: TYPE_STRING dims: [ 1 ] } ]
"""

# Each request: one response holding what the previous request's late send() raised, then the
# final flag, then one more send() (which must raise TritonModelException).
LATE = """
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.last_error = "none"

    def execute(self, requests):
        for request in requests:
            sender = request.get_response_sender()
            out = pb_utils.Tensor("ERROR", np.array([self.last_error.encode()], dtype=object))
            sender.send(pb_utils.InferenceResponse([out]))
            sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
            try:
                sender.send(pb_utils.InferenceResponse([out]))
                self.last_error = "no exception"
            except pb_utils.TritonModelException as exc:
                self.last_error = type(exc).__name__ + ": " + exc.message()
        return None
"""

AUTO_CONFIG = """
name: "auto_batch"
backend: "python"
max_batch_size: 8
dynamic_batching { }
"""

# Its config has no inputs or outputs: auto_complete_config adds them. COUNT: how many requests
# the execute() call that ran this request received; the first call waits, so others queue.
AUTO = """
import time
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    @staticmethod
    def auto_complete_config(auto_complete_model_config):
        auto_complete_model_config.add_input({"name": "X", "data_type": "TYPE_FP32", "dims": [2]})
        auto_complete_model_config.add_output({"name": "Y", "data_type": "TYPE_FP32", "dims": [2]})
        auto_complete_model_config.add_output(
            {"name": "COUNT", "data_type": "TYPE_INT32", "dims": [1]}
        )
        return auto_complete_model_config

    def initialize(self, args):
        self.calls = 0

    def execute(self, requests):
        self.calls += 1
        if self.calls == 1:
            time.sleep(1.0)
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "X").as_numpy()
            count = np.full((x.shape[0], 1), len(requests), np.int32)
            responses.append(pb_utils.InferenceResponse([
                pb_utils.Tensor("Y", x * 2), pb_utils.Tensor("COUNT", count)
            ]))
        return responses
"""

BROKEN_CONFIG = """
name: "broken_init"
backend: "python"
input [ { name: "IN" data_type: TYPE_FP32 dims: [ 1 ] } ]
output [ { name: "OUT" data_type: TYPE_FP32 dims: [ 1 ] } ]
"""

BROKEN = """
class TritonPythonModel:
    def initialize(self, args):
        raise RuntimeError("cannot initialize: missing weights")

    def execute(self, requests):
        return []
"""

# accelserve's own Python style beside the Triton one.
OWN_STYLE_CONFIG = """
name: "own_style"
backend: "python"
input [ { name: "X" data_type: TYPE_FP32 dims: [ 2 ] } ]
output [ { name: "Y" data_type: TYPE_FP32 dims: [ 2 ] } ]
"""

OWN_STYLE = """
class Model:
    def execute(self, batch):
        return {"Y": batch["X"] + 1}
"""

SENDER_STYLE_CONFIG = """
name: "sender_style"
backend: "python"
input [ { name: "IN" data_type: TYPE_INT32 dims: [ 1 ] } ]
output [ { name: "OUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
"""

# Not decoupled, yet answers through the response sender (Triton allows it); IN == 0: no answer.
SENDER_STYLE = """
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        for request in requests:
            value = pb_utils.get_input_tensor_by_name(request, "IN").as_numpy()
            if value[0] != 0:
                response = pb_utils.InferenceResponse([pb_utils.Tensor("OUT", value * 10)])
                request.get_response_sender().send(
                    response, flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
                )
        return None
"""

MODELS = {
    "add_sub": (ADD_SUB_CONFIG.format(name="add_sub"), ADD_SUB),
    "args": (ARGS_CONFIG, ARGS),
    "bls": (BLS_CONFIG, BLS),
    "repeat": (REPEAT_CONFIG, REPEAT),
    "failing": (FAILING_CONFIG, FAILING),
    "late": (LATE_CONFIG, LATE),
    "auto_batch": (AUTO_CONFIG, AUTO),
    "broken_init": (BROKEN_CONFIG, BROKEN),
    "own_style": (OWN_STYLE_CONFIG, OWN_STYLE),
    "sender_style": (SENDER_STYLE_CONFIG, SENDER_STYLE),
}


def build_repository(root: Path) -> Path:
    for name, (config, code) in MODELS.items():
        (root / name / "1").mkdir(parents=True)
        (root / name / "config.pbtxt").write_text(textwrap.dedent(config))
        (root / name / "1" / "model.py").write_text(textwrap.dedent(code))
    return root
