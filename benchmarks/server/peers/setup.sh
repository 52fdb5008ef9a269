#!/usr/bin/env bash
# Install the peer servers for the server benchmarks into benchmarks/.peers/ (git-ignored).
# Idempotent: a venv whose marker file matches the wanted package list is left alone.
#
#   benchmarks/.peers/triton   Python 3.12 venv: nvidia-pytriton (ships the real `tritonserver`
#                              2.x binary and the 3.12 python-backend stub) + numpy
#   benchmarks/.peers/py       Python 3.11+ venv: ray[serve], litserve, starlette, uvicorn
#
# The tritonserver binary links libpython3.12.so, so Triton needs a *shared* CPython 3.12:
# pyenv's build is used when present (PYTHON312 overrides). Never touches /work/main/.venv.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../../.." && pwd)"
PEERS="${PEERS_DIR:-$ROOT/benchmarks/.peers}"
mkdir -p "$PEERS"

find_python312() {
    local cands=("${PYTHON312:-}")
    cands+=(/root/.pyenv/versions/3.12*/bin/python3.12 "$HOME"/.pyenv/versions/3.12*/bin/python3.12)
    cands+=("$(command -v python3.12 || true)")
    for py in "${cands[@]}"; do
        [ -n "$py" ] && [ -x "$py" ] || continue
        # tritonserver dlopens libpython3.12.so: the interpreter must be built --enable-shared.
        if "$py" -c 'import sys, sysconfig; sys.exit(0 if sysconfig.get_config_var("Py_ENABLE_SHARED") else 1)'; then
            echo "$py"; return 0
        fi
    done
    return 1
}

# pip's exit status is kept; only the local mirror's "Location ... ignored" noise is dropped.
pip_quiet() { "$@" 2> >(grep -v "^WARNING: Location" >&2); }

make_venv() {  # make_venv DIR PYTHON PACKAGES...
    local dir="$1" py="$2"; shift 2
    local want="$* | $("$py" --version 2>&1)"
    if [ -f "$dir/.installed" ] && [ "$(cat "$dir/.installed")" = "$want" ]; then
        echo "[setup] $dir up to date"; return 0
    fi
    echo "[setup] creating $dir with $("$py" --version 2>&1): $*"
    rm -rf "$dir"
    "$py" -m venv "$dir"
    pip_quiet "$dir/bin/python" -m pip install -q --upgrade pip
    pip_quiet "$dir/bin/python" -m pip install -q "$@"
    echo "$want" > "$dir/.installed"
}

PY312="$(find_python312)" || {
    echo "[setup] no shared CPython 3.12 found (pyenv 3.12 or PYTHON312=...); Triton peer unavailable" >&2
    PY312=""
}
if [ -n "$PY312" ]; then
    make_venv "$PEERS/triton" "$PY312" "nvidia-pytriton==0.7.0" "numpy<3" psutil
    # Record where libpython3.12.so lives for the launcher (LD_LIBRARY_PATH).
    "$PY312" -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR"))' > "$PEERS/triton/.libdir"
fi

PYBASE="${PEER_PYTHON:-$(command -v python3.11 || command -v python3)}"
make_venv "$PEERS/py" "$PYBASE" "ray[serve]" litserve starlette "uvicorn[standard]" orjson psutil numpy

echo "[setup] peers ready in $PEERS"
