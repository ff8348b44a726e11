#!/usr/bin/env bash
# The main job for now: set up if needed, then train SD-BNN ResNet-20 on the bundled real digits (CPU or GPU).
# Extra arguments go to launch/digits.py (e.g. --model vgg_small --t-min 0.1 --epochs 30).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! .venv/bin/python -c "import sdbnn.pipelines" 2>/dev/null; then
    bash .ci/setup
fi
exec .venv/bin/python launch/digits.py "$@"
