#!/usr/bin/env bash
# What a session with a lent GPU runs, as one call from the source tree (no install there; PYTHONPATH=.):
# the CUDA test suite, then every benchmark. Results go to $OUT (the device tool's folder) or benchmarks/results;
# commit the JSON and markdown. Extra arguments go to `python -m benchmarks` (e.g. --models resnet20 when short of time).
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-benchmarks/results}"
mkdir -p "$out"
export PYTHONPATH=.
unset TRITON_INTERPRET  # the kernels must compile for the GPU
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu-device.txt"
python -m pytest -m gpu -q -p no:cacheprovider 2>&1 | tee "$out/gpu-tests.log"
tests=${PIPESTATUS[0]}
python -m benchmarks --out "$out" "$@"
benchmarks=$?
echo "gpu tests exit $tests, benchmarks exit $benchmarks"
exit $(( tests || benchmarks ))
