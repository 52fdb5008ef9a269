"""Start and stop the `simple`-model peer servers on free 127.0.0.1 ports.

Library (used by benchmarks/server/bench_simple.py)::

    peer = start("triton")          # blocks until a real infer on `simple` succeeds
    peer.url, peer.ready_s, peer.rss_bytes()
    peer.stop()

Script (start one, print its URL, stop cleanly on Ctrl-C / SIGTERM)::

    .venv/bin/python benchmarks/server/peers/launch.py triton|ray|litserve|starlette|accelserve

Peers are installed by setup.sh into benchmarks/.peers/ (git-ignored). Each server runs in its
own session (process group) so that stop() reaches every process it spawned and nothing else.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent.parent
PEERS_DIR = Path(os.environ.get("PEERS_DIR", ROOT / "benchmarks" / ".peers"))
LOG_DIR = PEERS_DIR / "logs"
ACCELSERVE = Path(os.environ.get("ACCELSERVE_BIN", ROOT / ".venv" / "bin" / "accelserve"))
# The repository accelserve serves (bench_simple points it at a copy holding only `simple`).
ACCELSERVE_REPOSITORY = Path(
    os.environ.get("ACCELSERVE_REPOSITORY", ROOT / "examples" / "model_repository")
)

# The `src/` folder the accelserve-baseline peer imports (bench_simple --baseline sets it).
BASELINE_SRC: Path | None = None

# name -> (label, HTTP wire format the load generator must use)
PEERS: dict[str, tuple[str, str]] = {
    "accelserve": ("accelserve", "binary"),
    # the same server without busy polling: the same-run baseline for that default
    "accelserve-nopoll": ("accelserve, --busy-poll-us 0", "binary"),
    # the same server from an earlier revision's sources (bench_simple --baseline REV)
    "accelserve-baseline": ("accelserve, baseline", "binary"),
    "triton": ("Triton (tritonserver, python backend)", "binary"),
    "ray": ("Ray Serve (@serve.batch)", "json"),
    "litserve": ("LitServe (batching)", "json"),
    "starlette": ("Starlette (bare handler)", "json"),
}

_PROBE = json.dumps(
    {
        "inputs": [
            {"name": n, "datatype": "INT32", "shape": [1, 16], "data": list(range(16))}
            for n in ("INPUT0", "INPUT1")
        ]
    }
).encode()


class PeerError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RunningPeer:
    name: str
    label: str
    http_format: str
    proc: subprocess.Popen[bytes]
    port: int
    grpc_port: int | None
    log_path: Path
    ready_s: float = 0.0
    _tree: set[int] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"

    def processes(self) -> list[psutil.Process]:
        """The server and every process it spawned (remembered, so stop() can reach them)."""
        try:
            root = psutil.Process(self.proc.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []
        self._tree.update(p.pid for p in procs)
        return procs

    def rss_bytes(self) -> int:
        """Resident memory summed over the process tree (shared pages count once per process)."""
        total = 0
        for p in self.processes():
            with contextlib.suppress(psutil.NoSuchProcess):
                total += p.memory_info().rss
        return total

    def stop(self, timeout: float = 30.0) -> None:
        self.processes()
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        # Anything of ours that left the process group (Ray daemons) is ended by its pid.
        leftovers = []
        for pid in self._tree - {self.proc.pid}:
            try:
                p = psutil.Process(pid)
                p.terminate()
                leftovers.append(p)
            except psutil.NoSuchProcess:
                pass
        _, alive = psutil.wait_procs(leftovers, timeout=10)
        for p in alive:
            p.kill()


def _triton_repository(venv: Path) -> Path:
    """The committed repository plus EXECUTION_ENV_PATH, so the stub imports the venv's numpy."""
    repo = PEERS_DIR / "triton_repo"
    shutil.rmtree(repo, ignore_errors=True)
    shutil.copytree(HERE / "triton_repo", repo, ignore=shutil.ignore_patterns("__pycache__"))
    config = repo / "simple" / "config.pbtxt"
    param = f'{{ key: "EXECUTION_ENV_PATH" value: {{ string_value: "{venv}" }} }}'
    config.write_text(config.read_text() + f"parameters [ {param} ]\n")
    return repo


def _triton_command(port: int, grpc_port: int) -> tuple[list[str], dict[str, str]]:
    venv = PEERS_DIR / "triton"
    site = next((venv / "lib").glob("python3.12/site-packages/pytriton/tritonserver"), None)
    libdir_file = venv / ".libdir"
    if site is None or not libdir_file.exists():
        raise PeerError(
            f"Triton peer not installed in {venv}: run benchmarks/server/peers/setup.sh"
        )
    # The python backend needs the 3.12 stub next to libtriton_python.so.
    backends = PEERS_DIR / "triton_backends"
    backend = backends / "python"
    if not (backend / "triton_python_backend_stub").exists():
        backend.mkdir(parents=True, exist_ok=True)
        for f in (site / "backends" / "python").iterdir():
            if f.is_file():
                shutil.copy2(f, backend / f.name)
        shutil.copy2(site / "python_backend_stubs" / "3.12" / "triton_python_backend_stub", backend)
    env = dict(os.environ)
    libdir = libdir_file.read_text().strip()
    # libpython3.12 for the binary; the wheel's bundled libs (libcudart...) for the stub.
    libs = [libdir, str(site.parent.parent / "nvidia_pytriton.libs"), env.get("LD_LIBRARY_PATH")]
    env["LD_LIBRARY_PATH"] = ":".join(x for x in libs if x)
    cmd = [
        str(site / "bin" / "tritonserver"),
        f"--model-repository={_triton_repository(venv)}",
        f"--backend-directory={backends}",
        "--http-address=127.0.0.1",
        f"--http-port={port}",
        "--grpc-address=127.0.0.1",
        f"--grpc-port={grpc_port}",
        "--allow-metrics=false",
        "--log-info=false",
        "--exit-on-error=true",
    ]
    return cmd, env


def export_source(rev: str, target: Path) -> str:
    """``rev``'s ``src/`` written under ``target`` (``target / "src"``), for the
    ``accelserve-baseline`` peer; returns ``rev``'s short hash."""
    short = subprocess.check_output(["git", "rev-parse", "--short", rev], cwd=ROOT, text=True)
    archive = subprocess.run(
        ["git", "archive", rev, "src"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    target.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return short.strip()


def _accelserve_command(
    port: int, grpc_port: int, program: list[str] | None = None, env: dict[str, str] | None = None
) -> list[str]:
    if not ACCELSERVE.exists():
        raise PeerError(f"{ACCELSERVE} not found")
    program = program or [str(ACCELSERVE)]
    cmd = [*program, "serve", "--model-repository", str(ACCELSERVE_REPOSITORY)]
    cmd += ["--http-port", str(port)]
    # Other ports are passed only when this accelserve knows them (defaults could collide).
    try:
        usage = subprocess.run(
            [*program, "serve", "--help"], capture_output=True, text=True, timeout=60, env=env
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        usage = ""
    extra = os.environ.get("ACCELSERVE_ARGS", "").split()  # e.g. "--grpc-port 0"
    if "--grpc-port" in usage and "--grpc-port" not in extra:
        cmd += ["--grpc-port", str(grpc_port)]
    if "--metrics-port" in usage and "--metrics-port" not in extra:
        cmd += ["--metrics-port", str(free_port())]
    return cmd + extra


def command(name: str, port: int, grpc_port: int) -> tuple[list[str], dict[str, str] | None]:
    if name == "triton":
        return _triton_command(port, grpc_port)
    if name == "accelserve":
        return _accelserve_command(port, grpc_port), None
    if name == "accelserve-nopoll":
        return [*_accelserve_command(port, grpc_port), "--busy-poll-us", "0"], None
    if name == "accelserve-baseline":
        if BASELINE_SRC is None:
            raise PeerError("accelserve-baseline needs the baseline's sources (--baseline REV)")
        env = {**os.environ, "PYTHONPATH": str(BASELINE_SRC)}
        program = [str(ACCELSERVE.parent / "python"), "-m", "accelserve.cli"]
        return _accelserve_command(port, grpc_port, program, env), env
    python = PEERS_DIR / "py" / "bin" / "python"
    if not python.exists():
        raise PeerError(f"{python} not found: run benchmarks/server/peers/setup.sh")
    script = {"ray": "ray_serve_simple.py", "litserve": "litserve_simple.py"}.get(
        name, "starlette_simple.py"
    )
    return [str(python), str(HERE / script), "--port", str(port)], None


def infer_outputs(port: int, model: str, body: bytes, timeout: float = 5.0) -> list | None:
    """POST a V2 JSON infer request; the response's outputs, or None while it cannot answer."""
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/v2/models/{model}/infer",
        data=body,
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read()).get("outputs", [])
    except (OSError, urllib.error.URLError, ValueError):
        return None


def _probe(port: int) -> bool:
    outputs = infer_outputs(port, "simple", _PROBE, timeout=2)
    if outputs is None:
        return False
    outs = {o["name"]: o["data"] for o in outputs}
    return outs.get("OUTPUT0") == [2 * i for i in range(16)] and outs.get("OUTPUT1") == [0] * 16


def start(
    name: str,
    ready_timeout: float = 180.0,
    ready_check: Callable[[int], bool] | None = None,
) -> RunningPeer:
    """Start peer `name`; returns once it answers correctly (start-to-ready).

    ``ready_check(port)`` decides readiness (default: an infer on `simple` returns the right
    sum and difference); other benchmarks pass their own model's check.
    """
    check = ready_check or _probe
    if name not in PEERS:
        raise PeerError(f"unknown peer {name!r}; expected one of {sorted(PEERS)}")
    label, fmt = PEERS[name]
    port, grpc_port = free_port(), free_port()
    cmd, env = command(name, port, grpc_port)
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log_path = LOG_DIR / f"{name}.log"
    log = log_path.open("wb")
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=HERE, start_new_session=True
    )
    log.close()
    peer = RunningPeer(name, label, fmt, proc, port, grpc_port, log_path)
    return wait_ready(peer, check, t0, ready_timeout)


def wait_ready(
    peer: RunningPeer,
    check: Callable[[int], bool],
    started: float,
    timeout: float,
    poll_s: float = 0.05,
) -> RunningPeer:
    """Poll ``check(peer.port)`` until it holds; sets ``peer.ready_s`` from ``started`` (a
    ``time.perf_counter()``). Stops the peer and raises PeerError if it exits first or is not
    ready ``timeout`` seconds after ``started``."""
    proc, log_path = peer.proc, peer.log_path
    try:
        while time.perf_counter() < started + timeout:
            if proc.poll() is not None:
                lines = [x for x in log_path.read_text(errors="replace").splitlines() if x.strip()]
                last = lines[-1].strip() if lines else "(no output)"
                raise PeerError(
                    f"{peer.name} exited with {proc.returncode} before ready: {last} "
                    f"(log: {log_path})"
                )
            if check(peer.port):
                peer.ready_s = time.perf_counter() - started
                peer.processes()
                return peer
            peer.processes()  # remember the tree as it grows, so that stop() reaches it all
            time.sleep(poll_s)
    except BaseException:
        peer.stop()
        raise
    peer.stop()
    raise PeerError(f"{peer.name} not ready after {timeout:.0f} s (log: {log_path})")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    name = sys.argv[1] if len(sys.argv) > 1 else ""
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        peer = start(name)
    except (PeerError, KeyboardInterrupt) as exc:
        print(exc, file=sys.stderr)
        return 1
    print(
        f"{peer.label} ready in {peer.ready_s:.2f} s at http://{peer.url} "
        f"(gRPC port {peer.grpc_port}), RSS {peer.rss_bytes() / 2**20:.0f} MiB; Ctrl-C stops it",
        flush=True,
    )
    try:
        while peer.proc.poll() is None:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        peer.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
