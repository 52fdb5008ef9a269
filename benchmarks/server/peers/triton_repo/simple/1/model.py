"""Triton Python-backend `simple`: OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 - INPUT1.

Runs inside Triton's python-backend stub (Python 3.12). The dynamic batcher hands execute() a
list of requests; each gets its own response, as in Triton's own add_sub example.
"""

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            a = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            b = pb_utils.get_input_tensor_by_name(request, "INPUT1").as_numpy()
            out0 = pb_utils.Tensor("OUTPUT0", a + b)
            out1 = pb_utils.Tensor("OUTPUT1", a - b)
            responses.append(pb_utils.InferenceResponse(output_tensors=[out0, out1]))
        return responses
