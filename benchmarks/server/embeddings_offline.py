"""bench_embeddings.py's offline ceiling: the same tokenizer file and ONNX model called in this
process, one batch after another, per batch size, and the embedding head's cost (accelserve's
kernel against pooling inside the ONNX graph)."""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class Offline:
    rate: dict[int, list[float]] = field(default_factory=dict)  # batch -> sentences/s per repeat
    batch32_s: list[float] = field(default_factory=list)
    head_ms: dict[str, dict[int, list[float]]] = field(default_factory=dict)

    def best(self) -> tuple[int, float]:
        medians = {b: statistics.median(v) for b, v in self.rate.items()}
        batch = max(medians, key=lambda b: medians[b])
        return batch, medians[batch]


def _session(path: Path, threads: int) -> object:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def offline(kernel: Path, onnx: Path, texts: list[str], args: argparse.Namespace) -> Offline:
    """The ceiling (kernel pipeline's files, pooled by the fastest head) and the head timing."""
    from tokenizers import Tokenizer

    from accelserve import kernels

    result = Offline()
    tokenizer = Tokenizer.from_file(str(kernel / "minilm_tokenizer/1/tokenizer.json"))
    hidden = _session(kernel / "minilm_transformer/1/model.onnx", args.threads)
    pooled = _session(onnx / "minilm_transformer/1/model.onnx", args.threads)

    def encode(batch: list[str]) -> tuple[np.ndarray, np.ndarray]:
        enc = tokenizer.encode_batch(batch)
        ids = np.array([e.ids for e in enc], dtype=np.int64)
        return ids, np.array([e.attention_mask for e in enc], dtype=np.int64)

    def kernel_head(batch: list[str]) -> np.ndarray:
        ids, mask = encode(batch)
        (h,) = hidden.run(["token_embeddings"], {"input_ids": ids, "attention_mask": mask})  # type: ignore[attr-defined]
        return kernels.masked_mean_pool_l2(h, mask)

    def onnx_head(batch: list[str]) -> np.ndarray:
        ids, mask = encode(batch)
        (e,) = pooled.run(["embedding"], {"input_ids": ids, "attention_mask": mask})  # type: ignore[attr-defined]
        return e

    heads = {"kernel": kernel_head, "onnx": onnx_head}
    for fn in heads.values():
        fn(texts[:8])  # warm up (kernel compile, ORT allocations)
    # Head: the same batches through both pipelines, alternating, per batch size.
    for size in (8, 32):
        batches = [texts[i : i + size] for i in range(0, args.offline_sentences, size)]
        for name in heads:
            result.head_ms.setdefault(name, {})[size] = []
        for _ in range(args.repeats):
            for name, fn in heads.items():
                t0 = time.perf_counter()
                for batch in batches:
                    fn(batch)
                ms = (time.perf_counter() - t0) / len(batches) * 1e3
                result.head_ms[name][size].append(ms)
    faster = min(heads, key=lambda n: statistics.median(result.head_ms[n][32]))
    run = heads[faster]
    print(f"[bench] offline head: {faster} is faster; ceiling uses it", file=sys.stderr)
    for _ in range(args.repeats):
        for size in (1, 4, 8, 16, 32, 64):
            count = min(args.offline_sentences, 64 if size == 1 else args.offline_sentences)
            t0 = time.perf_counter()
            for i in range(0, count, size):
                run(texts[i : i + size])
            result.rate.setdefault(size, []).append(count / (time.perf_counter() - t0))
        t0 = time.perf_counter()
        for i in range(0, 8 * 32, 32):
            run(texts[i : i + 32])
        result.batch32_s.append((time.perf_counter() - t0) / 8)
    return result
