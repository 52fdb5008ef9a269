"""bench_ray_recovery.py's report: the table of medians (min-max) per system, the CSV rows,
whether issue 12's targets are met, and docs/PERFORMANCE.md's `server-ray-recovery` block."""

from __future__ import annotations

import argparse
import math
import statistics

from benchmarks import _report

ACCELSERVE, RAYSERVE = "accelserve", "rayserve"
LABELS = {ACCELSERVE: "accelserve on Ray (front door)", RAYSERVE: "Ray Serve (HAProxy)"}
Cycle = dict[str, float]  # one repeat's measures


METRICS = [
    ("failed_during_loss", "failed requests during the loss", "{:.0f}"),
    ("join_to_replica_process_s", "node joined -> replica process (s)", "{:.2f}"),
    ("join_to_replica_started_s", "node joined -> replica started (s, Serve's log)", "{:.2f}"),
    (
        "replica_constructor_s",
        "replica constructor + first health check (s, Serve's log)",
        "{:.2f}",
    ),
    ("join_to_registered_s", "node joined -> replica registered (s, replica's log)", "{:.2f}"),
    ("join_to_first_answer_s", "node joined -> first answer from it (s)", "{:.2f}"),
    ("registered_to_first_answer_s", "replica registered -> first answer (s)", "{:.2f}"),
    ("failed_during_join", "failed requests during the join", "{:.0f}"),
    ("lost_to_one_node_s", "node lost -> GCS lists 1 node (s)", "{:.2f}"),
]


def median(values: list[float]) -> float:
    """The median of the values known (NaN: the log did not say); NaN when none is."""
    known = [v for v in values if not math.isnan(v)]
    return statistics.median(known) if known else math.nan


def summary(values: list[float], form: str) -> str:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return "-"
    text = form.format(statistics.median(values))
    if len(values) > 1:
        text += f" ({form.format(min(values))}-{form.format(max(values))})"
    return text


def report(runs: dict[str, list[Cycle]], load: list[float], args: argparse.Namespace) -> None:
    rows, csv_rows = [], []
    for key, label, form in METRICS:
        values = {s: [c[key] for c in runs.get(s, [])] for s in (ACCELSERVE, RAYSERVE)}
        medians = {s: median(v) for s, v in values.items()}
        ratio = "-" if key.startswith("failed") else _report.ratio(*medians.values())
        rows.append([label] + [summary(values[s], form) for s in (ACCELSERVE, RAYSERVE)] + [ratio])
    for system, cycles in runs.items():
        for repeat, measures in enumerate(cycles, 1):
            row: dict[str, object] = {
                "date": _report.today(),
                "commit": _report.commit(),
                "machine": _report.machine(),
                "system": system,
                "repeat": repeat,
                "clients": args.clients,
            }
            # Empty where a log did not say (as _report.plain_ratio leaves a missing ratio).
            row.update({k: "" if math.isnan(v) else round(v, 3) for k, v in measures.items()})
            csv_rows.append(row)
    _report.append_csv(_report.result_path("bench_ray_recovery.csv"), csv_rows)
    header = ["median (min-max)", LABELS[ACCELSERVE], LABELS[RAYSERVE], "accelserve / Ray Serve"]
    table = _report.markdown_table(header, rows)
    answer = statistics.median(c["join_to_first_answer_s"] for c in runs[ACCELSERVE])
    worst = max(c["join_to_first_answer_s"] for c in runs[ACCELSERVE])
    failed = sum(int(c["failed_during_loss"] + c["failed_during_join"]) for c in runs[ACCELSERVE])
    target = (
        f"Issue 12's targets for accelserve: no failed unary request: "
        f"{'met' if failed == 0 else f'not met ({failed} failed)'}; capacity back within 5 s "
        f"of a node re-joining: {'met' if answer <= 5 else 'not met'} (median {answer:.2f} s, "
        f"slowest {worst:.2f} s)."
    )
    loads = ", ".join(f"{x:.1f}" for x in load)
    text = f"""### Losing a Ray node under load and getting it back (`simple`, HTTP binary)

{_report.today()}, commit {_report.commit()}, {_report.machine()}; medians (min-max) of
{args.repeats} repeats per system, each system on a fresh 2-node cluster on this machine (2 CPUs
per node; the GCS declares a lost node dead after 3 missed health checks of 0.5 s), 2 replicas
of 2 CPUs each (one per node). "{LABELS[ACCELSERVE]}": `accelserve serve --ray ... --replicas 2`
over `simple` with two CPU instances, default ingress. "{LABELS[RAYSERVE]}": Ray Serve's
`@serve.batch` deployment over the same ONNX file (benchmarks/server/ray_serve_simple.py,
`--replica-cpus 2`) on a cluster with Ray's HAProxy and direct ingress. {args.clients} client
threads send V2 binary requests throughout (httpx, no retries: a failed request is a
connection error, a timeout or a wrong answer the client saw). Each repeat SIGKILLs the worker node's processes,
waits for the GCS to list one node and {args.settle:g} s more, then adds a worker node; times
count from the node registering ("Ray runtime started"). "Replica started" is the Serve
controller's log line for the replacement replica (its constructor returned: models loaded).
Everything shares this machine's cores (load average {loads} at the start and after each
system); the figures are noisy.

{table}

{target}

`{_report.command_line()}`
"""
    _report.write_section("server-ray-recovery", text)
    print(text)
