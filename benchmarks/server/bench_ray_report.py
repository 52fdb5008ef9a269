"""bench_ray.py's systems, what it collects per model (``Workload``) and its report: one table per
model in docs/PERFORMANCE.md's ``server-ray`` block, a row per model, system and level in
benchmarks/results/bench_ray_systems.csv (earlier runs: bench_ray.csv, bench_ray_frontdoor.csv)."""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks import _report
from benchmarks.server import bench_ray_minilm as minilm

DOOR, DOOR_POLL, RAYSERVE, STANDALONE = "door", "door_haproxy_busy_poll", "rayserve", "standalone"
REPLICA = "replica_direct"  # one of the front door's replicas, its own server driven directly
LABELS = {
    DOOR: "accelserve on Ray (front door)",
    DOOR_POLL: "accelserve on Ray (front door, --front-door-busy-poll)",
    RAYSERVE: "Ray Serve best",
    REPLICA: "one replica's own server, directly",
    STANDALONE: "standalone",
}


Result = dict[int, tuple[float, float, float]]


@dataclass
class Workload:
    """One model's step: its repository, load levels and Ray Serve peer."""

    model: str
    levels: list[int]
    repository: Path
    node_cpus: int  # logical CPUs of each cluster node: one accelserve replica's need
    peer: Callable[[str, int], list[str]]  # (cluster address, port) -> the peer's command
    peer_title: str  # the peer replicas' process title
    options: dict[str, object] = field(default_factory=dict)  # more bench settings
    check: Callable[[dict[str, str], str], dict[str, float]] | None = None
    runs: dict[str, list[Result]] = field(default_factory=dict)
    ready: dict[str, float] = field(default_factory=dict)
    memory: dict[str, str] = field(default_factory=dict)
    agreement: dict[str, float] = field(default_factory=dict)  # max |diff| vs standalone
    systems: tuple[str, ...] = (DOOR, RAYSERVE)  # the Ray systems, each on a cluster of its own


def report(
    workloads: list[Workload], load: list[float], args: argparse.Namespace, write_docs: bool
) -> None:
    """Append the CSV rows; print the block, and write it to docs/PERFORMANCE.md when
    ``write_docs`` (a run of every model: one of some would drop the others' tables)."""
    sections = []
    for workload in workloads:
        names = [n for n in (*workload.systems, REPLICA, STANDALONE) if n in workload.runs]
        doors = [n for n in names if n in (DOOR, DOOR_POLL)]
        header = ["connections"] + [f"{LABELS[n]} req/s / p50 / p99 ms" for n in names]
        for door in doors:
            short = "front door" if door == DOOR else "busy-polling door"
            header += [f"{short} / standalone", f"{short} / Ray Serve"]
        rows, csv_rows = table_rows(workload, names, doors)
        _report.append_csv(_report.result_path("bench_ray_systems.csv"), csv_rows)
        table = _report.markdown_table(header, rows)
        per_node = minilm.PEER_REPLICAS_PER_NODE
        text = (
            SIMPLE_TEXT
            if workload.model == "simple"
            else MINILM_TEXT.format(
                cpus=workload.node_cpus,
                peers=2 * per_node,
                peer_cpus=workload.node_cpus / per_node,
                per_node=per_node,
            )
        )
        notes = simple_targets(workload) if workload.model == "simple" else minilm_notes(workload)
        ready = ", ".join(f"{LABELS[n]} {workload.ready[n]:.1f} s" for n in workload.ready)
        memory = "; ".join(f"{LABELS[n]}: {workload.memory[n]}" for n in workload.memory)
        sections.append(
            f"""{text.strip()}

Start to ready (cluster already up): {ready}. Memory (PSS after start): {memory}.

{table}

{notes}"""
        )
    loads = ", ".join(f"{x:.1f}" for x in load)
    body = "\n\n".join(sections)
    text = f"""### accelserve on Ray (front door) vs Ray Serve's best vs standalone

{_report.today()}, commit {_report.commit()}, {_report.machine()}; medians of {args.repeats} repeats
of {args.duration:g} s per level, `accelserve.tools.bench` (HTTP/1.1 keep-alive, V2 binary
tensors). Each Ray system runs on its own 2-node cluster on this machine (a head and a worker
node, one after the other). "{LABELS[DOOR]}": `accelserve serve --ray ... --replicas 2` with
its default ingress: HAProxy (deploy/frontdoor.py) straight to the replicas' own accelserve
HTTP servers. "{LABELS[RAYSERVE]}": the cluster started with `RAY_SERVE_ENABLE_HA_PROXY=1
RAY_SERVE_THROUGHPUT_OPTIMIZED=1` (Ray's HAProxy, direct ingress), a Serve deployment over the
same ONNX file with onnxruntime (one intra-op thread) and `@serve.batch` (no wait), decoding
the same V2 binary requests. The standalone `accelserve serve` of the same repository is up
throughout and measured beside each, alternating which goes first. Everything (both nodes, the
servers and the load generator) shares this machine's cores (load average {loads} at the start
and after each cluster).

{body}

`{_report.command_line()}`
"""
    print(text)
    if write_docs:
        _report.write_section("server-ray", text)
    else:
        print("[bench_ray] not written to docs/PERFORMANCE.md: only a run of every model is")


SIMPLE_TEXT = """
#### Triton's `simple` (1, 16, 64 connections)

Nodes of 2 CPUs; 2 replicas of 1 CPU (one per node) for every Ray system; Ray Serve's
deployment is benchmarks/server/ray_serve_simple.py (`@serve.batch` max 8). The front door
twice, each on a cluster of its own: as deployed by default (HAProxy sleeps when idle), and
with `--front-door-busy-poll` (HAProxy's `busy-polling`: its thread never sleeps, a core of
the front door's host). "One replica's own server, directly": one of the default front door's
replicas, its own accelserve HTTP server driven directly, without HAProxy (the replicas do not
busy-poll; a standalone server does by default): what the front door's hop costs. An earlier
run (commit e7614c6, bench_ray_systems.csv, system `door_busy_poll`) also had the replicas'
servers poll (`--busy-poll-us 200`): slower at every level on these two shared cores.
"""

MINILM_TEXT = """
#### MiniLM sentence embeddings (32 connections)

all-MiniLM-L6-v2 as `accelserve prepare-examples` builds it (the `minilm` ensemble: tokenizer
-> ONNX transformer -> mean-pool + L2-normalize head); each request one sentence of 6 to 40
words, as text. Nodes of {cpus} logical CPUs, what one accelserve replica asks for (its instance
config: tokenizer 1, transformer 2 instances of 1 ONNX Runtime thread, head 1): 2 replicas,
one per node. Ray Serve: {peers} replicas of {peer_cpus:g} CPUs ({per_node} per node, each on one
ONNX Runtime thread: as many transformer runs in flight per node as accelserve's instances),
each tokenizing with the same tokenizer file, running the same ONNX transformer and pooling in
NumPy (benchmarks/server/ray_serve_minilm.py, `@serve.batch` max 64).
"""


def table_rows(
    workload: Workload, names: list[str], doors: list[str]
) -> tuple[list[list[object]], list[dict[str, object]]]:
    rows: list[list[object]] = []
    csv_rows: list[dict[str, object]] = []
    for level in workload.levels:
        value = {n: tuple(median(workload, n, level, i) for i in range(3)) for n in names}
        rps = {n: value[n][0] for n in names}
        row = [level] + [f"{rps[n]:,.0f} / {value[n][1]:.2f} / {value[n][2]:.2f}" for n in names]
        for door in doors:
            row += [f"{rps[door] / rps[STANDALONE]:.2f}x", f"{rps[door] / rps[RAYSERVE]:.2f}x"]
        rows.append(row)
        for name in names:
            csv_rows.append(
                {
                    "date": _report.today(),
                    "commit": _report.commit(),
                    "machine": _report.machine(),
                    "model": workload.model,
                    "system": name,
                    "connections": level,
                    "rps": round(rps[name], 1),
                    "p50_ms": round(value[name][1], 3),
                    "p99_ms": round(value[name][2], 3),
                }
            )
    return rows, csv_rows


def median(workload: Workload, name: str, level: int, index: int) -> float:
    return statistics.median(r[level][index] for r in workload.runs[name])


def simple_targets(workload: Workload) -> str:
    def rate(name: str, level: int) -> float:
        return median(workload, name, level, 0)

    def verdict(door: str) -> str:
        levels = workload.levels
        worst = min(rate(door, n) / rate(STANDALONE, n) for n in levels)
        over_ray = min(rate(door, n) / rate(RAYSERVE, n) for n in levels if n > 1)
        p50 = median(workload, door, 1, 1)
        return (
            f"{LABELS[door]}: >= 0.8x standalone at every level: "
            f"{'met' if worst >= 0.8 else 'not met'} (lowest {worst:.2f}x); p50 at 1 connection "
            f"<= 0.3 ms: {'met' if p50 <= 0.3 else 'not met'} ({p50:.2f} ms); >= 2x Ray Serve "
            f"at 16 and 64: {'met' if over_ray >= 2 else 'not met'} (lowest {over_ray:.2f}x)."
        )

    doors = [d for d in (DOOR, DOOR_POLL) if d in workload.systems]
    return "Targets (issue 12). " + " ".join(verdict(d) for d in doors)


def minilm_notes(workload: Workload) -> str:
    agreement = ", ".join(f"{LABELS[n]} {workload.agreement[n]:.1e}" for n in workload.agreement)
    return (
        f"Before timing, {minilm.CHECK_SENTENCES} sentences sent at once to each system gave the "
        f"same token counts and embeddings within {minilm.TOLERANCE:g} of the standalone "
        f"server's (largest difference: {agreement})."
    )
