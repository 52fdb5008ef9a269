#!/usr/bin/env bash
# Download, here, the wheels `make device-check` needs that the accelerator image lacks (its
# Python 3.12 has torch, triton, jax, cupy, onnxruntime, numpy, grpcio, protobuf,
# prometheus-client, uvloop, psutil, numba, safetensors, tokenizers, httpx, pytest,
# pytest-timeout, hypothesis, ml-dtypes, onnx). They go into .whl/ (git-ignored), which the run
# carries; scripts/device_check.py installs them into /tmp/site. Fails above 48 MiB.
set -euo pipefail
cd "$(dirname "$0")/.."
PIP="${PIP:-python3 -m pip}"
DEST=.whl
LIMIT_MIB=48
# accelserve's own dependencies missing there, and matplotlib (the kernel charts) with its own.
WHEELS=(
  orjson==3.11.5 httptools==0.7.1 nvidia-ml-py==13.580.82
  matplotlib==3.10.8 contourpy==1.3.3 cycler==0.12.1 fonttools==4.61.1 kiwisolver==1.4.9
  pillow==12.0.0 pyparsing==3.2.5 python-dateutil==2.9.0.post0 six==1.17.0 packaging==25.0
)
rm -rf "$DEST" && mkdir -p "$DEST"
$PIP download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d "$DEST" "${WHEELS[@]}"
size=$(du -sb "$DEST" | cut -f1)
echo "$DEST: $(ls "$DEST" | wc -l) wheels, $((size / 1024 / 1024)) MiB ($size bytes)"
if (( size > LIMIT_MIB * 1024 * 1024 )); then
  echo "$DEST exceeds $LIMIT_MIB MiB" >&2
  exit 1
fi
