"""``accelserve optimize REPO/MODEL``: the fastest form of a model that stays accurate.

Candidates (ONNX models): ONNX Runtime offline graph optimization, FP16 (I/O and sensitive ops in
FP32), dynamic INT8 of MatMul or of every quantizable op (per-channel weights), static INT8
calibrated on the validation data, and, where a quantization fails the tolerance, the same with
its most sensitive node groups kept in FP32 (``search.py``). Each is checked against the
original on held-out data (``accuracy.py``), measured through the real scheduler at the model's
configured batch size and instance count (``measure.py``, the advisor's measurement), and the
fastest accurate one is written as a new version (``apply.py``); ``--apply`` serves it.
PyTorch (``torch_candidates``), TensorFlow (``tf_candidates``) and GPU (``gpu_candidates``,
``--device cuda:N``) candidates go through the same loop (``families``: which candidates and
runner a model's backend gets); a candidate's config is its version's ``config_overlay.pbtxt``.

Modules: ``candidates`` (the converters), ``data`` (validation data and its split),
``accuracy``, ``search``, ``measure``, ``report``, ``apply``, ``optimize`` (the loop), ``cli``.
"""
