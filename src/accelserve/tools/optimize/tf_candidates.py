"""The TensorFlow candidate, for SavedModels of the tensorflow backend:

- ``xla``: the same SavedModel with the backend's ``jit_compile: true`` (the serving signature
  wrapped in ``tf.function(jit_compile=True)``: XLA compiles it once per input shape).

Mixed BF16 is not offered: a SavedModel's signature is a traced graph with fixed dtypes (Keras'
mixed-precision policy applies when a model is built, not to a saved one), and TensorFlow's
BF16 graph rewrite (grappler's ``auto_mixed_precision_onednn_bfloat16``) is a process-wide
switch, so it cannot be one model's config parameter.
"""

from __future__ import annotations

from pathlib import Path

from accelserve.tools.optimize.candidates import Spec
from accelserve.tools.optimize.torch_candidates import parameters, same_file

TF_PLATFORMS = ("tensorflow_savedmodel", "tensorflow")

TF_SPECS: dict[str, Spec] = {
    "xla": Spec(
        "xla",
        "XLA (jit_compile) on the serving signature",
        same_file,
        config=parameters(jit_compile="true"),
    )
}


def tf_kinds(text: str, source: Path) -> list[Spec]:
    """``xla`` -> its spec; empty: all."""
    names = [t.strip() for t in text.split(",") if t.strip()]
    for name in names:
        if name not in TF_SPECS:
            raise ValueError(
                f"--candidates: expected names among {', '.join(TF_SPECS)} for a TensorFlow "
                f"model; received {name!r}"
            )
    return [TF_SPECS[n] for n in names] if names else list(TF_SPECS.values())
