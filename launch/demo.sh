#!/usr/bin/env bash
# The main job: set up if needed, then train SD-BNN ResNet-20 on the bundled real digits through Accelerate
# (CPU or GPU, ~1–2 minutes on 2 CPU cores). accelerate launch would pin CPU training to one thread: give it every
# core. --t-cap 1 holds EDE's temperature at 1 at the end of the schedule, which keeps the last epochs from
# collapsing (docs/method.md §Late-epoch collapse); pass --t-cap 10 for the paper's schedule (never capped).
# Extra arguments go to launch/cifar.py (e.g. --model vgg_small --t-min 0.1).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! .venv/bin/python -c "import sdbnn.pipelines, accelerate" 2>/dev/null; then
    bash .ci/setup
fi
exec .venv/bin/accelerate launch --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no \
    --num_cpu_threads_per_process "$(nproc)" \
    launch/cifar.py --model resnet20 --dataset digits --epochs 15 --batch-size 64 --t-cap 1 \
    --output-dir "runs/digits_demo_$(date +%Y%m%d-%H%M%S)" "$@"
