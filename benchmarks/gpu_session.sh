#!/usr/bin/env bash
# What a session with a lent GPU runs, as one call from the source tree (nothing installed there; PYTHONPATH=.):
# the stages of benchmarks/gpu_session/ in priority order within a ~6-minute budget (docs/benchmarks.md §The GPU
# session). Results (JSON, markdown) go to $OUT (the device tool's folder) or benchmarks/results, rewritten as each
# stage ends; the whole output is also logged there as gpu-session.log.
# Arguments go to the Python module:
#   bash benchmarks/gpu_session.sh                          # the GPU run
#   bash benchmarks/gpu_session.sh --tiny                   # CPU, tiny sizes (what the test suite runs)
#   bash benchmarks/gpu_session.sh --only training trainer --budget training=240
# A hard limit (GPU_SESSION_HARD_LIMIT_S, default 420 s) stops the run well inside the device tool's 10-minute call;
# the stages already written are kept and the interrupted one is marked so.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-benchmarks/results}"
mkdir -p "$out"
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"
unset TRITON_INTERPRET  # the kernels must compile for the GPU (and triton 3.6's interpreter fails there)
python="${PYTHON:-$(command -v python3 || command -v python)}"
timeout --signal=TERM --kill-after=20 "${GPU_SESSION_HARD_LIMIT_S:-420}" \
    "$python" -u -m benchmarks.gpu_session "$@" 2>&1 | tee -a "$out/gpu-session.log"
exit "${PIPESTATUS[0]}"
