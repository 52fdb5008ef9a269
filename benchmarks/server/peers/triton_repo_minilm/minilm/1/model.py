"""Triton Python-backend all-MiniLM-L6-v2: each execute() gets the dynamic batcher's requests,
embeds all their sentences in one batch and answers each request with its rows."""

import json
import sys

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        params = json.loads(args["model_config"])["parameters"]
        value = {k: v["string_value"] for k, v in params.items()}
        sys.path.insert(0, value["PEERS_SRC"])
        from minilm_peer import Embedder

        self.embedder = Embedder(value["MINILM_DIR"], int(value.get("MINILM_THREADS", "0")))

    def execute(self, requests):
        texts, counts = [], []
        for request in requests:
            array = pb_utils.get_input_tensor_by_name(request, "text").as_numpy()
            rows = [
                x.decode("utf-8") if isinstance(x, bytes) else str(x) for x in array.reshape(-1)
            ]
            texts += rows
            counts.append(len(rows))
        vectors = self.embedder.embed(texts)
        responses, start = [], 0
        for n in counts:
            out = pb_utils.Tensor("embedding", np.ascontiguousarray(vectors[start : start + n]))
            responses.append(pb_utils.InferenceResponse(output_tensors=[out]))
            start += n
        return responses
