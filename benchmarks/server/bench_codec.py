"""Micro-benchmark of the KServe V2 HTTP codec (accelserve.codecs.v2_http_decode/_encode).

Times, per operation, decoding the `simple` model's request (two INT32[1,16] inputs, as
tritonclient builds it, binary and JSON) plus encoding its response (two INT32[1,16] outputs),
and reports ratios against baselines measured in the same run:

- ``tritonclient``: the same wire work done by the client library (generate_request_body, then
  InferResult.from_response_body + as_numpy on our response): the mirror image of the server's
  decode + encode.
- ``orjson floor``: only orjson.loads of the request and orjson.dumps of an equivalent
  response dict of lists: what any JSON-based codec pays before touching NumPy.

It also measures the nesting-depth guard on a large nested JSON request (FP32[256,256]): decode
time next to a bare orjson.loads, and what a naive whole-document depth walk would add.

    python benchmarks/server/bench_codec.py            # full run, writes CSV + PERFORMANCE.md
    python benchmarks/server/bench_codec.py --quick    # short run, prints only
"""

from __future__ import annotations

import argparse
import statistics
import sys
import timeit
from collections.abc import Callable
from pathlib import Path

import numpy as np
import orjson

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from accelserve.codecs import v2, v2_http_decode, v2_http_encode  # noqa: E402
from benchmarks import _report  # noqa: E402

CSV = _report.result_path("bench_codec.csv")


def measure(fn: Callable[[], object], repeat: int, budget_s: float) -> tuple[float, float, float]:
    """(p20, p50, p80) microseconds per call over ``repeat`` timed batches."""
    fn()
    number = max(1, int(budget_s / repeat / max(timeit.timeit(fn, number=20) / 20, 1e-9)))
    samples = sorted(t / number * 1e6 for t in timeit.repeat(fn, number=number, repeat=repeat))
    q = statistics.quantiles(samples, n=5) if len(samples) >= 5 else [samples[0]] * 4
    return q[0], statistics.median(samples), q[3]


def simple_cases() -> dict[str, Callable[[], object]]:
    import tritonclient.http as http

    client = http.InferenceServerClient
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    b = np.ones((1, 16), dtype=np.int32)
    cases: dict[str, Callable[[], object]] = {}
    for binary in (True, False):
        mode = "binary" if binary else "json"

        def client_inputs(binary: bool = binary) -> list:
            inputs = []
            for name, value in (("INPUT0", a), ("INPUT1", b)):
                tensor = http.InferInput(name, [1, 16], "INT32")
                tensor.set_data_from_numpy(value, binary_data=binary)
                inputs.append(tensor)
            return inputs

        outputs = [http.InferRequestedOutput(n, binary_data=binary) for n in ("OUTPUT0", "OUTPUT1")]
        body, length = client.generate_request_body(client_inputs(), outputs=outputs)
        decoded = v2_http_decode.decode_infer_request(body, length)
        results = {"OUTPUT0": a + b, "OUTPUT1": a - b}
        response, response_length = v2_http_encode.encode_infer_response(
            "simple", "1", "", results, decoded.outputs, False
        )

        def ours(body: bytes = body, length: int | None = length) -> object:
            request = v2_http_decode.decode_infer_request(body, length)
            x, y = request.inputs["INPUT0"], request.inputs["INPUT1"]
            return v2_http_encode.encode_infer_response(
                "simple",
                "1",
                request.id,
                {"OUTPUT0": x + y, "OUTPUT1": x - y},
                request.outputs,
                request.binary_data_output,
            )

        def tritonclient_side(
            binary: bool = binary,
            outputs: list = outputs,
            response: bytes = response,
            response_length: int | None = response_length,
        ) -> object:
            client.generate_request_body(client_inputs(binary), outputs=outputs)
            result = http.InferResult.from_response_body(response, header_length=response_length)
            return result.as_numpy("OUTPUT0"), result.as_numpy("OUTPUT1")

        json_request = body if length is None else body[:length]
        plain = {
            "model_name": "simple",
            "model_version": "1",
            "outputs": [
                {"name": n, "datatype": "INT32", "shape": [1, 16], "data": v.ravel().tolist()}
                for n, v in results.items()
            ],
        }

        def orjson_floor(json_request: bytes = json_request, plain: dict = plain) -> object:
            orjson.loads(json_request)
            return orjson.dumps(plain)

        def decode_only(body: bytes = body, length: int | None = length) -> object:
            return v2_http_decode.decode_infer_request(body, length)

        def encode_only(d: v2.DecodedRequest = decoded, r: dict = results) -> object:
            return v2_http_encode.encode_infer_response(
                "simple", "1", "", r, d.outputs, d.binary_data_output
            )

        cases[f"simple {mode}: decode request"] = decode_only
        cases[f"simple {mode}: encode response"] = encode_only
        cases[f"simple {mode}: decode+encode (accelserve)"] = ours
        cases[f"simple {mode}: tritonclient (baseline)"] = tritonclient_side
        cases[f"simple {mode}: orjson floor (baseline)"] = orjson_floor
    return cases


def depth_cases() -> dict[str, Callable[[], object]]:
    data = np.random.default_rng(0).standard_normal((256, 256)).astype(np.float32)
    body = orjson.dumps(
        {"inputs": [{"name": "x", "datatype": "FP32", "shape": [256, 256], "data": data.tolist()}]}
    )
    parsed = orjson.loads(body)

    def naive_walk(value: object = parsed, depth: int = 1) -> None:
        # What checking every container of the parsed document would cost.
        if isinstance(value, dict):
            for child in value.values():
                naive_walk(child, depth + 1)
        elif isinstance(value, list):
            for child in value:
                naive_walk(child, depth + 1)

    return {
        "FP32[256,256] nested JSON: decode (accelserve)": lambda: (
            v2_http_decode.decode_infer_request(body, None)
        ),
        "FP32[256,256] nested JSON: orjson.loads only": lambda: orjson.loads(body),
        "FP32[256,256] nested JSON: naive full depth walk": naive_walk,
    }


def provider(name: str) -> str:
    for peer in ("tritonclient", "orjson", "naive"):
        if peer in name:
            return peer
    return "accelserve"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short run; print, write nothing")
    args = parser.parse_args()
    repeat, budget = (5, 0.3) if args.quick else (15, 2.0)

    rows, table = [], []
    for group in (simple_cases(), depth_cases()):
        results = {name: measure(fn, repeat, budget) for name, fn in group.items()}
        for name, (p20, p50, p80) in results.items():
            prefix = name.split(":")[0]
            ours = results.get(f"{prefix}: decode+encode (accelserve)") or results.get(
                f"{prefix}: decode (accelserve)"
            )
            ratio = f"{p50 / ours[1]:.2f}x" if ours else ""
            print(f"{name:<55} p50 {p50:9.2f} us  (p20 {p20:.2f}, p80 {p80:.2f})  {ratio}")
            table.append([name, f"{p50:.2f}", f"{p20:.2f}", f"{p80:.2f}", ratio])
            rows.append(
                {
                    "scenario": name,
                    "provider": provider(name),
                    "p20_us": round(p20, 3),
                    "p50_us": round(p50, 3),
                    "p80_us": round(p80, 3),
                    "device": _report.machine(),
                    "commit": _report.commit(),
                    "date": _report.today(),
                }
            )
    if args.quick:
        return
    _report.append_csv(CSV, rows)
    markdown = "\n\n".join(
        [
            "### V2 HTTP codec (per request, microseconds)",
            "Ratio: time of the row / time of accelserve's decode+encode (or decode) in the "
            "same group; above 1x means accelserve is faster.",
            _report.markdown_table(["operation", "p50 us", "p20 us", "p80 us", "ratio"], table),
            f"Machine: {_report.machine()}. Commit {_report.commit()}, {_report.today()}. "
            f"Command: `{_report.command_line()}`.",
        ]
    )
    _report.write_section("bench_codec", markdown)


if __name__ == "__main__":
    main()
