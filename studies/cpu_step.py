"""CPU training step: the fused-op path (what CPU training runs) against the `reference` backend, in one run.

    python -m studies.cpu_step                                   # resnet20, batch 128, fp32, eager, NCHW
    python -m studies.cpu_step --model vgg_small --batch-size 64 --rounds 5

The official SD-BNN code is not part of this project; its math is the `reference` backend's (plain autograd), so that
backend is the in-run baseline. Each round measures both paths back to back, in alternating order (a machine's load
drifts; neighbours share it), and the headline is the median over rounds of each round's ratio, of wall clock and of
this process's CPU time (which other processes' load disturbs less). Writes ``cpu-step-<model>-<date>.{json,md}`` to
``--out`` (default ``studies/results/cpu-step``).
"""

from __future__ import annotations

import datetime
import os
import statistics
import time

import torch
import torch.nn.functional as F

import sdbnn
from sdbnn import provenance
from benchmarks.common import interleaved_rounds, median_ratio, write_named_results
from studies.common import model_step_command, model_step_parser

PATHS = ("ops", "reference")


def measure(model: torch.nn.Module, optimizer, images, labels, backend: str, steps: int) -> dict:
    """Images per second of ``steps`` optimizer steps (forward, backward, SGD) after two warm-up steps: per second
    of wall clock, and per second of this process's CPU time (which another process's load disturbs less)."""
    def step():
        loss = F.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    with sdbnn.backend(backend):
        step()
        step()
        started, cpu_started = time.perf_counter(), time.process_time()
        for _ in range(steps):
            step()
        images_done = steps * len(images)
        return {"wall": images_done / (time.perf_counter() - started),
                "cpu": images_done / (time.process_time() - cpu_started)}


def run(model_name: str, batch_size: int, rounds: int, steps: int, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    model = sdbnn.create_model(model_name)
    sdbnn.set_ede(model, 2.0, 0.5)  # any point of the schedule costs the same
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    images = torch.randn(batch_size, 3, 32, 32)
    labels = torch.randint(0, 10, (batch_size,))
    load_before = os.getloadavg()[0]
    per_round = interleaved_rounds(lambda path, _: measure(model, optimizer, images, labels, path, steps), PATHS,
                                   rounds)
    rates = {path: [measured["wall"] for measured in per_round[path]] for path in PATHS}
    cpu_rates = {path: [measured["cpu"] for measured in per_round[path]] for path in PATHS}
    ratios, ratio = median_ratio(per_round, "ops", "reference", "wall")
    cpu_ratios, cpu_ratio = median_ratio(per_round, "ops", "reference", "cpu")
    return {
        "benchmark": "cpu_step",
        "model": model_name, "batch_size": batch_size, "rounds": rounds, "steps_per_round": steps,
        "precision": "fp32", "layout": "NCHW", "compiled": False,
        "images_per_s": rates, "median_images_per_s": {path: statistics.median(v) for path, v in rates.items()},
        "fused_over_reference_per_round": ratios, "fused_over_reference": ratio,
        "images_per_cpu_s": cpu_rates,
        "median_images_per_cpu_s": {path: statistics.median(v) for path, v in cpu_rates.items()},
        "fused_over_reference_cpu_time_per_round": cpu_ratios,
        "fused_over_reference_cpu_time": cpu_ratio,
        "load_average_1min": {"before": load_before, "after": os.getloadavg()[0]},
        "date": datetime.date.today().isoformat(), "environment": provenance.environment(),
    }


def markdown(result: dict, command: str) -> str:
    env = result["environment"]
    lines = [
        f"# CPU training step: fused ops vs reference backend ({result['model']}, batch {result['batch_size']})",
        "",
        f"`{command}` — commit `{env['commit']}`{' (with uncommitted changes)' if env['uncommitted_changes'] else ''}, "
        f"{env['cpu_model']}, {env['cpu_cores']} cores, {env['torch_threads']} torch threads, torch {env['torch']}, "
        f"{result['date']}. fp32, eager, NCHW; {result['rounds']} rounds of {result['steps_per_round']} steps "
        "(forward, backward, SGD step) of each path, back to back, in alternating order. 1-minute load average "
        f"{result['load_average_1min']['before']:.2f} before, {result['load_average_1min']['after']:.2f} after.",
        "",
        "| path | img/s per round | median img/s | img per CPU-second, per round | median |",
        "|---|---|---|---|---|",
    ]
    for path in PATHS:
        rounds = ", ".join(f"{value:.0f}" for value in result["images_per_s"][path])
        cpu_rounds = ", ".join(f"{value:.0f}" for value in result["images_per_cpu_s"][path])
        lines.append(f"| {path} | {rounds} | {result['median_images_per_s'][path]:.0f} | {cpu_rounds} | "
                     f"{result['median_images_per_cpu_s'][path]:.0f} |")
    per_round = ", ".join(f"{value:.2f}" for value in result["fused_over_reference_per_round"])
    cpu_per_round = ", ".join(f"{value:.2f}" for value in result["fused_over_reference_cpu_time_per_round"])
    lines += ["", f"Fused-op path ÷ reference backend, median of the rounds' ratios: "
              f"**{result['fused_over_reference']:.2f}×** wall clock ({per_round}), "
              f"**{result['fused_over_reference_cpu_time']:.2f}×** CPU time ({cpu_per_round})", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    prog = "python -m studies.cpu_step"
    args = model_step_parser(prog, __doc__, batch_size=128, steps=8, out="cpu-step").parse_args(argv)
    result = run(args.model, args.batch_size, args.rounds, args.steps)
    result["command"] = command = model_step_command(prog, args)
    text = markdown(result, command)
    print(text)
    write_named_results(args.out, f"cpu-step-{args.model}-{result['date']}", result, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
